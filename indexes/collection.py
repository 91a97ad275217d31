"""A collection: FAISS indexes + a SQLite catalog + a manifest, persisted atomically.

Layout of a collection folder::

    manifest.json          what the collection is (derived; rewritten after each commit)
    catalog.sqlite         works, segments, posting keys, texts (in chunks), and the current generation
    vectors/<channel>.<generation>.faiss         a channel's main index
    vectors/<channel>.delta.<generation>.faiss   its recent additions (exact search), if any
    lock, write.lock       advisory locks (readers / the one writer)

How a commit stays atomic: the writer saves each changed FAISS index under a new file name
(written to a temporary file, fsynced, renamed), then commits one SQLite transaction that holds
the catalog rows *and* the names of the index files that match them. Until that transaction
commits, the catalog still names the previous files, which are never touched; after it, the
old files are deleted. A crash at any point therefore leaves the last committed state: the
catalog and the index files it names always agree. Stray files of an unfinished commit are
removed the next time a writer opens the collection.

Why a delta: rewriting a million-vector index (1.7 GiB with HNSW) on every commit would cost
more than encoding what a commit adds. New vectors therefore go to a small exact index beside
the main one, and only that file is rewritten; it is merged into the main index once it holds
more than `DELTA_MAX_SHARE` of the main index's vectors or `DELTA_MAX_VECTORS`. A search asks
both and keeps the best *k*.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Self

import faiss
import numpy as np

from indexes.errors import CollectionError, CollectionExists, CollectionNotFound, StorageError
from indexes.records import (
    FORMAT_VERSION,
    READ_FORMAT_VERSIONS,
    ChannelSpec,
    Manifest,
    SegmentRecord,
    WorkRecord,
    check_name,
)

log = logging.getLogger(__name__)

#: Segment records a reader keeps between lookups (cleared when the collection changes).
SEGMENT_CACHE = 200_000
#: A channel's delta index is merged into its main index at a commit when it holds more than
#: this share of the main index's vectors, or more than DELTA_MAX_VECTORS. The delta is searched
#: exhaustively: at 20,000 vectors it added ~9 ms to a 1M-passage scan's p50 (at 10,000 no
#: less, within noise); a merge there costs ~15 s, mostly writing the main index, so merging
#: every 10,000 cost ingest more (BENCHMARKS.md, text at a million passages).
DELTA_MAX_SHARE = 0.05
DELTA_MAX_VECTORS = 20_000
#: A text work's body is stored in pieces of this many characters (the last one shorter), so
#: reading a stretch of it reads a few pieces, not the whole body: SQLite reads a whole value
#: even for `substr`, and a scan reads dozens of stretches of works that may be books. 4,000
#: characters of ASCII fit one 4 KiB page. Part of the layout of format version 5 (versions 3
#: and 4 kept each body whole, in table `texts`; a commit that changes such a collection moves
#: them).
TEXT_CHUNK_CHARS = 4000

_TEXT_CHUNKS_TABLE = """
CREATE TABLE text_chunks(
    work_num INTEGER NOT NULL REFERENCES works(num) ON DELETE CASCADE,
    chunk INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (work_num, chunk)
);
"""

_SCHEMA = _TEXT_CHUNKS_TABLE + """
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE works(
    num INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    sha256 TEXT NOT NULL UNIQUE,
    modality TEXT NOT NULL,
    source TEXT NOT NULL,
    title TEXT, creator TEXT, licence TEXT, source_url TEXT,
    extra TEXT NOT NULL DEFAULT '{}',
    size_bytes INTEGER, width INTEGER, height INTEGER,
    added_at TEXT NOT NULL
);
CREATE TABLE segments(
    id INTEGER PRIMARY KEY,
    work_num INTEGER NOT NULL REFERENCES works(num) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER, "end" INTEGER, box TEXT,
    UNIQUE(work_num, ordinal)
);
CREATE TABLE thumbnails(
    work_num INTEGER PRIMARY KEY REFERENCES works(num) ON DELETE CASCADE,
    data BLOB NOT NULL
);
CREATE TABLE postings(
    channel INTEGER NOT NULL,
    key INTEGER NOT NULL,
    work_num INTEGER NOT NULL,
    pos INTEGER NOT NULL,
    PRIMARY KEY (channel, key, work_num, pos)
) WITHOUT ROWID;
CREATE TABLE work_keys(
    work_num INTEGER NOT NULL REFERENCES works(num) ON DELETE CASCADE,
    channel INTEGER NOT NULL,
    keys BLOB NOT NULL,
    PRIMARY KEY (work_num, channel)
);
CREATE TABLE calibration(
    name TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    body TEXT NOT NULL
);
"""

_WORK_COLUMNS = (
    "id, sha256, modality, source, title, creator, licence, source_url, extra, "
    "size_bytes, width, height, added_at"
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _store_text(db: Any, work_num: int, text: str, *, chunked: bool) -> None:
    """Store a work's body: in TEXT_CHUNK_CHARS pieces, or whole in a layout before version 5."""
    if not chunked:
        db.execute("INSERT INTO texts (work_num, body) VALUES (?, ?)", (work_num, text))
        return
    pieces = [text[i : i + TEXT_CHUNK_CHARS] for i in range(0, len(text), TEXT_CHUNK_CHARS)] or [""]
    db.executemany("INSERT INTO text_chunks (work_num, chunk, body) VALUES (?, ?, ?)",
                   ((work_num, k, piece) for k, piece in enumerate(pieces)))


