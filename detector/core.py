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
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image

from detector import config, scoring
from detector.background import Background, Holder, null_count
from detector.calibration import IMAGE_METHOD, TEXT_METHOD, NullOutput, image_outputs, is_stale, makeup, text_outputs
from detector.channels import BoundChannels, PreparedImage, channel_spec, normalise_specs
from detector.errors import CollectionError, InputError
from detector.imagescan import scan_image
from detector.nullmodel import Levels, NullModel, tops, without_null
from detector.progress import progress
from detector.results import VERDICTS, AddFailure, AddReport, Calibration, Match, ScanResult, WorkRef
from detector.textscan import embed_windows, scan_text
from detector.works import (
    ImageItem,
    Item,
    MetadataTable,
    Passage,
    TextItem,
    read_item,
    read_metadata,
    split_passages,
    text_item,
    word_spans,
)
from indexes import Collection, Manifest, SegmentRecord, Store, WorkRecord, Writer

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


class _ReadWriteLock:
    """Many readers or one writer; a waiting writer goes before readers that come after it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class _Open:
    """One open collection of a Detector: a snapshot that scans read (many threads at once,
    swapped for a newer one only when none is reading), and a second object that write
    sessions use, so readers never see a write session's uncommitted rows."""

    bound: BoundChannels
    reader: Collection | None = None
    writer: Collection | None = None
    rw: _ReadWriteLock = field(default_factory=_ReadWriteLock)
    write: threading.Lock = field(default_factory=threading.Lock)  # one write session at a time
    calibrating: threading.Lock = field(default_factory=threading.Lock)
    #: a write session of this process ended since the reader last took a snapshot (it may have
    #: stored rows, e.g. a calibration, without a new generation)
    written: bool = False

    def close(self) -> None:
        for coll in (self.reader, self.writer):
            if coll is not None:
                coll.close()
        self.reader = self.writer = None


