"""Dependencies shared by the routers, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from detector.core import Detector
from service.settings import Settings


def get_detector(request: Request) -> Detector:
    return request.app.state.detector


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


DetectorDep = Annotated[Detector, Depends(get_detector)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
