"""Geometric verification: do the output and a work share many local features in one geometry?

SSCD compares global descriptors. A heavily cropped or pasted copy that JPEG has blurred can
score low with it while look-alike images (two screenshots of one game's interface) score
high. Local features settle such cases as copy detection has long done: ORB keypoints of the
output and of the work's stored thumbnail are matched (Hamming distance, Lowe's ratio test)
and a similarity transform (scale, rotation, shift) is fitted with RANSAC; the number of
matches that agree with it, the *inliers*, is the signal ``keypoint_inliers``. Unrelated
images rarely agree in more than a handful of points; a crop, a resize, a small rotation or
a paste of the work keeps dozens. How the count lifts a match's score is in
`detector.scoring.verified`.

Both images are scaled so that their longer side is `config.KEYPOINT_SIDE` pixels (smaller
images scaled up: ORB finds few points in a 300-pixel screenshot otherwise) and converted to
grey. Mirrored copies are not verified (ORB is not mirror-invariant); SSCD finds those.

Uses OpenCV (``opencv-python-headless``).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector import config
from detector.memo import Recent
from detector.results import Box


@dataclass(frozen=True)
class Features:
    """ORB keypoints of one image: positions (N, 2) and descriptors (N, 32) uint8, found in the
    image scaled by *scale* (positions are in those scaled pixels)."""

    points: np.ndarray
    descriptors: np.ndarray | None
    scale: float
    #: (width, height) of the scaled image
    size: tuple[int, int]

    def __len__(self) -> int:
        return 0 if self.descriptors is None else len(self.descriptors)


@dataclass(frozen=True)
class Verification:
    """The geometric agreement of an output with a work."""

    #: Matches consistent with one similarity transform (0 when none could be fitted).
    inliers: int
    #: Where the work lies in the output under the fitted transform (its outline mapped into the
    #: output and clipped to it), in output pixels; None if fewer than 4 inliers.
    region: Box | None
    #: Where the output lies in the work (its outline mapped into the work and clipped to it),
    #: as fractions (left, top, right, bottom) of the work's width and height; None as above.
    work_part: tuple[float, float, float, float] | None = None


def features(image: Image.Image) -> Features:
    """ORB keypoints of *image* (any mode), found with its longer side at `config.KEYPOINT_SIDE`."""
    import cv2

    grey = image.convert("L")
    scale = config.KEYPOINT_SIDE / max(grey.size)
    size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
    pixels = np.asarray(grey.resize(size, Image.Resampling.BILINEAR))
    orb = cv2.ORB_create(nfeatures=config.KEYPOINT_FEATURES)
    keypoints, descriptors = orb.detectAndCompute(pixels, None)
    points = np.asarray([kp.pt for kp in keypoints], dtype=np.float32).reshape(-1, 2)
    return Features(points, descriptors, scale, size)


def verify(output: Features, work: Features, output_size: tuple[int, int]) -> Verification:
    """How many of *output*'s keypoints match *work*'s under one similarity transform."""
    import cv2

    if len(output) < 4 or len(work) < 4:
        return Verification(0, None)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(output.descriptors, work.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < config.KEYPOINT_RATIO * p[1].distance]
    if len(good) < 4:
        return Verification(0, None)
    mine = output.points[[m.queryIdx for m in good]]
    theirs = work.points[[m.trainIdx for m in good]]
    cv2.setRNGSeed(0)  # RANSAC samples at random: the same inputs give the same count
    transform, mask = cv2.estimateAffinePartial2D(mine, theirs, method=cv2.RANSAC,
                                                  ransacReprojThreshold=config.KEYPOINT_RANSAC_PIXELS)
    if transform is None or mask is None:
        return Verification(0, None)
    keep = mask.ravel().astype(bool)
    count = int(keep.sum())
    if count < 4:
        return Verification(count, None)
    # the work's outline, mapped from the work into the output (the fit maps output -> work)
    back = cv2.invertAffineTransform(transform)
    lo, hi = _mapped_box(back, work.size)
    lo, hi = lo / output.scale, hi / output.scale
    width, height = output_size
    region = Box(max(0, int(lo[0])), max(0, int(lo[1])), min(width, int(np.ceil(hi[0]))),
                 min(height, int(np.ceil(hi[1]))))
    # and the output's outline mapped into the work
    lo, hi = _mapped_box(transform, output.size)
    w, h = work.size
    part = (max(0.0, lo[0] / w), max(0.0, lo[1] / h), min(1.0, hi[0] / w), min(1.0, hi[1] / h))
    return Verification(count, region if region.area > 0 else None,
                        part if part[2] > part[0] and part[3] > part[1] else None)


def _mapped_box(affine: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The box around the rectangle (0, 0)-*size* mapped by the 2 x 3 *affine* transform."""
    w, h = size
    corners = np.asarray([[0, 0], [w, 0], [0, h], [w, h]], dtype=np.float64)
    mapped = corners @ affine[:, :2].T + affine[:, 2]
    return mapped.min(axis=0), mapped.max(axis=0)


_WORK_FEATURES: Recent[tuple[str, str], Features | None] = Recent(lambda: config.KEYPOINT_CACHE)


def work_features(collection_path: str, work_id: str, thumbnail: Callable[[], bytes | None]) -> Features | None:
    """Features of a work's thumbnail (read with *thumbnail* only when not kept), the last
    `config.KEYPOINT_CACHE` kept; None for a work without one."""
    def find() -> Features | None:
        data = thumbnail()
        if data is None:
            return None
        with Image.open(io.BytesIO(data)) as im:
            return features(im)

    return _WORK_FEATURES.get((collection_path, work_id), find)
