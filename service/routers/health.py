from __future__ import annotations

from fastapi import APIRouter

from detector import __version__
from service.deps import DetectorDep
from service.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
def health(det: DetectorDep) -> Health:
    return Health(status="ok", version=__version__, collections=len(det.collections()))