def _chunk_texts(db: Any) -> None:
    """Move the whole bodies of table `texts` (format versions 3 and 4) into `text_chunks`, in
    the caller's transaction."""
    db.execute(_TEXT_CHUNKS_TABLE)
    nums = [r[0] for r in db.execute("SELECT work_num FROM texts ORDER BY work_num").fetchall()]
    if nums:
        log.info("storing the %d texts of the collection in chunks (format version %d)", len(nums), FORMAT_VERSION)
    for num in nums:  # one body in memory at a time
        (body,) = db.execute("SELECT body FROM texts WHERE work_num = ?", (num,)).fetchone()
        _store_text(db, num, body, chunked=True)
    db.execute("DROP TABLE texts")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write *data* to *path* so that readers see the old or the new content, never a mix."""
    # a temporary name of its own per process and thread: two writers of one file (a reader
    # repairing the manifest while a writer commits) must not write into each other's file
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _dead_writer_tmp(file: Path) -> bool:
    """True if *file* is a `write_atomic` temporary file of a process that no longer runs."""
    parts = file.name.split(".")
    if len(parts) < 4 or parts[-1] != "tmp" or not parts[-3].isdigit():
        return False
    try:
        os.kill(int(parts[-3]), 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


#: Candidates an HNSW graph keeps while searching (faiss' default of 16 misses too many).
HNSW_EF_SEARCH = 128


def _tune(index: Any) -> Any:
    """Search-time settings that FAISS does not store in the file."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "id_map") and hasattr(index, "index") else index
    if hasattr(inner, "hnsw"):
        inner.hnsw.efSearch = max(inner.hnsw.efSearch, HNSW_EF_SEARCH)
    return index


def _new_index(spec: ChannelSpec) -> Any:
    if spec.kind == "float":
        metric = faiss.METRIC_INNER_PRODUCT if spec.metric == "ip" else faiss.METRIC_L2
        return _tune(faiss.index_factory(spec.dim, spec.factory, metric))
    return faiss.index_binary_factory(spec.dim, spec.factory)


def _remove_ids(spec: ChannelSpec, index: Any, ids: np.ndarray) -> Any:
    """*index* without the vectors of *ids*. Graph indexes (HNSW) cannot delete: they are
    rebuilt from their remaining vectors, which costs a full re-add."""
    try:
        index.remove_ids(ids)
        return index
    except RuntimeError:
        if not hasattr(index, "id_map"):
            raise
    all_ids = faiss.vector_to_array(index.id_map)
    keep = ~np.isin(all_ids, ids)
    vectors = index.index.reconstruct_n(0, index.ntotal)
    fresh = _new_index(spec)
    fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), all_ids[keep])
    return fresh


