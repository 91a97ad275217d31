"""Scanning one output image against a collection: signals, the matched region, the transform.

For each image channel the output's query rows are searched (`BoundChannels.image_queries`):

- **SSCD** (the region channel): row 0 is the whole output, the others its regions
  (`detector.regions.query_windows`). Each row fetches its `config.IMAGE_SEARCH_K` nearest
  segments: works' whole descriptors and their indexed regions. `sscd` is the whole output's
  best cosine with a work (its whole or one of its regions: an output that is a crop of the
  work matches a region). `sscd_normalised` is, over all rows, the best cosine minus that
  row's background cosine (its `config.SSCD_NORM_RANK`-th most similar work); the row that
  gives it is the match's `region`.
- **PDQ**: the smallest Hamming distance over the output's 8 rotations and flips; ignored for
  scoring when the output is too flat for PDQ (quality < 50).
- **CLIP** (if the collection has it): the whole output's cosine; "similar", never "copy".
- **Keypoints** (`detector.keypoints`): for the strongest match, if SSCD found it but left it
  short of a copy, the ORB keypoints of the output and of the work's thumbnail that agree in one
  geometry, `keypoint_inliers`, which lift the score (`scoring.verified`).
"""

from __future__ import annotations

import functools
import heapq
import io
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from detector import config, keypoints, scoring
from detector.channels import BoundChannels, ImageQuery
from detector.fingerprints import PDQ_MIN_QUALITY
from detector.regions import query_windows, window_box
from detector.results import Box, Transform
from indexes import Collection

if TYPE_CHECKING:
    from detector.background import Background

#: PDQ distance at or under which an output is a near-exact copy (Meta's published threshold).
PDQ_NEAR_EXACT = config.SIGNAL_THRESHOLDS["pdq_distance"][2]


@dataclass(frozen=True)
class ImageEvidence:
    """Why one output image matches one work."""

    signals: dict[str, float | None]
    #: Signals left out of the prior score: too unreliable here to count (PDQ on flat images),
    #: or superseded (the raw SSCD cosine where a normalised one exists).
    ignore: frozenset[str]
    #: The part of the output that matches, in output pixels.
    region: Box
    #: The part of the work that matches, in work pixels (None = the whole work).
    work_region: Box | None
    #: The output's area in pixels.
    output_area: int

    @property
    def unreliable(self) -> frozenset[str]:
        """Signals the null does not count either: PDQ on flat images, and the raw SSCD cosine
        where a normalised one exists (look-alike pictures, e.g. screenshots of one program, reach
        raw cosines that a collection's own works rarely show each other; the normalised cosine
        subtracts that background; measured in scripts/bench_verdicts_image.py)."""
        return self.ignore

    @functools.cached_property
    def score(self) -> float:
        """The match score (`scoring.combine` of the signals that count), computed once: scans
        rank every work they found by it."""
        return scoring.combine(self.signals, self.ignore)

    def transform(self, score: float) -> Transform | None:
        """How the output relates to the work, or None if the match is not evidence of copying."""
        if score < config.SIMILAR_SCORE:
            return None
        pdq = self.signals.get("pdq_distance")
        if pdq is not None and "pdq_distance" not in self.ignore and pdq <= PDQ_NEAR_EXACT:
            return "near-exact"
        if scoring.combine({k: v for k, v in self.signals.items() if k.startswith("sscd")},
                           self.ignore) < config.SIMILAR_SCORE:
            return None  # only CLIP: same subject or style, not a copy of any part
        if self.work_region is not None or self.region.area < config.PARTIAL_AREA * self.output_area:
            return "partial"
        return "edited"


def _small(coll: Collection, channel: str) -> bool:
    """Whether the collection has too few pictures to be its own background set
    (`config.BACKGROUND_NORM_BELOW`)."""
    per_work = 1 + len(config.REFERENCE_REGIONS)
    return coll.manifest.counts.get(f"vectors.{channel}", 0) < config.BACKGROUND_NORM_BELOW * per_work


