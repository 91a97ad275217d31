"""Text evidence: which words of an output come from which work, and how closely.

Three steps, each cheap enough for a large collection:

1. **Candidates.** The output is cut into windows (`config.PASSAGE_WORDS` words, overlapping
   by `config.WINDOW_OVERLAP`) and each window's embedding is searched among the works'
   passage embeddings; separately,
   every word 5-gram of the output is looked up among the works' stored (winnowed) shingle
   keys. Both search windows and n-grams, not the whole output, so a short excerpt buried in
   a long output still finds its source. The works with the most shingle hits become
   candidates, and so do the works most similar to each window (each window's best first).
2. **Alignment.** Around each candidate's hits (its passages most similar to each window, the
   shared n-grams) the work's stored text is read back and aligned word by word with the
   output (`detector.align`): verbatim runs, and near-verbatim stretches that tolerate
   replaced, inserted and dropped words, with character offsets in both texts.
3. **Common-text discount.** A stretch whose shared n-grams are held by at least
   `config.COMMON_MIN_WORKS` works of the collection and the background corpus together
   (boilerplate, licences, stock phrases, a quotation many works share; `detector.background`)
   is reported as discounted and does not count as evidence.

The result per work is a set of signals (see `detector.scoring`) and the spans.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from detector import config
from detector.align import Alignment, align
from detector.channels import BoundChannels
from detector.errors import InputError
from detector.fingerprints import text_shingles, word_keys, word_keys_only, word_spans_of
from detector.memo import Recent
from detector.results import TextSpan
from detector.works import Passage, split_passages
from indexes import Collection

if TYPE_CHECKING:
    from detector.background import Background

K = TypeVar("K", str, tuple[int, int])


@dataclass
class TextEvidence:
    """What one work shows against one output."""

    signals: dict[str, float | None]
    spans: list[TextSpan] = field(default_factory=list)
    excerpt: str | None = None


@dataclass
class _Hits:
    cosine: float = -1.0
    #: (cosine, output window number, passage start, passage end) per passage found
    passages: list[tuple[float, int, int, int]] = field(default_factory=list)
    #: output shingle keys this work holds, and their character positions in the work
    keys: set[int] = field(default_factory=set)
    positions: list[int] = field(default_factory=list)


def check_output(text: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Word keys and spans of an output text; refuses texts with no words or too many."""
    if len(text) > config.MAX_SCAN_WORDS * 40:  # refuse a huge text before tokenising all of it
        raise InputError(
            f"{label}: text has {len(text):,} characters; one scan takes at most {config.MAX_SCAN_WORDS:,} words "
            "(config.MAX_SCAN_WORDS): split it into parts and scan each"
        )
    keys, spans = word_keys(text)
    if len(keys) == 0:
        raise InputError(f"{label}: text has no words to compare (only spaces, punctuation or symbols)")
    if len(keys) > config.MAX_SCAN_WORDS:
        raise InputError(
            f"{label}: text has {len(keys):,} words; one scan takes at most {config.MAX_SCAN_WORDS:,} "
            "(config.MAX_SCAN_WORDS): split it into parts and scan each"
        )
    return keys, spans


def output_windows(text: str) -> list[Passage]:
    """The windows of an output that a scan embeds and searches (`config.WINDOW_OVERLAP`)."""
    return split_passages(text, config.PASSAGE_WORDS, config.WINDOW_OVERLAP)


def embed_windows(bound: BoundChannels, texts: list[str], show_progress_bar: bool | None = False
                  ) -> list[dict[str, np.ndarray]]:
    """Per output text, its windows' vectors for each embedding channel, encoded in one batch."""
    windows = [output_windows(t) for t in texts]
    flat = [w.text for ws in windows for w in ws]
    bounds = np.cumsum([0] + [len(ws) for ws in windows])
    out: list[dict[str, np.ndarray]] = [{} for _ in texts]
    for ch in bound.of("text"):
        if ch.kind == "float":
            vecs = bound.encoders[ch.name].encode(flat, show_progress_bar=show_progress_bar)
            for k in range(len(texts)):
                out[k][ch.name] = vecs[bounds[k] : bounds[k + 1]]
    return out


