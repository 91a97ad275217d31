"""Calibration end to end: negatives, levels, stale nulls, tiny and near-identical collections."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import pytest

from detector import Detector, config
from detector.cli import main
from detector.errors import EncoderError, InputError
from detector.works import text_item
from tests.conftest import module_doc

WORKS = ["pdb", "configparser", "argparse", "json", "socket"]


def words(mod: str) -> list[str]:
    return module_doc(mod).split()


@pytest.fixture()
def coll(tmp_path: Path) -> tuple[Detector, Path]:
    works = tmp_path / "works"
    works.mkdir()
    for mod in WORKS:
        (works / f"{mod}.txt").write_text(module_doc(mod), encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("c", ["minilm", "shingles"])
    det.add("c", [works])
    return det, tmp_path


def test_negatives_join_the_null_and_copies_among_them_are_left_out(coll: tuple[Detector, Path]) -> None:
    det, root = coll
    neg = root / "negatives"
    neg.mkdir()
    for mod in ("heapq", "sched", "textwrap"):
        (neg / f"{mod}.txt").write_text(module_doc(mod), encoding="utf-8")
    (neg / "oops-a-copy.txt").write_text(" ".join(words("pdb")[200:320]), encoding="utf-8")
    [cal] = det.calibrate("c", negatives=[neg])
    assert cal.negatives == 3 and cal.queries == config.CALIBRATION_QUERIES + 3
    assert len(cal.left_out) == 1 and "oops-a-copy.txt: copy of pdb (" in cal.left_out[0]
    assert "words copied verbatim or near-verbatim in one stretch (copied_words" in cal.left_out[0]
    assert ("negatives", 3) in cal.makeup and "3 negatives given" in cal.method
    res = det.scan_item("c", text_item(" ".join(words("json")[40:140])))
    assert res.best is not None and res.best.work.title == "json" and res.best.verdict == "copy"
    assert res.best.null_size == cal.queries


def test_negatives_alone_calibrate_a_one_work_collection(tmp_path: Path) -> None:
    works, neg = tmp_path / "w", tmp_path / "n"
    works.mkdir()
    neg.mkdir()
    (works / "pdb.txt").write_text(module_doc("pdb"), encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("one", ["minilm", "shingles"])
    det.add("one", [works])
    copy = text_item(" ".join(words("pdb")[100:200]))
    before = det.scan_item("one", copy).best
    assert before is not None and before.fpr is None and before.verdict == "similar"
    assert "no error rate" in before.reason and "--negatives" in before.reason
    for i, mod in enumerate(("heapq", "sched", "textwrap", "csv", "json", "socket", "argparse", "re")):
        doc = inspect.getsource(importlib.import_module(mod)).split()
        for k in range(0, min(len(doc), 1200), 120):  # passages of unrelated modules' source
            (neg / f"{i}-{k}.txt").write_text(" ".join(doc[k : k + 120]), encoding="utf-8")
    [cal] = det.calibrate("one", negatives=[neg])
    assert cal.negatives >= 60 and cal.queries == cal.negatives and not cal.left_out
    after = det.scan_item("one", copy).best
    assert after is not None and after.verdict == "copy" and after.fpr == pytest.approx(1 / (cal.queries + 1))


def test_levels_and_sizes_are_kept_per_collection(coll: tuple[Detector, Path]) -> None:
    det, _ = coll
    [cal] = det.calibrate("c", queries=40, copy_level=0.1, similar_level=0.3)
    assert (cal.queries, cal.copy_level, cal.similar_level) == (40, 0.1, 0.3)
    [again] = det.calibrate("c")  # a refresh keeps them
    assert (again.queries, again.copy_level, again.similar_level) == (40, 0.1, 0.3)
    with pytest.raises(InputError, match="copy level"):
        det.calibrate("c", copy_level=2.0)
    with pytest.raises(InputError, match="queries must be"):
        det.calibrate("c", queries=0)
    assert det.calibrate("c") == [again] or det.calibrate("c")[0].queries == 40  # nothing was lost


def test_a_stale_calibration_is_used_and_said_so(coll: tuple[Detector, Path]) -> None:
    det, root = coll
    out = text_item(" ".join(words("json")[40:140]))
    first = det.scan_item("c", out)
    assert first.calibration is not None and not first.calibration.stale
    extra = root / "extra"
    extra.mkdir()
    (extra / "heapq.txt").write_text(module_doc("heapq"), encoding="utf-8")
    det.add("c", [extra])
    later = det.scan_item("c", out)
    assert later.calibration is not None and later.calibration.stale
    assert later.calibration.generation == first.calibration.generation  # not silently redone
    [fresh] = det.calibrate("c")
    assert not det.scan_item("c", out).calibration.stale and fresh.works == len(WORKS) + 1


def test_near_identical_works_have_no_null(tmp_path: Path) -> None:
    works = tmp_path / "w"
    works.mkdir()
    body = module_doc("configparser")
    for i in range(2):  # (a phrase in 3 or more works is common text, discounted)
        (works / f"edition-{i}.txt").write_text(body + f"\n\nEdition {i}.", encoding="utf-8")
    det = Detector(tmp_path / "home")
    det.create("same", ["minilm", "shingles"])
    det.add("same", [works])
    assert det.calibrate("same") == []
    best = det.scan_item("same", text_item(" ".join(body.split()[30:130]))).best
    assert best is not None and best.fpr is None and best.verdict == "similar" and "no error rate" in best.reason


def test_the_cli_calibrates_with_negatives_and_levels(coll: tuple[Detector, Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    det, root = coll
    neg = root / "neg"
    neg.mkdir()
    (neg / "heapq.txt").write_text(module_doc("heapq"), encoding="utf-8")
    det.close()
    home = str(root / "home")
    assert main(["--home", home, "calibrate", "c", "--negatives", str(neg), "--queries", "30",
                 "--copy-level", "0.1", "--similar-level", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "31 unrelated outputs" in out and "copy fpr <= 10.00%" in out and "1 negatives" in out
    assert main(["--home", home, "calibrate", "c", "--copy-level", "5"]) == 2
    assert "copy level must be a rate" in capsys.readouterr().err
    assert main(["--home", home, "calibrate", "c", "--negatives", str(root / "missing.txt")]) == 2
    assert "missing.txt" in capsys.readouterr().err


def test_an_encoder_without_a_declared_signal_is_refused(tmp_path: Path) -> None:
    from detector.channels import channel_spec

    with pytest.raises(EncoderError):
        channel_spec("mpnet")