def _background(row_scores: list[float]) -> float | None:
    """A query row's background cosine, from its works' best scores in rank order: the
    SSCD_NORM_RANK-th, or the last when there are fewer, if at least SSCD_NORM_MIN_WORKS."""
    if len(row_scores) < config.SSCD_NORM_MIN_WORKS:
        return None
    return row_scores[min(config.SSCD_NORM_RANK, len(row_scores)) - 1]


def scan_image(coll: Collection, bound: BoundChannels, image: Image.Image,
               exclude: frozenset[str] = frozenset(), query: ImageQuery | None = None,
               locate: int = 0, background: Background | None = None) -> dict[str, ImageEvidence]:
    """Evidence per work that the output *image* matches (works in *exclude* left out, as if
    they were not in the collection). For the *locate* strongest matches that the whole output
    matches (unless PDQ calls it near-exact, or its raw SSCD cosine with the work, at least
    `config.LOCATE_MAX_SSCD`, says it shows nearly all of it), `locate_in_work` looks for the
    part of the work the output may be a crop of. In a collection of fewer than
    `config.BACKGROUND_NORM_BELOW` pictures, those of *background* (a background corpus,
    `detector.background`) take part in each region's background cosine."""
    query = query or bound.image_queries(image)
    full = Box(0, 0, image.width, image.height)
    signals: dict[str, dict[str, float]] = defaultdict(dict)
    region_of: dict[str, Box] = {}
    work_region_of: dict[str, Box] = {}
    names = []
    for ch in bound.of("image"):
        rows = query.rows[ch.name]
        binary = ch.kind == "binary"
        regional = ch.kind == "float" and ch.covers == "all"
        names.append("pdq_distance" if binary else ch.name)
        scores, ids = coll.search(ch.name, rows, config.IMAGE_SEARCH_K if regional else config.SEARCH_K)
        segs = coll.segments(np.unique(ids[ids >= 0]).tolist())
        hits = _Hits(scores, ids, segs, exclude)
        if regional:
            names += ["sscd_normalised", "sscd_background"]
            bg_channel = background.channel_for(ch) if background is not None and _small(coll, ch.name) else None
            bg_top = background.top_scores(bg_channel, rows, config.SSCD_NORM_RANK) if bg_channel else None
            _regional(coll, hits, query.boxes, full, ch.name, signals, region_of, work_region_of, bg_top)
            continue
        key = "pdq_distance" if binary else ch.name
        for row, work, score in zip(hits.row.tolist(), hits.work.tolist(), hits.score.tolist(), strict=True):
            wid = hits.works[work]
            old = signals[wid].get(key)
            if old is None or (score < old if binary else score > old):
                signals[wid][key] = score
    # PDQ's authors call hashes of quality < 50 (flat images) unreliable: report, don't count
    flat = query.quality is not None and query.quality < PDQ_MIN_QUALITY
    ignore = frozenset({"pdq_distance"}) if flat else frozenset()
    out = {}
    # the raw cosine is reported; where a normalised one exists it is the one that counts
    region_ch = bound.region_channel()
    normalised, area = ignore | ({region_ch.name} if region_ch is not None else set()), full.area
    for wid, sig in signals.items():
        out[wid] = ImageEvidence({n: sig.get(n) for n in names},
                                 normalised if sig.get("sscd_normalised") is not None else ignore,
                                 region_of.get(wid, full), work_region_of.get(wid), area)
    mine = _verify(coll, image, out)
    region = bound.region_channel()
    if locate and region is not None:
        for wid in _strongest(out, locate):
            ev = out[wid]
            score = ev.score
            if score < config.SIMILAR_SCORE or ev.transform(score) == "near-exact":
                continue
            if config.LOCATE_KEYPOINTS:
                if mine is None:
                    mine = keypoints.features(image)
                placed = _place(coll, wid, ev, mine, image.size)
                if placed is not None:
                    out[wid] = placed
                    continue
            whole = ev.signals.get(region.name)
            if ev.region == full and ev.work_region is None and (whole is None or whole < config.LOCATE_MAX_SSCD):
                box = locate_in_work(coll, bound, wid, query.rows[region.name][0])
                if box is not None:
                    out[wid] = replace(ev, work_region=box)
    return out


