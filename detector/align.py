"""Word alignment of an output text with a work: verbatim and near-verbatim stretches.

The aligner compares word keys (see `detector.fingerprints.word_keys`), so case, punctuation
and spacing do not matter. It finds every pair of equal words, then

1. groups pairs that lie on one diagonal (output word i, work word i + d) with at most
   `gap` unmatched words between neighbours: a stretch copied with some words replaced
   (a substitution keeps the diagonal);
2. chains such segments across nearby diagonals when one starts within `chain_gap` words of
   where the previous ended, in both texts: words inserted or deleted (a two-word synonym for
   a one-word one) move the diagonal a little, and a run of replaced words leaves a hole;
3. keeps the chains with enough matched words, largest first, each output word in one chain.

Every chain is reported as pieces: runs of at least `verbatim_words` consecutive equal words
("verbatim") and the stretches between them that match word for word only in part ("near").
Reordered sentences give one chain each; a buried excerpt gives one chain inside the output.
All of it is numpy over the list of equal-word pairs; the chaining step runs in Python over
segments of two or more matches, which unrelated texts produce few of.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Literal

import numpy as np

from detector import config

__all__ = ["Alignment", "Piece", "align"]

PieceKind = Literal["verbatim", "near"]


@dataclass(frozen=True)
class Piece:
    """One stretch of an alignment, as word indices (end exclusive) into both texts."""

    out_start: int
    out_end: int
    work_start: int
    work_end: int
    #: Words matched in order inside the stretch (== its length for a verbatim piece).
    matched: int
    #: Longest run of consecutive equal words inside the stretch.
    longest: int
    kind: PieceKind

    @property
    def density(self) -> float:
        """Share of the stretch's output words that are matched."""
        return self.matched / max(1, self.out_end - self.out_start)


@dataclass(frozen=True)
class Alignment:
    """A chain of aligned words between an output and a work (word indices, end exclusive)."""

    pieces: tuple[Piece, ...]
    #: Words of the output matched, in order, to words of the work.
    matched: int
    #: Longest run of consecutive words copied verbatim.
    longest_run: int

    @property
    def out_start(self) -> int:
        return self.pieces[0].out_start

    @property
    def out_end(self) -> int:
        return self.pieces[-1].out_end

    @property
    def work_start(self) -> int:
        return min(p.work_start for p in self.pieces)

    @property
    def work_end(self) -> int:
        return max(p.work_end for p in self.pieces)


