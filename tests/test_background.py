"""The background corpus: common material that small collections cannot know is common.

The works are module docstrings of Python's standard library. The "boilerplate" is the Zen of
Python, which the background's texts carry the way a hundred man pages carry GNU's
bug-reporting paragraph; the collection holds it in one work only, so without a background it
is evidence of copying that work, and with one it is common text, reported and not counted.
"""

from __future__ import annotations

import codecs
import json
import this
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from detector import Detector, background, config
from detector.cli import main
from detector.errors import Factor4Error
from detector.works import text_item
from tests.conftest import module_doc

ZEN = codecs.decode(this.s, "rot13")
WORKS = ["argparse", "csv", "pdb", "configparser"]
BACKGROUND = ["heapq", "sched", "textwrap", "shlex"]


def _texts(folder: Path, mods: list[str], zen_in: set[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for mod in mods:
        body = module_doc(mod) + ("\n\n" + ZEN if mod in zen_in else "")
        (folder / f"{mod}.txt").write_text(body, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def homes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bg")
    works = _texts(root / "works", WORKS, {"csv"})
    bg_files = _texts(root / "bgfiles", BACKGROUND, set(BACKGROUND))
    report = background.add(root / "background", [bg_files])
    assert len(report.added) == len(BACKGROUND) and not report.failed
    for name, where in (("plain", None), ("with", root / "background")):
        det = Detector(root / name, background=where)
        det.create("c", ["minilm", "shingles"])
        det.add("c", [works])
        det.close()
    return {"root": root, "background": root / "background", "plain": root / "plain", "with": root / "with"}


def _scan(home: Path, bg: Path | None, text: str):
    det = Detector(home, background=bg)
    try:
        return det.scan_item("c", text_item(text, "out.txt"), top=10)
    finally:
        det.close()


def test_phrases_the_background_holds_are_discounted_with_the_reason(homes: dict[str, Path]) -> None:
    output = module_doc("glob") + "\n\n" + ZEN  # a work not in the collection, ending with the common passage
    plain = _scan(homes["plain"], None, output)
    csv = next(m for m in plain.matches if m.work.title == "csv")
    assert csv.signals["copied_words"] >= 100  # without a background the passage is evidence of copying csv
    assert not any(s.discounted for s in csv.spans)

    with_bg = _scan(homes["with"], homes["background"], output)
    csv = next((m for m in with_bg.matches if m.work.title == "csv"), None)
    assert csv is None or csv.signals["copied_words"] < config.SIGNAL_THRESHOLDS["copied_words"][1]
    assert with_bg.verdict == "unrelated"
    if csv is not None and csv.spans:
        common = [s for s in csv.spans if s.discounted]
        assert common and all(s.background_works == len(BACKGROUND) for s in common)
        assert "background corpus" in common[0].discount_reason
        as_json = json.loads(json.dumps(with_bg.to_dict()))
        assert any(s.get("background_works") == len(BACKGROUND) for m in as_json["matches"] for s in m["spans"])


def test_the_works_own_text_still_counts_when_the_background_holds_a_copy_of_it(tmp_path: Path) -> None:
    # the user's reference is itself in the background (a licence text, a man page and its
    # aliases): its near-duplicates there do not make its own text common
    works = _texts(tmp_path / "works", ["argparse", "csv"], set())
    bg_files = _texts(tmp_path / "bgfiles", ["heapq", "sched"], set())
    for k in range(3):
        (bg_files / f"argparse-copy-{k}.txt").write_text(module_doc("argparse") + f"\n\nedition {k}", encoding="utf-8")
    background.add(tmp_path / "background", [bg_files])
    det = Detector(tmp_path / "home", background=tmp_path / "background")
    det.create("c", ["minilm", "shingles"])
    det.add("c", [works])
    excerpt = " ".join(module_doc("argparse").split()[40:200])
    res = det.scan_item("c", text_item(excerpt, "out.txt"))
    det.close()
    assert res.best.work.title == "argparse" and res.best.signals["copied_words"] >= 150
    assert not any(s.discounted for s in res.best.spans)


def test_calibration_adds_background_outputs_and_a_changed_background_makes_it_stale(homes: dict[str, Path]) -> None:
    det = Detector(homes["with"], background=homes["background"])
    info = det.calibrate("c", queries=200)[0]
    made = dict(info.makeup)
    assert 0 < made.get("background", 0) <= background.null_count(200)
    assert info.queries == sum(made.values())
    assert info.background and "4 texts" in info.background
    assert "background-corpus works" in info.method
    assert det.scan_item("c", text_item(module_doc("glob"), "o.txt")).calibration.stale is False
    det.close()
    (homes["root"] / "more").mkdir()
    (homes["root"] / "more" / "string.txt").write_text(module_doc("string"), encoding="utf-8")
    background.add(homes["background"], [homes["root"] / "more"])
    det = Detector(homes["with"], background=homes["background"])
    res = det.scan_item("c", text_item(module_doc("glob"), "o.txt"))
    det.close()
    assert res.calibration.stale is True  # made with the older background: recalibrate


def _pictures(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        im = Image.new("RGB", (160, 120), tuple(int(c) for c in rng.integers(0, 256, 3)))
        d = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = int(rng.integers(0, 140)), int(rng.integers(0, 100))
            d.ellipse((x, y, x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))),
                      fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        path = folder / f"p{seed}-{k}.png"
        im.save(path)
        out.append(path)
    return out


def test_background_pictures_join_the_normalisation_of_a_tiny_collection(tmp_path: Path) -> None:
    works = _pictures(tmp_path / "works", 2, seed=1)
    _pictures(tmp_path / "bgfiles", 6, seed=2)
    background.add(tmp_path / "background", [tmp_path / "bgfiles"])
    results = {}
    for label, bg in (("plain", None), ("with", tmp_path / "background")):
        det = Detector(tmp_path / label, background=bg)
        det.create("c", ["sscd", "pdq"])
        det.add("c", [tmp_path / "works"])
        with Image.open(works[0]) as im:
            im.convert("RGB").crop((10, 10, 150, 110)).save(tmp_path / f"crop-{label}.png")
        results[label] = det.scan(("c"), [tmp_path / f"crop-{label}.png"])[0]
        det.close()
    # two works: below SSCD_NORM_MIN_WORKS there is no normalised score without a background
    assert results["plain"].best.signals.get("sscd_normalised") is None
    best = results["with"].best
    assert best.work.source.endswith("p1-0.png")
    assert best.signals["sscd_normalised"] is not None and best.signals["sscd_background"] is not None
    assert best.signals["sscd_normalised"] + best.signals["sscd_background"] <= best.signals["sscd"] + 0.05


def test_fetch_refuses_an_unknown_source_and_fetches_installed_licences_offline(tmp_path: Path) -> None:
    with pytest.raises(Factor4Error, match="unknown background source 'nope'"):
        background.fetch(tmp_path / "bg", ["nope"])
    report = background.fetch(tmp_path / "bg", ["python-licences"], cache=tmp_path / "cache")
    assert not report.failed and report.added[0][0] == "python-licences" and report.added[0][1] > 0
    assert report.info.texts == report.added[0][1] and report.info.images == 0
    bg = background.Background.open(tmp_path / "bg")
    work = bg.coll.works()[0]
    bg.close()
    assert work.creator.startswith("pypi:") and work.extra["background"] == "python-licences"
    assert work.source_url and ": " in work.source_url  # package, version and file


def test_cli_background_add_show_and_create_without_fetch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    home = tmp_path / "home"
    files = _texts(tmp_path / "files", ["heapq", "sched"], set())
    assert main(["--home", str(home), "create", "c", "--encoders", "shingles", "--no-background"]) == 0
    assert not background.Background.exists(config.background_home(home))
    assert main(["--home", str(home), "background", "add", str(files)]) == 0
    capsys.readouterr()
    assert main(["--home", str(home), "background", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["texts"] == 2 and shown["sources"] == [{"name": "added", "modality": "text", "works": 2}]
    with pytest.raises(SystemExit) as stop:
        main(["--home", str(home), "background", "fetch", "--source", "nope"])
    assert stop.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_no_background_when_the_environment_says_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config.BACKGROUND_ENV, "none")
    assert config.background_home(tmp_path) is None
    assert Detector(tmp_path).background.get() is None
    assert main(["--home", str(tmp_path), "background", "show"]) == 2


def test_create_fetches_the_background_at_first_use_and_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture) -> None:
    # only the offline source, so the test reaches no network
    monkeypatch.setattr(background, "SOURCES", tuple(s for s in background.SOURCES if s.name == "python-licences"))
    monkeypatch.setenv(config.BACKGROUND_FETCH_ENV, "1")
    home = tmp_path / "home"
    assert main(["--home", str(home), "create", "c", "--encoders", "shingles"]) == 0
    out = capsys.readouterr().out
    assert "fetching the background corpus" in out and "python-licences" in out and "about a minute" in out
    assert background.Background.exists(config.background_home(home))
    assert main(["--home", str(home), "create", "d", "--encoders", "shingles"]) == 0
    assert "fetching" not in capsys.readouterr().out  # once