def _place(coll: Collection, wid: str, ev: ImageEvidence, mine: keypoints.Features,
           size: tuple[int, int]) -> ImageEvidence | None:
    """*ev* with its regions placed by local features: where the work lies in the output (a
    composite's pasted area) and which part of the work the output shows (a crop), both in
    pixels, from the similarity transform that at least `config.LOCATE_MIN_INLIERS` keypoint
    matches agree on. None when too few agree (SSCD's coarser regions stand)."""
    theirs = keypoints.work_features(str(coll.path), wid, lambda: coll.thumbnail(wid))
    if theirs is None:
        return None
    found = keypoints.verify(mine, theirs, size)
    if found.inliers < config.LOCATE_MIN_INLIERS or found.region is None or found.work_part is None:
        return None
    part = found.work_part
    work_region = None
    if (part[2] - part[0]) * (part[3] - part[1]) < config.PARTIAL_AREA:
        work = coll.work(wid)
        if work.width and work.height:
            work_region = Box(round(part[0] * work.width), round(part[1] * work.height),
                              round(part[2] * work.width), round(part[3] * work.height))
    return replace(ev, region=found.region, work_region=work_region)


def _strongest(out: dict[str, ImageEvidence], n: int) -> list[str]:
    """The *n* strongest matches, in the order scans report them (score, then work id)."""
    return [wid for _, wid in heapq.nsmallest(n, ((-ev.score, wid) for wid, ev in out.items()))]


def _verify(coll: Collection, image: Image.Image, out: dict[str, ImageEvidence]) -> keypoints.Features | None:
    """Adds `keypoint_inliers` to those of the `config.KEYPOINT_WORKS` strongest matches that SSCD
    found (normalised score at least `config.KEYPOINT_MIN_SSCD`) but scored under
    `config.KEYPOINT_BELOW`: a scan whose strongest match is settled verifies nothing. Where the
    inliers lift the score, the work's outline mapped into the output by the fitted transform
    becomes the match's region, and the output's outline mapped into the work its work region
    when that is a clear part of the work (a crop). Returns the output's features if it found them."""
    mine: keypoints.Features | None = None
    for wid in _strongest(out, config.KEYPOINT_WORKS):
        ev = out[wid]
        if (ev.signals.get("sscd_normalised") or -1.0) < config.KEYPOINT_MIN_SSCD or ev.score >= config.KEYPOINT_BELOW:
            continue
        theirs = keypoints.work_features(str(coll.path), wid, lambda wid=wid: coll.thumbnail(wid))
        if theirs is None:
            continue
        if mine is None:
            mine = keypoints.features(image)
        found = keypoints.verify(mine, theirs, image.size)
        lifted = replace(ev, signals={**ev.signals, "keypoint_inliers": float(found.inliers)})
        if found.region is not None and lifted.score > ev.score:
            # the fitted transform places the work to the pixel; SSCD's regions to a ninth
            lifted = replace(lifted, region=found.region)
            part = found.work_part
            if part is not None and (part[2] - part[0]) * (part[3] - part[1]) < config.PARTIAL_AREA:
                # the output shows only a part of the work: a crop
                work = coll.work(wid)
                if work.width and work.height:
                    lifted = replace(lifted, work_region=Box(
                        round(part[0] * work.width), round(part[1] * work.height),
                        round(part[2] * work.width), round(part[3] * work.height)))
        out[wid] = lifted
    return mine


