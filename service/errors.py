"""Errors the service raises itself, each with a stable code; `main` renders them as
`{"error": code, "message": ...}`. Library errors are mapped in `service.main.ERROR_STATUS`."""

from __future__ import annotations

import json
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from service.limits import track_start

log = logging.getLogger(__name__)


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


class InternalErrors:
    """Answer an unexpected exception with a JSON 500 `internal_error` (logged with its
    traceback) instead of letting it reach the server, which would also drop the client's
    kept-alive connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked, started = track_start(send)
        try:
            await self.app(scope, receive, tracked)
        except Exception:
            log.exception("internal error on %s %s", scope.get("method"), scope.get("path"))
            if started():
                raise
            body = json.dumps({"error": "internal_error",
                               "message": "an internal error; the service's log has the details"}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