class Detector:
    """Collections of reference works under one home folder, and the encoders to use them.

    Encoders load once per process and are shared; open collections are cached and refreshed
    before each use, so a long-lived Detector (the service) sees works added elsewhere.

    Thread-safe: scans (and other reads) of a collection run at once, also while works are
    being added to it; they read the last committed state, never a half-added work. Writes to
    one collection (add, remove, storing a calibration) take turns.
    """

    def __init__(self, home: PathLike | None = None, background: PathLike | bool | None = True) -> None:
        self.home = config.home(home)
        self.store = Store(self.home)
        #: the background corpus scans and calibrations read (`detector.background`): True is the
        #: default place (`config.background_home`), a path another, None or False none
        where = config.background_home(home) if background is True else (Path(background) if background else None)
        self.background = Holder(where)
        self._open: dict[str, _Open] = {}
        self._lock = threading.Lock()  # guards self._open only
        self._stale_seen: dict[tuple[str, str, int, int], bool] = {}

    # -- collections -----------------------------------------------------------------------
    def create(self, name: str, encoders: Sequence[str] = config.DEFAULT_ENCODERS,
               ann: str = config.DEFAULT_ANN) -> Manifest:
        """Create an empty collection using *encoders* (see `detector.channels`); *ann* is the
        kind of vector index: "flat" (exact) or "hnsw" (approximate, for millions of passages)."""
        specs = [channel_spec(s, ann) for s in normalise_specs(encoders)]
        with self.store.create(name, specs) as coll:
            return coll.manifest

    def collections(self) -> list[str]:
        return self.store.names()

    def manifest(self, name: str) -> Manifest:
        with self._reading(name) as (coll, _):
            return coll.manifest

    def delete(self, name: str) -> None:
        with self._lock:
            st = self._open.pop(name, None)
        if st is not None:
            with st.rw.exclusive(), st.write:  # this order: a calibrating scan holds rw, then takes write
                st.close()
        self.store.delete(name)

    def _state(self, name: str) -> _Open:
        with self._lock:
            st = self._open.get(name)
            if st is None:
                coll = self.store.open(name)
                try:
                    st = _Open(BoundChannels.bind(coll.manifest), reader=coll)
                except Exception:
                    coll.close()
                    raise
                self._open[name] = st
            return st

    def _fresh_reader(self, st: _Open) -> Collection:
        """The reader, brought up to the last commit first if there is a newer one."""
        reader = st.reader
        if reader is None:
            raise CollectionError("the collection was deleted or the detector closed")
        if st.written or reader.committed_generation() != reader.generation:
            with st.rw.exclusive():
                if st.reader is not None:
                    st.written = False
                    st.reader.refresh(share=st.writer)  # the index files the writer holds are not read again
        return reader

    @contextmanager
    def _reading(self, name: str) -> Iterator[tuple[Collection, BoundChannels]]:
        """The collection's latest committed state, held still while in use (other threads may
        read it at the same time; a newer state is taken up when none is reading)."""
        st = self._state(name)
        self._fresh_reader(st)
        with st.rw.shared():
            if st.reader is None:  # deleted meanwhile
                raise CollectionError(f"collection {name!r} was deleted or the detector closed")
            yield st.reader, st.bound

    @contextmanager
    def _writing(self, name: str) -> Iterator[tuple[Collection, BoundChannels, Writer]]:
        """A write session on the collection's writing object (see `_Open`)."""
        st = self._state(name)
        with st.write:
            if st.reader is None:
                raise CollectionError(f"collection {name!r} was deleted or the detector closed")
            if st.writer is None:  # borrows the reader's indexes: a session copies what it changes
                st.writer = Collection.open(st.reader.path, share=st.reader)
            try:
                with st.writer.writer() as w:
                    yield st.writer, st.bound, w
            finally:
                st.written = True

    def _collection(self, name: str) -> tuple[Collection, BoundChannels]:
        """The reading object and its channels, refreshed (for single-threaded use: tests, scripts)."""
        st = self._state(name)
        return self._fresh_reader(st), st.bound

    def close(self) -> None:
        with self._lock:
            states = list(self._open.values())
            self._open.clear()
        for st in states:
            with st.rw.exclusive(), st.write:
                st.close()
        self.background.close()

    # -- works -----------------------------------------------------------------------------
    def works(self, name: str, limit: int | None = None, offset: int = 0) -> list[WorkRecord]:
        """The works of collection *name*, oldest first: *limit* of them from *offset* (all
        when *limit* is None)."""
        if (limit is not None and not 0 <= limit <= config.MAX_OFFSET) or not 0 <= offset <= config.MAX_OFFSET:
            raise InputError(f"limit and offset must lie in 0..{config.MAX_OFFSET} (got limit={limit}, "
                             f"offset={offset})")
        with self._reading(name) as (coll, _):
            return coll.works(limit=limit, offset=offset)

    def work(self, name: str, work: str) -> WorkRecord:
        """Work *work* (by id or sha256) of collection *name*; CollectionError if it has none."""
        with self._reading(name) as (coll, _):
            return coll.find_work(work)

    def thumbnail(self, name: str, work: str) -> bytes | None:
        """The JPEG stored with image work *work* (by id or sha256) of collection *name*: the
        picture downscaled to at most `config.THUMBNAIL_SIDE` pixels a side. None for a text
        work; CollectionError when the collection has no such work."""
        with self._reading(name) as (coll, _):
            return coll.thumbnail(coll.find_work(work).id)

    def remove(self, name: str, work: str) -> WorkRecord:
        """Remove a work (by id or sha256) with all its vectors; returns what was removed."""
        with self._writing(name) as (coll, _, w):
            rec = coll.find_work(work)
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
        with self._writing(name) as (coll, bound, w), \
                progress(len(files), "adding works", show_progress_bar) as bar:
            since_commit = 0
            seen_failed = 0
            for batch in _read_batches(files, batch_size, failed, bound):
                todo: list[tuple[Path, Item, PreparedImage | None]] = []
                for path, item, prep in batch:
                    if (existing := w.has_sha256(item.sha256)) is not None:
                        dups.append(WorkRef.from_record(coll.work(existing)))  # sees this session's rows
                    elif item.modality not in {c.modality for c in coll.manifest.channels}:
                        failed.append(AddFailure(str(path), f"{path}: collection {name!r} has no "
                                                 f"encoder for {item.modality} works"))
                    else:
                        todo.append((path, item, prep))
                for record, segments, vectors, postings, text, thumb in self._prepare(bound, todo, table):
                    if w.add_work(record, segments, vectors, postings, text, thumb):
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
            log.info("skipped %s", f.error)  # the report lists it: callers show it once
        return AddReport(tuple(added), tuple(dups), tuple(failed))

    def _prepare(self, bound: BoundChannels, todo: list[tuple[Path, Item]], table: MetadataTable | None) -> Iterator:
        """Records, segments and features for a batch of loaded items."""
        images = [(p, it, prep) for p, it, prep in todo if isinstance(it, ImageItem)]
        texts = [(p, it) for p, it, _ in todo if isinstance(it, TextItem)]
        if images:
            prepared = [prep or bound.prepare_image(it.image) for _, it, prep in images]
            for (path, item, _), feats in zip(images, bound.image_features(prepared), strict=True):
                rec = _record(path, item, table, width=item.width, height=item.height)
                segs = [SegmentRecord(rec.id, i, box=box) for i, box in enumerate(feats.boxes)]
                yield rec, segs, feats.vectors, None, None, feats.thumbnail
        if texts:
            yield from self._prepare_texts(bound, texts, table)

    @staticmethod
    def _prepare_texts(bound: BoundChannels, texts: list[tuple[Path, TextItem]],
                       table: MetadataTable | None) -> Iterator:
        """Text works of a batch, one text ahead: the next text's passages are encoded (on the
        encoders' threads) while this one is fingerprinted and stored, which is one-core work
        the encode would otherwise wait for."""

        def encode(item: TextItem) -> tuple[list[Passage], dict[str, np.ndarray]]:
            passages = split_passages(item.text)
            return passages, bound.text_vectors([p.text for p in passages])

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="factor4-ahead") as ahead:
            pending = ahead.submit(encode, texts[0][1])
            for k, (path, item) in enumerate(texts):
                postings = bound.text_postings(item.text)
                passages, vecs = pending.result()
                if k + 1 < len(texts):
                    pending = ahead.submit(encode, texts[k + 1][1])
                rec = _record(path, item, table)
                segs = [SegmentRecord(rec.id, p.ordinal, p.start, p.end) for p in passages]
                yield rec, segs, vecs, postings, item.text, None

    # -- scanning --------------------------------------------------------------------------
    def scan(self, name: str, inputs: Iterable[PathLike | Item], top: int = config.TOP_MATCHES) -> list[ScanResult]:
        """Score each output (a path, or an item from `detector.works`) against collection
        *name*. Raises InputError on the first unreadable input; use `scan_item` per input
        to handle failures one by one."""
        self._state(name)  # a missing collection fails before any input is read
        items = [x if isinstance(x, ImageItem | TextItem) else read_item(x) for x in inputs]
        return [self.scan_item(name, item, top) for item in items]

    def scan_item(self, name: str, item: Item, top: int = config.TOP_MATCHES) -> ScanResult:
        with self._reading(name) as (coll, bound):
            if not bound.of(item.modality):
                raise InputError(f"{item.name}: collection {name!r} has no encoder for {item.modality} outputs")
            bg = self.background.get()
            found = self._evidence(coll, bound, item, background=bg)  # a bad output fails here, before any calibration
            null = self._null(name, coll, bound, item.modality)
            matches = _judged(found, null, coll, item.modality)[:top]
            info = None
            if null is not None:
                info = null.info
                if info.generation != coll.generation and self._stale(name, coll, item.modality, info):
                    info = replace(info, stale=True)
                elif info.background != _background_label(bg):
                    info = replace(info, stale=True)  # the background changed since: recalibrate
            return ScanResult(item.name, item.sha256, item.modality, name, tuple(matches), info,
                              item.encoding if isinstance(item, TextItem) else None)

    def _stale(self, name: str, coll: Collection, modality: str, info: Calibration) -> bool:
        """Whether the null (made at another generation) is stale; counted once per generation."""
        key = (name, modality, coll.generation, info.generation)
        found = self._stale_seen.get(key)
        if found is None:
            found = is_stale(info.generation, info.works, len(coll.works(modality)), coll.generation)
            if len(self._stale_seen) > 1024:
                self._stale_seen.clear()
            self._stale_seen[key] = found
        return found

    def _evidence(self, coll: Collection, bound: BoundChannels, item: Item, exclude: frozenset[str] = frozenset(),
                  background: Background | None = None) -> list[tuple[Match, frozenset[str]]]:
        """Every work the output matches, unjudged, with the signals the null must not count."""
        out: list[tuple[Match, frozenset[str]]] = []
        if isinstance(item, ImageItem):
            found = scan_image(coll, bound, item.image, exclude, locate=config.LOCATE_MATCHES, background=background)
            strongest = sorted(found, key=lambda w: (-found[w].score, w))[: config.LOCATE_MATCHES]
            for wid in strongest + [w for w in found if w not in set(strongest)]:
                ev, rec = found[wid], coll.work(wid)
                work_size = (rec.width, rec.height) if rec.width and rec.height else None
                out.append((Match(WorkRef.from_record(rec), ev.score, "unrelated", ev.signals,
                                  region=ev.region, work_region=ev.work_region, transform=ev.transform(ev.score),
                                  output_size=item.image.size, work_size=work_size), ev.unreliable))
        else:
            for wid, ev in scan_text(coll, bound, item.text, item.name, exclude, background=background).items():
                score = scoring.combine(ev.signals)
                out.append((Match(WorkRef.from_record(coll.work(wid)), score, "unrelated",
                                  ev.signals, ev.excerpt, spans=tuple(ev.spans)), frozenset()))
        return out

    # -- calibration -----------------------------------------------------------------------
    def calibrate(self, name: str, show_progress_bar: bool | None = None, *, queries: int | None = None,
                  copy_level: float | None = None, similar_level: float | None = None,
                  negatives: Iterable[PathLike] = ()) -> list[Calibration]:
        """Learn collection *name*'s null now (see `detector.calibration`, `detector.nullmodel`),
        for each modality it holds works of: *queries* unrelated outputs (default
        `config.CALIBRATION_QUERIES`, or the last calibration's), verdicts stated at
        *copy_level* and *similar_level* (default: the last calibration's, else
        `config.COPY_LEVEL` and `config.SIMILAR_LEVEL`), plus the user's *negatives* (files or
        folders of outputs known to copy nothing in the collection). A modality with neither
        two unrelated works nor negatives is left out. Scans calibrate a collection that has no
        null yet; a stale one is used until this is run, and scans say it is stale."""
        if queries is not None and (not isinstance(queries, int) or isinstance(queries, bool) or
                                    not 1 <= queries <= 1_000_000):
            raise InputError(f"queries must be a whole number from 1 to 1000000, got {queries!r}")
        items = self._negatives(negatives)
        with self._reading(name) as (coll, bound):
            modalities = [m for m in ("image", "text") if bound.of(m) and coll.works(m)]
            for kind in {it.modality for it in items} - set(modalities):
                raise InputError(f"negatives include {kind} files, but collection {name!r} has no {kind} works")
            out = []
            for modality in modalities:
                before = self._stored_null(coll, modality)
                levels = Levels.default(
                    copy_level if copy_level is not None else (before.levels.copy if before else None),
                    similar_level if similar_level is not None else (before.levels.similar if before else None))
                size = queries or (before.info.queries if before and before.info.queries else None)
                with self._state(name).calibrating:
                    null = self._calibrate(name, coll, bound, modality, show_progress_bar, levels=levels,
                                           queries=size or config.CALIBRATION_QUERIES,
                                           negatives=[it for it in items if it.modality == modality])
                if null is not None:
                    out.append(null.info)
            return out

    @staticmethod
    def _negatives(paths: Iterable[PathLike]) -> list[Item]:
        files = expand_paths(paths)
        if len(files) > config.CALIBRATION_MAX_NEGATIVES:
            raise InputError(f"{len(files)} negatives; one calibration reads at most "
                             f"{config.CALIBRATION_MAX_NEGATIVES} (config.CALIBRATION_MAX_NEGATIVES)")
        items = []
        for f in files:
            item = read_item(f)  # InputError names the file
            if isinstance(item, TextItem) and not word_spans(item.text):
                raise InputError(f"{f}: negative text has no words")
            items.append(item)
        return items

    @staticmethod
    def _stored_null(coll: Collection, modality: str) -> NullModel | None:
        found = coll.calibration(modality)
        return None if found is None else NullModel.from_dict(found[1])

    def _null(self, name: str, coll: Collection, bound: BoundChannels, modality: str) -> NullModel | None:
        """The collection's null for *modality*: the stored one (also when stale: the scan says
        so), or, when there is none, one learnt now by one thread while others wait for it."""

        def stored() -> NullModel | None | bool:
            null = self._stored_null(coll, modality)
            if null is None:
                return False
            if not null.n:  # none could be made: try again once the collection has changed
                return None if null.info.generation == coll.generation else False
            return null

        found = stored()
        if found is not False:
            return found  # type: ignore[return-value]
        with self._state(name).calibrating:
            found = stored()  # another thread may have learnt it meanwhile
            if found is not False:
                return found  # type: ignore[return-value]
            return self._calibrate(name, coll, bound, modality, None, levels=Levels.default(),
                                   queries=config.CALIBRATION_QUERIES, negatives=[])

    def _calibrate(self, name: str, coll: Collection, bound: BoundChannels, modality: str,
                   show_progress_bar: bool | None, *, levels: Levels, queries: int,
                   negatives: list[Item]) -> NullModel | None:
        bg = self.background.get()

        def rows_of(outputs: list[NullOutput], what: str) -> list[dict[str, float]]:
            rows = []
            vectors = None
            if modality == "text" and outputs:
                vectors = embed_windows(bound, [str(o.item) for o in outputs], show_progress_bar)
            with progress(len(outputs), what, show_progress_bar, unit="output") as bar:
                for k, o in enumerate(outputs):
                    if modality == "text":
                        found = scan_text(coll, bound, str(o.item), "<calibration>", o.exclude, vectors[k],
                                          background=bg)
                        evs = [(ev.signals, frozenset(), scoring.combine(ev.signals)) for ev in found.values()]
                    else:
                        found = scan_image(coll, bound, o.item, o.exclude, background=bg)
                        evs = [(ev.signals, ev.unreliable, ev.score) for ev in found.values()]
                    rows.append(tops(evs))
                    bar.update(1)
            return rows

        generation = coll.generation
        works = len(coll.works(modality))
        outputs: list[NullOutput] | None = None
        method = "too few unrelated works"
        if modality == "text":
            outputs = text_outputs(coll, queries)
            method = TEXT_METHOD.format(lengths="/".join(map(str, config.CALIBRATION_TEXT_WORDS)))
        else:
            region = bound.region_channel()
            decider = region.name if region is not None else ("pdq" if bound.has("pdq") else None)
            if decider is not None:
                outputs = image_outputs(coll, decider, queries)
                method = IMAGE_METHOD
        outputs = outputs or []
        log.info("calibrating %s (%s): %d unrelated outputs from %d works, %d negatives",
                 name, modality, len(outputs), works, len(negatives))
        rows = rows_of(outputs, f"calibrating {modality}")
        info = Calibration(modality, generation, len(rows), works, method if rows else "too few unrelated works",
                           makeup(outputs), copy_level=levels.copy, similar_level=levels.similar,
                           background=_background_label(bg))
        left_out: list[str] = []
        extra = [(it, "negative") for it in negatives]
        if bg is not None and (outputs or negatives):
            rng = np.random.default_rng(generation + 7919 * bg.generation)
            count = null_count(len(outputs) or len(negatives))
            made = bg.null_texts(count, rng) if modality == "text" else bg.null_images(count, rng)
            for k, (x, edit) in enumerate(made):
                label = f"<background {k + 1}, {edit}>"
                extra.append((text_item(x, label) if modality == "text" else
                              ImageItem(label, "", x, "PNG", 0), "background"))
            log.info("calibrating %s (%s): %d unrelated outputs from the background corpus", name, modality,
                     len(made))
        if extra:
            own = NullModel.from_rows(info, levels, rows) if rows else None
            kept = {"negative": 0, "background": 0}
            with progress(len(extra), f"calibrating {modality}: negatives and background", show_progress_bar,
                          unit="output") as bar:
                for item, kind in extra:
                    found = self._evidence(coll, bound, item, background=bg)
                    judged = _judged(found, own, coll, modality)
                    bar.update(1)
                    if judged and judged[0].verdict == "copy":
                        left_out.append(f"{item.name}: copy of {judged[0].work.title or judged[0].work.id} "
                                        f"({judged[0].reason})")
                        log.info("%s %s copies %s: left out of the null", kind, item.name, judged[0].work.id)
                        continue
                    rows.append(tops((m.signals, unrel, m.score) for m, unrel in found))
                    kept[kind] += 1
            if left_out:
                log.warning("calibrating %s (%s): %d of the negatives and background outputs copy a reference "
                            "and were left out of the null (the calibration lists them)", name, modality, len(left_out))
            added = tuple((("negatives", kept["negative"]),) if kept["negative"] else ()) + \
                tuple((("background", kept["background"]),) if kept["background"] else ())
            info = replace(info, queries=len(rows), negatives=kept["negative"], left_out=tuple(left_out),
                           makeup=info.makeup + added,
                           method="; ".join(x for x in (
                               info.method if outputs else "",
                               f"{kept['negative']} negatives given" if kept["negative"] else "",
                               f"{kept['background']} edited background-corpus works" if kept["background"] else "")
                               if x))
        null = NullModel.from_rows(info, levels, rows, background_rows=dict(info.makeup).get("background", 0))
        with self._writing(name) as (latest, _, w):
            if latest.generation == generation:  # else the collection changed meanwhile: keep it unsaved
                w.set_calibration(modality, generation, null.to_dict())
        # as stored (values rounded), so this scan's rates equal every later scan's
        stored = NullModel.from_dict(null.to_dict())
        return stored if stored is not None and stored.n else None