def locate_in_work(coll: Collection, bound: BoundChannels, work_id: str, output: np.ndarray) -> Box | None:
    """Where in the work the whole output comes from, if it is clearly a part of it: the work's
    stored thumbnail is encoded once, its `query_windows` regions pooled and compared with the
    output's descriptor. None when no part beats the whole work by `config.REGION_MARGIN`, or
    the work has no thumbnail."""
    region = bound.region_channel()
    data = coll.thumbnail(work_id)
    if region is None or data is None:
        return None
    enc = bound.encoders[region.name]
    with Image.open(io.BytesIO(data)) as im:
        thumb = im.convert("RGB")
    whole, maps = enc.encode_maps([thumb], config.LOCATE_SIZE)
    rows, cols = maps.shape[2:]
    windows = query_windows(rows, cols)
    scores = enc.head.pool(maps[0], windows) @ output
    best = int(np.argmax(scores)) if len(windows) else -1
    if best < 0 or scores[best] < float(whole[0] @ output) + config.REGION_MARGIN:
        return None
    near = np.flatnonzero(scores >= scores[best] - config.REGION_TOLERANCE)
    pick = max(near.tolist(), key=lambda j: windows[j][2] * windows[j][3])
    work = coll.work(work_id)
    return window_box(windows[pick], rows, cols, work.width or thumb.width, work.height or thumb.height)


class _Hits:
    """A search's results as flat arrays (`all_*`: every hit; `row`, `work`, `score`, `ordinal`:
    each row's best hit per work, in rank order; `work` indexes `works`), excluded works and
    deleted segments dropped."""

    def __init__(self, scores: np.ndarray, ids: np.ndarray, segs: dict, exclude: frozenset[str]) -> None:
        owners = {seg.work_id for seg in segs.values()}
        self.works = sorted(owners - exclude)
        index = {w: i for i, w in enumerate(self.works)}
        known = np.asarray(sorted(segs), dtype=np.int64)
        known_work = np.asarray([index.get(segs[i].work_id, -1) for i in known.tolist()], dtype=np.int64)
        known_ord = np.asarray([segs[i].ordinal for i in known.tolist()], dtype=np.int64)
        flat_ids = ids.ravel()
        at = np.clip(np.searchsorted(known, flat_ids), 0, max(0, len(known) - 1))
        found = (known[at] == flat_ids) if len(known) else np.zeros(len(flat_ids), bool)
        work = np.where(found, known_work[at] if len(known) else -1, -1)
        ordinal = np.where(found, known_ord[at] if len(known) else -1, -1)
        row = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
        keep = work >= 0
        row, work, ordinal, score = row[keep], work[keep], ordinal[keep], scores.ravel()[keep]
        self.all_row, self.all_work, self.all_ordinal, self.all_score = row, work, ordinal, score
        # first (best) hit of each work in each row: rows are in rank order (and never name a
        # segment twice, so where each work has one segment every hit is the first)
        if len(owners) == len(segs):
            first = np.arange(len(row))
        else:
            _, first = np.unique(row * max(1, len(self.works)) + work, return_index=True)
            first.sort()
        self.row, self.work, self.score, self.ordinal = row[first], work[first], score[first], ordinal[first]


