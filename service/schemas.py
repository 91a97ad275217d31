"""Pydantic models at the HTTP boundary. They mirror `detector.results` JSON forms."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class TextScanRequest(BaseModel):
    text: str = Field(min_length=1, description="the AI output to scan")
    name: str = Field("<text>", max_length=300, description="a name for the output in the result")


class WorkOut(BaseModel):
    id: str
    source: str
    sha256: str
    modality: str
    title: str | None = None
    creator: str | None = None
    licence: str | None = None
    source_url: str | None = None


class MatchOut(BaseModel):
    work: WorkOut
    score: float = Field(ge=0, le=1, description="0..1, higher = stronger evidence of copying")
    verdict: Literal["copy", "similar", "unrelated"]
    signals: dict[str, float | None]
    excerpt: str | None = None


class ScanOut(BaseModel):
    input: str
    sha256: str
    modality: Literal["image", "text"]
    collection: str
    matches: list[MatchOut]


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    collections: int


class ErrorOut(BaseModel):
    error: str = Field(description="stable error code")
    message: str
