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

Limits: the calibration outputs are in the collection's own style and vocabulary, which is a
hard case (an AI output on another topic scores lower still); with few works the estimate is
coarse, and with fewer than two unrelated works there is none (fpr is then None).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from detector import config
from detector.results import Calibration
from detector.works import word_spans
from indexes import Collection

log = logging.getLogger(__name__)

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
        at_least = n - int(np.searchsorted(np.asarray(self.scores), score - 1e-9, side="left"))
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
