"""Embedding models, named by spec strings and loaded once per process.

Spec strings (what ``--encoder`` and collections record):

``"sscd"``
    SSCD copy-detection descriptor for images, 512-d (int8 ONNX).
``"sscd_distilled"``
    A small student of SSCD, 512-d, several times faster.
``"minilm"``
    all-MiniLM-L6-v2 sentence embeddings for text, 384-d.
``"minilm:int8"``
    The same model with int8 weights: about 1.5x faster again, vectors within cosine ~0.99 of
    ``minilm``'s (not interchangeable with them).
``"clip:<model>/<tag-or-checkpoint-path>"``
    An OpenCLIP image model, e.g. ``clip:ViT-B-32/laion2b_s34b_b79k`` (weights must already be
    cached here) or ``clip:ViT-B-32//path/to/open_clip_model.safetensors``. The spec is split
    on the first "/" after ``clip:``, so a path keeps its own slashes.

``"pdq"`` and ``"shingles"`` are fingerprints (:mod:`detector.fingerprints`), not encoders.

Importing this package is cheap: onnxruntime, torch, open_clip and sentence-transformers are
imported when an encoder that needs them is loaded.
"""

from __future__ import annotations

import logging
import os
import threading

from detector.encoders.base import Encoder
from detector.errors import EncoderError

__all__ = ["ENCODER_SPECS", "FINGERPRINTS", "Encoder", "load_encoder", "parse_spec"]

logger = logging.getLogger(__name__)

#: The spec forms :func:`load_encoder` accepts, and what each one is.
ENCODER_SPECS: dict[str, str] = {
    "sscd": "SSCD image copy-detection descriptor, 512-d",
    "sscd_distilled": "distilled SSCD student, 512-d, faster",
    "minilm": "all-MiniLM-L6-v2 text embedding, 384-d",
    "minilm:int8": "all-MiniLM-L6-v2 with int8 weights, 384-d, faster",
    "clip:<model>/<tag-or-checkpoint-path>": "OpenCLIP image embedding (also embeds text)",
}
#: Names that are fingerprints, handled by detector.fingerprints rather than by an encoder.
FINGERPRINTS = ("pdq", "shingles")

_CLIP_PREFIX = "clip:"
_SIMPLE = ("sscd", "sscd_distilled", "minilm", "minilm:int8")
_VALID_FORMS = ", ".join(repr(form) for form in ENCODER_SPECS)

_cache: dict[str, Encoder] = {}
_spec_locks: dict[str, threading.Lock] = {}
_cache_lock = threading.Lock()


def _split_clip(spec: str) -> tuple[str, str]:
    """(model, pretrained) of a ``clip:`` spec; EncoderError if either part is missing."""
    rest = spec[len(_CLIP_PREFIX):]
    model, slash, pretrained = rest.partition("/")
    model, pretrained = model.strip(), pretrained.strip()
    if not slash or not model or not pretrained:
        raise EncoderError(
            f"malformed CLIP encoder spec {spec!r}: write clip:<model>/<tag-or-checkpoint-path>, "
            "e.g. clip:ViT-B-32/laion2b_s34b_b79k or clip:ViT-B-32//path/to/"
            "open_clip_model.safetensors"
        )
    return model, pretrained


def parse_spec(spec: str) -> str:
    """The canonical form of an encoder spec, or EncoderError saying what the valid forms are.

    Simple names are matched without regard to case or surrounding spaces. For CLIP, a
    pretrained tag is written as open_clip normalises it (lower case, "_" for "-") and a
    checkpoint path is made absolute (``~`` expanded), so the spec still names the same file
    when read from another working directory. This does not check that the model or weights
    exist; :func:`load_encoder` does.
    """
    if not isinstance(spec, str):
        raise EncoderError(f"an encoder spec is a str, got {type(spec).__name__}")
    stripped = spec.strip()
    name = stripped.lower()
    if name in _SIMPLE:
        return name
    if name in FINGERPRINTS:
        raise EncoderError(
            f"{name!r} is a fingerprint, not an encoder: use detector.fingerprints for it "
            f"(encoders are {_VALID_FORMS})"
        )
    if name.startswith(_CLIP_PREFIX):
        from detector.encoders.clip import looks_like_path

        model, pretrained = _split_clip(_CLIP_PREFIX + stripped[len(_CLIP_PREFIX):])
        if looks_like_path(pretrained):
            pretrained = os.path.abspath(os.path.expanduser(pretrained))
        else:
            pretrained = pretrained.lower().replace("-", "_")
        return f"{_CLIP_PREFIX}{model}/{pretrained}"
    raise EncoderError(f"unknown encoder spec {spec!r}; valid forms are {_VALID_FORMS}, and the fingerprints "
                       + ", ".join(repr(f) for f in FINGERPRINTS))


def _build(spec: str) -> Encoder:
    if spec in ("sscd", "sscd_distilled"):
        from detector.encoders.sscd import SSCDEncoder

        return SSCDEncoder(spec)
    if spec.startswith("minilm"):
        from detector.encoders.minilm import MiniLMEncoder

        return MiniLMEncoder(spec)
    from detector.encoders.clip import ClipEncoder

    return ClipEncoder(*_split_clip(spec))


def load_encoder(spec: str) -> Encoder:
    """The encoder a spec names, loaded on first use and shared afterwards.

    One instance per canonical spec per process; safe to call from several threads (a model
    is loaded once even if they ask at the same time). Raises EncoderError for a malformed or
    unknown spec, ModelUnavailable when the weights are not on this machine.
    """
    canonical = parse_spec(spec)
    encoder = _cache.get(canonical)
    if encoder is not None:
        return encoder
    with _cache_lock:
        lock = _spec_locks.setdefault(canonical, threading.Lock())
    with lock:
        encoder = _cache.get(canonical)
        if encoder is None:
            logger.info("loading encoder %s", canonical)
            encoder = _build(canonical)
            _cache[canonical] = encoder
    return encoder
