"""Value objects the storage layer reads and writes.

The storage layer knows vectors, keys and ids, not models: a `ChannelSpec` records which
encoder made a channel's vectors (its spec string and weights hash) so the caller can check it,
but nothing here loads or runs a model.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from indexes.errors import CollectionError

#: Version of the on-disk layout; a collection of another version is refused with a message.
#: Version 4 added delta index files (recent additions beside each main index); version 5 stores
#: texts in chunks (table `text_chunks`, see `indexes.collection.TEXT_CHUNK_CHARS`).
FORMAT_VERSION = 5
#: Versions this code reads; a commit that changes a collection upgrades it to FORMAT_VERSION (a
#: version 3 collection is a version 4 one without delta files; version 4 kept texts whole).
READ_FORMAT_VERSIONS = (3, 4, 5)

ChannelKind = Literal["float", "binary", "postings"]
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "collection") -> str:
    """Return *name* if it is a safe file name (letters, digits, `_ . -`; up to 64), else raise."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise CollectionError(
            f"invalid {what} name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ChannelSpec:
    """One searchable channel of a collection: a FAISS index, or a table of posting keys.

    `name` is the channel's key (also its file name); `encoder` the spec string of what made its
    vectors and `weights_sha256` a hash of that encoder's weights; `factory` the FAISS factory
    string; `metric` "ip" (inner product of L2-normalised vectors = cosine), "hamming" (binary
    codes, `dim` bits) or "containment" (posting keys, `dim` 0). `covers` says which segments
    a vector channel holds a vector for: "all" of them, or only each work's "whole" segment
    (ordinal 0; e.g. a perceptual hash, where image regions get none).
    """

    name: str
    encoder: str
    modality: str
    kind: ChannelKind
    dim: int
    metric: str
    factory: str
    weights_sha256: str = ""
    normalised: bool = True
    covers: str = "all"

    def __post_init__(self) -> None:
        check_name(self.name, "channel")
        if self.kind not in ("float", "binary", "postings"):
            raise CollectionError(f"channel {self.name}: kind must be float, binary or postings")
        if self.kind != "postings" and self.dim <= 0:
            raise CollectionError(f"channel {self.name}: dim must be positive, got {self.dim}")
        if self.covers not in ("all", "whole"):
            raise CollectionError(f"channel {self.name}: covers must be 'all' or 'whole', got {self.covers!r}")
        if self.kind == "binary" and self.dim % 8:
            raise CollectionError(f"channel {self.name}: binary dim must be a multiple of 8 bits")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChannelSpec:
        return cls(**data)


@dataclass(frozen=True)
class WorkRecord:
    """A reference work as the catalog stores it. `id` is stable: derived from `sha256`."""

    id: str
    sha256: str
    modality: str
    source: str
    title: str | None = None
    creator: str | None = None
    licence: str | None = None
    source_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    added_at: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SegmentRecord:
    """A searchable part of a work: a text passage (`start`/`end` character offsets) or an image
    region (`box` = (left, top, right, bottom) pixels; None = the whole image). `id` is also the
    segment's vector id in every FAISS index of its modality; 0 until stored."""

    work_id: str
    ordinal: int
    start: int | None = None
    end: int | None = None
    box: tuple[int, int, int, int] | None = None
    id: int = 0


@dataclass(frozen=True)
class Manifest:
    """What a collection is: written to `manifest.json` after every commit."""

    name: str
    format_version: int
    created_at: str
    generation: int
    channels: tuple[ChannelSpec, ...]
    counts: dict[str, int]

    def channel(self, name: str) -> ChannelSpec:
        for ch in self.channels:
            if ch.name == name:
                return ch
        raise CollectionError(f"collection {self.name!r} has no channel {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "format_version": self.format_version,
            "created_at": self.created_at,
            "generation": self.generation,
            "channels": [c.to_dict() for c in self.channels],
            "counts": dict(self.counts),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
