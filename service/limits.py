"""Request limits that sit in front of the routers: body size and per-key request rate."""

from __future__ import annotations

import ctypes
import json
import logging
import math
import threading
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)
_M_ARENA_MAX = -8  # glibc's mallopt parameter


def limit_malloc_arenas(arenas: int) -> bool:
    """Ask glibc to use at most *arenas* malloc arenas from now on (as MALLOC_ARENA_MAX does
    when set before the process starts): each of the service's worker threads could otherwise
    get one of its own and keep its freed memory there. False where glibc is not the C library."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(_M_ARENA_MAX, int(arenas)))
    except (OSError, AttributeError):
        log.debug("no glibc mallopt here: malloc arenas not limited")
        return False


def track_start(send: Send) -> tuple[Send, Callable[[], bool]]:
    """*send* wrapped to note when the response has started, and a function that says so (a
    middleware may answer an error itself only before that)."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        if message["type"] == "http.response.start":
            started = True
        await send(message)

    return tracking_send, lambda: started


class _TooLarge(Exception):
    pass


class BodyLimit:
    """Refuse request bodies over *max_bytes* with 413 `too_large`: at once when Content-Length
    says so (nothing is read), else as soon as the streamed body passes the limit."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: str) -> bytes:
        return json.dumps({"error": "too_large",
                           "message": f"request body {size} exceeds max_request_bytes = {self.max_bytes} "
                                      "(FACTOR4_MAX_REQUEST_BYTES); send fewer or smaller files"}).encode()

    async def _refuse(self, send: Send, size: str) -> None:
        body = self._message(size)
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, f"of {int(length)} bytes")
            return
        received = 0
        send, started = track_start(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            if started():
                raise
            await self._refuse(send, f"of more than {self.max_bytes} bytes")


class RateLimiter:
    """A token bucket per API key, in memory: *rate* requests per second, bursts of *burst*."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token of *key*'s bucket: 0 when allowed, else seconds until one is available."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1 - tokens) / self.rate

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
