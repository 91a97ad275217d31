"""Channels: what turns works and outputs into the vectors and keys a collection stores.

A collection channel is named by a spec string: an encoder (`sscd`, `sscd_distilled`,
`minilm`, `clip:<model>/<tag-or-checkpoint>`) or an exact fingerprint (`pdq`, `shingles`).
This module maps each to its stored `ChannelSpec` and computes its features; it is the only
place that knows both the models and the storage layout.
"""

from __future__ import annotations

import functools
import importlib.metadata
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector import config, signals
from detector.encoders import FINGERPRINTS, Encoder, load_encoder, parse_spec
from detector.errors import EncoderError, EncoderMismatch
from detector.fingerprints import PDQ_BITS, PdqHash, downscale, pdq_dihedral, pdq_hash, text_shingles, winnow
from detector.regions import Cells, query_windows, reference_windows, window_box
from detector.results import Box
from indexes import ChannelSpec, Manifest


@dataclass(frozen=True)
class PreparedImage:
    """A decoded image and what was computed from it without a model."""

    image: Image.Image
    #: The image at the region encoder's input size (None without one).
    resized: Image.Image | None
    pdq: PdqHash | None
    thumbnail: bytes


@dataclass(frozen=True)
class ImageFeatures:
    """What a reference image stores: one box per segment (None = the whole image, then the
    regions as (left, top, right, bottom) pixels), vectors per channel (rows = segments, or one
    for channels that cover the whole image only) and its thumbnail."""

    boxes: tuple[tuple[int, int, int, int] | None, ...]
    vectors: dict[str, np.ndarray]
    thumbnail: bytes


@dataclass(frozen=True)
class ImageQuery:
    """An output image's query rows per channel. For the region channel, row i is the part of
    the output in `boxes[i]` (row 0 = the whole output); `quality` is PDQ's (None without PDQ)."""

    rows: dict[str, np.ndarray]
    boxes: tuple[Box, ...]
    quality: int | None


@functools.cache
def _helper_threads() -> ThreadPoolExecutor:
    """Threads for the small per-scan work that can run beside a model (shared by all scans)."""
    return ThreadPoolExecutor(max_workers=2, thread_name_prefix="factor4-scan")


# a forked child has none of its parent's threads: it starts its own pool
os.register_at_fork(after_in_child=_helper_threads.cache_clear)


@functools.lru_cache(maxsize=64)
def _query_layout(rows: int, cols: int, sides: tuple[float, ...]) -> tuple[Cells, ...]:
    return tuple(query_windows(rows, cols, sides))


def _query_boxes(rows: int, cols: int, width: int, height: int) -> list[Box]:
    """The output regions' boxes in an image of this size (the same for every scan of that size)."""
    return list(_boxes(rows, cols, width, height, tuple(config.QUERY_REGION_SIDES)))


@functools.lru_cache(maxsize=256)
def _boxes(rows: int, cols: int, width: int, height: int, sides: tuple[float, ...]) -> tuple[Box, ...]:
    return tuple(window_box(w, rows, cols, width, height) for w in _query_layout(rows, cols, sides))


def thumbnail_bytes(image: Image.Image, side: int = config.THUMBNAIL_SIDE) -> bytes:
    """A JPEG of *image* scaled to fit *side* x *side* (never enlarged)."""
    small = downscale(image.convert("RGB") if image.mode != "RGB" else image, side)
    buf = io.BytesIO()
    small.save(buf, "JPEG", quality=config.THUMBNAIL_QUALITY)
    return buf.getvalue()


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def channel_name(spec: str) -> str:
    """File-safe channel name of an encoder spec: `clip:ViT-B-32/...` -> `clip`."""
    return spec.split(":", 1)[0]


