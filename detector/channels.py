"""Channels: what turns works and outputs into the vectors and keys a collection stores.

A collection channel is named by a spec string: an encoder (`sscd`, `sscd_distilled`,
`minilm`, `clip:<model>/<tag-or-checkpoint>`) or an exact fingerprint (`pdq`, `shingles`).
This module maps each to its stored `ChannelSpec` and computes its features; it is the only
place that knows both the models and the storage layout.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from detector import config
from detector.encoders import FINGERPRINTS, Encoder, load_encoder, parse_spec
from detector.errors import EncoderError, EncoderMismatch
from detector.fingerprints import PDQ_BITS, pdq_dihedral, pdq_hash, text_shingles, winnow
from indexes import ChannelSpec, Manifest


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
                           PDQ_BITS, "hamming", "IDMap2,BFlat")
    if base == "shingles":
        return ChannelSpec("shingles", f"shingles:{config.SHINGLE_WORDS}", "text", "postings", 0,
                           "containment", "")
    enc = load_encoder(spec)
    return ChannelSpec(channel_name(enc.spec), enc.spec, enc.modality, "float", enc.dim, "ip",
                       config.ANN_FACTORIES[ann], enc.weights_sha256)


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
    def image_vectors(
        self, images: Sequence[Image.Image], show_progress_bar: bool | None = False
    ) -> dict[str, np.ndarray]:
        """Per channel, one row per image: float vectors or packed PDQ bits (reference side)."""
        out: dict[str, np.ndarray] = {}
        for ch in self.of("image"):
            if ch.kind == "float":
                out[ch.name] = self.encoders[ch.name].encode(list(images), show_progress_bar=show_progress_bar)
            elif ch.name == "pdq":
                rows = [pdq_hash(im).to_array() for im in images]
                out[ch.name] = np.stack(rows) if rows else np.empty((0, PDQ_BITS // 8), np.uint8)
        return out

    def image_queries(self, image: Image.Image) -> tuple[dict[str, np.ndarray], int | None]:
        """Query rows per channel for one output image (PDQ: its 8 rotations and flips), and
        the PDQ quality of the original orientation (None without a PDQ channel)."""
        out: dict[str, np.ndarray] = {}
        quality = None
        for ch in self.of("image"):
            if ch.kind == "float":
                out[ch.name] = self.encoders[ch.name].encode([image])
            elif ch.name == "pdq":
                hashes = pdq_dihedral(image)
                quality = hashes[0].quality
                out[ch.name] = np.stack([h.to_array() for h in hashes])
        return out, quality

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
