"""One Detector used by many threads at once (as the service uses it): scans of one
collection run concurrently with each other and with adds and removals, and none fails or
sees a half-added work.

Data: module docstrings of Python's standard library.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from detector import Detector, config
from detector.errors import CollectionError
from detector.works import text_item
from tests.conftest import module_doc

MODULES = ["argparse", "csv", "json", "re", "unittest", "heapq", "sched", "itertools", "subprocess", "typing",
           "ftplib", "difflib", "smtplib", "doctest", "getopt", "random", "tkinter", "collections", "pdb"]


def test_concurrent_scans_adds_and_removals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "CALIBRATION_QUERIES", 30)
    monkeypatch.setattr(config, "COPY_LEVEL", 0.1)  # what a null of 30 can state (about 3 / 30)
    monkeypatch.setattr(config, "SIMILAR_LEVEL", 0.2)
    texts = {m: module_doc(m) for m in MODULES}
    for name in ("pdb", "re"):  # long docstrings: in parts, so there are works enough
        words = texts.pop(name).split()
        for k in range(0, len(words) - 100, 150):
            texts[f"{name}-{k // 150}"] = " ".join(words[k : k + 150])
    files = {}
    for m, text in texts.items():
        files[m] = tmp_path / f"{m}.txt"
        files[m].write_text(text, encoding="utf-8")
    names = sorted(texts)
    # one work comes and goes: under the share of change that makes a calibration stale, so
    # the scans do not spend their time calibrating again
    churn, stable = names[:1], names[1:]
    assert len(stable) >= 1 / config.CALIBRATION_STALE_SHARE
    det = Detector(tmp_path / "home")
    det.create("docs", ["minilm", "shingles"])
    det.add("docs", [files[m] for m in stable], show_progress_bar=False)
    det.calibrate("docs", show_progress_bar=False)
    excerpts = {m: " ".join(texts[m].split()[15:75]) for m in stable}
    errors: list[BaseException] = []
    misses: list[str] = []
    stop = threading.Event()

    def scanner(offset: int) -> None:
        try:
            for i in range(12):
                mod = stable[(i + offset) % len(stable)]
                best = det.scan_item("docs", text_item(excerpts[mod], mod)).best
                if best is None or best.work.title != mod or best.verdict != "copy":
                    misses.append(f"{mod}: {best}")
                det.works("docs")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def churner() -> None:
        try:
            while not stop.is_set():
                for m in churn:
                    det.add("docs", [files[m]], show_progress_bar=False)
                for m in churn:
                    rec = next(w for w in det.works("docs") if w.title == m)
                    det.remove("docs", rec.id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader() -> None:  # many small catalogue reads between the scans' own
        try:
            while not stop.is_set():
                for w in det.works("docs"):
                    try:
                        if det.work("docs", w.id).sha256 != w.sha256:
                            misses.append(f"{w.id}: another work's row")
                    except CollectionError:
                        if w.title not in churn:  # removed since the listing: only the churned one may be
                            raise
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    writer = threading.Thread(target=churner)
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers:
        t.start()
    scanners = [threading.Thread(target=scanner, args=(k,)) for k in range(4)]
    writer.start()
    for t in scanners:
        t.start()
    for t in scanners:
        t.join(600)
    stop.set()
    writer.join(600)
    for t in readers:
        t.join(600)
    assert not errors, repr(errors[:3])
    assert not misses, misses[:3]
    coll, _ = det._collection("docs")
    assert coll.check() == []
    det.close()
