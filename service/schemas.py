"""Pydantic models at the HTTP boundary. They mirror `detector.results` JSON forms."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from indexes.records import NAME_RE


class RequestBody(BaseModel):
    """A request body: strict types (a flag is true or false, never "yes" or 1; a string is a
    string), and no fields beyond those documented."""

    model_config = ConfigDict(strict=True, extra="forbid")


class TextScanRequest(RequestBody):
    text: StrictStr = Field(min_length=1, description="the AI output to scan (at most max_text_chars characters)")
    name: StrictStr = Field("<text>", min_length=1, max_length=300, description="a name for the output in the result")


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
    background_works: int | None = Field(None, description="how many of them are background-corpus works")
    output_text: str
    work_text: str


class BoxOut(BaseModel):
    left: int
    top: int
    right: int
    bottom: int


class MatchOut(BaseModel):
    work: WorkOut
    score: float = Field(ge=0, le=1, description="0..1, higher = stronger (descriptive; verdicts come from fpr)")
    verdict: Literal["copy", "similar", "unrelated"]
    fpr: float | None = Field(None, description="fused false-positive rate: estimated share of unrelated outputs "
                                                "whose best match is this unusual (null = no calibration)")
    fpr_upper: float | None = Field(None, description="one-sided 95 % upper bound of fpr")
    null_size: int = Field(0, description="unrelated outputs fpr was estimated from")
    reason: str = Field("", description="one line: which signal carried the match and why the verdict is what it is")
    carried_by: str | None = Field(None, description="the signal whose null tail is smallest ('score' = prior score)")
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
    makeup: list[tuple[str, int]] = Field(default_factory=list, description="null outputs per kind of edit")
    negatives: int = 0
    left_out: list[str] = Field(default_factory=list, description="negatives left out: they copy a reference")
    copy_level: float | None = None
    similar_level: float | None = None
    stale: bool = Field(False, description="works were added or removed since: refresh with factor4 calibrate")


class ScanOut(BaseModel):
    input: str
    sha256: str
    modality: Literal["image", "text"]
    collection: str
    matches: list[MatchOut]
    calibration: CalibrationOut | None = None
    encoding: str | None = Field(None, description="texts: how the output's bytes were decoded (utf-8 or a "
                                 "detected legacy encoding); span offsets count its characters")


class Health(BaseModel):
    status: Literal["ok"]
    version: str


class VersionOut(BaseModel):
    factor4: str
    python: str
    packages: dict[str, str | None] = Field(description="installed versions (null = not installed)")


EncoderName = Annotated[StrictStr, Field(min_length=1, max_length=300)]


class CollectionCreate(RequestBody):
    name: StrictStr = Field(pattern=NAME_RE.pattern, max_length=64,
                            description="1-64 letters, digits, '_', '.' or '-', starting with a letter or digit")
    encoders: list[EncoderName] | None = Field(
        None, min_length=1, max_length=16,
        description="encoder names, from those this service offers (GET /encoders); default: sscd, pdq, minilm, "
                    "shingles")
    public: StrictBool = Field(False, description="any tenant may scan it (only you may change it)")


class CollectionPatch(RequestBody):
    public: StrictBool = Field(description="true: any tenant may scan it; false: only you")


class EncoderOut(BaseModel):
    name: str = Field(description="what to write in a collection's encoders")
    modality: Literal["image", "text"]
    kind: Literal["encoder", "fingerprint"]
    description: str


class CollectionOut(BaseModel):
    name: str = Field(description="as you name it in URLs: NAME for yours, OWNER/NAME for another tenant's")
    owner: str
    own: bool = Field(description="yours (you may add, remove and delete)")
    public: bool = Field(description="any tenant may scan it, at /public/{owner}/{name}/scan")
    scan_url: str
    encoders: list[str]
    works: int
    created_at: str
    generation: int


class FailureOut(BaseModel):
    path: str
    error: str


class AddReportOut(BaseModel):
    added: list[WorkOut]
    duplicates: list[WorkOut] = Field(description="files already stored (same sha256): not stored again")
    failed: list[FailureOut] = Field(description="files that could not be read: nothing stored for them")


class BatchOut(BaseModel):
    id: str
    collection: str = Field(description="as you name it: NAME, or OWNER/NAME for a public collection")
    status: Literal["queued", "running", "done", "failed"]
    outputs: int = Field(description="outputs in the batch (files and manifest lines, including skipped ones)")
    done: int = Field(description="outputs scanned or skipped so far")
    created_utc: str
    started_utc: str | None = None
    finished_utc: str | None = None
    error: str | None = Field(None, description="why the batch failed")
    summary: dict[str, Any] | None = Field(None, description="the report's summary, when done")
    digest: str | None = Field(None, description="the report's digest (factor4 verify checks it), when done")
    links: dict[str, str] = Field(description="self; and report_json, report_html, report_zip when done")


class ErrorOut(BaseModel):
    error: str = Field(description="stable error code")
    message: str
