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


class SpanOut(BaseModel):
    output_start: int = Field(description="character offset in the output (end exclusive: output_end)")
    output_end: int
    work_start: int = Field(description="character offset in the work's stored text")
    work_end: int
    kind: Literal["verbatim", "near", "paraphrase"]
    words: int = Field(description="output words matched in order (paraphrase: words of the window)")
    discounted: bool = Field(description="a phrase many works share: reported, not counted")
    shared_by: int | None = Field(None, description="works holding the phrase, when discounted")
    output_text: str
    work_text: str


class BoxOut(BaseModel):
    left: int
    top: int
    right: int
    bottom: int


class MatchOut(BaseModel):
    work: WorkOut
    score: float = Field(ge=0, le=1, description="0..1, higher = stronger evidence of copying")
    verdict: Literal["copy", "similar", "unrelated"]
    fpr: float | None = Field(None, description="estimated share of unrelated outputs scoring this high")
    signals: dict[str, float | None]
    coverage: float | None = Field(None, description="texts: share of the output's words copied from the work")
    longest_run_words: int | None = Field(None, description="texts: longest verbatim run, in words")
    spans: list[SpanOut] | None = Field(None, description="texts: what was copied from where")
    region: BoxOut | None = Field(None, description="images: the part of the output that matches, in its pixels")
    work_region: BoxOut | None = Field(None, description="images: the part of the work matched (null = all of it)")
    transform: Literal["near-exact", "edited", "partial"] | None = Field(
        None, description="images: how the output copies the work, when it does")
    output_size: list[int] | None = Field(None, description="images: the output's [width, height]")
    work_size: list[int] | None = Field(None, description="images: the work's [width, height]")
    excerpt: str | None = None


class CalibrationOut(BaseModel):
    modality: str
    generation: int
    queries: int
    works: int
    method: str


class ScanOut(BaseModel):
    input: str
    sha256: str
    modality: Literal["image", "text"]
    collection: str
    matches: list[MatchOut]
    calibration: CalibrationOut | None = None


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    collections: int


class ErrorOut(BaseModel):
    error: str = Field(description="stable error code")
    message: str
