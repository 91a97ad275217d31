"""Typed results: what `Detector.add` and `Detector.scan` return, serialisable to JSON.

The JSON form of a `ScanResult` is the contract of `factor4 scan --json` and of the service's
scan endpoint (see README, "Scan output")::

    {"input": "out.png", "sha256": "...", "modality": "image", "collection": "art",
     "matches": [{"work": {"id", "source", "sha256", "title", "creator", "licence",
                           "source_url", "modality"},
                  "score": 0.93, "verdict": "copy", "signals": {"sscd": 0.91, ...}}]}

Matches are sorted best first. Keys are never removed from this form; new keys may be added.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from indexes import WorkRecord

Verdict = Literal["copy", "similar", "unrelated"]
VERDICTS: tuple[Verdict, ...] = ("copy", "similar", "unrelated")
SpanKind = Literal["verbatim", "near", "paraphrase"]


@dataclass(frozen=True)
class TextSpan:
    """A stretch of the output and the stretch of the work it comes from, as character offsets
    (end exclusive) into the output's text and the work's stored text.

    kind: "verbatim" = at least `config.VERBATIM_MIN_WORDS` consecutive words equal;
    "near" = aligned word for word with a few words replaced, inserted or dropped (at least
    `config.NEAR_DENSITY` of the output's words matched); "paraphrase" = the same content
    reworded: fewer words match in order, or (with no word alignment) the passage embeddings
    agree at or above the "similar" threshold. `words` counts the output words matched in
    order (for an embedding-only paraphrase, the words of the output window). A `discounted`
    span is a phrase that `shared_by` works of the collection hold: it is reported but not
    counted as evidence of copying this work.
    """

    output_start: int
    output_end: int
    work_start: int
    work_end: int
    kind: SpanKind
    words: int
    discounted: bool = False
    shared_by: int | None = None
    #: The two stretches' text, so the evidence reads without the files at hand.
    output_text: str = ""
    work_text: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.discounted:
            del out["shared_by"]
        return out


@dataclass(frozen=True)
class Box:
    """A rectangle of an image in its own pixels: left and top inclusive, right and bottom
    exclusive (as PIL's ``crop`` takes it)."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def area(self) -> int:
        return max(0, self.right - self.left) * max(0, self.bottom - self.top)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


#: How an image output relates to the work it copies, when the evidence can tell.
Transform = Literal["near-exact", "edited", "partial"]


@dataclass(frozen=True)
class Calibration:
    """What a match's `fpr` was estimated from: the top scores of `queries` outputs made from
    the collection's own works (each scanned with its source work, and works nearly identical
    to it, left out), when the collection was at `generation`."""

    modality: str
    generation: int
    queries: int
    works: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WorkRef:
    """A reference work as a match names it."""

    id: str
    source: str
    sha256: str
    modality: str
    title: str | None = None
    creator: str | None = None
    licence: str | None = None
    source_url: str | None = None

    @classmethod
    def from_record(cls, rec: WorkRecord) -> WorkRef:
        return cls(rec.id, rec.source, rec.sha256, rec.modality, rec.title, rec.creator, rec.licence,
                   rec.source_url)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Match:
    """How strongly one output matches one reference work.

    `score` is in 0..1, higher = stronger evidence of copying: the strongest signal's evidence
    (see `detector.scoring`). `verdict` reads the score: "copy" at or above
    `config.COPY_SCORE`, "similar" at or above `config.SIMILAR_SCORE`, else "unrelated".
    `signals` holds each channel's raw value (None where the channel did not find this work
    among its nearest neighbours); `excerpt` shows, for texts, the output's strongest copied
    stretch. `fpr` estimates how often an output that copies nothing of this collection gets a
    top match scoring this high (see `ScanResult.calibration`; None when the collection has too
    few works to tell). Text matches carry `spans`, each output stretch and where it comes from.

    Image matches carry `region`, the part of the output that matches the work (the whole
    output when all of it does), `work_region`, the part of the work it matches (None = all
    of it), and `transform`: "near-exact" (the perceptual hash agrees: re-encoded, resized,
    flipped or rotated by quarter turns), "partial" (a part of the output is a copy, or the
    output is a part of the work: composites, crops) or "edited" (anything else SSCD finds:
    recoloured, rotated, framed, overlaid). None for unrelated matches.
    """

    work: WorkRef
    score: float
    verdict: Verdict
    signals: dict[str, float | None]
    excerpt: str | None = None
    fpr: float | None = None
    spans: tuple[TextSpan, ...] = ()
    region: Box | None = None
    work_region: Box | None = None
    transform: Transform | None = None
    #: Image matches: (width, height) of the output and of the work, to draw the regions.
    output_size: tuple[int, int] | None = None
    work_size: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "work": self.work.to_dict(),
            "score": round(self.score, 4),
            "verdict": self.verdict,
            "fpr": None if self.fpr is None else round(self.fpr, 6),
            "signals": {k: (None if v is None else round(float(v), 4)) for k, v in self.signals.items()},
        }
        if self.work.modality == "text":
            out["coverage"] = round(float(self.signals.get("coverage") or 0.0), 4)
            out["longest_run_words"] = int(self.signals.get("longest_run_words") or 0)
            out["spans"] = [s.to_dict() for s in self.spans]
        else:
            out["region"] = None if self.region is None else self.region.to_dict()
            out["work_region"] = None if self.work_region is None else self.work_region.to_dict()
            out["transform"] = self.transform
            out["output_size"] = None if self.output_size is None else list(self.output_size)
            out["work_size"] = None if self.work_size is None else list(self.work_size)
        if self.excerpt is not None:
            out["excerpt"] = self.excerpt
        return out


@dataclass(frozen=True)
class ScanResult:
    """Every match of one output against a collection, best first."""

    input: str
    sha256: str
    modality: str
    collection: str
    matches: tuple[Match, ...]
    calibration: Calibration | None = None
    #: texts: how the output's bytes were decoded ("utf-8", or a detected legacy encoding such as
    #: "cp1252"); span offsets count characters of that decoded text. None for images.
    encoding: str | None = None

    @property
    def best(self) -> Match | None:
        return self.matches[0] if self.matches else None

    @property
    def verdict(self) -> Verdict:
        return self.best.verdict if self.best else "unrelated"

    def to_dict(self) -> dict[str, Any]:
        return {
            "input": self.input,
            "sha256": self.sha256,
            "modality": self.modality,
            "collection": self.collection,
            "matches": [m.to_dict() for m in self.matches],
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "encoding": self.encoding,
        }


@dataclass(frozen=True)
class AddFailure:
    """A file that could not be added, and why."""

    path: str
    error: str


@dataclass(frozen=True)
class AddReport:
    """What `Detector.add` did: works added, files already stored (by sha256), failures."""

    added: tuple[WorkRef, ...] = ()
    duplicates: tuple[WorkRef, ...] = ()
    failed: tuple[AddFailure, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": [w.to_dict() for w in self.added],
            "duplicates": [w.to_dict() for w in self.duplicates],
            "failed": [{"path": f.path, "error": f.error} for f in self.failed],
        }
