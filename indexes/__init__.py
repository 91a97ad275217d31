"""factor4 storage: collections of FAISS indexes plus a SQLite catalog, persisted atomically.

This package knows vectors, keys and ids, never models; `detector` decides what goes in.
"""

import os

# OpenMP threads (FAISS's, torch's) spin after each parallel region by default, starving the
# ONNX Runtime and numpy work that follows on a small machine (an image scan took 1.6x longer).
# Must be set before the OpenMP runtime loads; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from indexes.collection import Collection, Writer, write_atomic
from indexes.errors import CollectionError, CollectionExists, CollectionNotFound, Factor4Error, StorageError
from indexes.records import FORMAT_VERSION, ChannelSpec, Manifest, SegmentRecord, WorkRecord, check_name
from indexes.store import Store

__all__ = [
    "FORMAT_VERSION",
    "ChannelSpec",
    "Collection",
    "CollectionError",
    "CollectionExists",
    "CollectionNotFound",
    "Factor4Error",
    "Manifest",
    "SegmentRecord",
    "StorageError",
    "Store",
    "WorkRecord",
    "Writer",
    "check_name",
    "write_atomic",
]