def _regional(coll: Collection, hits: _Hits, boxes: tuple[Box, ...], full: Box, key: str,
              signals: dict[str, dict[str, float]], region_of: dict[str, Box], work_region_of: dict[str, Box],
              bg_top: np.ndarray | None = None) -> None:
    """SSCD signals from the whole output (row 0) and its regions (rows 1..); *bg_top* holds each
    row's best cosines with background-corpus pictures (best first, -inf where none)."""
    # row 0: the whole output against works, whole or one of their indexed regions
    whole0: dict[int, float] = {}
    part0: dict[int, tuple[float, int]] = {}
    at0 = hits.all_row == 0
    for work, ordinal, score in zip(hits.all_work[at0].tolist(), hits.all_ordinal[at0].tolist(),
                                    hits.all_score[at0].tolist(), strict=True):
        if ordinal == 0:
            whole0.setdefault(work, score)
        else:
            part0.setdefault(work, (score, ordinal))
    for work in set(whole0) | set(part0):
        best = max(whole0.get(work, -1.0), part0.get(work, (-1.0, 0))[0])
        wid = hits.works[work]
        signals[wid][key] = best
        # a work's region is the match only if it clearly beats the whole work
        if work in part0 and part0[work][0] >= whole0.get(work, -1.0) + config.REGION_MARGIN:
            box = _segment_box(coll, wid, part0[work][1])
            if box is not None:
                work_region_of[wid] = box
    # background per row: the score of its SSCD_NORM_RANK-th distinct work, of the collection and
    # the background corpus together
    nrows = len(boxes)
    areas = np.asarray([b.area for b in boxes])
    counts = np.bincount(hits.row, minlength=nrows)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    depth = config.SSCD_NORM_RANK
    cols = np.arange(depth)
    filled = cols[None, :] < counts[:, None]
    ranked = np.full((nrows, depth), -np.inf)
    ranked[filled] = hits.score[(starts[:, None] + cols[None, :])[filled]]
    if bg_top is not None:
        counts = counts + np.isfinite(bg_top).sum(axis=1)
        ranked = -np.sort(-np.concatenate([ranked, bg_top.astype(ranked.dtype)], axis=1), axis=1)
    rank = np.minimum(counts, depth) - 1
    usable = counts >= config.SSCD_NORM_MIN_WORKS
    background = np.full(nrows, np.nan)
    background[usable] = ranked[np.flatnonzero(usable), rank[usable]]
    norm = hits.score - background[hits.row]
    ok = np.flatnonzero(~np.isnan(norm))
    if not len(ok):
        return
    # the usable hits grouped by work (stable: each group keeps rank order, rows ascending;
    # a stable sort of 16-bit keys is a radix sort, 20x faster than of 64-bit ones)
    keys = hits.work[ok]
    at = ok[np.argsort(keys.astype(np.int16) if len(hits.works) <= 2**15 else keys, kind="stable")]
    work, row, score = hits.work[at], hits.row[at], hits.score[at]
    first = np.flatnonzero(np.concatenate([[True], work[1:] != work[:-1]]))
    group = np.cumsum(np.concatenate([[False], work[1:] != work[:-1]]))
    best_norm = np.maximum.reduceat(norm[at], first)
    # where: the part of the output that looks most like the work (raw cosine), if it
    # clearly beats the whole output; then the largest window nearly as good, which covers
    # the copied part better than the single best (smaller) window
    raw = np.where(row > 0, score, -np.inf)
    best_raw = np.maximum.reduceat(raw, first)
    whole = np.asarray([signals[hits.works[w]].get(key, -1.0) if hits.works[w] in signals else -1.0
                        for w in work[first].tolist()])
    located = np.isfinite(best_raw) & (best_raw >= whole + config.REGION_MARGIN)
    near_area = np.where(raw >= best_raw[group] - config.REGION_TOLERANCE, areas[row], -1)
    widest = np.maximum.reduceat(near_area, first)
    # first (lowest row) of each group's widest near window
    pick = np.flatnonzero(near_area == widest[group])
    pick = pick[np.concatenate([[True], group[pick][1:] != group[pick][:-1]])]
    # the background cosine that the best normalised score had subtracted, reported with it
    top = np.flatnonzero(norm[at] >= best_norm[group])
    top = top[np.concatenate([[True], group[top][1:] != group[top][:-1]])]
    for w, value, is_located, r, bg in zip(work[first].tolist(), best_norm.tolist(), located.tolist(),
                                           row[pick].tolist(), background[row[top]].tolist(), strict=True):
        wid = hits.works[w]
        signals[wid]["sscd_normalised"] = value
        signals[wid]["sscd_background"] = bg
        if is_located:
            region_of[wid] = boxes[r]
            work_region_of.pop(wid, None)


def _segment_box(coll: Collection, work_id: str, ordinal: int) -> Box | None:
    if ordinal == 0:
        return None
    for seg in coll.work_segments(work_id):
        if seg.ordinal == ordinal and seg.box is not None:
            return Box(*seg.box)
    return None
