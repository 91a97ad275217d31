"""Tenants, API keys and public collections, in one SQLite file: `<home>/service.db`.

A key reads `f4_<id>_<secret>`: `id` is a short random public id (listed, used to revoke),
`secret` comes from `secrets.token_urlsafe(32)`. Only sha256(secret) is stored, so a key can be
shown once, when it is created, and never again; checks compare hashes with
`hmac.compare_digest`. Every write runs in one transaction.

Collections are isolated by giving each tenant its own detector home,
`<home>/tenants/<tenant>` (see `tenant_home`): a tenant's collection names live in their own
folder, so no name mapping can leak across tenants, a tenant may use the full 64-character
collection name, and an operator can bulk-load a tenant's collection with
`factor4 --home <home>/tenants/<tenant> add NAME works/`. Encoders are cached per process
(`detector.encoders.load_encoder`), so every tenant's Detector shares the loaded models.
An owner may mark a collection public-readable (table `public`): any tenant may then scan it,
only the owner may change or delete it.

This module imports no FastAPI: the CLI (`factor4 keys ...`) uses it too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from detector import config
from detector.errors import Factor4Error
from indexes.records import check_name

DB_NAME = "service.db"
KEY_PREFIX = "f4"
ID_BYTES = 6  # 12 hex digits

SCHEMA = """
CREATE TABLE IF NOT EXISTS tenants (
    name        TEXT PRIMARY KEY,
    created_utc TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    sha256      TEXT NOT NULL,
    created_utc TEXT NOT NULL,
    revoked_utc TEXT
);
CREATE TABLE IF NOT EXISTS public (
    tenant      TEXT NOT NULL REFERENCES tenants(name),
    collection  TEXT NOT NULL,
    PRIMARY KEY (tenant, collection)
);
"""


class KeyNotFound(Factor4Error):
    """No API key of that id."""


@dataclass(frozen=True)
class KeyInfo:
    """An API key as listed: never its secret."""

    id: str
    tenant: str
    created_utc: str
    revoked_utc: str | None

    def to_dict(self) -> dict[str, str | None]:
        return {"id": self.id, "tenant": self.tenant, "created_utc": self.created_utc,
                "revoked_utc": self.revoked_utc}


@dataclass(frozen=True)
class NewKey:
    """A key just created: `key` is the only time the secret is available."""

    info: KeyInfo
    key: str


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: the tenant and the key id it used."""

    tenant: str
    key_id: str


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_tenant(name: str) -> str:
    """Tenant names follow the collection-name rule (they become folder names)."""
    return check_name(name, "tenant")


def tenant_home(home: str | Path | None, tenant: str) -> Path:
    """The detector home of *tenant*'s collections (`detector.config.tenant_home`)."""
    return config.tenant_home(home, tenant)


class Tenancy:
    """The service database of one home folder. Opens a connection per call (thread-safe)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = config.home(home)
        self.path = self.home / DB_NAME
        self.home.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue instead of failing)."""
        with self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # -- tenants and keys ------------------------------------------------------------------
    def tenants(self) -> list[str]:
        with self._db() as db:
            return [r[0] for r in db.execute("SELECT name FROM tenants ORDER BY name")]

    def create_key(self, tenant: str) -> NewKey:
        """A new key for *tenant* (created if new). The returned `key` is never stored."""
        check_tenant(tenant)
        key_id, secret, now = secrets.token_hex(ID_BYTES), secrets.token_urlsafe(32), _now()
        with self._write() as db:
            db.execute("INSERT OR IGNORE INTO tenants (name, created_utc) VALUES (?, ?)", (tenant, now))
            db.execute("INSERT INTO keys (id, tenant, sha256, created_utc) VALUES (?, ?, ?, ?)",
                       (key_id, tenant, _hash(secret), now))
        return NewKey(KeyInfo(key_id, tenant, now, None), f"{KEY_PREFIX}_{key_id}_{secret}")

    def list_keys(self, tenant: str | None = None) -> list[KeyInfo]:
        sql = "SELECT id, tenant, created_utc, revoked_utc FROM keys"
        args: tuple[str, ...] = ()
        if tenant is not None:
            sql, args = sql + " WHERE tenant = ?", (tenant,)
        with self._db() as db:
            return [KeyInfo(*row) for row in db.execute(sql + " ORDER BY created_utc, id", args)]

    def revoke_key(self, key_id: str) -> KeyInfo:
        """Revoke a key (idempotent: a revoked key keeps its first revocation time)."""
        with self._write() as db:
            db.execute("UPDATE keys SET revoked_utc = ? WHERE id = ? AND revoked_utc IS NULL", (_now(), key_id))
            row = db.execute("SELECT id, tenant, created_utc, revoked_utc FROM keys WHERE id = ?",
                             (key_id,)).fetchone()
        if row is None:
            raise KeyNotFound(f"no API key with id {key_id!r}; list them with `factor4 keys list`")
        return KeyInfo(*row)

    def authenticate(self, key: str | None) -> Principal | None:
        """The tenant a key belongs to, or None when it is malformed, unknown or revoked."""
        if not key:
            return None
        parts = key.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1] or not parts[2]:
            return None
        key_id, secret = parts[1], parts[2]
        with self._db() as db:
            row = db.execute("SELECT tenant, sha256, revoked_utc FROM keys WHERE id = ?", (key_id,)).fetchone()
        stored = row[1] if row is not None else "0" * 64
        ok = hmac.compare_digest(_hash(secret), stored)  # compared even for unknown ids
        if row is None or not ok or row[2] is not None:
            return None
        return Principal(row[0], key_id)

    # -- public collections ----------------------------------------------------------------
    def set_public(self, tenant: str, collection: str, public: bool) -> None:
        with self._write() as db:
            if public:
                db.execute("INSERT OR IGNORE INTO tenants (name, created_utc) VALUES (?, ?)", (tenant, _now()))
                db.execute("INSERT OR IGNORE INTO public (tenant, collection) VALUES (?, ?)", (tenant, collection))
            else:
                db.execute("DELETE FROM public WHERE tenant = ? AND collection = ?", (tenant, collection))

    def is_public(self, tenant: str, collection: str) -> bool:
        with self._db() as db:
            return db.execute("SELECT 1 FROM public WHERE tenant = ? AND collection = ?",
                              (tenant, collection)).fetchone() is not None

    def public_collections(self) -> list[tuple[str, str]]:
        """(owner, collection) of every public collection, sorted."""
        with self._db() as db:
            return [(r[0], r[1]) for r in db.execute("SELECT tenant, collection FROM public ORDER BY 1, 2")]
