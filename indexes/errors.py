"""Errors of the storage layer. `Factor4Error` is the root of every factor4 error."""

from __future__ import annotations


class Factor4Error(Exception):
    """Base of all errors factor4 raises on purpose; the message says what to fix."""


class CollectionError(Factor4Error):
    """A collection is missing, malformed, or used in a way it does not support."""


class CollectionNotFound(CollectionError):
    """No collection of that name exists."""


class CollectionExists(CollectionError):
    """A collection of that name exists already."""


class StorageError(CollectionError):
    """A stored collection is damaged or of an unsupported format version."""
