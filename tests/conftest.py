"""Shared test data: real works that installed packages ship, never works written for tests.

Images are the photographs bundled with scikit-image (a test dependency); texts are the module
docstrings of Python's standard library. Collections live in temporary folders.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageOps

#: Tests learn small nulls, stated at proportionally coarser levels: the same rules (a level
#: needs about 3 / level null outputs) at a size a test can afford. The defaults (3,000 outputs,
#: 0.1 % and 1 %) are measured by scripts/bench_verdicts_text.py and
#: scripts/bench_verdicts_image.py, not here.
TEST_QUERIES = 80
TEST_COPY_LEVEL = 0.05
TEST_SIMILAR_LEVEL = 0.15


def pytest_configure(config: pytest.Config) -> None:
    import os

    from detector import config as f4

    # services the tests start in subprocesses read the same from the environment
    os.environ["FACTOR4_CALIBRATION_QUERIES"] = str(TEST_QUERIES)
    os.environ["FACTOR4_COPY_LEVEL"] = str(TEST_COPY_LEVEL)
    os.environ["FACTOR4_SIMILAR_LEVEL"] = str(TEST_SIMILAR_LEVEL)
    # each test's home has no background corpus unless the test builds one there
    os.environ.pop("FACTOR4_BACKGROUND", None)
    os.environ["FACTOR4_BACKGROUND_FETCH"] = "0"  # no fetch from Debian at first use: no network in tests

    f4.CALIBRATION_QUERIES = TEST_QUERIES
    f4.COPY_LEVEL = TEST_COPY_LEVEL
    f4.SIMILAR_LEVEL = TEST_SIMILAR_LEVEL


REF_IMAGES = ["astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg"]
OTHER_IMAGES = ["hubble_deep_field.jpg", "motorcycle_left.png"]
REF_TEXT_MODULES = ["argparse", "csv", "json", "re", "unittest"]
OTHER_TEXT_MODULES = ["heapq", "sched"]


def skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image (a test dependency: pip install -e '.[test]') ships the test photographs")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def module_doc(name: str) -> str:
    return inspect.getdoc(importlib.import_module(name)) or ""


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    """Four of scikit-image's photographs, decoded to RGB."""
    data = skimage_data()
    return {
        name: Image.open(data / f"{name}.{ext}").convert("RGB")
        for name, ext in [("astronaut", "png"), ("coffee", "png"), ("chelsea", "png"), ("rocket", "jpg")]
    }


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Reference works in `works/`, plus files that are not in the collection in `other/`."""
    root = tmp_path_factory.mktemp("corpus")
    works, other = root / "works", root / "other"
    works.mkdir()
    other.mkdir()
    data = skimage_data()
    for name in REF_IMAGES:
        (works / name).write_bytes((data / name).read_bytes())
    for name in OTHER_IMAGES:
        (other / name).write_bytes((data / name).read_bytes())
    for mod in REF_TEXT_MODULES:
        (works / f"{mod}.txt").write_text(module_doc(mod), encoding="utf-8")
    for mod in OTHER_TEXT_MODULES:
        (other / f"{mod}.txt").write_text(module_doc(mod), encoding="utf-8")
    return {"root": root, "works": works, "other": other}


@pytest.fixture(scope="session")
def home(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, Path]) -> Path:
    """A FACTOR4_HOME with collection 'ref' (default encoders) holding the reference works."""
    from detector import Detector

    home = tmp_path_factory.mktemp("home")
    det = Detector(home)
    det.create("ref")
    report = det.add("ref", [corpus["works"]])
    assert len(report.added) == len(REF_IMAGES) + len(REF_TEXT_MODULES), report.failed
    det.close()
    return home


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium driven by Selenium (see tests/browser.py): skips when it is missing,
    fails instead under FACTOR4_REQUIRE_BROWSER=1."""
    from tests.browser import chromium

    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def edited_copy(src: Path, dest: Path) -> Path:
    """A cropped (80%), mirrored, JPEG-q40 copy of an image."""
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        im = ImageOps.mirror(im.crop((w // 10, h // 10, w - w // 10, h - h // 10)))
    dest.write_bytes(jpeg_bytes(im, 40))
    return dest
