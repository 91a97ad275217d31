"""The factor4 library API: create collections, add works, scan outputs.

    from detector import Detector
    det = Detector()                     # collections under $FACTOR4_HOME
    det.create("art")                    # SSCD + PDQ for images, MiniLM + shingles for text
    det.add("art", ["works/"], meta="works.csv")
    for result in det.scan("art", ["output.png", "story.txt"]):
        print(result.input, result.verdict, result.best)

The CLI and the HTTP service are thin layers over this class.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from detector import config, scoring
from detector.channels import BoundChannels, channel_spec, normalise_specs
from detector.errors import InputError
from detector.fingerprints import PDQ_MIN_QUALITY, text_shingles
from detector.progress import progress
from detector.results import AddFailure, AddReport, Match, ScanResult, WorkRef
from detector.works import (
    ImageItem,
    Item,
    MetadataTable,
    TextItem,
    read_item,
    read_metadata,
    split_passages,
    word_spans,
)
from indexes import Collection, Manifest, SegmentRecord, Store, WorkRecord

log = logging.getLogger(__name__)
PathLike = str | os.PathLike[str]


def work_id(sha256: str) -> str:
    """A work's stable id: the first 16 hex digits of its sha256."""
    return sha256[:16]


def expand_paths(paths: Iterable[PathLike]) -> list[Path]:
    """Files named, plus the supported files inside named folders (sorted, recursively)."""
    suffixes = set(config.IMAGE_EXTENSIONS) | set(config.TEXT_EXTENSIONS)
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in suffixes))
        else:
            out.append(p)
    return out


