"""The FastAPI application: `create_app()` wires settings, the detector and the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from detector import __version__
from detector.core import Detector
from detector.errors import CollectionNotFound, EncoderMismatch, Factor4Error, InputError
from service.routers import health, scan
from service.settings import Settings

#: Library errors -> (HTTP status, stable error code). Anything else a Factor4Error is 400.
ERROR_STATUS: list[tuple[type[Exception], int, str]] = [
    (CollectionNotFound, 404, "collection_not_found"),
    (InputError, 422, "bad_input"),
    (EncoderMismatch, 409, "encoder_mismatch"),
    (Factor4Error, 400, "bad_request"),
]


def create_app(settings: Settings | None = None, home: str | None = None) -> FastAPI:
    settings = settings or Settings()
    if home is not None:
        settings = settings.model_copy(update={"home": home})

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.detector = Detector(settings.home)
        yield
        app.state.detector.close()

    app = FastAPI(title="factor4", version=__version__, lifespan=lifespan,
                  description="Evidence that AI outputs copy reference works.")
    app.state.settings = settings
    app.include_router(health.router)
    app.include_router(scan.router)

    @app.exception_handler(Factor4Error)
    async def library_error(request: Request, exc: Factor4Error) -> JSONResponse:
        for cls, status, code in ERROR_STATUS:
            if isinstance(exc, cls):
                return JSONResponse({"error": code, "message": str(exc)}, status_code=status)
        raise exc  # unreachable: Factor4Error is the last entry

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": f"http_{exc.status_code}", "message": str(exc.detail)},
                            status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request", "loc": ()}
        return JSONResponse({"error": "invalid_request", "message": f"{first['msg']} at {list(first['loc'])}"},
                            status_code=422)

    return app
