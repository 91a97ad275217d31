"""Add real works, scan edited copies and unrelated works, through the library API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from detector import Detector
from detector.errors import CollectionNotFound, EncoderMismatch, InputError
from detector.works import text_item
from tests.conftest import edited_copy, module_doc


def test_edited_image_copy_is_top_match_with_verdict_copy(home: Path, corpus: dict, tmp_path: Path) -> None:
    det = Detector(home)
    out = edited_copy(corpus["works"] / "chelsea.png", tmp_path / "cat-edit.jpg")
    [result] = det.scan("ref", [out])
    assert result.modality == "image"
    assert Path(result.best.work.source).name == "chelsea.png"
    assert result.best.verdict == "copy"
    assert result.best.signals["sscd"] > 0.6


def test_unrelated_image_is_unrelated(home: Path, corpus: dict) -> None:
    [result] = Detector(home).scan("ref", [corpus["other"] / "hubble_deep_field.jpg"])
    assert result.verdict == "unrelated"
    assert all(m.verdict == "unrelated" for m in result.matches)


def test_excerpt_of_text_inside_new_text_is_a_copy(home: Path) -> None:
    words = module_doc("argparse").split()
    filler = module_doc("heapq").split()
    output = " ".join(filler[:80] + words[40:120] + filler[80:160])
    result = Detector(home).scan_item("ref", text_item(output, "story.txt"))
    assert result.best.work.title == "argparse"
    assert result.best.verdict == "copy"
    assert result.best.signals["longest_run_words"] >= 60
    assert result.best.excerpt and " ".join(words[45:60]) in " ".join(result.best.excerpt.split())


def test_unrelated_text_is_unrelated(home: Path, corpus: dict) -> None:
    [result] = Detector(home).scan("ref", [corpus["other"] / "sched.txt"])
    assert result.verdict == "unrelated"


def test_scan_json_contract(home: Path, corpus: dict, tmp_path: Path) -> None:
    out = edited_copy(corpus["works"] / "coffee.png", tmp_path / "coffee-edit.jpg")
    [result] = Detector(home).scan("ref", [out])
    data = json.loads(json.dumps(result.to_dict()))
    assert set(data) >= {"input", "sha256", "modality", "matches"}
    assert data["input"] == str(out) and len(data["sha256"]) == 64
    first = data["matches"][0]
    assert set(first["work"]) >= {"id", "source", "sha256", "title"}
    assert 0.0 <= first["score"] <= 1.0 and first["verdict"] in ("copy", "similar", "unrelated")
    assert set(first["signals"]) == {"sscd", "sscd_normalised", "sscd_background", "pdq_distance"}
    assert set(first) >= {"region", "work_region", "transform", "fpr"}
    assert first["transform"] in ("near-exact", "edited", "partial")
    box = first["region"]
    assert 0 <= box["left"] < box["right"] and 0 <= box["top"] < box["bottom"]
    scores = [m["score"] for m in data["matches"]]
    assert scores == sorted(scores, reverse=True)


def test_adding_the_same_file_twice_stores_it_once(tmp_path: Path, corpus: dict) -> None:
    det = Detector(tmp_path)
    det.create("c", ["pdq", "shingles"])
    first = det.add("c", [corpus["works"] / "rocket.jpg", corpus["works"] / "csv.txt"])
    again = det.add("c", [corpus["works"] / "rocket.jpg", corpus["works"] / "csv.txt"])
    assert len(first.added) == 2 and not first.duplicates
    assert not again.added and {w.id for w in again.duplicates} == {w.id for w in first.added}
    assert len(det.works("c")) == 2


def test_remove_work_then_it_no_longer_matches(tmp_path: Path, corpus: dict) -> None:
    det = Detector(tmp_path)
    det.create("c", ["pdq", "shingles"])
    report = det.add("c", [corpus["works"] / "json.txt", corpus["works"] / "csv.txt"])
    json_id = next(w.id for w in report.added if w.title == "json")
    assert det.scan("c", [corpus["works"] / "json.txt"])[0].best.work.id == json_id
    det.remove("c", json_id)
    assert [w.title for w in det.works("c")] == ["csv"]
    result = det.scan("c", [corpus["works"] / "json.txt"])[0]
    assert all(m.work.id != json_id for m in result.matches)


def test_metadata_sidecar_is_stored(tmp_path: Path, corpus: dict) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text("file,title,creator,licence,source_url\n"
                    "rocket.jpg,Rocket launch,NASA,public domain,https://example.org/rocket\n")
    det = Detector(tmp_path)
    det.create("c", ["pdq"])
    det.add("c", [corpus["works"] / "rocket.jpg"], meta=meta)
    [work] = det.works("c")
    assert (work.title, work.creator, work.licence, work.source_url) == (
        "Rocket launch", "NASA", "public domain", "https://example.org/rocket")


def test_reopen_after_restart_keeps_works(home: Path) -> None:
    first = Detector(home).works("ref")
    again = Detector(home).works("ref")
    assert [w.sha256 for w in first] == [w.sha256 for w in again] and len(first) == 9


def test_missing_collection(tmp_path: Path) -> None:
    with pytest.raises(CollectionNotFound, match="no collection named 'nope'"):
        Detector(tmp_path).scan("nope", [])


def test_collection_built_with_other_weights_is_refused(tmp_path: Path, corpus: dict) -> None:
    det = Detector(tmp_path)
    det.create("c", ["sscd"])
    catalog = tmp_path / "collections" / "c" / "catalog.sqlite"
    import sqlite3

    with sqlite3.connect(catalog) as db:
        (raw,) = db.execute("SELECT value FROM meta WHERE key = 'channels'").fetchone()
        chans = json.loads(raw)
        chans[0]["weights_sha256"] = "0" * 64
        db.execute("UPDATE meta SET value = ? WHERE key = 'channels'", (json.dumps(chans),))
    with pytest.raises(EncoderMismatch, match="weights sha256 000000000000"):
        Detector(tmp_path).scan("c", [corpus["works"] / "rocket.jpg"])


def test_bad_files_are_reported_and_nothing_changes(tmp_path: Path, corpus: dict) -> None:
    det = Detector(tmp_path)
    det.create("c", ["pdq", "shingles"])
    det.add("c", [corpus["works"] / "rocket.jpg"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.png").write_bytes(b"")
    (bad / "truncated.jpg").write_bytes((corpus["works"] / "rocket.jpg").read_bytes()[:2000])
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (bad / "punctuation.txt").write_text("!!! ... ???")
    before = det.manifest("c").counts
    report = det.add("c", [bad])
    assert not report.added and len(report.failed) == 4
    assert all(Path(f.path).name in f.error for f in report.failed)
    assert det.manifest("c").counts == before
    with pytest.raises(InputError, match="empty"):
        det.scan("c", [bad / "empty.png"])
