"""Exceptions factor4 raises for problems a user can fix.

Every one carries a message that names the file, collection or setting at fault and what to
do. The CLI turns them into one-line errors with exit code 2; the service into HTTP 4xx.
"""

from __future__ import annotations

from indexes.errors import (
    CollectionError,
    CollectionExists,
    CollectionNotFound,
    Factor4Error,
    StorageError,
)

__all__ = [
    "CollectionError",
    "CollectionExists",
    "CollectionNotFound",
    "EncoderError",
    "EncoderMismatch",
    "Factor4Error",
    "InputError",
    "ModelUnavailable",
    "StorageError",
]

class InputError(Factor4Error):
    """A work or an output cannot be read: empty, corrupt, unsupported, too large."""


class EncoderError(Factor4Error):
    """An encoder spec is malformed or names an unknown encoder."""


class ModelUnavailable(EncoderError):
    """Model weights are not on this machine; the message says how to supply them."""


class EncoderMismatch(Factor4Error):
    """A collection was built with other encoders or weights than the ones loaded now."""
