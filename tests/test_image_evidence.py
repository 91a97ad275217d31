"""Image evidence end to end: region descriptors, partial copies with their boxes, the transform
class, SSCD score normalisation, calibrated false-positive rates and near-duplicate groups.

The images are scikit-image's photographs; composites, crops and recoloured variants are made
from them here.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from detector.nullmodel import SCORE, NullModel
from detector import Detector, config
from detector.calibration import image_near_duplicate_groups
from detector.encoders import load_encoder
from detector.regions import query_windows, reference_windows, window_box
from detector.results import Box
from detector.works import ImageItem, read_item

from .conftest import skimage_data

WORKS = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "camera.png", "coins.png",
         "page.png", "moon.png", "horse.png", "retina.jpg"]
BACKGROUND = "hubble_deep_field.jpg"  # never added


def _load(name: str) -> Image.Image:
    with Image.open(skimage_data() / name) as im:
        return im.convert("RGB")


def _item(image: Image.Image, name: str) -> ImageItem:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return read_item(data=buf.getvalue(), name=name)


def _iou(a: Box, b: Box) -> float:
    inter = Box(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    i = inter.area if inter.right > inter.left and inter.bottom > inter.top else 0
    return i / (a.area + b.area - i)


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    works = tmp_path_factory.mktemp("images")
    for name in WORKS:
        (works / name).write_bytes((skimage_data() / name).read_bytes())
    det = Detector(tmp_path_factory.mktemp("home"))
    det.create("art", ["sscd", "pdq"])
    report = det.add("art", [works])
    assert len(report.added) == len(WORKS), report.failed
    return det


def test_pooling_the_whole_map_gives_the_models_own_descriptor() -> None:
    enc = load_encoder("sscd")
    image = _load("coffee.png")
    whole, maps = enc.encode_maps([image])
    rows, cols = maps.shape[2:]
    pooled = enc.head.pool(maps[0], [(0, 0, cols, rows), (1, 1, 4, 5)])
    assert float(pooled[0] @ whole[0]) > 0.9999
    assert float(whole[0] @ enc.encode(image)) > 0.9999
    assert np.allclose(np.linalg.norm(pooled, axis=1), 1.0, atol=1e-5)
    # a region is a different descriptor, and it describes that part of the image
    part = enc.encode(image.crop((0, 0, image.width // 2, image.height // 2)))
    left_top = enc.head.pool(maps[0], [(0, 0, cols // 2 + 1, rows // 2 + 1)])[0]
    right_bottom = enc.head.pool(maps[0], [(cols // 2, rows // 2, cols - cols // 2, rows - rows // 2)])[0]
    assert float(part @ left_top) > float(part @ right_bottom) + 0.1


def test_region_pooling_matches_gem_computed_directly() -> None:
    """`GemHead.pool` (run by ONNX Runtime) gives, for any window, what GeM pooling of those
    cells, the projection and L2 normalisation give computed here in float64."""
    enc = load_encoder("sscd")
    head = enc.head
    _, maps = enc.encode_maps([_load("chelsea.png")])
    fmap = maps[0].astype(np.float64)
    rows, cols = fmap.shape[1:]
    windows = [(0, 0, 1, 1), (2, 3, 4, 6), (cols - 3, rows - 2, 3, 2), (0, 0, cols, rows), *query_windows(rows, cols)[::37]]
    pooled = head.pool(maps[0], windows)
    assert pooled.shape == (len(windows), enc.dim) and pooled.dtype == np.float32
    for (x, y, w, h), got in zip(windows, pooled, strict=True):
        cells = np.maximum(fmap[:, y : y + h, x : x + w], head.eps) ** head.p
        vec = cells.mean(axis=(1, 2)) ** (1 / head.p) @ head.weight.T.astype(np.float64) + head.bias
        assert np.abs(got - vec / np.linalg.norm(vec)).max() < 1e-5
    assert head.pool(maps[0], []).shape == (0, enc.dim)
    with pytest.raises(ValueError, match="not inside"):
        head.pool(maps[0], [(cols - 1, 0, 2, 1)])


def test_region_layouts() -> None:
    corners = ((0, 0, 2 / 3, 2 / 3), (1 / 3, 0, 2 / 3, 2 / 3), (0, 1 / 3, 2 / 3, 2 / 3),
               (1 / 3, 1 / 3, 2 / 3, 2 / 3), (1 / 9, 1 / 9, 7 / 9, 7 / 9), (0, 0, 1, 1))
    refs = reference_windows(9, 9, corners)
    assert refs == [(0, 0, 6, 6), (3, 0, 6, 6), (0, 3, 6, 6), (3, 3, 6, 6), (1, 1, 7, 7)]  # not the whole
    assert reference_windows(9, 9) == reference_windows(9, 9, config.REFERENCE_REGIONS)
    assert len(query_windows(9, 9)) == 144  # the default sides: 4, 6 and 8 cells
    queries = query_windows(9, 9, (0.45, 0.6, 0.75, 0.9))
    assert len(queries) == len(set(queries)) == (6 + 5 + 3 + 2) ** 2
    assert all(x + w <= 9 and y + h <= 9 for x, y, w, h in queries)
    assert (0, 0, 9, 9) not in queries and (0, 0, 9, 9) not in refs
    assert window_box((0, 0, 9, 9), 9, 9, 900, 600) == Box(0, 0, 900, 600)
    assert window_box((3, 3, 3, 3), 9, 9, 900, 600) == Box(300, 200, 600, 400)


def test_index_holds_regions_and_thumbnails(art: Detector) -> None:
    coll, _ = art._collection("art")
    assert coll.check() == []
    per_work = 1 + len(config.REFERENCE_REGIONS)
    assert coll.manifest.counts["segments"] == per_work * len(WORKS)
    assert coll.manifest.channel("sscd").covers == "all" and coll.manifest.channel("pdq").covers == "whole"
    work = next(w for w in coll.works() if w.title == "coffee")
    segs = coll.work_segments(work.id)
    assert len(segs) == per_work and segs[0].box is None and all(s.box is not None for s in segs[1:])
    with Image.open(io.BytesIO(coll.thumbnail(work.id))) as thumb:
        assert thumb.format == "JPEG" and max(thumb.size) == config.THUMBNAIL_SIDE


def test_reference_regions_when_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With REFERENCE_REGIONS set, each work indexes those parts too, and an output that is one
    of them names where in the work it comes from."""
    monkeypatch.setattr(config, "REFERENCE_REGIONS", ((0, 0, 2 / 3, 2 / 3), (1 / 9, 1 / 9, 7 / 9, 7 / 9)))
    works = tmp_path / "w"
    works.mkdir()
    for name in WORKS[:6]:
        (works / name).write_bytes((skimage_data() / name).read_bytes())
    det = Detector(tmp_path / "home")
    det.create("r", ["sscd", "pdq"])
    det.add("r", [works])
    coll, _ = det._collection("r")
    assert coll.check() == [] and coll.manifest.counts["segments"] == 3 * 6
    coffee = next(w for w in coll.works() if w.title == "coffee")
    assert [s.box for s in coll.work_segments(coffee.id)] == [None, (0, 0, 400, 267), (67, 44, 533, 356)]
    crop = _load("coffee.png").crop((0, 0, 400, 267))
    m = det.scan_item("r", _item(crop, "corner.png")).best
    assert m.work.title == "coffee" and m.verdict == "copy" and m.transform == "partial"
    # the indexed corner, placed to the pixel or so by local features
    assert _iou(m.work_region, Box(0, 0, 400, 267)) >= 0.97