def _background_label(bg: Background | None) -> str | None:
    return None if bg is None else bg.info().label


def _judged(found: list[tuple[Match, frozenset[str]]], null: NullModel | None, coll: Collection,
            modality: str) -> list[Match]:
    """The matches judged by the null (or, without one, by the prior cut points), strongest first."""
    out = []
    for m, unreliable in found:
        if null is not None:
            j = null.judge(m.signals, unreliable, m.score)
        else:
            why = ("the collection has fewer than two unrelated " + modality + " works: add works, or "
                   f"negatives with factor4 calibrate {coll.name} --negatives PATHS")
            j = without_null(m.signals, unreliable, m.score, why)
        out.append(m.judged(j))
    rank = {v: i for i, v in enumerate(VERDICTS)}
    out.sort(key=lambda m: (rank[m.verdict], 1.0 if m.fpr is None else m.fpr, -m.score, m.work.id))
    if modality == "image" and sum(m.verdict == "copy" for m in out) > 1:
        out = _lookalikes(out, coll)
        out.sort(key=lambda m: (rank[m.verdict], 1.0 if m.fpr is None else m.fpr, -m.score, m.work.id))
    return out


def _region_cosine(m: Match) -> float | None:
    """The raw SSCD cosine of the output's part that matched *m*'s work best (the whole output, or
    the region whose normalised score counted)."""
    raw = m.signals.get("sscd")
    norm, bg = m.signals.get("sscd_normalised"), m.signals.get("sscd_background")
    region = norm + bg if norm is not None and bg is not None else None
    found = [v for v in (raw, region) if v is not None]
    return max(found) if found else None


