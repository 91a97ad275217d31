"""Scans run while works are being added: readers never see a half-added work, and a work
is found as soon as its upload is acknowledged; encoders are loaded once per process.

Data: module docstrings of Python's standard library (long ones, so each is its own work).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from detector import config
from detector.encoders import load_encoder
from service.main import create_app
from service.settings import Settings
from service.tenancy import Tenancy
from tests.conftest import module_doc

MODULES = ["argparse", "csv", "json", "re", "unittest", "heapq", "sched", "itertools", "subprocess", "typing",
           "ftplib", "difflib", "smtplib", "doctest", "getopt", "random", "tkinter", "collections", "pdb"]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def excerpt(mod: str) -> str:
    words = module_doc(mod).split()
    return " ".join(words[10:70])


def test_scans_while_works_are_added(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a collection under 20 works is calibrated again after each change: keep that short here
    monkeypatch.setattr(config, "CALIBRATION_QUERIES", 30)
    monkeypatch.setattr(config, "COPY_LEVEL", 0.1)  # what a null of 30 can state (about 3 / 30)
    monkeypatch.setattr(config, "SIMILAR_LEVEL", 0.2)
    mods = [m for m in MODULES if len(module_doc(m).split()) >= 100]
    assert len(mods) >= 12
    key = Tenancy(tmp_path).create_key("alice").key
    a = bearer(key)
    settings = Settings(home=str(tmp_path), rate_per_second=10_000, rate_burst=10_000)
    with TestClient(create_app(settings)) as client:
        assert client.post("/collections", json={"name": "docs", "encoders": ["minilm", "shingles"]},
                           headers=a).status_code == 201
        # the first two works go in before the readers start, so every scan has something to find
        acked: dict[str, tuple[str, float]] = {}  # module -> (work id, time its upload was answered)
        errors: list[str] = []
        scans: list[tuple[float, float, str, dict]] = []  # (start, end, module, response)
        listings: list[tuple[float, float, list[dict]]] = []
        lock = threading.Lock()

        def upload(mod: str) -> None:
            r = client.post("/collections/docs/works", headers=a,
                            files={"file": (f"{mod}.txt", module_doc(mod).encode(), "text/plain")})
            if r.status_code != 201:
                errors.append(f"upload {mod}: {r.status_code} {r.text}")
                return
            with lock:
                acked[mod] = (r.json()["added"][0]["id"], time.monotonic())

        for mod in mods[:2]:
            upload(mod)
        done = threading.Event()

        def writer() -> None:
            # each upload waits for a scan to finish after the previous one (at most 60 s), so
            # scans and uploads interleave however slow the machine is
            try:
                for mod in mods[2:12]:
                    seen = len(scans)
                    deadline = time.monotonic() + 60
                    while len(scans) == seen and time.monotonic() < deadline and not errors:
                        time.sleep(0.05)
                    upload(mod)
            finally:
                done.set()

        def lister() -> None:
            while not done.is_set():
                t0 = time.monotonic()
                r = client.get("/collections/docs/works?limit=1000", headers=a)
                if r.status_code != 200:
                    errors.append(f"list: {r.status_code} {r.text}")
                else:
                    listings.append((t0, time.monotonic(), r.json()))
                time.sleep(0.05)

        def scanner(seed: int) -> None:
            # (in a collection this small every change makes the next scan calibrate anew: slow)
            rng = random.Random(seed)
            while not done.is_set():
                mod = rng.choice(list(acked))
                t0 = time.monotonic()
                r = client.post("/collections/docs/scan", json={"text": excerpt(mod)}, headers=a)
                if r.status_code != 200:
                    errors.append(f"scan {mod}: {r.status_code} {r.text}")
                else:
                    scans.append((t0, time.monotonic(), mod, r.json()))

        threads = [threading.Thread(target=writer), threading.Thread(target=lister)] + \
            [threading.Thread(target=scanner, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert not any(t.is_alive() for t in threads), "the clients did not finish in 300 s"
        assert not errors, errors[:5]
        assert len(scans) >= 10 and len(listings) >= 10, (len(scans), len(listings))

        final = {w["id"]: w for w in client.get("/collections/docs/works", headers=a).json()}
        by_mod = {mod: wid for mod, (wid, _) in acked.items()}
        assert set(final) == set(by_mod.values())
        checked = 0
        for t0, _t1, mod, result in scans:
            for m in result["matches"]:
                # a match is always to a whole work: it is listed, and has its metadata
                assert m["work"]["id"] in final and m["work"]["sha256"] == final[m["work"]["id"]]["sha256"]
            if mod in acked and acked[mod][1] < t0:
                # acknowledged before the scan began: it must be found, as a copy
                best = result["matches"][0] if result["matches"] else None
                assert best is not None and best["work"]["id"] == by_mod[mod] and best["verdict"] == "copy", \
                    (mod, result["matches"][:1])
                checked += 1
        assert checked >= 10, checked
        for t0, t1, works in listings:
            ids = {w["id"] for w in works}
            before = {wid for wid, at in acked.values() if at < t0}
            assert before <= ids <= set(final), "a listing lost an acknowledged work or showed an unknown one"
            assert all(w["sha256"] and w["title"] for w in works)

        # encoders are shared: one MiniLM per process, whichever tenant or request uses it
        assert load_encoder("minilm") is load_encoder(" MiniLM ")


@pytest.mark.parametrize("path", ["/collections", "/health"])
def test_event_loop_is_not_blocked_by_a_scan(tmp_path: Path, path: str) -> None:
    """While a long text scan runs in a worker thread, other requests are answered."""
    key = Tenancy(tmp_path).create_key("alice").key
    a = bearer(key)
    settings = Settings(home=str(tmp_path), rate_per_second=10_000, rate_burst=10_000)
    with TestClient(create_app(settings)) as client:
        assert client.post("/collections", json={"name": "docs", "encoders": ["minilm", "shingles"]},
                           headers=a).status_code == 201
        big = " ".join(module_doc(m) for m in MODULES) * 3
        client.post("/collections/docs/works", headers=a,
                    files={"file": ("pdb.txt", module_doc("pdb").encode(), "text/plain")})
        finished = threading.Event()
        quick: list[float] = []
        status: list[int] = []

        def long_scan() -> None:
            r = client.post("/collections/docs/scan", json={"text": big}, headers=a)
            status.append(r.status_code)
            finished.set()

        t = threading.Thread(target=long_scan)
        t.start()
        time.sleep(0.3)  # the scan is under way
        while not finished.is_set():
            t0 = time.monotonic()
            r = client.get(path, headers=a)
            assert r.status_code == 200
            if not finished.is_set():
                quick.append(time.monotonic() - t0)
            time.sleep(0.05)
        t.join()
        assert status == [200]
        # several answers while the scan ran (were the loop blocked, at most one could slip in
        # between the scan's answer and its thread noting it)
        assert len(quick) >= 3, f"only {len(quick)} requests answered during the scan"