def scan_text(
    coll: Collection,
    bound: BoundChannels,
    text: str,
    label: str,
    exclude: frozenset[str] = frozenset(),
    vectors: dict[str, np.ndarray] | None = None,
    background: Background | None = None,
) -> dict[str, TextEvidence]:
    """Evidence per work id for the output *text*; works in *exclude* are ignored (as if absent).
    *vectors* are the text's window vectors if already encoded (see `embed_windows`). Phrases
    that *background* works hold count towards the common-text discount."""
    out_keys, out_spans = check_output(text, label)
    hits: dict[str, _Hits] = defaultdict(_Hits)
    windows = output_windows(text)
    embed = [c for c in bound.of("text") if c.kind == "float"]
    for ch in embed:
        vecs = vectors[ch.name] if vectors is not None else bound.encoders[ch.name].encode([w.text for w in windows])
        scores, ids = coll.search(ch.name, vecs, config.TEXT_SEARCH_K)
        segs = coll.segments(np.unique(ids[ids >= 0]).tolist())
        for w, (row_s, row_i) in enumerate(zip(scores, ids, strict=True)):
            for s, i in zip(row_s.tolist(), row_i.tolist(), strict=True):
                seg = segs.get(i)
                if seg is None or seg.work_id in exclude:
                    continue
                h = hits[seg.work_id]
                h.cosine = max(h.cosine, s)
                h.passages.append((s, w, seg.start or 0, seg.end or 0))
    doc_freq: dict[int, int] = {}
    bg_holders: dict[int, frozenset[str]] = {}
    bg_channel = None
    shingles = None
    if bound.has("shingles"):
        shingles = text_shingles(text, config.SHINGLE_WORDS)
        holders: dict[int, set[str]] = defaultdict(set)
        for key, wid, pos in coll.lookup_postings("shingles", shingles.keys):
            if wid in exclude:
                continue
            holders[key].add(wid)
            h = hits[wid]
            h.keys.add(key)
            h.positions.append(pos)
        doc_freq = {k: len(v) for k, v in holders.items()}
        bg_channel = background.channel_for(bound.manifest.channel("shingles")) if background else None
        if bg_channel is not None and doc_freq:
            bg_holders = background.phrase_holders(bg_channel, np.fromiter(doc_freq, dtype=np.int64))

    by_keys = sorted((w for w in hits if hits[w].keys), key=lambda w: (-len(hits[w].keys), w))
    by_cosine = _works_by_window(hits)
    candidates = set(by_keys[: config.ALIGN_WORKS]) | set(by_cosine[: config.ALIGN_WORKS])
    # when the output is short, aligning whole works is cheap: a heavily reworded output's source
    # may rank below ALIGN_WORKS by embedding, so align more of them within a fixed budget
    lengths: dict[str, int] = {}

    def length(wid: str) -> int:
        if wid not in lengths:
            lengths[wid] = coll.text_length(wid)
        return lengths[wid]

    budget = config.ALIGN_EXTRA_CELLS
    for wid in by_cosine[config.ALIGN_WORKS :]:
        words = length(wid) / config.CHARS_PER_WORD
        cells = len(out_keys) * words
        if words > config.ALIGN_FULL_WORK_WORDS or cells > config.ALIGN_FULL_CELLS or cells > budget:
            break
        candidates.add(wid)
        budget -= cells
    embed_name = embed[0].name if embed else None
    result: dict[str, TextEvidence] = {}
    for wid in sorted(candidates):
        h = hits[wid]
        alignments = _align_work(coll, wid, length(wid), h, out_keys, len(text))
        # the work's own near-duplicates in the background do not make its phrases common
        bg_freq: dict[int, int] = {}
        if bg_holders:
            near = background.near_duplicates(coll, wid, bg_channel)
            bg_freq = {k: n for k, v in bg_holders.items() if (n := len(v - near))}
        freq = {k: n + bg_freq.get(k, 0) for k, n in doc_freq.items()} if bg_freq else doc_freq
        ev = _evidence(text, out_keys, out_spans, windows, h, alignments, shingles, freq, bg_freq, embed_name)
        ev.spans = [s if s.work_text else replace(s, work_text=coll.text_slice(wid, s.work_start, s.work_end))
                    for s in ev.spans]
        result[wid] = ev
    return result


