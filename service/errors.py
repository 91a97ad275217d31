"""Errors the service raises itself, each with a stable code; `main` renders them as
`{"error": code, "message": ...}`. Library errors are mapped in `service.main.ERROR_STATUS`."""

from __future__ import annotations


class ServiceError(Exception):
    """An HTTP error with a stable code, a message saying what to fix, and optional headers."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def unauthorized() -> ServiceError:
    return ServiceError(401, "unauthorized",
                        "send a valid API key as 'Authorization: Bearer <key>' or 'X-API-Key: <key>' "
                        "(create one with `factor4 keys create TENANT`)",
                        {"WWW-Authenticate": "Bearer"})


def not_found(name: str) -> ServiceError:
    """The same answer for a missing collection and another tenant's private one."""
    return ServiceError(404, "collection_not_found",
                        f"no collection named {name!r}; list yours with GET /collections")