def channel_spec(spec: str, ann: str = config.DEFAULT_ANN) -> ChannelSpec:
    """The stored description of a channel; loads the encoder to learn its dim and weights hash.
    *ann* picks the vector index of embedding channels (see `config.ANN_FACTORIES`)."""
    if ann not in config.ANN_FACTORIES:
        raise EncoderError(f"unknown vector index {ann!r}; choose one of {', '.join(config.ANN_FACTORIES)}")
    base = spec.split(":", 1)[0]
    if base == "pdq":
        return ChannelSpec("pdq", f"pdq (pdqhash {_package_version('pdqhash')})", "image", "binary",
                           PDQ_BITS, "hamming", "IDMap2,BFlat", covers="whole")
    if base == "shingles":
        return ChannelSpec("shingles", f"shingles:{config.SHINGLE_WORDS}", "text", "postings", 0,
                           "containment", "")
    enc = load_encoder(spec)
    if channel_name(enc.spec) not in signals.REGISTRY:
        raise EncoderError(f"encoder {spec!r} has no declared signal (and so no calibration): declare "
                           f"{channel_name(enc.spec)!r} in detector/signals.py before using it")
    covers = "all" if enc.modality == "text" or _has_regions(enc) else "whole"
    return ChannelSpec(channel_name(enc.spec), enc.spec, enc.modality, "float", enc.dim, "ip",
                       config.ANN_FACTORIES[ann], enc.weights_sha256, covers=covers)


def _has_regions(enc: Encoder) -> bool:
    """Whether the encoder can pool parts of its feature map (SSCD can; CLIP here cannot)."""
    return hasattr(enc, "head") and hasattr(enc, "encode_maps")


def normalise_specs(specs: Sequence[str]) -> list[str]:
    """Canonical, de-duplicated encoder specs; raises EncoderError on a malformed one."""
    out: list[str] = []
    for raw in specs:
        spec = raw.strip()
        if spec.split(":", 1)[0] not in FINGERPRINTS:
            spec = parse_spec(spec)
        if channel_name(spec) in {channel_name(s) for s in out}:
            raise EncoderError(f"encoder {channel_name(spec)!r} is named twice; name each encoder once")
        out.append(spec)
    if not out:
        raise EncoderError("name at least one encoder, e.g. " + ",".join(config.DEFAULT_ENCODERS))
    return out


