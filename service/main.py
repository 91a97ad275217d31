"""The FastAPI application: `create_app()` wires settings, tenancy, detectors and the routers."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from detector import __version__, config
from detector.batch import trim_heap
from detector.safejson import JsonLimitError
from detector.errors import (
    CollectionExists,
    CollectionNotFound,
    EncoderError,
    EncoderMismatch,
    Factor4Error,
    InputError,
    StorageError,
)
from service.access import Detectors
from service.encoders import EncoderCatalog
from service.errors import InternalErrors, ServiceError
from service.jobs import Jobs
from service.limits import BodyLimit, RateLimiter, limit_malloc_arenas
from service.routers import batches, collections, encoders, health, scan, web, works
from service.settings import Settings
from service.tenancy import KeyNotFound, Tenancy
from service.uploads import remove_stale_staging

log = logging.getLogger(__name__)

#: Library errors -> (HTTP status, stable error code). Anything else a Factor4Error is 400.
ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (CollectionNotFound, 404, "collection_not_found"),
    (CollectionExists, 409, "collection_exists"),
    (StorageError, 500, "storage_error"),
    (JsonLimitError, 422, "invalid_json"),
    (InputError, 422, "bad_input"),
    (EncoderMismatch, 409, "encoder_mismatch"),
    (EncoderError, 422, "bad_encoder"),
    (KeyNotFound, 404, "key_not_found"),
    (Factor4Error, 400, "bad_request"),
]


async def _trim_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        await run_in_threadpool(trim_heap)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def create_app(settings: Settings | None = None, home: str | None = None) -> FastAPI:
    settings = settings or Settings()
    if home is not None:
        settings = settings.model_copy(update={"home": home})
    root = config.home(settings.home).resolve()  # absolute, as in library paths

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.tenancy = Tenancy(root)
        if settings.malloc_arenas:
            limit_malloc_arenas(settings.malloc_arenas)
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
        app.state.detectors = Detectors(root)
        if settings.preload_encoders:
            await run_in_threadpool(app.state.encoders.preload)
        stale = remove_stale_staging(root)
        if stale:
            log.info("removed %d staging folders of uploads a stopped server had in flight", stale)
        app.state.jobs = Jobs(root, app.state.detectors, settings.max_pending_batches)
        app.state.jobs.start()
        trimmer = asyncio.create_task(_trim_every(settings.trim_seconds)) if settings.trim_seconds else None
        yield
        if trimmer is not None:
            trimmer.cancel()
        await run_in_threadpool(app.state.jobs.close)
        app.state.detectors.close()

    app = FastAPI(title="factor4", version=__version__, lifespan=lifespan,
                  description="Evidence that AI outputs copy reference works. Every endpoint but /health "
                              "needs an API key: `Authorization: Bearer f4_...` or `X-API-Key: f4_...`.")
    app.state.settings = settings
    app.state.home = root
    app.state.rate_limiter = RateLimiter(settings.rate_per_second, settings.rate_burst)
    app.state.encoders = EncoderCatalog.from_settings(settings)  # a bad registration stops the start here
    app.add_middleware(BodyLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(InternalErrors)  # outermost of ours: BodyLimit's own refusal passes through it
    for module in (health, encoders, collections, works, scan, batches, web):
        app.include_router(module.router)

    # server paths in library messages (collections' folders, staged uploads) are not shown
    hide_paths = re.compile(re.escape(str(root)) + r"[^\s'\",;)]*")

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(Factor4Error)
    async def library_error(request: Request, exc: Factor4Error) -> JSONResponse:
        for cls, status, code in ERROR_STATUS:
            if isinstance(exc, cls):
                if cls is CollectionNotFound:  # its message lists the store's collections
                    return _error(status, code, "no such collection; list yours with GET /collections")
                return _error(status, code, hide_paths.sub("<store>", str(exc)))
        raise exc  # unreachable: Factor4Error is the last entry

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, f"http_{exc.status_code}", str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        return _error(422, "invalid_request", f"{first['msg']} at {list(first['loc'])}")

    return app


__all__ = ["ERROR_STATUS", "create_app"]
