"""Crash safety of the HTTP service: SIGKILL the server while uploads are in flight, restart it
on the same home, and every acknowledged upload is there while none is half there.

The real server runs as a child process (`python -m detector.cli --home H serve`, which runs
uvicorn in that very process, so the SIGKILL hits the server and not a wrapper). Four client
threads upload works one per request (scikit-image's photographs and standard-library module
docstrings, interleaved) and note which got a 201. The server is killed twice, at two moments:
at once when the 4th upload of the round is acknowledged (the next uploads are being read,
staged or encoded), and, in the next round, as soon as the catalogue commits after the 4th
acknowledgement (the test polls its generation), so that a work is usually stored whose
upload is never acknowledged. After each kill:

- the collection, opened with the library, passes `Collection.check()` (every catalogued
  segment has its vectors and no vector lacks a segment), its manifest counts agree with the
  catalogue, every acknowledged work is in it, and every work in it is one that was sent;
  an unacknowledged (in-flight) work is either in it with all its parts (segments, vectors, its
  text or thumbnail) or not in it at all;
- the restarted server lists exactly those works, and its collection count agrees;
- staging folders an upload left under `<home>/uploads/` hold only copies of sent works,
  nothing stored refers to them, and the restarted server removes them.

At the end every in-flight work is uploaded again (201: `added` if it was absent, `duplicates`
if present), the index files are exactly those the catalogue names, and scanning each stored
work's file finds that work. Runtime: 50-85 s on two busy cores: three server starts with
their model loads (~15 s each) and the collection's calibration at the first scan (~25 s).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from indexes import Collection, Store
from service.tenancy import Tenancy, tenant_home
from tests.conftest import module_doc, skimage_data

REPO = Path(__file__).resolve().parents[1]
TENANT = "crash"
COLLECTION = "art"
CLIENTS = 4
#: Uploads acknowledged in a round before its kill; the second kill waits a further random
#: share of an upload's duration.
KILL_AFTER = 4
START_TIMEOUT = 60.0
REQUEST_TIMEOUT = 60.0
#: scikit-image photographs to upload (the 14-200 px ones and the multi-page TIFFs are left out).
IMAGES = ["astronaut.png", "brick.png", "camera.png", "cell.png", "chelsea.png", "clock_motion.png", "coffee.png",
          "coins.png", "color.png", "grass.png", "gravel.png", "horse.png", "hubble_deep_field.jpg", "ihc.png",
          "logo.png", "moon.png", "motorcycle_left.png", "page.png", "phantom.png", "retina.jpg", "rocket.jpg",
          "text.png"]
#: Standard-library modules whose docstrings (40 to 900 words) are the text works.
TEXTS = ["argparse", "csv", "json", "re", "unittest", "heapq", "sched", "typing", "collections", "subprocess",
         "itertools", "difflib", "statistics", "tempfile", "copy", "random", "socket", "ast", "inspect", "tokenize",
         "hashlib", "struct", "time", "os", "sqlite3", "uuid", "doctest", "timeit", "gc", "io"]


@dataclass(frozen=True)
class Work:
    name: str
    data: bytes
    sha256: str
    modality: str


def pool() -> list[Work]:
    """Images and texts interleaved, all different."""
    data = skimage_data()
    images = [Work(n, b, hashlib.sha256(b).hexdigest(), "image") for n in IMAGES for b in [(data / n).read_bytes()]]
    texts = [Work(f"{m}.txt", b, hashlib.sha256(b).hexdigest(), "text")
             for m in TEXTS for b in [module_doc(m).encode("utf-8")]]
    works = [w for pair in zip(images, texts, strict=False) for w in pair] + texts[len(images):]
    assert len({w.sha256 for w in works}) == len(works)
    return works


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`factor4 serve` in a child process; `proc.pid` is the uvicorn server itself."""

    def __init__(self, home: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {**os.environ, "FACTOR4_RATE_PER_SECOND": "10000", "FACTOR4_RATE_BURST": "10000",
               "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        env.pop("FACTOR4_HOME", None)
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "detector.cli", "--home", str(home), "serve", "--host", "127.0.0.1",
                 "--port", str(self.port)], cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2, trust_env=False).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the server did not answer /health in {START_TIMEOUT:.0f} s:\n{self.log()}")
            time.sleep(0.2)
        cmdline = Path(f"/proc/{self.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"serve" in cmdline, cmdline  # the pid is the server, not a wrapper

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def client(self, key: str) -> httpx.Client:
        """A client of this server (loopback: no proxies from the environment)."""
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=REQUEST_TIMEOUT,
                            trust_env=False)

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        assert self.proc.wait(30) == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