@dataclass
class BoundChannels:
    """A collection's channels with their encoders loaded and checked against the manifest."""

    manifest: Manifest
    encoders: dict[str, Encoder]

    @classmethod
    def bind(cls, manifest: Manifest) -> BoundChannels:
        encoders: dict[str, Encoder] = {}
        for ch in manifest.channels:
            if ch.kind != "float":
                continue
            enc = load_encoder(ch.encoder)
            if enc.dim != ch.dim or (ch.weights_sha256 and enc.weights_sha256 != ch.weights_sha256):
                raise EncoderMismatch(
                    f"collection {manifest.name!r} was built with encoder {ch.encoder} "
                    f"(dim {ch.dim}, weights sha256 {ch.weights_sha256[:12]}...), but the one loaded "
                    f"here has dim {enc.dim}, weights sha256 {enc.weights_sha256[:12]}...; install the "
                    "weights it was built with, or rebuild the collection with these"
                )
            encoders[ch.name] = enc
        return cls(manifest, encoders)

    def of(self, modality: str) -> list[ChannelSpec]:
        return [c for c in self.manifest.channels if c.modality == modality]

    def has(self, name: str) -> bool:
        return any(c.name == name for c in self.manifest.channels)

    # -- images ----------------------------------------------------------------------------
    def region_channel(self) -> ChannelSpec | None:
        """The image channel whose vectors cover regions (SSCD), if any."""
        return next((c for c in self.of("image") if c.kind == "float" and c.covers == "all"), None)

    def prepare_image(self, image: Image.Image) -> PreparedImage:
        """The per-image work that needs no model (resizing for the region encoder, PDQ hash,
        thumbnail); thread-safe, so it can run on the threads that decode files."""
        region = self.region_channel()
        resized = self.encoders[region.name].resized(image) if region is not None else None
        # one small copy serves PDQ and the thumbnail (downscale is what both would do)
        small = downscale(image, max(config.PDQ_MAX_SIDE, config.THUMBNAIL_SIDE))
        pdq = pdq_hash(small) if self.has("pdq") else None
        return PreparedImage(image, resized, pdq, thumbnail_bytes(small))

    def image_features(self, prepared: Sequence[PreparedImage]) -> list[ImageFeatures]:
        """Segments and vectors of reference images: the whole image (segment 0) and, with a
        region encoder, `config.REFERENCE_REGIONS` (see `detector.regions`)."""
        if not prepared:
            return []
        per_channel: dict[str, list[np.ndarray]] = {}
        windows: list[Cells] = []
        grid = (1, 1)
        for ch in self.of("image"):
            if ch.kind == "float" and ch.covers == "all":
                enc = self.encoders[ch.name]
                rows: list[np.ndarray] = []
                for start in range(0, len(prepared), config.ENCODE_BATCH_SIZE):
                    part = prepared[start : start + config.ENCODE_BATCH_SIZE]
                    whole, maps = enc.encode_maps([p.resized or p.image for p in part])
                    grid = maps.shape[2:]
                    windows = reference_windows(*grid)
                    rows.extend(np.vstack([whole[i : i + 1], enc.head.pool(maps[i], windows)]) for i in range(len(part)))
                per_channel[ch.name] = rows
            elif ch.kind == "float":
                vecs = self.encoders[ch.name].encode([p.image for p in prepared])
                per_channel[ch.name] = [vecs[i : i + 1] for i in range(len(prepared))]
            elif ch.name == "pdq":
                per_channel[ch.name] = [(p.pdq or pdq_hash(p.image)).to_array()[None] for p in prepared]
        out = []
        for i, p in enumerate(prepared):
            w, h = p.image.size
            boxes: list[tuple[int, int, int, int] | None] = [None]
            for win in windows:
                b = window_box(win, grid[0], grid[1], w, h)
                boxes.append((b.left, b.top, b.right, b.bottom))
            out.append(ImageFeatures(tuple(boxes), {name: rows[i] for name, rows in per_channel.items()},
                                     p.thumbnail))
        return out

    def image_queries(self, image: Image.Image, regions: bool = True) -> ImageQuery:
        """Query rows per channel for one output image: for the region encoder, the whole
        output (row 0) then every `query_windows` region; for PDQ its 8 rotations and flips;
        for other encoders the whole output."""
        rows: dict[str, np.ndarray] = {}
        boxes: list[Box] = [Box(0, 0, image.width, image.height)]
        quality = None
        # PDQ hashes on another thread while the model runs (its threads leave a core idle part
        # of the time); the image is only read by both
        image.load()
        pdq = _helper_threads().submit(pdq_dihedral, image) if self.has("pdq") else None
        for ch in self.of("image"):
            if ch.kind == "float" and ch.covers == "all":
                enc = self.encoders[ch.name]
                whole, maps = enc.encode_maps([image])
                grid = maps.shape[2:]
                windows = _query_layout(grid[0], grid[1], tuple(config.QUERY_REGION_SIDES)) if regions else ()
                rows[ch.name] = np.vstack([whole, enc.head.pool(maps[0], windows)])
                boxes += _query_boxes(grid[0], grid[1], image.width, image.height) if regions else []
            elif ch.kind == "float":
                rows[ch.name] = self.encoders[ch.name].encode([image])
        if pdq is not None:
            hashes = pdq.result()
            quality = hashes[0].quality
            rows["pdq"] = np.stack([h.to_array() for h in hashes])
        return ImageQuery(rows, tuple(boxes), quality)

    # -- texts -----------------------------------------------------------------------------
    def text_vectors(
        self, passages: Sequence[str], show_progress_bar: bool | None = False
    ) -> dict[str, np.ndarray]:
        return {
            ch.name: self.encoders[ch.name].encode(list(passages), show_progress_bar=show_progress_bar)
            for ch in self.of("text")
            if ch.kind == "float"
        }

    def text_postings(self, text: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        out = {}
        for ch in self.of("text"):
            if ch.name == "shingles":
                # winnowed keys, each with the character offset of its first word in the work
                sh = text_shingles(text, config.SHINGLE_WORDS)
                kept = winnow(sh.keys, config.SHINGLE_WINNOW)
                out[ch.name] = (sh.keys[kept], sh.word_spans[kept, 0].astype(np.int64))
        return out
