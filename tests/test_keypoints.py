"""Geometric verification (detector.keypoints) and how its inliers lift a score.

The images are scikit-image's photographs; crops, composites and JPEG re-encodings are made here.
"""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from detector import Detector, config, keypoints, scoring
from detector.results import Box
from detector.works import read_item

from .conftest import skimage_data


def _load(name: str) -> Image.Image:
    with Image.open(skimage_data() / name) as im:
        return im.convert("RGB")


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.convert("RGB")


def _thumbnail(image: Image.Image) -> Image.Image:
    """What a collection keeps of a work: at most 384 pixels a side, JPEG."""
    small = image.copy()
    small.thumbnail((384, 384))
    return _jpeg(small, 85)


def _iou(a: Box, b: Box) -> float:
    inter = Box(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    i = inter.area if inter.right > inter.left and inter.bottom > inter.top else 0
    return i / (a.area + b.area - i)


def _verify(output: Image.Image, work: Image.Image) -> keypoints.Verification:
    return keypoints.verify(keypoints.features(output), keypoints.features(_thumbnail(work)), output.size)


def test_a_blurred_crop_keeps_many_inliers_and_covers_the_output() -> None:
    coffee = _load("coffee.png")
    crop = _jpeg(coffee.crop((60, 40, 460, 320)), 20)
    found = _verify(crop, coffee)
    assert found.inliers >= 50
    assert found.region is not None and _iou(found.region, Box(0, 0, *crop.size)) >= 0.95


def test_a_composite_is_located_at_the_pasted_area() -> None:
    base = _load("hubble_deep_field.jpg").resize((1000, 800))
    base.paste(_load("astronaut.png").resize((460, 460)), (480, 260))
    composite = _jpeg(base, 20)
    found = _verify(composite, _load("astronaut.png"))
    assert found.inliers >= 30
    assert found.region is not None and _iou(found.region, Box(480, 260, 940, 720)) >= 0.9, found.region


@pytest.mark.parametrize("other", ["grass.png", "chelsea.png", "rocket.jpg", "camera.png"])
def test_unrelated_images_keep_few_inliers(other: str) -> None:
    assert _verify(_load(other), _load("coffee.png")).inliers < 15


def test_verification_is_repeatable_and_handles_featureless_images() -> None:
    coffee = _load("coffee.png")
    crop = _jpeg(coffee.crop((100, 50, 500, 350)), 30)
    assert _verify(crop, coffee) == _verify(crop, coffee)  # RANSAC is seeded
    flat = Image.new("RGB", (300, 200), (90, 90, 90))
    assert _verify(flat, coffee) == keypoints.Verification(0, None)
    assert _verify(Image.new("RGB", (1, 1)), coffee).inliers == 0


def test_inliers_lift_a_score_and_never_lower_it() -> None:
    assert scoring.verified(0.5, 0) == 0.5
    assert scoring.verified(0.9, 3) == 0.9
    assert scoring.verified(0.5, 30) == pytest.approx(0.5 * 0.5 + 0.15 * math.log1p(25))
    assert scoring.verified(0.5, 30) >= config.COPY_SCORE > scoring.verified(0.2, 30)
    assert scoring.verified(0.95, 10_000) == 0.95  # settled already: unchanged
    assert scoring.verified(0.6, 10_000) == config.KEYPOINT_MAX_SCORE  # a lift stops below settled matches
    lifts = [scoring.verified(0.4, n) for n in range(0, 200, 10)]
    assert lifts == sorted(lifts)
    signals = {"sscd_normalised": 0.25, "keypoint_inliers": 40.0}
    assert scoring.combine(signals) > scoring.combine({"sscd_normalised": 0.25})
    assert scoring.combine(signals, frozenset({"keypoint_inliers"})) == scoring.combine({"sscd_normalised": 0.25})


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    works = tmp_path_factory.mktemp("images")
    for name in ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "coins.png",
                 "page.png", "moon.png"]:
        (works / name).write_bytes((skimage_data() / name).read_bytes())
    det = Detector(tmp_path_factory.mktemp("home"))
    det.create("art", ["sscd", "pdq"])
    assert len(det.add("art", [works], show_progress_bar=False).added) == 8
    return det


def _scan(det: Detector, image: Image.Image):
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return det.scan_item("art", read_item(data=buf.getvalue(), name="output.png"))


def test_scans_verify_unsettled_matches_and_report_the_inliers(art: Detector) -> None:
    base = _load("hubble_deep_field.jpg").resize((1000, 800))
    base.paste(_load("astronaut.png").resize((400, 400)), (80, 300))  # 20 % of the area
    m = next(m for m in _scan(art, _jpeg(base, 15)).matches if m.work.title == "astronaut")
    assert m.verdict == "copy" and m.transform == "partial"
    assert m.signals.get("keypoint_inliers", 0) >= 20
    assert m.score >= scoring.combine({k: v for k, v in m.signals.items() if k != "keypoint_inliers"})
    assert _iou(m.region, Box(80, 300, 480, 700)) >= 0.8, m.region


def test_settled_matches_are_not_verified(art: Detector) -> None:
    """A scan whose strongest match is settled verifies nothing, not even a weaker match."""
    base = _load("coffee.png").resize((900, 600))
    base.paste(_load("astronaut.png").resize((300, 300)), (550, 250))
    buf = io.BytesIO()
    base.save(buf, "PNG")
    result = art.scan_item("art", read_item(data=buf.getvalue(), name="collage.png"), top=None)
    assert result.best.work.title == "coffee" and result.best.score >= config.KEYPOINT_BELOW
    # weaker matches that SSCD found but left short exist, and are not verified either
    assert any(m.score < config.KEYPOINT_BELOW and m.signals["sscd_normalised"] >= config.KEYPOINT_MIN_SSCD
               for m in result.matches)
    assert not any("keypoint_inliers" in m.signals for m in result.matches)


def test_a_crop_is_placed_in_the_work() -> None:
    coffee = _load("coffee.png")  # 600 x 400
    crop = _jpeg(coffee.crop((240, 120, 540, 360)), 25)
    part = _verify(crop, coffee).work_part
    assert part is not None
    box = Box(round(part[0] * 600), round(part[1] * 400), round(part[2] * 600), round(part[3] * 400))
    assert _iou(box, Box(240, 120, 540, 360)) >= 0.9, box


def test_a_blurred_crop_scan_names_the_part_of_the_work(art: Detector) -> None:
    coffee = _load("coffee.png")  # 600 x 400
    m = _scan(art, _jpeg(coffee.crop((200, 100, 500, 320)), 5)).best
    assert m.work.title == "coffee" and m.verdict == "copy" and m.transform == "partial"
    assert m.signals.get("keypoint_inliers", 0) >= 30  # SSCD alone leaves it unsettled at JPEG q5
    assert m.work_region is not None and _iou(m.work_region, Box(200, 100, 500, 320)) >= 0.9, m.work_region
