"""The contract every embedding model of factor4 follows.

An :class:`Encoder` turns images or texts into float32 vectors of a fixed length, each
L2-normalised, so that the inner product of two vectors is their cosine similarity. Like
sentence-transformers' ``encode``: a list in gives a matrix out, one item in gives one vector.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector import config

logger = logging.getLogger(__name__)

#: What ``modality`` may be: what :meth:`Encoder.encode` takes.
MODALITIES = ("image", "text")

_HASH_CHUNK = 1 << 20


def sha256_files(paths: Sequence[Path]) -> str:
    """Hex sha256 over the bytes of *paths*, read one after the other in the order given.

    For a single file this is that file's usual sha256 (what ``sha256sum`` prints).
    """
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            while chunk := handle.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    """*vectors* (N, d) as float32 with each row scaled to unit length (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, np.float32(1e-12))


def session_options() -> Any:
    """ONNX Runtime options for factor4's graphs (SSCD, MiniLM): errors only, and threads that
    sleep when idle.

    ONNX Runtime's threads spin for a while after each run; on a small machine that starves
    what follows (FAISS's OpenMP search took 10x longer right after an encode)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def default_show_progress_bar() -> bool:
    """Show a progress bar when factor4's log level is INFO or DEBUG (sentence-transformers' rule)."""
    return logger.getEffectiveLevel() <= logging.INFO


def batches(
    items: Sequence[Any], batch_size: int, show_progress_bar: bool, desc: str
) -> Iterator[Sequence[Any]]:
    """Consecutive slices of *items*, *batch_size* long, with a tqdm bar if asked for."""
    starts = range(0, len(items), batch_size)
    if show_progress_bar:
        try:
            from tqdm.auto import tqdm
        except ImportError:  # pragma: no cover - tqdm comes with sentence-transformers
            logger.debug("tqdm is not installed; encoding without a progress bar")
        else:
            starts = tqdm(starts, desc=desc, unit="batch")
    for start in starts:
        yield items[start : start + batch_size]


class Encoder(ABC):
    """An embedding model: images or texts in, unit-length float32 vectors out.

    Subclasses set ``spec``, ``modality`` and ``dim`` in their constructor and implement
    :meth:`_encode_list` and :meth:`weight_files`.
    """

    #: Canonical spec string that :func:`detector.encoders.load_encoder` turns back into
    #: this encoder, e.g. ``"sscd"``, ``"minilm"``, ``"clip:ViT-B-32/laion2b_s34b_b79k"``.
    spec: str
    #: What :meth:`encode` takes: ``"image"`` (PIL images) or ``"text"`` (str).
    modality: str
    #: Length of every vector.
    dim: int
    #: How vectors compare: ``"ip"``, the inner product, which is the cosine since vectors
    #: are L2-normalised.
    metric: str = "ip"

    _weights_sha256: str | None = None
    _hash_lock: threading.Lock

    def __init__(self) -> None:
        self._hash_lock = threading.Lock()

    # -- to implement ---------------------------------------------------------------------
    @abstractmethod
    def weight_files(self) -> list[Path]:
        """Files holding the model's weights, in the order their bytes are hashed."""

    @abstractmethod
    def _encode_list(
        self, items: list[Any], batch_size: int, show_progress_bar: bool
    ) -> np.ndarray:
        """Vectors (len(items), dim) of a non-empty list of valid items; need not be normalised."""

    # -- public API -----------------------------------------------------------------------
    @property
    def weights_sha256(self) -> str:
        """Hex sha256 over the bytes of :meth:`weight_files`: which weights made the vectors.

        Computed on first use and cached for the life of the encoder.
        """
        if self._weights_sha256 is None:
            with self._hash_lock:
                if self._weights_sha256 is None:
                    files = self.weight_files()
                    logger.debug("hashing weights of %s: %s", self.spec, files)
                    self._weights_sha256 = sha256_files(files)
        return self._weights_sha256

    def encode(
        self,
        items: Any,
        batch_size: int = config.ENCODE_BATCH_SIZE,
        show_progress_bar: bool | None = None,
    ) -> np.ndarray:
        """Embed *items*: a list gives float32 (N, dim), a single item gives float32 (dim,).

        Image encoders take PIL images (converted to RGB if they are not), text encoders take
        str. Every vector has unit L2 norm. An empty list gives an array of shape (0, dim).
        """
        return self._encode_items(
            items, self.modality, self._encode_list, batch_size, show_progress_bar
        )

    def describe(self) -> dict[str, Any]:
        """What a collection records about this encoder, to check it is the same one later."""
        return {
            "spec": self.spec,
            "modality": self.modality,
            "dim": self.dim,
            "metric": self.metric,
            "weights_sha256": self.weights_sha256,
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}(spec={self.spec!r}, modality={self.modality!r}, dim={self.dim})"

    # -- helpers for subclasses -----------------------------------------------------------
    def _encode_items(
        self,
        items: Any,
        modality: str,
        encode_list: Callable[[list[Any], int, bool], np.ndarray],
        batch_size: int,
        show_progress_bar: bool | None,
    ) -> np.ndarray:
        """Shared front end of :meth:`encode`: checks inputs, handles single items and empty
        lists, normalises rows."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        single = _is_single(items, modality)
        batch = [items] if single else _as_list(items, modality)
        if modality == "image":
            batch = [_rgb(image, index) for index, image in enumerate(batch)]
        else:
            for index, text in enumerate(batch):
                if not isinstance(text, str):
                    raise TypeError(
                        f"{self.spec} encodes text: item {index} is a {type(text).__name__}, "
                        "pass str (or a list of str)"
                    )
        if not batch:
            return np.zeros((0, self.dim), dtype=np.float32)
        if show_progress_bar is None:
            show_progress_bar = default_show_progress_bar()
        vectors = np.asarray(encode_list(batch, batch_size, show_progress_bar))
        if vectors.shape != (len(batch), self.dim):
            raise RuntimeError(
                f"{self.spec} returned vectors of shape {vectors.shape}, "
                f"expected {(len(batch), self.dim)}"
            )
        vectors = l2_normalise(vectors)
        return vectors[0] if single else vectors


def _is_single(items: Any, modality: str) -> bool:
    if modality == "text":
        return isinstance(items, str)
    from PIL import Image

    return isinstance(items, Image.Image)


def _as_list(items: Any, modality: str) -> list[Any]:
    if isinstance(items, (bytes, bytearray, np.ndarray)) or not isinstance(items, Sequence):
        what = "a PIL image or a list of PIL images" if modality == "image" else "a str or a list of str"
        raise TypeError(f"encode takes {what}, got {type(items).__name__}")
    return list(items)


def _rgb(image: Any, index: int) -> Any:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise TypeError(
            f"image encoders take PIL images: item {index} is a {type(image).__name__}; "
            "open files with PIL.Image.open(path) first"
        )
    return image if image.mode == "RGB" else image.convert("RGB")