def _iou(a: Box, b: Box) -> float:
    inter = Box(max(a.left, b.left), max(a.top, b.top), min(a.right, b.right), min(a.bottom, b.bottom))
    both = inter.area if inter.right > inter.left and inter.bottom > inter.top else 0
    return both / (a.area + b.area - both)


def test_composite_is_found_with_its_region(art: Detector) -> None:
    base = _load(BACKGROUND).resize((1000, 800))
    astronaut = _load("astronaut.png").resize((520, 520))  # 34 % of the composite
    paste = Box(420, 180, 940, 700)
    base.paste(astronaut, (paste.left, paste.top))
    result = art.scan_item("art", _item(base, "composite.png"))
    m = next(m for m in result.matches if m.work.title == "astronaut")
    assert m.verdict == "copy" and m.transform == "partial"
    assert m.signals["sscd_normalised"] > m.signals["sscd"]  # the whole composite scores low
    # located to SSCD's grid (1/9 of each side): the box sits on the pasted work
    centre = ((m.region.left + m.region.right) / 2, (m.region.top + m.region.bottom) / 2)
    assert paste.left < centre[0] < paste.right and paste.top < centre[1] < paste.bottom, m.region
    assert _iou(m.region, paste) >= 0.4, m.region
    assert m.fpr is not None and m.fpr < 0.1
    assert result.calibration is not None and result.calibration.modality == "image"