class Detector:
    """Collections of reference works under one home folder, and the encoders to use them.

    Encoders load once per process and are shared; open collections are cached and refreshed
    before each use, so a long-lived Detector (the service) sees works added elsewhere.
    """

    def __init__(self, home: PathLike | None = None) -> None:
        self.home = config.home(home)
        self.store = Store(self.home)
        self._open: dict[str, tuple[Collection, BoundChannels]] = {}
        self._lock = threading.RLock()

    # -- collections -----------------------------------------------------------------------
    def create(self, name: str, encoders: Sequence[str] = config.DEFAULT_ENCODERS) -> Manifest:
        """Create an empty collection using *encoders* (see `detector.channels`)."""
        specs = [channel_spec(s) for s in normalise_specs(encoders)]
        with self.store.create(name, specs) as coll:
            return coll.manifest

    def collections(self) -> list[str]:
        return self.store.names()

    def manifest(self, name: str) -> Manifest:
        return self._collection(name)[0].manifest

    def delete(self, name: str) -> None:
        with self._lock:
            if name in self._open:
                self._open.pop(name)[0].close()
            self.store.delete(name)

    def _collection(self, name: str) -> tuple[Collection, BoundChannels]:
        with self._lock:
            if name not in self._open:
                coll = self.store.open(name)
                try:
                    self._open[name] = (coll, BoundChannels.bind(coll.manifest))
                except Exception:
                    coll.close()
                    raise
            coll, bound = self._open[name]
            coll.refresh()
            return coll, bound

    def close(self) -> None:
        with self._lock:
            for coll, _ in self._open.values():
                coll.close()
            self._open.clear()

    # -- works -----------------------------------------------------------------------------
    def works(self, name: str) -> list[WorkRecord]:
        return self._collection(name)[0].works()

    def remove(self, name: str, work: str) -> WorkRecord:
        """Remove a work (by id or sha256) with all its vectors; returns what was removed."""
        with self._lock:
            coll, _ = self._collection(name)
            rec = coll.work_by_sha256(work) if len(work) == 64 else None
            rec = rec or coll.work(work)
            with coll.writer() as w:
                w.remove_work(rec.id)
            return rec

    def add(
        self,
        name: str,
        paths: Iterable[PathLike],
        meta: PathLike | MetadataTable | None = None,
        show_progress_bar: bool | None = None,
        batch_size: int = config.ENCODE_BATCH_SIZE,
        commit_every: int = config.ADD_COMMIT_EVERY,
    ) -> AddReport:
        """Add the files (and the supported files inside folders) to collection *name*.

        A file whose sha256 is already stored is not stored again. Unreadable files are listed
        in the report's `failed` and skipped; the rest are added. Work is committed every
        *commit_every* works, so an interruption keeps what was committed.
        """
        table = read_metadata(meta) if isinstance(meta, str | os.PathLike) else meta
        files = expand_paths(paths)
        added: list[WorkRef] = []
        dups: list[WorkRef] = []
        failed: list[AddFailure] = []
        with self._lock:
            coll, bound = self._collection(name)
            with coll.writer() as w, progress(len(files), "adding works", show_progress_bar) as bar:
                since_commit = 0
                seen_failed = 0
                for batch in _read_batches(files, batch_size, failed):
                    todo: list[tuple[Path, Item]] = []
                    for path, item in batch:
                        if (existing := w.has_sha256(item.sha256)) is not None:
                            dups.append(WorkRef.from_record(coll.work(existing)))  # sees this session's rows
                        elif item.modality not in {c.modality for c in coll.manifest.channels}:
                            failed.append(AddFailure(str(path), f"{path}: collection {name!r} has no "
                                                     f"encoder for {item.modality} works"))
                        else:
                            todo.append((path, item))
                    for record, segments, vectors, postings, text in self._prepare(bound, todo, table):
                        if w.add_work(record, segments, vectors, postings, text):
                            added.append(WorkRef.from_record(record))
                            since_commit += 1
                        else:  # the same file twice in one batch
                            dups.append(WorkRef.from_record(coll.work(record.id)))
                    bar.update(len(batch) + len(failed) - seen_failed)
                    seen_failed = len(failed)
                    if since_commit >= commit_every:
                        w.commit()
                        since_commit = 0
        for f in failed:
            log.warning("skipped %s", f.error)
        return AddReport(tuple(added), tuple(dups), tuple(failed))

    def _prepare(self, bound: BoundChannels, todo: list[tuple[Path, Item]], table: MetadataTable | None) -> Iterator:
        """Records, segments and features for a batch of loaded items."""
        images = [(p, it) for p, it in todo if isinstance(it, ImageItem)]
        texts = [(p, it) for p, it in todo if isinstance(it, TextItem)]
        if images:
            vecs = bound.image_vectors([it.image for _, it in images])
            for i, (path, item) in enumerate(images):
                rec = _record(path, item, table, width=item.width, height=item.height)
                seg = [SegmentRecord(rec.id, 0, box=None)]
                yield rec, seg, {k: v[i : i + 1] for k, v in vecs.items()}, None, None
        for path, item in texts:
            passages = split_passages(item.text)
            rec = _record(path, item, table)
            segs = [SegmentRecord(rec.id, p.ordinal, p.start, p.end) for p in passages]
            vecs = bound.text_vectors([p.text for p in passages])
            yield rec, segs, vecs, bound.text_postings(item.text), item.text

    # -- scanning --------------------------------------------------------------------------
    def scan(self, name: str, inputs: Iterable[PathLike | Item], top: int = config.TOP_MATCHES) -> list[ScanResult]:
        """Score each output (a path, or an item from `detector.works`) against collection
        *name*. Raises InputError on the first unreadable input; use `scan_item` per input
        to handle failures one by one."""
        self._collection(name)  # a missing collection fails before any input is read
        items = [x if isinstance(x, ImageItem | TextItem) else read_item(x) for x in inputs]
        return [self.scan_item(name, item, top) for item in items]

    def scan_item(self, name: str, item: Item, top: int = config.TOP_MATCHES) -> ScanResult:
        with self._lock:
            coll, bound = self._collection(name)
            if not bound.of(item.modality):
                raise InputError(f"{item.name}: collection {name!r} has no encoder for {item.modality} outputs")
            if isinstance(item, ImageItem):
                per_work = _scan_image(coll, bound, item)
            else:
                per_work = _scan_text(coll, bound, item)
            matches = []
            for wid, (signals, excerpt, ignore) in per_work.items():
                score = scoring.combine(signals, ignore)
                matches.append(Match(WorkRef.from_record(coll.work(wid)), score, scoring.verdict(score),
                                     signals, excerpt))
            matches.sort(key=lambda m: (-m.score, m.work.id))
            return ScanResult(item.name, item.sha256, item.modality, name, tuple(matches[:top]))


def _record(path: Path, item: Item, table: MetadataTable | None, **dims: int) -> WorkRecord:
    meta = table.lookup(path) if table is not None else None
    return WorkRecord(
        id=work_id(item.sha256),
        sha256=item.sha256,
        modality=item.modality,
        source=str(path),
        title=(meta.title if meta else None) or Path(path).stem,
        creator=meta.creator if meta else None,
        licence=meta.licence if meta else None,
        source_url=meta.source_url if meta else None,
        extra=dict(meta.extra) if meta else {},
        size_bytes=item.size_bytes,
        **dims,
    )


