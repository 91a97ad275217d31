"""Where collections live: one folder per collection under `<home>/collections/`."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from indexes.collection import Collection
from indexes.errors import CollectionNotFound
from indexes.records import NAME_RE, ChannelSpec, check_name

log = logging.getLogger(__name__)


class Store:
    """The collections under one home folder."""

    def __init__(self, home: str | os.PathLike[str]) -> None:
        self.home = Path(home)
        self.root = self.home / "collections"

    def names(self) -> list[str]:
        """Names of the collections stored here, sorted."""
        if not self.root.is_dir():
            return []
        # a valid name only: not the hidden `.<name>.creating.*` / `.<name>.deleting.*` folders
        # that a crash in `create` or `delete` can leave behind
        return sorted(
            p.name for p in self.root.iterdir() if NAME_RE.match(p.name) and (p / "catalog.sqlite").is_file()
        )

    def path(self, name: str) -> Path:
        return self.root / check_name(name)

    def exists(self, name: str) -> bool:
        return (self.path(name) / "catalog.sqlite").is_file()

    def create(self, name: str, channels: Sequence[ChannelSpec]) -> Collection:
        return Collection.create(self.root, name, channels)

    def open(self, name: str) -> Collection:
        if not self.exists(name):
            known = ", ".join(self.names()) or "none"
            raise CollectionNotFound(
                f"no collection named {name!r} in {self.root} (collections here: {known}); "
                f"create it with `factor4 create {name}`"
            )
        return Collection.open(self.path(name))

    def delete(self, name: str) -> None:
        """Delete a collection: renamed away first, so a crash never leaves half of one."""
        path = self.path(name)
        if not self.exists(name):
            raise CollectionNotFound(f"no collection named {name!r} in {self.root}")
        trash = self.root / f".{name}.deleting.{os.getpid()}"
        os.rename(path, trash)
        shutil.rmtree(trash)
        log.info("deleted collection %s", name)
