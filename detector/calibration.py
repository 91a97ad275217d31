"""Per-collection false-positive rates, learnt from how the collection's own works score.

A score means little without its error rate, and the rate depends on the collection: plays
by one author share more words with each other than with a chemistry manual. So each
collection calibrates itself: it makes outputs from its own works (for text, windows of
`config.CALIBRATION_TEXT_WORDS` words at random places), scans each one with its source work
*left out*, and keeps the top score of each. Those outputs copy nothing that is left in the
collection, so their scores are what an unrelated output scores here. A match's `fpr` is the
share of them that score at least as high, estimated as ``(k + 1) / (n + 1)`` so that it is
never zero on a finite sample (an upper-leaning estimate; `n` is reported with it).

Near-duplicates (two editions of one text, a work added twice under different bytes) would
make each other's calibration outputs look like copies; works that share at least
`config.NEAR_DUPLICATE_SHARE` of their n-gram keys are treated as one work and left out
together.

For images the outputs are the works' stored thumbnails, as they are, cropped (to 40-65 % of
their area) and pasted over another work (as 30-60 % of a composite): the output shapes that
region search looks for. Near-duplicate images (recoloured variants of one drawing, a crop of
another work) are works whose SSCD descriptors, whole or regional, reach the copy threshold;
each group is sampled as one work and left out together.

Limits: the calibration outputs are in the collection's own style and vocabulary, which is a
hard case (an AI output on another topic scores lower still); with few works the estimate is
coarse, and with fewer than two unrelated works there is none (fpr is then None).
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector import config
from detector.results import Calibration
from detector.works import word_spans
from indexes import Collection

log = logging.getLogger(__name__)

IMAGE_METHOD = ("the collection's images as they are, cropped to 40-65% and pasted into another as 30-60%, "
                "source works and near-duplicates left out")
TEXT_METHOD = "windows of {lengths} words from the collection's texts, source work and near-duplicates left out"


@dataclass(frozen=True)
class NullScores:
    """The top scores of a collection's calibration outputs, and where they came from."""

    info: Calibration
    #: ascending
    scores: tuple[float, ...]

    def fpr(self, score: float) -> float:
        """Estimated share of unrelated outputs whose top match scores at least *score*."""
        n = len(self.scores)
        # scores are stored to 6 decimals: compare at that precision
        at_least = n - int(np.searchsorted(np.asarray(self.scores), round(score, 6) - 1e-9, side="left"))
        return (at_least + 1) / (n + 1)

    def to_dict(self) -> dict:
        return {"info": self.info.to_dict(), "scores": [round(s, 6) for s in self.scores]}

    @classmethod
    def from_dict(cls, body: dict) -> NullScores:
        return cls(Calibration(**body["info"]), tuple(float(s) for s in body["scores"]))


def is_stale(null: NullScores, works_now: int, generation: int) -> bool:
    """Whether a calibration made at another generation should be redone."""
    if null.info.generation == generation:
        return False
    then = null.info.works
    if then < 20:
        return works_now != then
    return abs(works_now - then) > config.CALIBRATION_STALE_SHARE * then


def near_duplicate_groups(coll: Collection, work_ids: list[str], channel: str = "shingles") -> dict[str, frozenset[str]]:
    """For each work, the works (itself included) that share at least
    `config.NEAR_DUPLICATE_SHARE` of either one's n-gram keys with it."""
    keys_of = {w: coll.work_keys(w, channel) for w in work_ids}
    sizes = {w: len(k) for w, k in keys_of.items()}
    groups: dict[str, set[str]] = {w: {w} for w in work_ids}
    for w in work_ids:
        keys = keys_of[w]
        if len(keys) == 0:
            continue
        shared: dict[str, set[int]] = {}
        for key, other, _pos in coll.lookup_postings(channel, keys):
            if other != w:
                shared.setdefault(other, set()).add(key)
        for other, ks in shared.items():
            size = min(sizes[w], sizes.get(other) or len(coll.work_keys(other, channel)))
            if size and len(ks) >= config.NEAR_DUPLICATE_SHARE * size:
                groups[w].add(other)
                groups.setdefault(other, {other}).add(w)
    return {w: frozenset(g) for w, g in groups.items()}


def calibrate_text(
    coll: Collection,
    top_scores: Callable[[list[tuple[str, frozenset[str]]]], list[float]],
) -> NullScores | None:
    """Null scores for text outputs; *top_scores([(text, exclude), ...])* scans each output with
    the works in *exclude* left out and returns its top match score. None if too few works."""
    works = coll.works("text")
    if len(works) < 2:
        return None
    rng = np.random.default_rng(coll.generation)
    ids = [w.id for w in works]
    if len(ids) > config.CALIBRATION_MAX_WORKS:
        ids = sorted(rng.choice(ids, config.CALIBRATION_MAX_WORKS, replace=False).tolist())
    has_keys = any(c.name == "shingles" for c in coll.manifest.channels)
    groups = near_duplicate_groups(coll, ids) if has_keys else {w: frozenset({w}) for w in ids}
    if all(len(groups[w]) >= len(works) for w in ids):
        return None  # every work is a near-duplicate of every other: nothing unrelated to learn from
    per_work = max(1, min(config.CALIBRATION_PER_WORK, math.ceil(config.CALIBRATION_QUERIES / len(ids))))
    lengths = config.CALIBRATION_TEXT_WORDS
    outputs: list[tuple[str, frozenset[str]]] = []
    for wid in ids:
        body = coll.text(wid) or ""
        spans = word_spans(body)
        for k in range(per_work if spans else 0):
            n = min(lengths[k % len(lengths)], len(spans))
            start = int(rng.integers(0, len(spans) - n + 1))
            outputs.append((body[spans[start][0] : spans[start + n - 1][1]], groups[wid]))
    log.info("calibrating %s: %d outputs from %d text works", coll.name, len(outputs), len(ids))
    scores = [float(s) for s in top_scores(outputs)]
    info = Calibration(
        modality="text",
        generation=coll.generation,
        queries=len(scores),
        works=len(works),
        method=TEXT_METHOD.format(lengths="/".join(map(str, lengths))),
    )
    return NullScores(info, tuple(sorted(scores)))