def _by_rounds(per_window: Iterable[Iterable[tuple[float, K]]]) -> list[tuple[float, K]]:
    """Keys ranked window by window: each window's best key first, then each window's second,
    and so on, the more similar first within a round; each key once, with its cosine where it
    first came. A reworded excerpt buried in other text is one window's match: ranked by their
    best cosine over all windows, works and passages that resemble the filler's style would
    crowd out its source."""
    rounds = []
    for hits in per_window:
        best: dict[K, float] = {}
        for cos, key in hits:
            if cos > best.get(key, -2.0):
                best[key] = cos
        ranked = sorted(best.items(), key=lambda kc: (-kc[1], kc[0]))
        rounds.extend((r, -cos, key) for r, (key, cos) in enumerate(ranked))
    rounds.sort()
    first: dict[K, float] = {}
    for _r, neg, key in rounds:
        first.setdefault(key, -neg)
    return [(cos, key) for key, cos in first.items()]


def _works_by_window(hits: dict[str, _Hits]) -> list[str]:
    """Works with similar passages, in the order they are made candidates (`_by_rounds`)."""
    per_window: dict[int, list[tuple[float, str]]] = defaultdict(list)
    for wid, h in hits.items():
        for cos, w, _start, _end in h.passages:
            per_window[w].append((cos, wid))
    return [wid for _cos, wid in _by_rounds(per_window.values())]


def _regions(h: _Hits, out_chars: int) -> list[tuple[int, int]]:
    """Character ranges of a work to align with the output: around its similar passages and
    its shared n-grams, merged, the best supported first up to `config.ALIGN_MAX_REGION_CHARS`."""
    spans: list[tuple[int, int, float]] = []
    for cos, start, end in _similar_passages(h.passages, config.ALIGN_PASSAGES):
        margin = end - start
        spans.append((max(0, start - margin), end + margin, cos))
    reach = min(out_chars, config.ALIGN_REGION_CHARS)
    spans.extend((max(0, p - reach), p + reach, 1.0) for p in h.positions)
    if not spans:
        return []
    spans.sort()
    merged: list[list[float]] = []
    for a, b, support in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
            merged[-1][2] += support
        else:
            merged.append([a, b, support])
    merged.sort(key=lambda m: -m[2])
    out: list[tuple[int, int]] = []
    total = 0
    for a, b, _ in merged:
        if total >= config.ALIGN_MAX_REGION_CHARS:
            break
        out.append((int(a), int(b)))
        total += int(b - a)
    return sorted(out)


def _similar_passages(passages: list[tuple[float, int, int, int]], most: int) -> list[tuple[float, int, int]]:
    """Up to *most* distinct passages (cosine, start, end) of a work to align around, from its
    (cosine, output window, start, end) hits, window by window (`_by_rounds`)."""
    per_window: dict[int, list[tuple[float, tuple[int, int]]]] = defaultdict(list)
    for cos, w, start, end in passages:
        per_window[w].append((cos, (start, end)))
    return [(cos, start, end) for cos, (start, end) in _by_rounds(per_window.values())[:most]]


_WHOLE_TEXTS: Recent[tuple[str, str], tuple[str, np.ndarray, np.ndarray]] = Recent(
    lambda: config.WHOLE_TEXT_CACHE)


def _whole_text(coll: Collection, wid: str) -> tuple[str, np.ndarray, np.ndarray]:
    """A work's text with its word keys and spans; the last `config.WHOLE_TEXT_CACHE` are kept."""
    def read() -> tuple[str, np.ndarray, np.ndarray]:
        body = coll.text(wid) or ""
        return (body, *word_keys(body))

    return _WHOLE_TEXTS.get((str(coll.path), wid), read)