def _write_index(spec: ChannelSpec, index: Any, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    (faiss.write_index if spec.kind == "float" else faiss.write_index_binary)(index, str(tmp))
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_index(spec: ChannelSpec, path: Path) -> Any:
    try:
        if spec.kind == "float":
            return _tune(faiss.read_index(str(path)))
        return faiss.read_index_binary(str(path))
    except RuntimeError as exc:
        raise StorageError(f"index file {path} is unreadable: {exc}") from exc


def _copy(index: Any) -> Any:
    """A deep copy of a FAISS index. Cloning copies memory to memory (1-5 s for a 1.7 GiB HNSW
    index, against 20 s for a serialise round trip); the types clone does not cover (binary
    IDMaps, some others) take the round trip, which copies every type."""
    if isinstance(index, faiss.IndexBinary):
        try:
            return faiss.clone_binary_index(index)
        except RuntimeError:
            return faiss.deserialize_index_binary(faiss.serialize_index_binary(index))
    try:
        return _tune(faiss.clone_index(index))
    except RuntimeError:
        return _tune(faiss.deserialize_index(faiss.serialize_index(index)))


def _new_delta(spec: ChannelSpec) -> Any:
    """An empty exact index for a channel's recent additions."""
    if spec.kind == "float":
        metric = faiss.METRIC_INNER_PRODUCT if spec.metric == "ip" else faiss.METRIC_L2
        return faiss.index_factory(spec.dim, "IDMap2,Flat", metric)
    return faiss.index_binary_factory(spec.dim, "IDMap2,BFlat")


def _contents(index: Any) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, ids) of an IDMap2 index, in the order they were added."""
    return index.index.reconstruct_n(0, index.ntotal), faiss.vector_to_array(index.id_map).astype(np.int64)


def _in_memory(indexes: dict[str, _Vectors], files: dict[str, str], deltas: dict[str, str]) -> dict[str, Any]:
    """The loaded FAISS indexes by file name (see `Collection.open`'s *share*)."""
    out = {files[n]: v.main for n, v in indexes.items()}
    out.update({deltas[n]: indexes[n].delta for n in deltas})
    return out


@dataclass(frozen=True)
class _Vectors:
    """One channel's vectors: its main index and a small exact delta index of recent additions
    (None when there are none). Never changed in place: a write session works on copies."""

    spec: ChannelSpec
    main: Any
    delta: Any = None

    @property
    def ntotal(self) -> int:
        return int(self.main.ntotal) + (0 if self.delta is None else int(self.delta.ntotal))

    def ids(self) -> np.ndarray:
        parts = [faiss.vector_to_array(ix.id_map) for ix in (self.main, self.delta) if ix is not None and ix.ntotal]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        tiers = [ix for ix in (self.main, self.delta) if ix is not None and ix.ntotal]
        found = [ix.search(queries, k) for ix in tiers]
        if len(found) == 1:
            return found[0]
        dist = np.concatenate([f[0] for f in found], axis=1)
        ids = np.concatenate([f[1] for f in found], axis=1)
        closer = dist.astype(np.float64)
        if self.spec.kind == "float" and self.spec.metric == "ip":
            closer = -closer  # inner product: higher is closer
        closer[ids < 0] = np.inf
        order = np.argsort(closer, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(dist, order, axis=1), np.take_along_axis(ids, order, axis=1)

    def reconstruct(self, segment_id: int) -> np.ndarray:
        if self.delta is not None and self.delta.ntotal:
            try:
                return self.delta.reconstruct(segment_id)
            except RuntimeError:
                pass
        return self.main.reconstruct(segment_id)

    def should_merge(self, asked: bool = False) -> bool:
        """Whether a commit merges the delta into the main index: it has outgrown its limits,
        or a merge was *asked* for (and there is something to merge)."""
        n = 0 if self.delta is None else int(self.delta.ntotal)
        return n > 0 and (asked or n > DELTA_MAX_VECTORS or n > DELTA_MAX_SHARE * int(self.main.ntotal))


class _Lock:
    """An advisory file lock (fcntl.flock), shared or exclusive."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def hold(self, exclusive: bool) -> Iterator[None]:
        with open(self.path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


class _Rows:
    """The rows of one statement, read to the end (what `_SharedConnection.execute` returns)."""

    def __init__(self, rows: list[Any], lastrowid: int | None) -> None:
        self._rows = rows
        self._next = 0
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _SharedConnection:
    """A sqlite3 connection that several threads may use at once: each statement runs and is
    read to the end under a lock (Python's sqlite3 connections are not safe for concurrent
    statements). Many threads read one snapshot of a collection this way."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._lock = threading.RLock()

    def execute(self, sql: str, args: Sequence[Any] | dict[str, Any] = ()) -> _Rows:
        with self._lock:
            cur = self._db.execute(sql, args)
            return _Rows(cur.fetchall(), cur.lastrowid)

    def executemany(self, sql: str, rows: Any) -> None:
        with self._lock:
            self._db.executemany(sql, rows)

    @property
    def in_transaction(self) -> bool:
        return self._db.in_transaction

    def close(self) -> None:
        with self._lock:
            self._db.close()


class Collection:
    """A named set of reference works with one FAISS index (or posting table) per channel.

    Open one with `Collection.create` or `Collection.open`; change it only inside
    `with collection.writer() as w:`; search it with `search` and `lookup_postings`.
    An open collection reads a consistent snapshot; `refresh()` picks up later commits.
    (The snapshot is a read transaction on the catalog, kept open between calls, so the catalog
    rows it reads always match the index files it loaded, whatever other processes commit.)
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db: _SharedConnection | None = None
        self._probe: sqlite3.Connection | None = None  # see committed_generation
        self._probe_lock = threading.Lock()
        self._indexes: dict[str, _Vectors] = {}
        #: the loaded FAISS indexes by file name, replaced whole (never changed in place), so another
        #: object may borrow from it at any moment (see `open`'s *share*)
        self._by_file: dict[str, Any] = {}
        self._files: dict[str, str] = {}  # channel -> its main index file
        self._deltas: dict[str, str] = {}  # channel -> its delta index file, where there is one
        self.generation = 0
        self.manifest: Manifest
        self._lock = _Lock(self.path / "lock")
        self._write_lock = _Lock(self.path / "write.lock")
        self._writing = False

    # -- opening ---------------------------------------------------------------------------
    @classmethod
    def create(cls, root: str | os.PathLike[str], name: str, channels: Sequence[ChannelSpec]) -> Collection:
        """Create collection *name* under *root* with the given channels."""
        check_name(name)
        if not channels:
            raise CollectionError(f"collection {name!r} needs at least one channel")
        names = [c.name for c in channels]
        if len(set(names)) != len(names):
            raise CollectionError(f"collection {name!r}: channel names repeat: {names}")
        root = Path(root)
        final = root / name
        if final.exists():
            raise CollectionExists(f"collection {name!r} already exists in {root}")
        root.mkdir(parents=True, exist_ok=True)
        # Build in a hidden folder and rename it into place: a crash leaves no half collection.
        staging = root / f".{name}.creating.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        (staging / "vectors").mkdir(parents=True)
        db = sqlite3.connect(staging / "catalog.sqlite")
        try:
            db.executescript(_SCHEMA)
            created = _now()
            files = {}
            for spec in channels:
                if spec.kind != "postings":
                    files[spec.name] = f"{spec.name}.000000.faiss"
                    _write_index(spec, _new_index(spec), staging / "vectors" / files[spec.name])
            meta = {
                "name": name,
                "format_version": str(FORMAT_VERSION),
                "created_at": created,
                "generation": "0",
                "channels": json.dumps([c.to_dict() for c in channels]),
                "files": json.dumps(files),
            }
            db.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            db.commit()
        finally:
            db.close()
        try:
            os.rename(staging, final)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise CollectionExists(f"collection {name!r} already exists in {root}") from exc
        _fsync_dir(root)
        coll = cls.open(final)
        coll._write_manifest()
        log.info("created collection %s at %s", name, final)
        return coll

    @classmethod
    def open(cls, path: str | os.PathLike[str], share: Collection | None = None) -> Collection:
        """Open the collection stored in folder *path*. With *share*, another open object of the
        same collection, index files it already holds are taken from it instead of read again
        (indexes are never changed in place: a write session changes a copy)."""
        path = Path(path)
        if not (path / "catalog.sqlite").is_file():
            raise CollectionNotFound(f"no collection at {path}")
        coll = cls(path)
        try:
            coll._connect()
            coll._load(share)
        except BaseException:
            coll.close()
            raise
        return coll

    def _connect(self) -> None:
        db = sqlite3.connect(self.path / "catalog.sqlite", isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA journal_mode = WAL")
        except sqlite3.DatabaseError as exc:
            db.close()
            raise StorageError(f"catalog {self.path / 'catalog.sqlite'} is not a SQLite database: {exc}") from exc
        db.row_factory = sqlite3.Row
        self._db = _SharedConnection(db)

    def _meta(self) -> dict[str, str]:
        try:
            return {r["key"]: r["value"] for r in self.db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"catalog of {self.path} is damaged: {exc}") from exc

    def _begin_read(self) -> None:
        """Start the read transaction that pins this connection's view of the catalog (WAL mode:
        the view is taken at the first read after it and kept until `_end_read`)."""
        self.db.execute("BEGIN")

    def _end_read(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    def _load(self, share: Collection | None = None) -> None:
        """Read the committed state: catalog snapshot + the index files it names."""
        self._end_read()
        self._begin_read()
        try:
            self._load_snapshot(share)
        except BaseException:
            self._end_read()
            raise

    def _load_snapshot(self, share: Collection | None = None) -> None:
        self._segment_cache: dict[int, SegmentRecord] = {}
        shared = share._by_file if share is not None and share.path == self.path else {}
        with self._lock.hold(exclusive=False):
            meta = self._meta()  # the first read pins the snapshot, while no commit can run
            version = int(meta.get("format_version", "0"))
            if version not in READ_FORMAT_VERSIONS:
                raise StorageError(
                    f"collection {self.path.name!r} has format version {version}; this factor4 "
                    f"reads version {FORMAT_VERSION}: rebuild it with `factor4 create` + `factor4 add`"
                )
            try:
                channels = tuple(ChannelSpec.from_dict(c) for c in json.loads(meta["channels"]))
                files = json.loads(meta["files"])
                deltas = json.loads(meta.get("deltas", "{}"))
                for spec in channels:
                    if spec.kind != "postings" and not isinstance(files[spec.name], str):
                        raise TypeError(f"index file of channel {spec.name} is not a name")
                if not isinstance(deltas, dict) or not all(isinstance(f, str) for f in deltas.values()):
                    raise TypeError("the delta index files are not a mapping of names")
            except (KeyError, ValueError, TypeError, CollectionError) as exc:
                raise StorageError(f"collection {self.path.name!r} is damaged: its catalog's meta table "
                                   f"cannot be read ({type(exc).__name__}: {exc})") from exc

            def load(spec: ChannelSpec, name: str) -> Any:
                if name in shared:  # the same file, already in memory
                    return shared[name]
                file = self.path / "vectors" / name
                if not file.is_file():
                    raise StorageError(f"collection {self.path.name!r} is damaged: {file} is missing")
                return _read_index(spec, file)

            indexes = {}
            for spec in channels:
                if spec.kind == "postings":
                    continue
                delta = load(spec, deltas[spec.name]) if spec.name in deltas else None
                indexes[spec.name] = _Vectors(spec, load(spec, files[spec.name]), delta)
        self._indexes = indexes
        self._files = files
        self._deltas = deltas
        self._by_file = _in_memory(indexes, files, deltas)
        self.generation = int(meta["generation"])
        self.manifest = Manifest(
            name=meta["name"],
            format_version=version,
            created_at=meta["created_at"],
            generation=self.generation,
            channels=channels,
            counts=self._counts(),
        )
        if self._manifest_generation() != self.generation:
            # a crash between the catalog commit and the manifest write: the catalog is the truth
            write_atomic(self.path / "manifest.json", self.manifest.to_json().encode())

    def _manifest_generation(self) -> int | None:
        try:
            return int(json.loads((self.path / "manifest.json").read_text())["generation"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def refresh(self, share: Collection | None = None) -> bool:
        """Reload if another process (or another object) committed since this one was opened;
        True if it did. *share* as for `open`."""
        if self._writing:
            return False  # a write session holds the write lock: it sees the latest state already
        self._end_read()
        self._begin_read()
        gen = int(self._meta()["generation"])  # pins the new snapshot
        if gen != self.generation:
            self._load(share)
            return True
        return False

    def committed_generation(self) -> int:
        """The generation last committed by anyone, read on a connection of its own (opened once,
        never in a transaction): this object's snapshot is not touched, so other threads may be
        reading it meanwhile."""
        with self._probe_lock:
            if self._probe is None:
                self._probe = sqlite3.connect(self.path / "catalog.sqlite", timeout=30, isolation_level=None,
                                              check_same_thread=False)
            try:
                row = self._probe.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"catalog of {self.path} is damaged: {exc}") from exc
        return int(row[0])

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        self._indexes = {}
        self._by_file = {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def db(self) -> _SharedConnection:
        if self._db is None:
            raise CollectionError(f"collection {self.path.name!r} is closed")
        return self._db

    @property
    def name(self) -> str:
        return self.manifest.name

    # -- reading ---------------------------------------------------------------------------
    @property
    def _chunked_texts(self) -> bool:
        """Whether texts are stored in chunks (format version 5), else whole in table `texts`."""
        return self.manifest.format_version >= 5

    def _counts(self) -> dict[str, int]:
        counts = {
            "works": self.db.execute("SELECT count(*) FROM works").fetchone()[0],
            "segments": self.db.execute("SELECT count(*) FROM segments").fetchone()[0],
        }
        for name, index in self._indexes.items():
            counts[f"vectors.{name}"] = int(index.ntotal)
        return counts

    def __len__(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM works").fetchone()[0])

    @staticmethod
    def _work(row: sqlite3.Row) -> WorkRecord:
        data = dict(row)
        data.pop("num", None)
        data["extra"] = json.loads(data["extra"] or "{}")
        return WorkRecord(**data)

    def works(self, modality: str | None = None, limit: int | None = None, offset: int = 0) -> list[WorkRecord]:
        """The works, oldest first (optionally of one modality); *limit* of them from *offset*
        (all when *limit* is None)."""
        sql = f"SELECT {_WORK_COLUMNS} FROM works"
        args: tuple[Any, ...] = ()
        if modality:
            sql += " WHERE modality = ?"
            args = (modality,)
        sql += " ORDER BY num"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            args += (-1 if limit is None else limit, offset)
        return [self._work(r) for r in self.db.execute(sql, args)]

    def work(self, work_id: str) -> WorkRecord:
        row = self.db.execute(f"SELECT {_WORK_COLUMNS} FROM works WHERE id = ?", (work_id,)).fetchone()
        if row is None:
            raise CollectionError(f"collection {self.name!r} has no work {work_id!r}")
        return self._work(row)

    def find_work(self, work: str) -> WorkRecord:
        """A work by id or by sha256; CollectionError if there is none."""
        rec = self.work_by_sha256(work) if len(work) == 64 else None
        return rec or self.work(work)

    def work_by_sha256(self, sha256: str) -> WorkRecord | None:
        row = self.db.execute(f"SELECT {_WORK_COLUMNS} FROM works WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else self._work(row)

    def text(self, work_id: str) -> str | None:
        """A text work's stored body; None if the work has none."""
        if not self._chunked_texts:
            row = self.db.execute(
                "SELECT body FROM texts JOIN works ON works.num = texts.work_num WHERE works.id = ?", (work_id,)
            ).fetchone()
            return None if row is None else row[0]
        rows = self.db.execute(
            "SELECT body FROM text_chunks JOIN works ON works.num = text_chunks.work_num WHERE works.id = ? "
            "ORDER BY chunk",
            (work_id,),
        ).fetchall()
        return "".join(r[0] for r in rows) if rows else None

    def thumbnail(self, work_id: str) -> bytes | None:
        """The small image (encoded bytes) stored with an image work, or None."""
        row = self.db.execute(
            "SELECT data FROM thumbnails JOIN works ON works.num = thumbnails.work_num WHERE works.id = ?",
            (work_id,),
        ).fetchone()
        return None if row is None else bytes(row[0])

    def work_segments(self, work_id: str) -> list[SegmentRecord]:
        """A work's segments, by ordinal."""
        rows = self.db.execute(
            "SELECT segments.id, ordinal, start, \"end\", box FROM segments JOIN works ON works.num = "
            "segments.work_num WHERE works.id = ? ORDER BY ordinal",
            (work_id,),
        )
        return [
            SegmentRecord(work_id, r["ordinal"], r["start"], r["end"],
                          tuple(json.loads(r["box"])) if r["box"] else None, r["id"])
            for r in rows
        ]

    def vectors(self, channel: str, ids: Sequence[int]) -> np.ndarray:
        """The stored vectors (float) or codes (binary) of segments *ids*, one row each."""
        spec = self.manifest.channel(channel)
        index = self._indexes.get(channel)
        if index is None:
            raise CollectionError(f"channel {channel!r} of {self.name!r} holds posting keys, not vectors")
        try:
            rows = [index.reconstruct(int(i)) for i in ids]
        except RuntimeError as exc:
            raise CollectionError(f"channel {channel!r} of {self.name!r} has no vector for some of {list(ids)}") from exc
        width = spec.dim if spec.kind == "float" else spec.dim // 8
        dtype = np.float32 if spec.kind == "float" else np.uint8
        return np.asarray(rows, dtype=dtype).reshape(len(rows), width)

    def segments(self, ids: Sequence[int]) -> dict[int, SegmentRecord]:
        """Segments by id; ids no longer in the catalog are left out. Outside write sessions
        they are remembered until the collection changes (scans look up the same ones often)."""
        cache = None if self._writing else getattr(self, "_segment_cache", None)
        out: dict[int, SegmentRecord] = {}
        wanted = sorted({int(i) for i in ids if int(i) >= 0})
        if cache is not None:
            out = {i: cache[i] for i in wanted if i in cache}
            wanted = [i for i in wanted if i not in out]
            if len(cache) > SEGMENT_CACHE:
                cache.clear()
        for chunk in range(0, len(wanted), 500):
            part = wanted[chunk : chunk + 500]
            rows = self.db.execute(
                "SELECT segments.id, works.id AS work_id, ordinal, start, \"end\", box FROM segments "
                f"JOIN works ON works.num = segments.work_num WHERE segments.id IN ({','.join('?' * len(part))})",
                part,
            )
            for r in rows:
                box = tuple(json.loads(r["box"])) if r["box"] else None
                out[r["id"]] = SegmentRecord(r["work_id"], r["ordinal"], r["start"], r["end"], box, r["id"])
                if cache is not None:
                    cache[r["id"]] = out[r["id"]]
        return out

    def search(self, channel: str, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Nearest *k* segments per query row: (scores, segment ids), -1 ids where fewer exist.

        Float channels score by inner product (cosine for normalised vectors, higher = closer);
        binary channels by Hamming distance in bits (lower = closer).
        """
        spec = self.manifest.channel(channel)
        index = self._indexes.get(channel)
        if index is None:
            raise CollectionError(f"channel {channel!r} of {self.name!r} holds posting keys, not vectors")
        nq = len(queries)
        if index.ntotal == 0 or nq == 0:
            fill = np.zeros((nq, k), dtype=np.float32 if spec.kind == "float" else np.int32)
            return fill, np.full((nq, k), -1, dtype=np.int64)
        q = np.ascontiguousarray(queries, dtype=np.float32 if spec.kind == "float" else np.uint8)
        return index.search(q, k)

    def _channel_num(self, channel: str) -> int:
        self.manifest.channel(channel)  # raises for an unknown channel
        return [c.name for c in self.manifest.channels].index(channel)

    def lookup_postings(self, channel: str, keys: np.ndarray) -> list[tuple[int, str, int]]:
        """Every (key, work id, position) stored under *channel* for the given keys."""
        num = self._channel_num(channel)
        uniq = np.unique(np.asarray(keys, dtype=np.int64)).tolist()
        out: list[tuple[int, str, int]] = []
        for chunk in range(0, len(uniq), 900):
            part = uniq[chunk : chunk + 900]
            out.extend(
                self.db.execute(
                    "SELECT key, works.id, pos FROM postings JOIN works ON works.num = postings.work_num "
                    f"WHERE channel = ? AND key IN ({','.join('?' * len(part))})",
                    [num, *part],
                ).fetchall()
            )
        return [tuple(r) for r in out]  # type: ignore[misc]

    def key_document_frequency(self, channel: str, keys: np.ndarray) -> dict[int, int]:
        """How many distinct works hold each key (for discounting common phrases)."""
        freq: dict[int, set[str]] = {}
        for key, work_id, _ in self.lookup_postings(channel, keys):
            freq.setdefault(key, set()).add(work_id)
        return {k: len(v) for k, v in freq.items()}

    def work_keys(self, work_id: str, channel: str) -> np.ndarray:
        """The distinct keys a work holds in postings channel *channel* (int64, sorted)."""
        row = self.db.execute(
            "SELECT keys FROM work_keys JOIN works ON works.num = work_keys.work_num "
            "WHERE works.id = ? AND channel = ?",
            (work_id, self._channel_num(channel)),
        ).fetchone()
        return np.zeros(0, np.int64) if row is None else np.frombuffer(row[0], dtype="<i8").astype(np.int64)

    def text_length(self, work_id: str) -> int:
        """Characters in a text work's stored body (0 if it has none)."""
        if not self._chunked_texts:
            row = self.db.execute(
                "SELECT length(body) FROM texts JOIN works ON works.num = texts.work_num WHERE works.id = ?",
                (work_id,),
            ).fetchone()
            return 0 if row is None else int(row[0])
        row = self.db.execute(  # every chunk but the last is full: only the last is read
            "SELECT chunk, body FROM text_chunks JOIN works ON works.num = text_chunks.work_num "
            "WHERE works.id = ? ORDER BY chunk DESC LIMIT 1",
            (work_id,),
        ).fetchone()
        # counted in Python: SQLite's length() stops at a NUL character
        return 0 if row is None else int(row[0]) * TEXT_CHUNK_CHARS + len(row[1])

    def text_slice(self, work_id: str, start: int, end: int) -> str:
        """Characters start..end of a text work's body ('' past its end)."""
        if start < 0 or end < start:
            raise CollectionError(f"bad text slice {start}..{end}")
        if not self._chunked_texts:
            row = self.db.execute(
                "SELECT substr(body, ?, ?) FROM texts JOIN works ON works.num = texts.work_num WHERE works.id = ?",
                (start + 1, end - start, work_id),
            ).fetchone()
            if row is None:
                raise CollectionError(f"collection {self.name!r} has no text for work {work_id}")
            return row[0]
        first = start // TEXT_CHUNK_CHARS
        last = max(first, (end - 1) // TEXT_CHUNK_CHARS)
        rows = self.db.execute(
            "SELECT body FROM text_chunks JOIN works ON works.num = text_chunks.work_num "
            "WHERE works.id = ? AND chunk BETWEEN ? AND ? ORDER BY chunk",
            (work_id, first, last),
        ).fetchall()
        if not rows:
            if self.db.execute(
                "SELECT 1 FROM text_chunks JOIN works ON works.num = text_chunks.work_num WHERE works.id = ?",
                (work_id,),
            ).fetchone() is None:
                raise CollectionError(f"collection {self.name!r} has no text for work {work_id}")
            return ""  # past the end
        at = first * TEXT_CHUNK_CHARS
        return "".join(r[0] for r in rows)[start - at : end - at]

    def calibration(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """The stored calibration *name* as (generation it was computed at, body), or None."""
        row = self.db.execute("SELECT generation, body FROM calibration WHERE name = ?", (name,)).fetchone()
        return None if row is None else (int(row[0]), json.loads(row[1]))

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(self) -> Iterator[Writer]:
        """A write session: changes become visible and durable together when it ends without
        an exception (or at each `Writer.commit()`); on an exception they are rolled back."""
        if self._writing:
            raise CollectionError(f"collection {self.name!r} already has a write session open")
        with self._write_lock.hold(exclusive=True):
            self.refresh()  # under the write lock: the latest state, and no one else can commit
            self._writing = True
            try:
                self._end_read()
                self._remove_strays()
                w = Writer(self)
                try:
                    yield w
                    w.commit(reopen=False)
                except BaseException:
                    # also when the final commit fails: never leave the write transaction open
                    w.rollback()
                    raise
            finally:
                self._writing = False
                self._segment_cache = {}  # the session may have removed or renumbered segments
                if self._db is not None:
                    # pin the next snapshot to what this session left, before others can commit
                    self._end_read()
                    self._begin_read()
                    self._meta()

    def _remove_strays(self) -> None:
        """Delete index files no commit refers to (left by a crash mid-commit)."""
        keep = set(self._files.values()) | set(self._deltas.values())
        for file in (self.path / "vectors").iterdir():
            if file.name not in keep:
                log.info("removing leftover file %s from an unfinished commit", file)
                file.unlink(missing_ok=True)
        for file in self.path.glob("*.tmp"):  # e.g. manifest.json of a writer killed mid-write
            if _dead_writer_tmp(file):
                log.info("removing leftover file %s of a process that was stopped", file)
                file.unlink(missing_ok=True)

    def _write_manifest(self) -> None:
        self.manifest = replace(self.manifest, generation=self.generation, counts=self._counts())
        write_atomic(self.path / "manifest.json", self.manifest.to_json().encode())

    def check(self) -> list[str]:
        """Consistency problems between catalog and indexes (empty list = consistent)."""
        problems = []
        seg_ids = {r[0] for r in self.db.execute("SELECT segments.id FROM segments")}
        for spec in self.manifest.channels:
            if spec.kind == "postings":
                continue
            index = self._indexes[spec.name]
            ids = set(index.ids().tolist())
            whole_only = " AND segments.ordinal = 0" if spec.covers == "whole" else ""
            modality_ids = {
                r[0]
                for r in self.db.execute(
                    "SELECT segments.id FROM segments JOIN works ON works.num = segments.work_num "
                    "WHERE works.modality = ?" + whole_only,
                    (spec.modality,),
                )
            }
            if ids != modality_ids:
                problems.append(
                    f"channel {spec.name}: {len(ids - seg_ids)} vectors without segments, "
                    f"{len(modality_ids - ids)} segments without vectors"
                )
        orphans = self.db.execute(
            "SELECT count(*) FROM works WHERE num NOT IN (SELECT work_num FROM segments)"
        ).fetchone()[0]
        if orphans:
            problems.append(f"{orphans} works without segments")
        stray = self.db.execute(
            "SELECT count(*) FROM postings WHERE work_num NOT IN (SELECT num FROM works)"
        ).fetchone()[0]
        if stray:
            problems.append(f"{stray} posting keys of works that are not stored")
        return problems


class Writer:
    """Changes to a collection, made inside `Collection.writer()`."""

    def __init__(self, coll: Collection) -> None:
        self.coll = coll
        self.db = coll.db
        self._own: dict[str, _Vectors] = {}  # the channels this session changed
        self._copied: set[tuple[str, str]] = set()  # (channel, "main" | "delta") copied for it
        self._merge: set[str] = set()  # channels whose delta is merged at the next commit
        self._changed = False
        self.db.execute("BEGIN IMMEDIATE")

    def _current(self, name: str) -> _Vectors:
        """A channel's vectors as this session has them (its own copy once it changed them)."""
        return self._own.get(name) or self.coll._indexes[name]

    def _tier(self, name: str, tier: str) -> Any:
        """This session's copy of a channel's main or delta index, made on first change (readers
        keep the original); a channel without a delta gets an empty one."""
        if (name, tier) not in self._copied:
            current = self._current(name)
            index = getattr(current, tier)
            index = _new_delta(current.spec) if index is None else _copy(index)
            self._own[name] = replace(current, **{tier: index})
            self._copied.add((name, tier))
        return getattr(self._own[name], tier)

    def has_sha256(self, sha256: str) -> str | None:
        row = self.db.execute("SELECT id FROM works WHERE sha256 = ?", (sha256,)).fetchone()
        return None if row is None else row[0]

    def add_work(
        self,
        work: WorkRecord,
        segments: Sequence[SegmentRecord],
        vectors: dict[str, np.ndarray],
        postings: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
        text: str | None = None,
        thumbnail: bytes | None = None,
    ) -> bool:
        """Add a work with its segments (the whole work first, ordinal 0), one vector per
        segment for every vector channel of its modality that covers "all" segments and one for
        the whole work for those that cover "whole", optional posting keys (keys, positions),
        text body and thumbnail. Returns False, changing nothing, when a work with the same
        sha256 is already stored."""
        if self.has_sha256(work.sha256):
            return False
        if not segments:
            raise CollectionError(f"work {work.source}: has no segments to index")
        channels = [c for c in self.coll.manifest.channels if c.modality == work.modality]
        if not channels:
            raise CollectionError(
                f"{work.source}: collection {self.coll.name!r} has no channel for {work.modality} works"
            )
        for spec in channels:
            if spec.kind == "postings":
                continue
            vec = vectors.get(spec.name)
            width = spec.dim if spec.kind == "float" else spec.dim // 8
            rows = len(segments) if spec.covers == "all" else 1
            if vec is None or vec.shape != (rows, width):
                got = None if vec is None else vec.shape
                raise CollectionError(
                    f"work {work.source}: channel {spec.name} needs vectors of shape "
                    f"({rows}, {width}), got {got}"
                )
        if segments[0].ordinal != 0:
            raise CollectionError(f"work {work.source}: the first segment must be the whole work (ordinal 0)")
        # one savepoint per work: a failure part-way (a repeated ordinal, bad posting arrays)
        # leaves neither catalog rows nor vectors of this work in the session
        self.db.execute("SAVEPOINT add_work")
        added: list[str] = []  # indexes that got this work's vectors
        ids = np.empty(0, dtype=np.int64)
        try:
            cur = self.db.execute(
                "INSERT INTO works (id, sha256, modality, source, title, creator, licence, source_url, extra, "
                "size_bytes, width, height, added_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    work.id, work.sha256, work.modality, work.source, work.title, work.creator, work.licence,
                    work.source_url, json.dumps(work.extra, sort_keys=True), work.size_bytes, work.width,
                    work.height, work.added_at or _now(),
                ),
            )
            num = cur.lastrowid
            seg_ids = []
            for seg in segments:
                c = self.db.execute(
                    "INSERT INTO segments (work_num, ordinal, start, \"end\", box) VALUES (?,?,?,?,?)",
                    (num, seg.ordinal, seg.start, seg.end, json.dumps(list(seg.box)) if seg.box else None),
                )
                seg_ids.append(c.lastrowid)
            ids = np.asarray(seg_ids, dtype=np.int64)
            for spec in channels:
                if spec.kind == "postings":
                    keys, pos = (postings or {}).get(spec.name, (np.empty(0, np.int64), np.empty(0, np.int64)))
                    keys = np.asarray(keys, dtype=np.int64)
                    pos = np.asarray(pos, dtype=np.int64)
                    if keys.shape != pos.shape or keys.ndim != 1:
                        raise CollectionError(f"work {work.source}: posting keys and positions differ in shape")
                    chan = self.coll._channel_num(spec.name)
                    self.db.executemany(
                        "INSERT OR IGNORE INTO postings (channel, key, work_num, pos) VALUES (?,?,?,?)",
                        zip([chan] * len(keys), keys.tolist(), [num] * len(keys), pos.tolist(), strict=True),
                    )
                    self.db.execute(
                        "INSERT INTO work_keys (work_num, channel, keys) VALUES (?,?,?)",
                        (num, chan, np.unique(keys).astype("<i8").tobytes()),
                    )
                    continue
                dtype = np.float32 if spec.kind == "float" else np.uint8
                vec = np.ascontiguousarray(vectors[spec.name], dtype=dtype)
                self._tier(spec.name, "delta").add_with_ids(vec, ids[: len(vec)])
                added.append(spec.name)
            if text is not None:
                _store_text(self.db, num, text, chunked=self.coll._chunked_texts)
            if thumbnail is not None:
                self.db.execute("INSERT INTO thumbnails (work_num, data) VALUES (?, ?)", (num, thumbnail))
        except BaseException:
            for name in added:
                self._tier(name, "delta").remove_ids(ids)  # an exact index removes in place
            self.db.execute("ROLLBACK TO add_work")
            self.db.execute("RELEASE add_work")
            raise
        self.db.execute("RELEASE add_work")
        self._changed = True
        return True

    def remove_work(self, work_id: str) -> bool:
        """Remove a work, its segments, vectors and posting keys. False if it is not stored."""
        row = self.db.execute("SELECT num, modality FROM works WHERE id = ?", (work_id,)).fetchone()
        if row is None:
            return False
        ids = np.asarray(
            [r[0] for r in self.db.execute("SELECT id FROM segments WHERE work_num = ?", (row[0],))],
            dtype=np.int64,
        )
        for spec in self.coll.manifest.channels:
            if spec.kind != "postings" and spec.modality == row[1] and len(ids):
                current = self._current(spec.name)
                in_delta = np.zeros(0, dtype=np.int64) if current.delta is None else np.intersect1d(
                    ids, faiss.vector_to_array(current.delta.id_map))
                if len(in_delta):
                    self._tier(spec.name, "delta").remove_ids(in_delta)
                in_main = np.setdiff1d(ids, in_delta)
                if len(in_main):
                    main = _remove_ids(spec, self._tier(spec.name, "main"), in_main)
                    self._own[spec.name] = replace(self._own[spec.name], main=main)
        # postings are keyed by (channel, key) for lookups; the work's own key list finds them
        for chan, blob in self.db.execute("SELECT channel, keys FROM work_keys WHERE work_num = ?", (row[0],)):
            self.db.executemany(
                "DELETE FROM postings WHERE channel = ? AND key = ? AND work_num = ?",
                ((chan, key, row[0]) for key in np.frombuffer(blob, dtype="<i8").tolist()),
            )
        self.db.execute("DELETE FROM works WHERE num = ?", (row[0],))
        self._changed = True
        return True

    def merge_deltas(self) -> int:
        """Merge every channel's delta index into its main index at the next commit (otherwise
        done when a delta outgrows `DELTA_MAX_SHARE` / `DELTA_MAX_VECTORS`). Returns the number
        of vectors that will move, over all channels."""
        moving = 0
        for name in self.coll._indexes:
            vecs = self._current(name)
            if vecs.should_merge(asked=True):
                moving += int(vecs.delta.ntotal)
                self._tier(name, "main")
                self._merge.add(name)
                self._changed = True
        return moving

    def upgrade_format(self) -> bool:
        """Have this session's commit bring a collection of an older format version to
        FORMAT_VERSION (a commit that changes anything does so anyway); False if it is current."""
        if self.coll.manifest.format_version == FORMAT_VERSION:
            return False
        self._changed = True
        return True

    def set_calibration(self, name: str, generation: int, body: dict[str, Any]) -> None:
        """Store calibration *name* computed at *generation*; visible at the next commit. It is
        derived data, so storing it alone does not start a new generation."""
        self.db.execute(
            "INSERT OR REPLACE INTO calibration (name, generation, body) VALUES (?,?,?)",
            (name, int(generation), json.dumps(body, sort_keys=True)),
        )

    def commit(self, *, reopen: bool = True) -> None:
        """Make everything added so far durable and visible. With *reopen* the session stays
        open for more changes."""
        coll = self.coll
        if not self._changed:
            self.db.execute("COMMIT")
        else:
            gen = coll.generation + 1
            files, deltas = dict(coll._files), dict(coll._deltas)
            for name in sorted(self._own):
                spec = coll.manifest.channel(name)
                vecs = self._own[name]
                if vecs.should_merge(asked=name in self._merge):
                    log.info("merging %d recent vectors of channel %s into its main index", vecs.delta.ntotal, name)
                    main = self._tier(name, "main")
                    main.add_with_ids(*_contents(vecs.delta))
                    vecs = self._own[name] = replace(self._own[name], main=main, delta=None)
                if vecs.delta is not None and vecs.delta.ntotal == 0:
                    vecs = self._own[name] = replace(vecs, delta=None)
                if (name, "main") in self._copied:
                    files[name] = f"{name}.{gen:06d}.faiss"
                    _write_index(spec, vecs.main, coll.path / "vectors" / files[name])
                if vecs.delta is None:
                    deltas.pop(name, None)
                elif (name, "delta") in self._copied:
                    deltas[name] = f"{name}.delta.{gen:06d}.faiss"
                    _write_index(spec, vecs.delta, coll.path / "vectors" / deltas[name])
            _fsync_dir(coll.path / "vectors")
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'files'", (json.dumps(files),))
            self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('deltas', ?)", (json.dumps(deltas),))
            if not coll._chunked_texts:
                _chunk_texts(self.db)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'format_version'", (str(FORMAT_VERSION),))
            with coll._lock.hold(exclusive=True):
                self.db.execute("COMMIT")  # the moment the new state becomes the committed one
                old = (set(coll._files.values()) | set(coll._deltas.values())) - set(files.values()) - set(deltas.values())
                coll._files, coll._deltas = files, deltas
                coll.generation = gen
                coll._indexes.update(self._own)
                coll._by_file = _in_memory(coll._indexes, files, deltas)
                coll.manifest = replace(coll.manifest, format_version=FORMAT_VERSION)
                for file in old:
                    (coll.path / "vectors" / file).unlink(missing_ok=True)
            self._own = {}
            self._copied = set()
            self._merge = set()
            self._changed = False
            coll._write_manifest()  # derived from the committed catalog
        if reopen:
            self.db.execute("BEGIN IMMEDIATE")

    def rollback(self) -> None:
        """Drop every change since the last commit."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self._own = {}
        self._copied = set()
        self._merge = set()
        self._changed = False
