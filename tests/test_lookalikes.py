"""Secondary look-alikes are not copies: an output that copies one work also resembles the
works that look like it (same template, style or theme); those matches are "similar", with a
reason, while a composite of two works keeps both copies."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageOps

from detector import Detector, config
from tests.conftest import skimage_data

NAMES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "hubble_deep_field.jpg", "motorcycle_left.png"]


@pytest.fixture(scope="module")
def art(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, Path]:
    root = tmp_path_factory.mktemp("lookalikes")
    works = root / "works"
    works.mkdir()
    ims = {n.split(".")[0]: Image.open(skimage_data() / n).convert("RGB").resize((400, 300)) for n in NAMES}
    for name, im in ims.items():
        im.save(works / f"{name}.png")
    # a work made on the same template as the astronaut: three quarters of it are the same picture
    same_template = ims["astronaut"].copy()
    same_template.paste(ims["coffee"].crop((0, 0, 200, 150)), (200, 150))
    ImageOps.autocontrast(same_template).save(works / "template.png")
    ims["astronaut"].crop((20, 10, 380, 290)).save(root / "copy.jpg", quality=70)
    both = Image.new("RGB", (800, 300))
    both.paste(ims["astronaut"], (0, 0))
    both.paste(ims["rocket"], (400, 0))
    both.save(root / "composite.png")
    det = Detector(root / "home", background=None)
    det.create("c", ["sscd", "pdq"])
    det.add("c", [works])
    return det, root


def _by_title(det: Detector, path: Path) -> dict:
    return {m.work.title: m for m in det.scan("c", [path])[0].matches}


def test_a_look_alike_of_the_copied_work_is_similar_with_the_reason(art, monkeypatch: pytest.MonkeyPatch) -> None:
    det, root = art
    monkeypatch.setattr(config, "LOOKALIKE_MARGIN", -1.0)  # the rule off: what the signals alone say
    before = _by_title(det, root / "copy.jpg")
    assert before["astronaut"].verdict == "copy" and before["template"].verdict == "copy"
    monkeypatch.undo()
    after = _by_title(det, root / "copy.jpg")
    assert after["astronaut"].verdict == "copy"
    assert after["template"].verdict == "similar"
    assert after["template"].reason.startswith("looks like astronaut, which this output copies")
    assert "a look-alike, not a second copy" in after["template"].reason


def test_a_composite_keeps_a_copy_of_each_work_and_drops_the_look_alike(art) -> None:
    det, root = art
    found = _by_title(det, root / "composite.png")
    assert found["astronaut"].verdict == "copy" and found["rocket"].verdict == "copy"
    assert found["template"].verdict != "copy"
