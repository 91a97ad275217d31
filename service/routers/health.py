"""Liveness (no key needed) and versions (any valid key)."""

from __future__ import annotations

import platform
from importlib import metadata

from fastapi import APIRouter

from detector import __version__
from detector.report import PACKAGES as REPORT_PACKAGES
from service.deps import PrincipalDep
from service.schemas import ErrorOut, Health, VersionOut

router = APIRouter(tags=["health"])

#: Distributions whose versions GET /version reports: those an evidence report records, and the
#: web stack's.
PACKAGES = (*REPORT_PACKAGES, "fastapi", "starlette", "pydantic", "uvicorn")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: needs no key and says nothing about tenants or collections."""
    return Health(status="ok", version=__version__)


@router.get("/version", response_model=VersionOut, responses={401: {"model": ErrorOut}, 429: {"model": ErrorOut}})
def version(_: PrincipalDep) -> VersionOut:
    return VersionOut(factor4=__version__, python=platform.python_version(),
                      packages={name: _version(name) for name in PACKAGES})
