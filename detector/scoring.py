"""From raw signals to one descriptive prior score in 0..1 (verdicts: `detector.nullmodel`).

Each signal (SSCD cosine, raw and normalised; PDQ distance; MiniLM cosine; copied and aligned
words; CLIP cosine) is mapped piecewise-linearly onto evidence in 0..1 through four raw cut
points from `config.SIGNAL_THRESHOLDS`: *floor* -> 0, *similar* -> `SIMILAR_SCORE`, *copy* ->
`COPY_SCORE`, *ceiling* -> 1. A match's score is its strongest signal's evidence, so a score
of `COPY_SCORE` or more means at least one signal crossed its copy threshold.

What the thresholds mean, and their limits:

- sscd_normalised >= 0.32: the best, over the output and its 144 regions, of the SSCD cosine
  with the work minus that region's cosine with its 5th most similar work (the SSCD paper's
  score normalisation, the collection as background set); "similar" at 0.22. Measured with
  scripts/bench_image.py (300 works, mostly game screenshots and wallpapers): 0.8 % of 500
  unrelated outputs reached 0.32, and 98 % of 600 edited copies over 15 kinds of edit.
- sscd >= 0.60 (the whole output's raw cosine) counts only where there is no normalised score
  (collections of fewer than 3 images): SSCD's paper puts the copy threshold for
  `sscd_disc_mixup` near cosine 0.6-0.75 on DISC21, but raw cosines of look-alike screenshots
  reach 0.68, and composites fall far below it. It is always reported.
- pdq_distance <= 31 of 256 bits: the threshold Meta publishes for PDQ; PDQ is blind to crops
  and rotations and unreliable on flat images (quality < 50), whose distance is then ignored.
- copied_words >= 16: one aligned stretch of 16 output words matched in order to the work,
  verbatim or near-verbatim (at least 60 % of its words equal), after discounting phrases that
  3 or more works share; 8 words is "similar". Unrelated texts by one author align in stretches
  of up to ~8 words against a whole play (measured: 300-word windows of Coriolanus against Hamlet).
- copied_total_words >= 32: all the output's verbatim and near-verbatim words over every aligned
  stretch (common text discounted); reordered sentences copy many words but no long stretch.
- aligned_words >= 12 ("similar"; capped below copy): the same with reworded stretches counted,
  where only function words and a few content words survive in order (synonym swaps). Chaining
  across holes of up to 10 words lets unrelated passages of one author reach ~11 by chance
  (measured on held-out plays), hence the floor of 8 and "similar" just above that, at 12.
- minilm >= 0.75 marks paraphrase-level similarity ("similar"), >= 0.97 near-verbatim text.
  Windows that are mostly common (discounted) text do not count.
- clip: same subject or style; capped below `COPY_SCORE`, so it never makes a copy verdict alone.
- keypoint_inliers (images, `detector.keypoints`): local features of the output and the work that
  agree with one similarity transform. It is not scored on its own; it lifts the score of a match
  the other signals already found (`verified`): a crop or paste that JPEG has blurred keeps
  dozens of such points, an unrelated image a handful.
- coverage and longest_run_words are reported, not scored: a short output can be fully covered
  by a stock phrase, which copied_words already weighs by length.

The cut points no longer set the verdicts: they make the prior score, one more signal that each
collection calibrates. Verdicts come from the collection's null (`detector.nullmodel`): each
signal's tail probability among unrelated outputs, fused by their minimum, stated as a
false-positive rate with its sample size and upper bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from detector import config, signals

#: Signals whose evidence may never reach a copy verdict on their own, and the score they stop at.
NEVER_COPY = frozenset(s.name for s in signals.calibrated() if s.kind != "copy")
RESEMBLANCE_CAP = config.COPY_SCORE - 0.01


def evidence(signal: str, value: float | None) -> float:
    """Evidence of copying in 0..1 that one raw signal value carries (its prior map);
    `signals.UnknownSignal` for a name no declaration knows; 0 for unscored signals."""
    prior = signals.get(signal).prior
    if prior is None or value is None or (isinstance(value, float) and math.isnan(value)):
        return 0.0
    floor, similar, copy, ceiling = prior
    if floor > ceiling:  # a distance: smaller is stronger
        floor, similar, copy, ceiling, value = -floor, -similar, -copy, -ceiling, -value
    # piecewise-linear through (floor, 0), (similar, SIMILAR_SCORE), (copy, COPY_SCORE), (ceiling, 1)
    if value <= floor:
        out = 0.0
    elif value >= ceiling:
        out = 1.0
    elif value <= similar:
        out = _between(value, floor, similar, 0.0, config.SIMILAR_SCORE)
    elif value <= copy:
        out = _between(value, similar, copy, config.SIMILAR_SCORE, config.COPY_SCORE)
    else:
        out = _between(value, copy, ceiling, config.COPY_SCORE, 1.0)
    if signal in NEVER_COPY:
        out = min(out, RESEMBLANCE_CAP)
    return out


def _between(value: float, x0: float, x1: float, y0: float, y1: float) -> float:
    return y0 + (y1 - y0) * (value - x0) / (x1 - x0) if x1 > x0 else y1


def combine(values: Mapping[str, float | None], ignore: frozenset[str] = frozenset()) -> float:
    """The prior match score: the strongest evidence among the signal *values* (minus those in
    *ignore*), lifted by geometric verification where they include ``keypoint_inliers``. Every
    name must be declared (`detector.signals`): an unknown one raises `UnknownSignal`."""
    known = [evidence(k, v) for k, v in values.items() if k not in ignore]
    score = max(known, default=0.0)
    inliers = values.get("keypoint_inliers")
    if inliers is not None and "keypoint_inliers" not in ignore:
        score = verified(score, inliers)
    return score


def verified(score: float, inliers: float) -> float:
    """*score* lifted by *inliers* keypoint matches that agree in one geometry: `KEYPOINT_WEIGHT`
    x score + `KEYPOINT_GAIN` x ln(1 + inliers beyond `KEYPOINT_FREE`), at most
    `KEYPOINT_MAX_SCORE`, never lowered. The log makes each further inlier count less; the
    weight makes a lift to a copy need both some SSCD agreement and many points (0.5 and 30
    inliers: 0.74; 0.2 and 30: 0.59; 0 needs ~110). The cap keeps a verified match below the
    matches the other signals settle on their own: a near-duplicate of the copied work, also
    verified, does not tie with it."""
    lifted = config.KEYPOINT_WEIGHT * score + config.KEYPOINT_GAIN * math.log1p(max(0.0, inliers - config.KEYPOINT_FREE))
    return max(score, min(config.KEYPOINT_MAX_SCORE, lifted))