def _pairs(out_keys: np.ndarray, work_keys: np.ndarray, max_pairs: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of every out_keys[i] == work_keys[j]; the words with the most pairs are dropped
    first if there would be more than *max_pairs*."""
    order = np.argsort(work_keys, kind="stable")
    sorted_keys = work_keys[order]
    lo = np.searchsorted(sorted_keys, out_keys, side="left")
    cnt = np.searchsorted(sorted_keys, out_keys, side="right") - lo
    if cnt.sum() > max_pairs:
        by_count = np.sort(cnt)
        fits = np.searchsorted(np.cumsum(by_count), max_pairs, side="right")
        cap = by_count[fits - 1] if fits else 0
        cnt = np.where(cnt <= cap, cnt, 0)
    total = int(cnt.sum())
    i = np.repeat(np.arange(len(out_keys), dtype=np.int64), cnt)
    first = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt)
    j = order[first + np.arange(total, dtype=np.int64)]
    return i, j.astype(np.int64)


def align(
    out_keys: np.ndarray,
    work_keys: np.ndarray,
    *,
    gap: int = config.ALIGN_GAP,
    chain_gap: int = config.ALIGN_CHAIN_GAP,
    min_words: int = config.ALIGN_MIN_WORDS,
    verbatim_words: int = config.VERBATIM_MIN_WORDS,
    max_pairs: int = config.ALIGN_MAX_PAIRS,
) -> list[Alignment]:
    """Aligned stretches of *out_keys* within *work_keys* (int64 word keys), most matched
    words first; each has at least *min_words* matched words and no two share an output word.
    *gap* is the most unmatched words tolerated between two matched ones on one diagonal,
    *chain_gap* between the end of one diagonal segment and the start of the next."""
    out_keys = np.asarray(out_keys, dtype=np.int64)
    work_keys = np.asarray(work_keys, dtype=np.int64)
    for label, value, low in (("gap", gap, 0), ("chain_gap", chain_gap, 0), ("min_words", min_words, 1),
                              ("verbatim_words", verbatim_words, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int >= {low}, got {value!r}")
    if len(out_keys) == 0 or len(work_keys) == 0:
        return []
    i, j = _pairs(out_keys, work_keys, max_pairs)
    if len(i) == 0:
        return []
    d = j - i
    # by diagonal, then output word: one sort of a combined key (faster than lexsort)
    order = np.argsort((d + len(out_keys)) * (len(out_keys) + 1) + i)
    i, j, d = i[order], j[order], d[order]
    step = np.diff(i)
    same_diag = np.diff(d) == 0
    seg_break = np.concatenate([[True], ~same_diag | (step > gap + 1)])
    run_break = np.concatenate([[True], ~same_diag | (step != 1)])
    seg_first = np.flatnonzero(seg_break)
    seg_count = np.diff(np.append(seg_first, len(i)))
    run_first = np.flatnonzero(run_break)
    run_len = np.diff(np.append(run_first, len(i)))

    keep = np.flatnonzero(seg_count >= 2)
    if len(keep) == 0:
        return []
    seg_last = np.append(seg_first[1:], len(i)) - 1
    s_i0, s_i1 = i[seg_first[keep]], i[seg_last[keep]] + 1
    s_j0, s_j1 = j[seg_first[keep]], j[seg_last[keep]] + 1
    s_cnt = seg_count[keep]

    # chain segments across diagonals: best total of matches ending with each segment
    by_start = np.argsort(s_i0, kind="stable")
    n = len(keep)
    best = s_cnt.astype(np.int64).copy()
    prev = np.full(n, -1, dtype=np.int64)
    ends: list[int] = []  # s_i1 of processed segments, sorted, with their segment numbers
    ends_seg: list[int] = []
    i0l, i1l, j0l, j1l = s_i0.tolist(), s_i1.tolist(), s_j0.tolist(), s_j1.tolist()
    best_l = best.tolist()
    prev_l = prev.tolist()
    for s in by_start.tolist():
        lo = bisect.bisect_left(ends, i0l[s] - chain_gap)
        hi = bisect.bisect_right(ends, i0l[s])
        top, arg = 0, -1
        for t in ends_seg[lo:hi]:
            if j1l[t] <= j0l[s] <= j1l[t] + chain_gap and best_l[t] > top:
                top, arg = best_l[t], t
        if arg >= 0:
            best_l[s] += top
            prev_l[s] = arg
        at = bisect.bisect_right(ends, i1l[s])
        ends.insert(at, i1l[s])
        ends_seg.insert(at, s)

    # runs of each kept segment, for the pieces: a segment's runs are consecutive (every segment
    # break is a run break), so only the chains that are kept need theirs listed
    run_lo = np.searchsorted(run_first, seg_first[keep]).tolist()
    run_hi = np.searchsorted(run_first, seg_last[keep], side="right").tolist()

    def runs_of(s: int) -> list[tuple[int, int, int]]:
        firsts = run_first[run_lo[s] : run_hi[s]]
        return list(zip(i[firsts].tolist(), j[firsts].tolist(), run_len[run_lo[s] : run_hi[s]].tolist(), strict=True))

    claimed = np.zeros(len(out_keys), dtype=bool)
    used = [False] * n
    out: list[Alignment] = []
    for s in sorted(range(n), key=lambda x: -best_l[x]):
        if used[s] or best_l[s] < min_words:
            continue
        chain = []
        t = s
        while t >= 0 and not used[t]:
            chain.append(t)
            t = prev_l[t]
        for t in chain:
            used[t] = True
        chain.reverse()
        runs = [r for t in chain for r in runs_of(t)]
        matched = sum(r[2] for r in runs)
        lo_i, hi_i = runs[0][0], runs[-1][0] + runs[-1][2]
        if matched < min_words or claimed[lo_i:hi_i].sum() * 2 > hi_i - lo_i:
            continue
        claimed[lo_i:hi_i] = True
        out.append(Alignment(_pieces(runs, verbatim_words), matched, max(r[2] for r in runs)))
    out.sort(key=lambda a: (-a.matched, a.out_start))
    return out


def _pieces(runs: list[tuple[int, int, int]], verbatim_words: int) -> tuple[Piece, ...]:
    """Split a chain's runs (i, j, length) into verbatim pieces and the near stretches between."""
    pieces: list[Piece] = []
    near: list[tuple[int, int, int]] = []

    def flush() -> None:
        if sum(r[2] for r in near) >= 2:  # one stray equal word beside a verbatim run is no stretch
            pieces.append(Piece(near[0][0], near[-1][0] + near[-1][2], min(r[1] for r in near),
                                max(r[1] + r[2] for r in near), sum(r[2] for r in near),
                                max(r[2] for r in near), "near"))
        near.clear()

    for run in runs:
        a, b, length = run
        if length >= verbatim_words:
            flush()
            pieces.append(Piece(a, a + length, b, b + length, length, length, "verbatim"))
        else:
            near.append(run)
    flush()
    return tuple(pieces)
