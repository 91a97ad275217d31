"""Crash safety: a writer SIGKILLed at any moment leaves the last committed state.

A child process adds works and commits every few works, printing each committed count; the
parent kills it at different moments (before, during and after commits), then reopens the
collection and checks that catalog and indexes agree and hold exactly one committed state.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import pytest
from PIL import Image

from detector import Detector
from detector.fingerprints import text_shingles, winnow
from indexes import ChannelSpec, Collection, SegmentRecord, Store, WorkRecord

REPO = Path(__file__).resolve().parents[1]
DIM = 256  # float dims; also the binary channel's bits
SEGS = 2  # segments (= vectors per channel) per work
BLOCK = 10  # works per commit
PREFILL = 3000  # works added before the first kill: commits write a delta and now and then merge it into ~6 MB of index
SPECS = (
    ChannelSpec("emb", "synthetic:v1", "image", "float", DIM, "ip", "IDMap2,Flat"),
    ChannelSpec("bits", "synthetic-hash", "image", "binary", DIM, "hamming", "IDMap2,BFlat"),
)
TIMEOUT = 60.0


# --- synthetic works (the child and the parent compute the same ones) ----------------------

def synthetic_vectors(i: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(i)
    emb = rng.standard_normal((SEGS, DIM)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return {"emb": emb, "bits": rng.integers(0, 256, (SEGS, DIM // 8), dtype=np.uint8)}


def synthetic_work(i: int) -> tuple[WorkRecord, list[SegmentRecord], dict[str, np.ndarray]]:
    sha = hashlib.sha256(f"synthetic work {i}".encode()).hexdigest()
    rec = WorkRecord(sha[:16], sha, "image", f"synthetic/{i}")
    return rec, [SegmentRecord(rec.id, k) for k in range(SEGS)], synthetic_vectors(i)


def child_add_forever(path: str) -> None:
    """Child process: add works 0, 1, 2, ... after the ones stored, committing every BLOCK works
    (every other commit merges the delta index into the main one). Prints `committing N` just before a commit of N works and `committed N` after it."""
    coll = Collection.open(path)
    n = len(coll)
    print(f"ready {n}", flush=True)
    with coll.writer() as w:
        while True:
            for _ in range(BLOCK):
                assert w.add_work(*synthetic_work(n))
                n += 1
            if (n // BLOCK) % 2 == 0:
                w.merge_deltas()  # every other commit rewrites the main index, the others a delta
            print(f"committing {n}", flush=True)
            w.commit()
            print(f"committed {n}", flush=True)


def child_detector_add(home: str, name: str, folder: str) -> None:
    """Child process: `Detector.add` with commit_every=5, printing the work count after each commit."""
    import indexes.collection as collection_mod

    commit = collection_mod.Writer.commit

    def reporting_commit(self: collection_mod.Writer, *, reopen: bool = True) -> None:
        commit(self, reopen=reopen)
        print(f"committed {len(self.coll)}", flush=True)

    collection_mod.Writer.commit = reporting_commit  # type: ignore[method-assign]
    report = Detector(home).add(name, [folder], commit_every=5, batch_size=5, show_progress_bar=False)
    print(f"done {len(report.added)}", flush=True)


CHILD = "import sys; sys.path.insert(0, sys.argv[1]); import tests.test_crash as t; getattr(t, sys.argv[2])(*sys.argv[3:])"


class Child:
    """A child process running one of the functions above, whose stdout lines we wait on."""

    def __init__(self, func: str, *args: str, stderr: Path) -> None:
        self.stderr_path = stderr
        self._stderr = open(stderr, "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(REPO), func, *args],
            stdout=subprocess.PIPE, stderr=self._stderr, bufsize=0,
        )
        self.lines: list[str] = []
        self._buf = b""

    def _read(self, timeout: float) -> bool:
        """Read what is there (waiting up to *timeout*); False at end of output."""
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            return True
        chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
        if not chunk:
            return False
        self._buf += chunk
        *done, self._buf = self._buf.split(b"\n")
        self.lines += [d.decode() for d in done]
        return True

    def wait_for(self, word: str, nth: int = 1) -> None:
        """Block until the child has printed its *nth* line starting with *word*."""
        deadline = time.monotonic() + TIMEOUT
        while sum(ln.split()[0] == word for ln in self.lines) < nth:
            if not self._read(max(0.0, deadline - time.monotonic())) or time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"child never printed {word!r} #{nth}; it printed {self.lines[-5:]}, "
                                     f"stderr: {self.stderr_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL, then collect every line the child flushed before it died."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(TIMEOUT)
        while self._read(TIMEOUT):
            pass
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self._stderr.close()
        assert self.proc.returncode == -signal.SIGKILL, self.stderr_path.read_text()

    def last(self, word: str) -> int | None:
        values = [int(ln.split()[1]) for ln in self.lines if ln.split()[0] == word]
        return values[-1] if values else None


# --- checks --------------------------------------------------------------------------------

def stored_vectors(coll: Collection, channel: str) -> dict[int, np.ndarray]:
    """Every vector of a channel (its main and delta IDMap2 indexes) by its id."""
    out: dict[int, np.ndarray] = {}
    vectors = coll._indexes[channel]
    for index in (vectors.main, vectors.delta):
        if index is None:
            continue
        ids = faiss.vector_to_array(index.id_map)
        if isinstance(index, faiss.IndexBinary):
            inner = faiss.downcast_IndexBinary(index.index)
            rows = faiss.vector_to_array(inner.xb).reshape(-1, inner.code_size)
        else:
            rows = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
        assert len(ids) == len(rows) == index.ntotal
        assert not set(ids.tolist()) & set(out), "an id in both the main and the delta index"
        out.update(zip(ids.tolist(), rows, strict=True))
    return out


def check_synthetic(coll: Collection) -> int:
    """Assert the collection holds works 0..n-1, each with its segments and exact vectors."""
    assert coll.check() == []
    n = len(coll)
    counts = coll.manifest.counts
    assert counts["works"] == n and counts["segments"] == n * SEGS
    for spec in SPECS:
        assert counts[f"vectors.{spec.name}"] == coll._indexes[spec.name].ntotal == n * SEGS
    manifest = json.loads((coll.path / "manifest.json").read_text())
    assert manifest["generation"] == coll.generation  # a stale manifest was repaired on open
    assert [w.source for w in coll.works()] == [f"synthetic/{i}" for i in range(n)]
    rows = coll.db.execute(
        "SELECT segments.id, works.source, segments.ordinal FROM segments "
        "JOIN works ON works.num = segments.work_num ORDER BY segments.id"
    ).fetchall()
    assert len(rows) == n * SEGS
    stored = {spec.name: stored_vectors(coll, spec.name) for spec in SPECS}
    for seg_id, source, ordinal in rows:
        want = synthetic_vectors(int(source.split("/")[1]))
        np.testing.assert_array_equal(stored["emb"][seg_id], want["emb"][ordinal])
        np.testing.assert_array_equal(stored["bits"][seg_id], want["bits"][ordinal])
    return n


def on_disk(path: Path) -> tuple[set[str], int | None]:
    """Index files and manifest generation as a killed writer left them (before any open)."""
    try:
        gen = json.loads((path / "manifest.json").read_text())["generation"]
    except (OSError, ValueError, KeyError):
        gen = None
    return {p.name for p in (path / "vectors").iterdir()}, gen


# --- the tests -----------------------------------------------------------------------------

#: (marker printed by the child, which one, extra delay in seconds) per kill: before any commit,
#: at the start of a commit, at several points inside one, and between commits.
KILLS = [
    ("ready", 1, 0.0),
    ("committing", 1, 0.0),
    ("committing", 1, 0.003),
    ("committing", 2, 0.006),
    ("committing", 1, 0.010),
    ("committing", 3, 0.015),
    ("committing", 2, 0.025),
    ("committed", 1, 0.0),
    ("committed", 2, 0.005),
    ("committing", 4, 0.040),
]


def test_sigkill_during_adds_leaves_a_committed_state(tmp_path: Path) -> None:
    rnd = random.Random(4)
    store = Store(tmp_path / "home")
    with store.create("crash", SPECS) as coll, coll.writer() as w:
        for i in range(PREFILL):
            assert w.add_work(*synthetic_work(i))
    path = store.path("crash")
    watcher = store.open("crash")  # a long-lived reader in another process than the writer
    seen_states: list[int] = []
    traces: list[tuple] = []
    try:
        for round_no, (word, nth, delay) in enumerate(KILLS):
            child = Child("child_add_forever", str(path), stderr=tmp_path / f"child{round_no}.err")
            child.wait_for(word, nth)
            time.sleep(delay + rnd.uniform(0, 0.004))
            child.kill()

            started = int(child.lines[0].split()[1])
            committed = child.last("committed") or started
            committing = child.last("committing") or started
            # the catalog commit may have happened just before the kill, its print not yet
            allowed = {committed, committing}
            files, manifest_gen = on_disk(path)
            with Collection.open(path) as coll:
                n = check_synthetic(coll)
                gen = coll.generation
                strays = sorted(files - {*coll._files.values(), *coll._deltas.values()})
            assert n in allowed and n % BLOCK == 0, (round_no, n, child.lines[-4:], strays)
            traces.append((word, nth, delay, n - committed, strays, manifest_gen != gen))
            watcher.refresh()
            assert len(watcher) == n and watcher.generation == gen and watcher.check() == []
            seen_states.append(n)
        assert seen_states == sorted(seen_states) and seen_states[-1] > PREFILL
        # (what each kill interrupted, shown with -s: new works past the last print, files a
        # killed commit left, whether the manifest was stale)
        print(*traces, sep="\n")

        # a new writer recovers (removes what the killed commits left) and adds more works
        with Collection.open(path) as coll:
            with coll.writer() as w:
                assert sorted(p.name for p in (path / "vectors").iterdir()) == sorted([*coll._files.values(), *coll._deltas.values()])
                for i in range(seen_states[-1], seen_states[-1] + 2 * BLOCK):
                    assert w.add_work(*synthetic_work(i))
                    assert w.add_work(*synthetic_work(i)) is False
            assert check_synthetic(coll) == seen_states[-1] + 2 * BLOCK
            assert sorted(p.name for p in (path / "vectors").iterdir()) == sorted([*coll._files.values(), *coll._deltas.values()])
            assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]
        assert watcher.refresh() and len(watcher) == seen_states[-1] + 2 * BLOCK
    finally:
        watcher.close()


def test_reader_refreshing_while_a_writer_commits(tmp_path: Path) -> None:
    """A reader in another process than the writer refreshes between (and during) its commits:
    every snapshot it gets is one committed state, catalog and indexes alike."""
    store = Store(tmp_path / "home")
    with store.create("live", SPECS) as coll, coll.writer() as w:
        for i in range(PREFILL // 3):
            assert w.add_work(*synthetic_work(i))
    child = Child("child_add_forever", str(store.path("live")), stderr=tmp_path / "child.err")
    seen = set()
    try:
        with store.open("live") as reader:
            for k in range(1, 16):
                child.wait_for("committed", k)
                reader.refresh()  # races with the child's next commit
                n = len(reader)
                assert reader.check() == [] and n % BLOCK == 0
                assert reader.manifest.counts["segments"] == reader._indexes["emb"].ntotal == n * SEGS
                assert reader.manifest.counts["vectors.bits"] == n * SEGS
                assert [w.source for w in reader.works()[-2:]] == [f"synthetic/{n - 2}", f"synthetic/{n - 1}"]
                seen.add(n)
            assert len(seen) > 1  # the reader did see the collection grow
    finally:
        child.kill()
    with store.open("live") as coll:
        check_synthetic(coll)


# --- through the Detector API --------------------------------------------------------------

def _skimage_data() -> Path:
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-image (a test dependency) ships the photographs these works are cut from")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@pytest.fixture(scope="module")
def many_works(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """~300 small works: 40 px tiles of scikit-image's photographs (PNG) and ~40-word passages
    of standard-library module docstrings (.txt), all different."""
    folder = tmp_path_factory.mktemp("many") / "works"
    folder.mkdir()
    data = _skimage_data()
    n = 0
    for photo in ("astronaut.png", "coffee.png", "chelsea.png"):
        with Image.open(data / photo) as im:
            rgb = im.convert("RGB")
        for top in range(0, 200, 40):
            for left in range(0, 400, 40):
                rgb.crop((left, top, left + 40, top + 40)).save(folder / f"tile{n:04d}.png")
                n += 1
    k = 0
    for mod in ("argparse", "unittest", "re", "csv", "json", "typing", "collections", "pathlib", "logging",
                "subprocess", "threading", "functools", "itertools", "datetime", "decimal", "email"):
        words = (inspect.getdoc(importlib.import_module(mod)) or "").split()
        for start in range(0, len(words) - 39, 40):
            (folder / f"text{k:04d}.txt").write_text(" ".join(words[start : start + 40]), encoding="utf-8")
            k += 1
    shas = {hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    assert len(shas) == n + k and n >= 150 and k >= 60  # all different: no duplicates by chance
    return folder


def test_sigkill_during_detector_add_then_rerun_completes(tmp_path: Path, many_works: Path) -> None:
    rnd = random.Random(7)
    home = tmp_path / "home"
    Detector(home).create("art", ["pdq", "shingles"])
    files = sorted(many_works.iterdir())
    n_images = sum(f.suffix == ".png" for f in files)
    path = Store(home).path("art")
    before: list[str] = []
    for round_no, commits in enumerate((2, 5)):
        child = Child("child_detector_add", str(home), "art", str(many_works),
                      stderr=tmp_path / f"child{round_no}.err")
        child.wait_for("committed", commits)
        time.sleep(rnd.uniform(0, 0.01))
        child.kill()
        assert child.last("done") is None, "the child finished before it was killed"
        committed = child.last("committed")
        assert committed is not None
        with Collection.open(path) as coll:
            assert coll.check() == []
            n = len(coll)
            # commits are of 5 works each; the last one may have landed before its print
            assert n in (committed, committed + 5) and n % 5 == 0 and n > len(before)
            works = coll.works()
            assert [w.source for w in works] == [str(f) for f in files[:n]]  # files are added in order
            images = [w for w in works if w.modality == "image"]
            assert coll.manifest.counts["vectors.pdq"] == coll._indexes["pdq"].ntotal == len(images)
            for w in works:
                if w.modality == "text":
                    assert coll.text(w.id) == Path(w.source).read_text(encoding="utf-8")
                    keys = coll.db.execute(
                        "SELECT key FROM postings JOIN works ON works.num = postings.work_num "
                        "WHERE works.id = ? ORDER BY pos", (w.id,)).fetchall()
                    sh = text_shingles(coll.text(w.id))  # a work stores its winnowed keys
                    assert [k[0] for k in keys] == sh.keys[winnow(sh.keys)].tolist()
            before = [w.id for w in works]

    det = Detector(home)
    try:
        report = det.add("art", [many_works], commit_every=5, batch_size=5, show_progress_bar=False)
        assert report.failed == ()
        assert sorted(d.id for d in report.duplicates) == sorted(before)
        assert len(report.added) == len(files) - len(before)
        assert not {a.id for a in report.added} & set(before)
        works = det.works("art")
        assert len(works) == len({w.sha256 for w in works}) == len(files)
        assert sorted(w.source for w in works) == [str(f) for f in files]
        again = det.add("art", [many_works], commit_every=5, batch_size=5, show_progress_bar=False)
        assert again.added == () and len(again.duplicates) == len(files)
    finally:
        det.close()
    with Collection.open(path) as coll:
        assert coll.check() == [] and len(coll) == len(files)
        assert coll._indexes["pdq"].ntotal == n_images
        assert sorted(p.name for p in (path / "vectors").iterdir()) == sorted([*coll._files.values(), *coll._deltas.values()])