class _Region:
    """A stretch of a work's text that was aligned with the output."""

    def __init__(self, start: int, body: str, spans: np.ndarray | None = None) -> None:
        self.start = start  # character offset of `body` in the work
        self.body = body
        self._spans = spans

    @property
    def spans(self) -> np.ndarray:
        """Word spans within body (found when first asked for: most regions align nothing)."""
        if self._spans is None:
            self._spans = word_spans_of(self.body)
        return self._spans


def _align_work(
    coll: Collection, wid: str, length: int, h: _Hits, out_keys: np.ndarray, out_chars: int
) -> list[tuple[Alignment, _Region]]:
    """Alignments of the output with the work's regions, each output word in at most one. A work
    small enough next to the output (`config.ALIGN_FULL_CELLS`) is aligned whole: a heavily
    reworded output may share no n-gram with its source and rank its passage low."""
    found: list[tuple[Alignment, _Region]] = []
    words = length / config.CHARS_PER_WORD
    if words <= config.ALIGN_FULL_WORK_WORDS and len(out_keys) * words <= config.ALIGN_FULL_CELLS:
        body, keys, spans = _whole_text(coll, wid)
        region = _Region(0, body, spans)
        found.extend((al, region) for al in align(out_keys, keys))
        regions: list[tuple[int, int]] = []
    else:
        regions = _regions(h, out_chars)
    if regions:
        found.extend(_align_regions(out_keys, [(a, coll.text_slice(wid, a, b)) for a, b in regions]))
    found.sort(key=lambda f: (-f[0].matched, f[0].out_start))
    claimed = np.zeros(len(out_keys), dtype=bool)
    kept = []
    for al, region in found:
        lo, hi = al.out_start, al.out_end
        if claimed[lo:hi].sum() * 2 > hi - lo:
            continue
        claimed[lo:hi] = True
        kept.append((al, region))
    return kept


def _align_regions(out_keys: np.ndarray, bodies: list[tuple[int, str]]) -> list[tuple[Alignment, _Region]]:
    """Alignments of the output with several regions of one work, in one `align` call: the
    regions' words are laid end to end with filler keys between them, more than any gap the
    aligner bridges, so no alignment spans two regions. Pieces come back in region words."""
    keyed = [word_keys_only(body) for _, body in bodies]
    regions = [_Region(start, body) for start, body in bodies]
    filler = np.int64(np.iinfo(np.int64).min)
    present = set(out_keys.tolist()) if len(out_keys) else set()
    while int(filler) in present:  # a key no output word has
        filler += 1
    apart = np.full(config.ALIGN_GAP + config.ALIGN_CHAIN_GAP + 2, filler, dtype=np.int64)
    parts: list[np.ndarray] = []
    offsets: list[int] = []
    at = 0
    for keys in keyed:
        offsets.append(at)
        parts.extend((keys, apart))
        at += len(keys) + len(apart)
    found = []
    for al in align(out_keys, np.concatenate(parts)):
        k = bisect.bisect_right(offsets, al.pieces[0].work_start) - 1
        off = offsets[k]
        pieces = tuple(replace(p, work_start=p.work_start - off, work_end=p.work_end - off) for p in al.pieces)
        found.append((replace(al, pieces=pieces), regions[k]))
    return found