def _read_batches(files: list[Path], batch_size: int, failed: list[AddFailure]) -> Iterator[list[tuple[Path, Item]]]:
    """Decode files on a thread pool, one batch ahead of the encoders (decoding overlaps encoding)."""
    def load(path: Path) -> tuple[Path, Item | None, str | None]:
        try:
            return path, read_item(path), None
        except InputError as exc:
            return path, None, str(exc)

    with ThreadPoolExecutor(max_workers=2) as pool:
        starts = range(0, len(files), batch_size)
        pending = [pool.submit(load, f) for f in files[:batch_size]]
        for start in starts:
            current = pending
            pending = [pool.submit(load, f) for f in files[start + batch_size : start + 2 * batch_size]]
            batch = []
            for future in current:
                path, item, err = future.result()
                if item is None:
                    failed.append(AddFailure(str(path), err or f"{path}: unreadable"))
                elif isinstance(item, TextItem) and not word_spans(item.text):
                    failed.append(AddFailure(str(path), f"{path}: text has no words to index"))
                else:
                    batch.append((path, item))
            yield batch


#: Per work: raw signals, an excerpt (texts), and the signals too unreliable to count.
PerWork = dict[str, tuple[dict[str, float | None], str | None, frozenset[str]]]


def _scan_image(coll: Collection, bound: BoundChannels, item: ImageItem) -> PerWork:
    queries, quality = bound.image_queries(item.image)
    signals: dict[str, dict[str, float | None]] = defaultdict(dict)
    for ch in bound.of("image"):
        q = queries[ch.name]
        scores, ids = coll.search(ch.name, q, config.SEARCH_K)
        segs = coll.segments(ids.ravel().tolist())
        key = "pdq_distance" if ch.kind == "binary" else ch.name
        for row_scores, row_ids in zip(scores, ids, strict=True):
            for s, i in zip(row_scores, row_ids, strict=True):
                if i < 0 or int(i) not in segs:
                    continue
                wid = segs[int(i)].work_id
                old = signals[wid].get(key)
                val = float(s)
                if old is None or (val < old if ch.kind == "binary" else val > old):
                    signals[wid][key] = val
    names = ["pdq_distance" if c.kind == "binary" else c.name for c in bound.of("image")]
    # PDQ's authors call hashes of quality < 50 (flat images) unreliable: report, don't count
    ignore = frozenset({"pdq_distance"}) if quality is not None and quality < PDQ_MIN_QUALITY else frozenset()
    return {wid: ({n: sig.get(n) for n in names}, None, ignore) for wid, sig in signals.items()}


def _scan_text(coll: Collection, bound: BoundChannels, item: TextItem) -> PerWork:
    signals: dict[str, dict[str, float | None]] = defaultdict(dict)
    excerpts: dict[str, str] = {}
    for ch in bound.of("text"):
        if ch.kind == "float":
            windows = split_passages(item.text)
            if not windows:
                raise InputError(f"{item.name}: text has no words to compare")
            q = bound.encoders[ch.name].encode([w.text for w in windows])
            scores, ids = coll.search(ch.name, q, config.SEARCH_K)
            segs = coll.segments(ids.ravel().tolist())
            for s, i in zip(scores.ravel(), ids.ravel(), strict=True):
                if i >= 0 and int(i) in segs:
                    wid = segs[int(i)].work_id
                    signals[wid][ch.name] = max(float(s), signals[wid].get(ch.name) or -1.0)
        elif ch.name == "shingles":
            sh = text_shingles(item.text, config.SHINGLE_WORDS)
            if len(sh.keys) == 0:
                raise InputError(f"{item.name}: text has no words to compare")
            hits: dict[str, set[int]] = defaultdict(set)
            for key, wid, _pos in coll.lookup_postings(ch.name, sh.keys):
                hits[wid].add(key)
            n_words = len(sh.word_spans)
            width = min(config.SHINGLE_WORDS, n_words)
            for wid, keys in hits.items():
                covered = np.zeros(n_words, dtype=bool)
                for pos in np.flatnonzero(np.isin(sh.keys, np.fromiter(keys, dtype=np.int64))):
                    covered[pos : pos + width] = True
                run_start, run_len = _longest_run(covered)
                signals[wid]["shingle_coverage"] = float(covered.mean())
                signals[wid]["longest_run_words"] = float(run_len)
                if run_len:
                    a = int(sh.word_spans[run_start][0])
                    b = int(sh.word_spans[run_start + run_len - 1][1])
                    excerpts[wid] = item.text[a:b]
    names = [c.name for c in bound.of("text") if c.kind == "float"]
    if bound.has("shingles"):
        names += ["shingle_coverage", "longest_run_words"]
    return {wid: ({n: sig.get(n, 0.0 if n in ("shingle_coverage", "longest_run_words") else None) for n in names},
                  excerpts.get(wid), frozenset()) for wid, sig in signals.items()}


def _longest_run(mask: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of True in *mask*; (0, 0) if none."""
    if not mask.any():
        return 0, 0
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    k = int(np.argmax(ends - starts))
    return int(starts[k]), int(ends[k] - starts[k])
