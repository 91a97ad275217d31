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
All of it is numpy over the list of equal-word pairs (sorted by diagonal with a radix sort);
only the links between segments, which unrelated texts make few of, are walked in Python.
"""

from __future__ import annotations

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


def _by_diagonal(d: np.ndarray, n_out: int, n_work: int) -> np.ndarray:
    """The order of pairs by diagonal, then output word, for pairs listed by output word (as
    `_pairs` lists them): a stable sort by diagonal alone. Diagonals lie in -n_out..n_work; when
    they fit 16 bits NumPy sorts them by radix, ~7x faster than a comparison sort."""
    if n_out + n_work <= 1 << 16:
        return np.argsort((d + n_out).astype(np.uint16), kind="stable")
    return np.argsort(d, kind="stable")


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
    order = _by_diagonal(d, len(out_keys), len(work_keys))
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
    n = len(keep)
    best_l, prev_l = _chain(s_i0, s_i1, s_j0, s_j1, s_cnt, chain_gap)

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
    best = np.asarray(best_l, dtype=np.int64)
    enough = np.flatnonzero(best >= min_words)
    for s in enough[np.argsort(-best[enough], kind="stable")].tolist():
        if used[s]:
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


def _chain(i0: np.ndarray, i1: np.ndarray, j0: np.ndarray, j1: np.ndarray, cnt: np.ndarray,
           chain_gap: int) -> tuple[list[int], list[int]]:
    """Chains of diagonal segments (word ranges i0..i1 in the output, j0..j1 in the work, cnt
    matches each): per segment, the most matches of a chain ending with it, and the segment
    before it in that chain (-1 for none). A segment may follow one that ends at most
    *chain_gap* words before it starts, in both texts. Of equal chains, the one whose last
    segment ends first (then starts first) is kept.

    The links are found with numpy, not by comparing every pair: segment ends are bucketed in a
    grid of (chain_gap + 1)-word cells, and each segment looks only in the two-by-two cells
    where a segment it may follow can end. Unrelated texts make thousands of two-match
    segments and almost no links, so only the links are walked in Python."""
    n = len(i0)
    best, prev = cnt.astype(np.int64).tolist(), [-1] * n
    cell = chain_gap + 1
    rows = int(j1.max()) // cell + 3 if n else 1
    end_cell = (i1 // cell + 1) * rows + j1 // cell + 1
    by_cell = np.argsort(end_cell, kind="stable")
    cells = end_cell[by_cell]
    src_parts, dst_parts = [], []
    x0, y0 = (i0 - chain_gap) // cell + 1, (j0 - chain_gap) // cell + 1
    for dx in (0, 1):
        for dy in (0, 1):
            key = (x0 + dx) * rows + y0 + dy
            lo = np.searchsorted(cells, key, side="left")
            found = np.searchsorted(cells, key, side="right") - lo
            total = int(found.sum())
            if total:
                first = np.repeat(lo - (np.cumsum(found) - found), found)
                src_parts.append(by_cell[first + np.arange(total)])
                dst_parts.append(np.repeat(np.arange(n), found))
    if not src_parts:
        return best, prev
    src, dst = np.concatenate(src_parts), np.concatenate(dst_parts)
    ok = (i1[src] >= i0[dst] - chain_gap) & (i1[src] <= i0[dst]) & (j1[src] <= j0[dst]) & (j0[dst] <= j1[src] + chain_gap)
    src, dst = src[ok], dst[ok]
    # a segment's links in the order segments start (every segment it may follow starts before
    # it, so its chain is complete when its turn comes), each segment's by where they end
    rank = np.empty(n, dtype=np.int64)
    rank[np.argsort(i0, kind="stable")] = np.arange(n)
    order = np.lexsort((rank[src], i1[src], rank[dst]))
    cur, top, arg = -1, 0, -1
    for t, s in zip(src[order].tolist(), dst[order].tolist(), strict=True):
        if s != cur:
            if arg >= 0:
                best[cur] += top
                prev[cur] = arg
            cur, top, arg = s, 0, -1
        if best[t] > top:
            top, arg = best[t], t
    if arg >= 0:
        best[cur] += top
        prev[cur] = arg
    return best, prev


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