@dataclass
class Round:
    """What the clients of one round saw."""

    acked: dict[str, Work] = field(default_factory=dict)  # sha256 -> work, from 201 responses
    unacked: dict[str, Work] = field(default_factory=dict)  # sent, no response (the kill)
    errors: list[str] = field(default_factory=list)  # any other status: a bug
    in_flight_at_kill: int = 0


def catalog_generation(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])


def upload_round(server: Server, key: str, todo: list[Work], after: int, catalog: Path | None) -> Round:
    """CLIENTS threads upload works from *todo* (popped) until the server dies. The server is
    SIGKILLed at once after the *after*-th acknowledgement or, given the *catalog* to watch, as
    soon as the catalog commits after that (before the server can answer, most times)."""
    rnd = Round()
    lock = threading.Condition()
    in_flight = [0]

    def client() -> None:
        with server.client(key) as c:
            while True:
                with lock:
                    if not todo or rnd.unacked:
                        return
                    work = todo.pop(0)
                    in_flight[0] += 1
                try:
                    r = c.post(f"/collections/{COLLECTION}/works",
                               files={"file": (work.name, work.data, "application/octet-stream")})
                except httpx.TransportError:
                    with lock:
                        in_flight[0] -= 1
                        rnd.unacked[work.sha256] = work
                    return
                try:
                    added = [w["sha256"] for w in r.json()["added"]] if r.status_code == 201 else None
                except (ValueError, KeyError, TypeError):
                    added = None
                with lock:
                    in_flight[0] -= 1
                    if added == [work.sha256]:
                        rnd.acked[work.sha256] = work
                        lock.notify_all()
                    else:
                        rnd.errors.append(f"{work.name}: {r.status_code} {r.text[:300]}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    with lock:
        assert lock.wait_for(lambda: len(rnd.acked) >= after or rnd.errors, timeout=120), \
            f"only {len(rnd.acked)} uploads acknowledged in 120 s"
    if catalog is not None:
        db = sqlite3.connect(f"file:{catalog}?mode=ro", uri=True, isolation_level=None)
        try:
            start = catalog_generation(db)
            deadline = time.monotonic() + 60
            while catalog_generation(db) == start and time.monotonic() < deadline:
                time.sleep(0.0005)
        finally:
            db.close()
    with lock:
        rnd.in_flight_at_kill = in_flight[0]
    server.kill()
    for t in threads:
        t.join(REQUEST_TIMEOUT)
        assert not t.is_alive()
    return rnd


def stored_state(home: Path, sent: dict[str, Work]) -> dict[str, str]:
    """Open the collection with the library (as the killed server left it) and check that it is
    consistent and made of whole works; returns {sha256: work id} of the works in it."""
    path = Store(tenant_home(home, TENANT)).path(COLLECTION)
    with Collection.open(path) as coll:
        assert coll.check() == []
        works = coll.works()
        counts = coll.manifest.counts
        assert counts["works"] == len(works) == len(coll)
        n_images = sum(w.modality == "image" for w in works)
        assert counts["vectors.pdq"] == n_images  # one PDQ hash per image
        segments = coll.db.execute("SELECT count(*) FROM segments").fetchone()[0]
        assert counts["segments"] == segments == counts["vectors.sscd"] + counts["vectors.minilm"]
        for w in works:
            assert w.sha256 in sent, f"a work that was never sent: {w}"
            assert w.modality == sent[w.sha256].modality
            assert coll.work_segments(w.id), w
            if w.modality == "text":
                assert coll.text(w.id) == sent[w.sha256].data.decode("utf-8")
                assert coll.db.execute("SELECT count(*) FROM postings JOIN works ON num = work_num WHERE id = ?",
                                       (w.id,)).fetchone()[0] > 0
            else:
                assert coll.thumbnail(w.id)
        return {w.sha256: w.id for w in works}


def staged_leftovers(home: Path, sent: dict[str, Work]) -> list[Path]:
    """Files the killed server left in its staging folders: each a complete or partial copy of
    a sent work (never anything else)."""
    root = home / "uploads"
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    by_name = {w.name: w for w in sent.values()}
    for f in files:
        work = by_name.get(f.name)
        assert work is not None and work.data.startswith(f.read_bytes()), f
    return files


@pytest.mark.slow
def test_sigkill_with_uploads_in_flight_keeps_every_acknowledged_upload(tmp_path: Path) -> None:
    home = tmp_path / "home"
    key = Tenancy(home).create_key(TENANT).key
    todo = pool()
    sent: dict[str, Work] = {}
    acked: set[str] = set()
    unacked: dict[str, Work] = {}
    log = tmp_path / "server.log"
    server = Server(home, log)
    try:
        with server.client(key) as c:
            r = c.post("/collections", json={"name": COLLECTION})
            assert r.status_code == 201, r.text
        catalog = Store(tenant_home(home, TENANT)).path(COLLECTION) / "catalog.sqlite"
        traces = []
        for round_no, moment in enumerate(("after an acknowledgement", "after a commit")):
            before = list(todo)
            t0 = time.perf_counter()
            rnd = upload_round(server, key, todo, KILL_AFTER, catalog if round_no else None)
            assert not rnd.errors, (rnd.errors, server.log())
            assert rnd.in_flight_at_kill >= 1 and rnd.unacked, "the kill came when no upload was in flight"
            sent.update({w.sha256: w for w in before[: len(before) - len(todo)]})
            acked |= set(rnd.acked)
            unacked.update(rnd.unacked)

            # as the killed server left it
            leftovers = staged_leftovers(home, sent)
            stored = stored_state(home, sent)
            assert acked <= set(stored), f"acknowledged but lost: {sorted(acked - set(stored))}"
            landed = sorted(w.name for s, w in rnd.unacked.items() if s in stored)
            t1 = time.perf_counter()
            server = Server(home, log)  # restart on the same home
            with server.client(key) as c:
                r = c.get(f"/collections/{COLLECTION}/works", params={"limit": 1000})
                assert r.status_code == 200, r.text
                listed = {w["sha256"]: w for w in r.json()}
                assert set(listed) == set(stored)
                assert all(listed[s]["id"] == stored[s] for s in stored)
                r = c.get(f"/collections/{COLLECTION}")
                assert r.status_code == 200 and r.json()["works"] == len(stored), r.text
                for s in rnd.unacked:
                    r = c.get(f"/collections/{COLLECTION}/works/{s}")
                    assert r.status_code == (200 if s in stored else 404), r.text
            # leftovers refer to nothing stored (a stored work keeps only the uploaded file's name)
            assert not any("uploads" in str(w["source"]) for w in listed.values())
            assert not staged_leftovers(home, sent), "the restarted server kept a dead server's staging"
            traces.append(f"kill {moment}: {len(rnd.acked)} acknowledged, {len(rnd.unacked)} in flight "
                           f"({len(landed)} of them stored), {len(leftovers)} staged files left; "
                           f"{t1 - t0:.1f} s uploading, {time.perf_counter() - t1:.1f} s restarting")

        with server.client(key) as c:
            present = set(listed)
            for s, work in unacked.items():  # upload every unacknowledged work again
                r = c.post(f"/collections/{COLLECTION}/works",
                           files={"file": (work.name, work.data, "application/octet-stream")})
                assert r.status_code == 201, r.text
                body = r.json()
                again = body["duplicates"] if s in present else body["added"]
                assert [w["sha256"] for w in again] == [s] and not body["failed"], (work.name, body)
            stored = stored_state(home, sent)
            assert set(stored) == acked | set(unacked)
            path = Store(tenant_home(home, TENANT)).path(COLLECTION)
            with Collection.open(path) as coll:  # the writer removed what killed commits left
                assert sorted(p.name for p in (path / "vectors").iterdir()) == sorted(coll._files.values())

            t2 = time.perf_counter()
            verdicts = []
            for s in sorted(stored, key=lambda s: sent[s].name):
                work = sent[s]
                r = c.post(f"/collections/{COLLECTION}/scan",
                           files={"file": (work.name, work.data, "application/octet-stream")})
                assert r.status_code == 200, r.text
                found = [m for m in r.json()["matches"] if m["work"]["sha256"] == s]
                assert found, (work.name, r.json()["matches"][:2])
                verdicts.append(found[0]["verdict"])
            assert verdicts.count("copy") >= len(verdicts) // 2, verdicts
            traces.append(f"{len(verdicts)} works scanned in {time.perf_counter() - t2:.1f} s: "
                          f"{verdicts.count('copy')} copy verdicts")
        print(*traces, sep="\n")  # shown with -s
    finally:
        server.stop()