def _lookalikes(matches: list[Match], coll: Collection) -> list[Match]:
    """Second and later image copies that only look like the first: the output resembles such a
    work no more (by `config.LOOKALIKE_MARGIN`) than the first copied work itself does, and
    resembles the first clearly (by as much) more: the same plotting style, icon theme or
    template, not a second copy. They become ``similar``, and say so. A composite of two works keeps both (each
    part matches its own work far better than the two works match each other), and so do
    near-identical works (the output matches both as well as they match each other)."""
    primary = matches[0]
    channel = next((c.name for c in coll.manifest.channels if c.modality == "image" and c.kind == "float"
                    and c.covers == "all"), None)
    first = _region_cosine(primary)
    if channel is None or first is None:
        return matches
    out = [primary]
    for m in matches[1:]:
        here = _region_cosine(m)
        pdq = m.signals.get("pdq_distance")
        if m.verdict != "copy" or here is None or (pdq is not None and pdq <= config.SIGNAL_THRESHOLDS["pdq_distance"][2]):
            out.append(m)
            continue
        seg_a, seg_b = coll.work_segments(primary.work.id)[0].id, coll.work_segments(m.work.id)[0].id
        va, vb = coll.vectors(channel, [seg_a, seg_b])
        between = float(np.dot(va, vb))
        if here - between < config.LOOKALIKE_MARGIN <= first - here:
            title = primary.work.title or primary.work.id
            m = replace(m, verdict="similar", reason=(
                f"looks like {title}, which this output copies, about as much as it looks like the output "
                f"(SSCD {between:.2f} between the two works, {here:.2f} with the output; {first:.2f} for {title}): "
                f"a look-alike, not a second copy; was: {m.reason}"))
        out.append(m)
    return out


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