def test_crop_of_a_work_is_partial(art: Detector) -> None:
    coffee = _load("coffee.png")
    crop = coffee.crop((0, 0, 420, 280))  # 49 % of the area, a corner
    m = art.scan_item("art", _item(crop, "crop.png")).best
    assert m is not None and m.work.title == "coffee"
    assert m.verdict == "copy" and m.transform == "partial"
    # placed by local features, in the work's pixels
    assert m.work_region is not None and m.region == Box(0, 0, 420, 280)
    assert _iou(m.work_region, Box(0, 0, 420, 280)) >= 0.9, m.work_region


def test_crop_located_by_sscd_alone_to_its_grid(art: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "LOCATE_KEYPOINTS", False)
    m = art.scan_item("art", _item(_load("coffee.png").crop((0, 0, 420, 280)), "crop.png")).best
    # found in the work's thumbnail, to SSCD's grid: the top-left part
    assert m.work_region is not None and m.region == Box(0, 0, 420, 280)
    assert m.work_region.left < 70 and m.work_region.top < 50 and _iou(m.work_region, Box(0, 0, 420, 280)) >= 0.5


def test_output_showing_nearly_all_of_a_work_is_not_located(art: Detector, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without local features to place it: at a raw SSCD cosine of LOCATE_MAX_SSCD or more the
    work's thumbnail is not encoded."""
    monkeypatch.setattr(config, "LOCATE_KEYPOINTS", False)
    crop = _item(_load("coffee.png").crop((0, 0, 420, 280)), "crop.png")
    sscd = art.scan_item("art", crop).best.signals["sscd"]
    monkeypatch.setattr(config, "LOCATE_MAX_SSCD", sscd - 0.01)
    m = art.scan_item("art", crop).best
    assert m.work.title == "coffee" and m.work_region is None and m.transform == "edited"


def test_plain_edits_are_near_exact_or_edited(art: Detector) -> None:
    rocket = _load("rocket.jpg")
    flipped = art.scan_item("art", _item(ImageOps.mirror(rocket), "flip.png")).best
    assert flipped.work.title == "rocket" and flipped.transform == "near-exact"
    assert flipped.region == Box(0, 0, rocket.width, rocket.height) and flipped.work_region is None
    tilted = art.scan_item("art", _item(ImageOps.grayscale(rocket.rotate(12)).convert("RGB"), "tilt.png")).best
    assert tilted.work.title == "rocket" and tilted.verdict == "copy" and tilted.transform == "edited"


def test_unrelated_image_is_unrelated_with_a_high_fpr(art: Detector) -> None:
    result = art.scan_item("art", _item(_load("grass.png"), "grass.png"))
    assert result.verdict == "unrelated"
    assert result.best is None or (result.best.transform is None and result.best.fpr is not None
                                   and result.best.fpr > 0.05)


def test_scan_json_for_images(art: Detector) -> None:
    out = json.loads(json.dumps(art.scan_item("art", _item(_load("coins.png"), "coins.png")).to_dict()))
    first = out["matches"][0]
    assert set(first["signals"]) == {"sscd", "sscd_normalised", "sscd_background", "pdq_distance"}
    assert -1.0 <= first["signals"]["sscd_background"] < first["signals"]["sscd"]  # what normalising subtracted
    assert first["region"] == {"left": 0, "top": 0, "right": 384, "bottom": 303}
    assert first["transform"] == "near-exact" and first["work_region"] is None
    assert out["calibration"]["modality"] == "image" and out["calibration"]["queries"] > 0


def test_near_duplicates_are_grouped_and_left_out_together(tmp_path: Path) -> None:
    works = tmp_path / "w"
    works.mkdir()
    coffee = _load("coffee.png")
    coffee.save(works / "coffee.png")
    # a recoloured variant of the same picture, and unrelated photographs
    hsv = np.asarray(coffee.convert("HSV")).copy()
    hsv[..., 0] += 80  # hue turned by ~110 degrees (uint8 wraps around)
    ImageEnhance.Contrast(Image.fromarray(hsv, "HSV").convert("RGB")).enhance(1.3).save(works / "coffee-recoloured.png")
    for name in ["astronaut.png", "rocket.jpg", "camera.png"]:
        _load(name).save(works / f"{Path(name).stem}.png")
    det = Detector(tmp_path / "home")
    det.create("v", ["sscd", "pdq"])
    det.add("v", [works])
    coll, _ = det._collection("v")
    ids = {w.title: w.id for w in coll.works()}
    groups = image_near_duplicate_groups(coll, list(ids.values()), "sscd")
    assert groups[ids["coffee"]] == frozenset({ids["coffee"], ids["coffee-recoloured"]})
    assert groups[ids["astronaut"]] == frozenset({ids["astronaut"]})
    # the variants do not count as unrelated to each other: no calibration output scores as a copy
    [cal] = det.calibrate("v")
    coll, _ = det._collection("v")  # a snapshot taken after the calibration was stored
    null = NullModel.from_dict(coll.calibration("image")[1])
    assert cal.modality == "image" and null is not None and null.n == cal.queries
    assert max(null.rows[:, null.columns.index(SCORE)]) < config.COPY_SCORE


def test_collection_without_sscd_still_scans(tmp_path: Path) -> None:
    det = Detector(tmp_path)
    det.create("p", ["pdq"])
    works = tmp_path / "w"
    works.mkdir()
    for name in WORKS[:4]:
        (works / name).write_bytes((skimage_data() / name).read_bytes())
    det.add("p", [works])
    m = det.scan_item("p", _item(ImageOps.mirror(_load("coffee.png")), "f.png")).best
    assert m.work.title == "coffee" and m.verdict == "copy" and m.transform == "near-exact"
    assert set(m.signals) == {"pdq_distance"}


def test_removing_a_work_removes_its_regions_and_thumbnail(tmp_path: Path) -> None:
    det = Detector(tmp_path)
    det.create("r", ["sscd", "pdq"])
    works = tmp_path / "w"
    works.mkdir()
    for name in WORKS[:3]:
        (works / name).write_bytes((skimage_data() / name).read_bytes())
    det.add("r", [works])
    coffee = next(w for w in det.works("r") if w.title == "coffee")
    det.remove("r", coffee.id)
    coll, _ = det._collection("r")
    assert coll.check() == [] and coll.thumbnail(coffee.id) is None
    assert coll.manifest.counts["segments"] == 2 * (1 + len(config.REFERENCE_REGIONS))
    best = det.scan_item("r", _item(_load("coffee.png"), "c.png")).best
    assert best is None or best.work.id != coffee.id


@pytest.mark.parametrize("mode", ["animated", "cmyk", "16bit", "alpha", "tiny-ok"])
def test_awkward_outputs_scan(art: Detector, mode: str) -> None:
    """Outputs in awkward formats give a result; see test_works for the ones that are refused."""
    coffee = _load("coffee.png")
    buf = io.BytesIO()
    if mode == "animated":
        frames = [coffee.convert("P"), ImageOps.invert(coffee).convert("P")]
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100)
    elif mode == "cmyk":
        coffee.convert("CMYK").save(buf, "JPEG", quality=90)
    elif mode == "16bit":
        Image.fromarray(np.asarray(coffee.convert("L")).astype(np.uint16) * 257).save(buf, "PNG")
    elif mode == "alpha":
        rgba = coffee.convert("RGBA")
        rgba.putalpha(200)
        rgba.save(buf, "PNG")
    else:
        coffee.resize((8, 8)).save(buf, "PNG")
    item = read_item(data=buf.getvalue(), name=f"out-{mode}")
    result = art.scan_item("art", item)
    if mode == "tiny-ok":
        assert result.verdict in ("copy", "similar", "unrelated")  # an 8 x 8 thumbnail: no crash
    else:
        assert result.best is not None and result.best.work.title == "coffee" and result.verdict == "copy"
