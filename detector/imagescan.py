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
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector import config, scoring
from detector.channels import BoundChannels, ImageQuery
from detector.fingerprints import PDQ_MIN_QUALITY
from detector.results import Box, Transform
from indexes import Collection

#: PDQ distance at or under which an output is a near-exact copy (Meta's published threshold).
PDQ_NEAR_EXACT = config.SIGNAL_THRESHOLDS["pdq_distance"][2]


@dataclass(frozen=True)
class ImageEvidence:
    """Why one output image matches one work."""

    signals: dict[str, float | None]
    #: Signals reported but too unreliable here to count (PDQ on flat images).
    ignore: frozenset[str]
    #: The part of the output that matches, in output pixels.
    region: Box
    #: The part of the work that matches, in work pixels (None = the whole work).
    work_region: Box | None
    #: The output's area in pixels.
    output_area: int

    def transform(self, score: float) -> Transform | None:
        """How the output relates to the work, or None if the match is not evidence of copying."""
        if score < config.SIMILAR_SCORE:
            return None
        pdq = self.signals.get("pdq_distance")
        if pdq is not None and "pdq_distance" not in self.ignore and pdq <= PDQ_NEAR_EXACT:
            return "near-exact"
        sscd = scoring.evidence("sscd", self.signals.get("sscd"))
        normalised = scoring.evidence("sscd_normalised", self.signals.get("sscd_normalised"))
        if max(sscd, normalised) < config.SIMILAR_SCORE:
            return None  # only CLIP: same subject or style, not a copy of any part
        if self.work_region is not None or self.region.area < config.PARTIAL_AREA * self.output_area:
            return "partial"
        return "edited"


def _background(row_scores: list[float]) -> float | None:
    """A query row's background cosine, from its works' best scores in rank order: the
    SSCD_NORM_RANK-th, or the last when there are fewer, if at least SSCD_NORM_MIN_WORKS."""
    if len(row_scores) < config.SSCD_NORM_MIN_WORKS:
        return None
    return row_scores[min(config.SSCD_NORM_RANK, len(row_scores)) - 1]


def scan_image(coll: Collection, bound: BoundChannels, image: Image.Image,
               exclude: frozenset[str] = frozenset(), query: ImageQuery | None = None) -> dict[str, ImageEvidence]:
    """Evidence per work that the output *image* matches (works in *exclude* left out, as if
    they were not in the collection)."""
    query = query or bound.image_queries(image)
    full = Box(0, 0, image.width, image.height)
    signals: dict[str, dict[str, float]] = defaultdict(dict)
    # per work: (normalised score, row) of the whole output and of its best region
    whole_norm: dict[str, float] = {}
    part_norm: dict[str, tuple[float, int]] = {}
    work_region_of: dict[str, Box | None] = {}
    for ch in bound.of("image"):
        rows = query.rows[ch.name]
        binary = ch.kind == "binary"
        regional = ch.kind == "float" and ch.covers == "all"
        k = config.IMAGE_SEARCH_K if regional else config.SEARCH_K
        scores, ids = coll.search(ch.name, rows, k)
        segs = coll.segments(np.unique(ids[ids >= 0]).tolist())
        key = "pdq_distance" if binary else ch.name
        for r, (row_scores, row_ids) in enumerate(zip(scores, ids, strict=True)):
            best: dict[str, float] = {}  # work -> best score of this row, in rank order
            whole: dict[str, float] = {}  # work -> score against its whole segment
            part: dict[str, tuple[float, int]] = {}  # work -> best score against one of its regions
            for s, i in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
                seg = segs.get(int(i)) if i >= 0 else None
                if seg is None or seg.work_id in exclude:
                    continue
                best.setdefault(seg.work_id, float(s))
                if seg.ordinal == 0:
                    whole.setdefault(seg.work_id, float(s))
                else:
                    part.setdefault(seg.work_id, (float(s), seg.ordinal))
            if binary:
                for wid, dist in best.items():
                    signals[wid][key] = min(dist, signals[wid].get(key, np.inf))
                continue
            if not regional:  # CLIP: the whole output only
                for wid, cos in best.items():
                    signals[wid][key] = max(cos, signals[wid].get(key, -1.0))
                continue
            if r == 0:
                for wid, cos in best.items():
                    signals[wid][key] = cos
                    # a work's region counts as the match only if it clearly beats the whole work
                    if wid in part and part[wid][0] >= whole.get(wid, -1.0) + config.REGION_MARGIN:
                        work_region_of[wid] = _segment_box(coll, wid, part[wid][1])
            background = _background(list(best.values()))
            if background is None:
                continue
            for wid, cos in best.items():
                if r == 0:
                    whole_norm[wid] = cos - background
                elif cos - background > part_norm.get(wid, (-np.inf, 0))[0]:
                    part_norm[wid] = (cos - background, r)
    names = []
    for c in bound.of("image"):
        names.append("pdq_distance" if c.kind == "binary" else c.name)
        if c.kind == "float" and c.covers == "all":
            names.append("sscd_normalised")
    # PDQ's authors call hashes of quality < 50 (flat images) unreliable: report, don't count
    flat = query.quality is not None and query.quality < PDQ_MIN_QUALITY
    ignore = frozenset({"pdq_distance"}) if flat else frozenset()
    out = {}
    for wid, sig in signals.items():
        region, work_region = full, work_region_of.get(wid)
        norm = whole_norm.get(wid)
        if wid in part_norm:
            part_score, row = part_norm[wid]
            # a part of the output is the match only if it clearly beats the whole output
            if norm is None or part_score >= norm + config.REGION_MARGIN:
                region, work_region = query.boxes[row], None
            norm = part_score if norm is None else max(norm, part_score)
        if norm is not None:
            sig["sscd_normalised"] = norm
        values: dict[str, float | None] = {n: sig.get(n) for n in names}
        out[wid] = ImageEvidence(values, ignore, region, work_region, full.area)
    return out


def _segment_box(coll: Collection, work_id: str, ordinal: int) -> Box | None:
    if ordinal == 0:
        return None
    for seg in coll.work_segments(work_id):
        if seg.ordinal == ordinal and seg.box is not None:
            return Box(*seg.box)
    return None