def _evidence(
    text: str,
    out_keys: np.ndarray,
    out_spans: np.ndarray,
    windows: list,
    h: _Hits,
    alignments: list[tuple[Alignment, _Region]],
    shingles,
    doc_freq: dict[int, int],
    bg_freq: dict[int, int],
    embed_name: str | None,
) -> TextEvidence:
    n_out = len(out_keys)
    spans: list[TextSpan] = []
    copied_best = aligned_best = longest = copied_total = 0
    covered = np.zeros(n_out, dtype=bool)
    best_span: tuple[int, TextSpan] | None = None
    for al, region in alignments:
        copied = aligned = 0
        for p in al.pieces:
            shared, in_background = _shared_by(p.out_start, p.out_end, shingles, h.keys, doc_freq, bg_freq)
            kind = p.kind if p.kind == "verbatim" or p.density >= config.NEAR_DENSITY else "paraphrase"
            o0, o1 = int(out_spans[p.out_start][0]), int(out_spans[p.out_end - 1][1])
            w0, w1 = int(region.spans[p.work_start][0]), int(region.spans[p.work_end - 1][1])
            span = TextSpan(o0, o1, region.start + w0, region.start + w1, kind, p.matched,
                            shared is not None, shared, text[o0:o1], region.body[w0:w1],
                            background_works=in_background)
            spans.append(span)
            covered[p.out_start : p.out_end] = True
            if shared is not None:
                continue
            aligned += p.matched
            longest = max(longest, p.longest)
            if kind != "paraphrase":
                copied += p.matched
                if best_span is None or p.matched > best_span[0]:
                    best_span = (p.matched, span)
        copied_best, aligned_best = max(copied_best, copied), max(aligned_best, aligned)
        copied_total += copied
    # windows whose embedding matches a passage but whose words did not align: a paraphrase;
    # windows that are mostly common text do not count for the embedding signal either
    common = np.zeros(n_out, dtype=bool)
    for s in spans:
        if s.discounted:
            common |= (out_spans[:, 0] >= s.output_start) & (out_spans[:, 1] <= s.output_end)
    best_window: dict[int, tuple[float, int, int]] = {}
    for cos, w, start, end in h.passages:
        if cos > best_window.get(w, (-1.0, 0, 0))[0]:
            best_window[w] = (cos, start, end)
    similar = config.SIGNAL_THRESHOLDS["minilm"][1]
    cosine = None
    for w, (cos, start, end) in sorted(best_window.items()):
        win = windows[w]
        inside = (out_spans[:, 0] >= win.start) & (out_spans[:, 1] <= win.end)
        if common[inside].mean() >= 0.5:
            continue
        cosine = cos if cosine is None else max(cosine, cos)
        if cos < similar or covered[inside].mean() >= 0.5:
            continue
        spans.append(TextSpan(win.start, win.end, start, end, "paraphrase", int(inside.sum()),
                              output_text=text[win.start : win.end]))
    spans.sort(key=lambda s: (s.output_start, s.work_start))
    signals: dict[str, float | None] = {}
    if embed_name is not None:
        signals[embed_name] = cosine
    if shingles is not None or alignments:
        signals.update(
            copied_words=float(copied_best),
            copied_total_words=float(copied_total),
            aligned_words=float(aligned_best),
            coverage=copied_total / n_out,
            longest_run_words=float(longest),
        )
    excerpt = None if best_span is None else text[best_span[1].output_start : best_span[1].output_end]
    return TextEvidence(signals, spans, excerpt)


def _shared_by(start: int, end: int, shingles, held: set[int], doc_freq: dict[int, int],
               bg_freq: dict[int, int]) -> tuple[int | None, int | None]:
    """If the stretch of output words start..end is a common phrase, (the number of works that
    hold it, how many of them are background works): every shingle of the stretch that the work
    holds is held by at least `config.COMMON_MIN_WORKS` works, of the collection and the
    background together; the counts are those of its most widely held shingle. (None, None) for a stretch specific to this work (or with no shingle
    the work holds, which cannot be judged)."""
    if shingles is None or len(shingles.keys) == 0:
        return None, None
    last = max(start, min(end - shingles.n, len(shingles.keys) - 1))
    keys = {int(k) for k in shingles.keys[start : last + 1]} & held
    if not keys:
        return None, None
    if min(doc_freq.get(k, 0) for k in keys) < config.COMMON_MIN_WORKS:
        return None, None
    # reported: the most works holding one of its n-grams (winnowing stores a phrase's edge
    # n-grams in some works and not others, so the rarest count understates it)
    widest = max(keys, key=lambda k: (doc_freq.get(k, 0), k))
    return int(doc_freq[widest]), int(bg_freq.get(widest, 0))
