"""Which collections a tenant may use, and the Detector that holds them.

Isolation: each tenant has its own detector home, `<home>/tenants/<tenant>` (see
`service.tenancy`), so a tenant can only ever name its own collections; another tenant's
collection, private or public, is reached only through `public()`, which checks the `public`
table. A private collection of another tenant and a missing one give the same 404.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from detector import config
from detector.core import Detector
from detector.errors import CollectionError
from indexes.records import check_name
from service.errors import not_found
from service.tenancy import Tenancy, tenant_home


class Detectors:
    """One Detector per tenant, opened on first use and kept for the service's lifetime.
    Models are shared between them (encoders are cached per process)."""

    def __init__(self, home: str | Path | None) -> None:
        self.home = home
        self._by_tenant: dict[str, Detector] = {}
        self._lock = threading.Lock()

    def get(self, tenant: str) -> Detector:
        with self._lock:
            if tenant not in self._by_tenant:
                # tenants share the operator's background corpus, read-only
                self._by_tenant[tenant] = Detector(tenant_home(self.home, tenant),
                                                   background=config.background_home(self.home))
            return self._by_tenant[tenant]

    def close(self) -> None:
        with self._lock:
            for det in self._by_tenant.values():
                det.close()
            self._by_tenant.clear()


@dataclass(frozen=True)
class CollectionRef:
    """A collection a request may use: its owner's Detector, its name there, and how the
    requester names it (`name`, or `owner/name` for another tenant's public collection)."""

    det: Detector
    owner: str
    name: str
    label: str


def _exists(det: Detector, name: str) -> bool:
    try:
        check_name(name)
    except CollectionError:
        return False
    return det.store.exists(name)


def own(detectors: Detectors, tenant: str, name: str) -> CollectionRef:
    """Collection *name* of *tenant*, or 404."""
    det = detectors.get(tenant)
    if not _exists(det, name):
        raise not_found(name)
    return CollectionRef(det, tenant, name, name)


def public(detectors: Detectors, tenancy: Tenancy, tenant: str, owner: str, name: str) -> CollectionRef:
    """*owner*'s collection *name* when it is public (or *tenant* owns it), else 404."""
    label = f"{owner}/{name}"
    try:
        check_name(owner, "tenant")
    except CollectionError:
        raise not_found(label) from None
    if owner != tenant and not tenancy.is_public(owner, name):
        raise not_found(label)
    det = detectors.get(owner)
    if not _exists(det, name):
        raise not_found(label)
    return CollectionRef(det, owner, name, label)