def _read_batches(files: list[Path], batch_size: int, failed: list[AddFailure],
                  bound: BoundChannels) -> Iterator[list[tuple[Path, Item, PreparedImage | None]]]:
    """Decode files on a thread pool, one batch ahead of the encoders, and do the per-image
    work that needs no model there too (resizing, PDQ, thumbnail), so it overlaps encoding."""
    image_channels = bool(bound.of("image"))

    def load(path: Path) -> tuple[Path, Item | None, PreparedImage | None, str | None]:
        try:
            item = read_item(path)
        except InputError as exc:
            return path, None, None, str(exc)
        prep = bound.prepare_image(item.image) if image_channels and isinstance(item, ImageItem) else None
        return path, item, prep, None

    with ThreadPoolExecutor(max_workers=2) as pool:
        starts = range(0, len(files), batch_size)
        pending = [pool.submit(load, f) for f in files[:batch_size]]
        for start in starts:
            current = pending
            pending = [pool.submit(load, f) for f in files[start + batch_size : start + 2 * batch_size]]
            batch = []
            for future in current:
                path, item, prep, err = future.result()
                if item is None:
                    failed.append(AddFailure(str(path), err or f"{path}: unreadable"))
                elif isinstance(item, TextItem) and not word_spans(item.text):
                    failed.append(AddFailure(str(path), f"{path}: text has no words to index"))
                else:
                    batch.append((path, item, prep))
            yield batch