def image_near_duplicate_groups(coll: Collection, work_ids: list[str], channel: str) -> dict[str, frozenset[str]]:
    """For each work, the works (itself included) whose descriptor in *channel*, whole or of a
    region, is within the copy threshold of its whole descriptor (SSCD cosine, or PDQ distance
    for a PDQ channel)."""
    spec = coll.manifest.channel(channel)
    binary = spec.kind == "binary"
    copy = config.SIGNAL_THRESHOLDS["pdq_distance" if binary else "sscd"][2]
    whole = {w: coll.work_segments(w)[0].id for w in work_ids}
    vectors = coll.vectors(channel, list(whole.values()))
    scores, ids = coll.search(channel, vectors, config.IMAGE_SEARCH_K)
    segs = coll.segments(np.unique(ids[ids >= 0]).tolist())
    groups: dict[str, set[str]] = {w: {w} for w in work_ids}
    for w, row_scores, row_ids in zip(work_ids, scores, ids, strict=True):
        for s, i in zip(row_scores.tolist(), row_ids.tolist(), strict=True):
            seg = segs.get(int(i)) if i >= 0 else None
            if seg is not None and (s <= copy if binary else s >= copy):
                groups[w].add(seg.work_id)
                groups.setdefault(seg.work_id, {seg.work_id}).add(w)
    return {w: frozenset(g) for w, g in groups.items()}


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    area = rng.uniform(0.40, 0.65)
    aspect = rng.uniform(0.75, 1.33)
    w = max(8, min(image.width, round(image.width * math.sqrt(area * aspect))))
    h = max(8, min(image.height, round(image.height * math.sqrt(area / aspect))))
    x = int(rng.integers(0, image.width - w + 1))
    y = int(rng.integers(0, image.height - h + 1))
    return image.crop((x, y, x + w, y + h))


def _composite(part: Image.Image, base: Image.Image, rng: np.random.Generator) -> Image.Image:
    area = rng.uniform(0.30, 0.60)
    scale = math.sqrt(area * base.width * base.height / (part.width * part.height))
    w = max(8, min(base.width, round(part.width * scale)))
    h = max(8, min(base.height, round(part.height * scale)))
    out = base.copy()
    out.paste(part.resize((w, h), Image.Resampling.BICUBIC),
              (int(rng.integers(0, base.width - w + 1)), int(rng.integers(0, base.height - h + 1))))
    return out


def calibrate_image(
    coll: Collection,
    channel: str,
    top_scores: Callable[[list[tuple[Image.Image, frozenset[str]]]], list[float]],
) -> NullScores | None:
    """Null scores for image outputs, from the works' thumbnails; *channel* (SSCD, or PDQ)
    decides near-duplicates; *top_scores([(image, exclude), ...])* scans each output with the
    works in *exclude* left out and returns its top match score. None if too few works."""
    works = coll.works("image")
    if len(works) < 2:
        return None
    rng = np.random.default_rng(coll.generation)
    order = [works[i].id for i in rng.permutation(len(works))]
    picked: list[str] = []
    covered: set[str] = set()
    groups: dict[str, frozenset[str]] = {}
    for start in range(0, len(order), 256):  # find groups lazily: a big collection needs only a sample
        part = [w for w in order[start : start + 256] if w not in covered]
        if not part:
            continue
        found = image_near_duplicate_groups(coll, part, channel)
        for w in part:
            if w in covered:
                continue
            groups[w] = found[w]
            covered |= found[w]
            picked.append(w)
        if len(picked) >= config.CALIBRATION_MAX_WORKS:
            break
    picked = picked[: config.CALIBRATION_MAX_WORKS]
    if len(picked) < 2:
        return None  # every work is a near-duplicate of every other: nothing unrelated to learn from
    images: dict[str, Image.Image] = {}
    for w in picked:
        data = coll.thumbnail(w)
        if data is not None:
            with Image.open(io.BytesIO(data)) as im:
                images[w] = im.convert("RGB")
    picked = [w for w in picked if w in images]
    if len(picked) < 2:
        return None
    per_work = max(1, min(3, math.ceil(config.CALIBRATION_QUERIES / len(picked))))
    outputs: list[tuple[Image.Image, frozenset[str]]] = []
    for n, w in enumerate(picked):
        image = images[w]
        outputs.append((image, groups[w]))
        if per_work >= 2:
            outputs.append((_crop(image, rng), groups[w]))
        if per_work >= 3:
            other = picked[(n + 1 + int(rng.integers(0, len(picked) - 1))) % len(picked)]
            outputs.append((_composite(image, images[other], rng), groups[w] | groups[other]))
    outputs = outputs[: config.CALIBRATION_QUERIES]
    log.info("calibrating %s: %d outputs from %d image works", coll.name, len(outputs), len(picked))
    scores = [float(s) for s in top_scores(outputs)]
    info = Calibration(modality="image", generation=coll.generation, queries=len(scores), works=len(works),
                       method=IMAGE_METHOD)
    return NullScores(info, tuple(sorted(scores)))
