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

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from indexes import WorkRecord

Verdict = Literal["copy", "similar", "unrelated"]
#: How an evidence report counts outputs per work (said in report.json and report.html).
COUNTING = ("an output counts as copying a work when that match's own verdict is copy (its own copied words or "
            "pixels, at its own false-positive rate), and as similar when it is similar; a second picture that "
            "only looks like a work the output copies (the output resembles it no more than the two works "
            "resemble each other) is similar, not a second copy; common text the background corpus or several "
            "works hold is not counted")
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
    span is a phrase that `shared_by` works hold, `background_works` of them in the background
    corpus (`detector.background`): it is reported but not counted as evidence of copying this
    work.
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
    background_works: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if not self.discounted:
            del out["shared_by"]
            del out["background_works"]
        return out

    @property
    def discount_reason(self) -> str | None:
        """Why the span was not counted, in words; None for a counted span."""
        if not self.discounted:
            return None
        bg = self.background_works or 0
        if bg:
            here = (self.shared_by or 0) - bg
            return (f"common text: held by {self.shared_by} works ({bg} in the background corpus"
                    f"{f', {here} in this collection' if here > 1 else ''}), not counted")
        return f"common text: held by {self.shared_by} works of this collection, not counted"


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
    """What a match's `fpr` was estimated from (`detector.nullmodel`): `queries` unrelated
    outputs, made from the collection's own works (each scanned with its source work, and works
    nearly identical to it, left out) and edited as outputs are, plus `negatives` the user gave,
    when the collection was at `generation`. `makeup` counts the outputs per kind of edit;
    `left_out` names negatives that turned out to copy a reference (reported, not used).
    `copy_level` and `similar_level` are the rates the verdicts are stated at. `stale` is set
    on a scan when works were added or removed since (refresh: ``factor4 calibrate COLL``)."""

    modality: str
    generation: int
    queries: int
    works: int
    method: str
    makeup: tuple[tuple[str, int], ...] = ()
    negatives: int = 0
    left_out: tuple[str, ...] = ()
    copy_level: float | None = None
    similar_level: float | None = None
    stale: bool = False
    #: The background corpus the null was made with (`detector.background`), if any.
    background: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["makeup"] = [list(x) for x in self.makeup]
        out["left_out"] = list(self.left_out)
        return out


@dataclass(frozen=True)
class Judgement:
    """What a collection's null says of one match (`detector.nullmodel.NullModel.judge`)."""

    verdict: Verdict
    #: One line: which signal carried the match and why the verdict is what it is.
    reason: str
    #: Fused false-positive rate, (k + 1) / (n + 1); None without a null.
    fpr: float | None
    #: Its one-sided 95 % upper bound.
    fpr_upper: float | None
    #: n, the number of unrelated outputs it was estimated from (0 = no null).
    null_size: int
    #: The signal whose tail is smallest ("score" = the prior fused score).
    carried_by: str
    #: That signal's own tail probability under the null.
    signal_fpr: float | None


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

    `score` is in 0..1, higher = stronger: the strongest signal's evidence on its prior map
    (see `detector.scoring`), descriptive only. `fpr` is the fused false-positive rate from
    the collection's null (`detector.nullmodel`): how often an output that copies nothing of
    this collection gets a top match this unusual, with `fpr_upper` its one-sided 95 % upper
    bound and `null_size` the number of unrelated outputs behind it (None / 0 when the
    collection has no null). `verdict` comes from the rate: "copy" needs copying-type evidence
    and `fpr_upper` at or below the collection's copy level, "similar" at or below its similar
    level; `reason` says in one line which signal (`carried_by`) carried it and why.
    `signals` holds each channel's raw value (None where the channel did not find this work
    among its nearest neighbours); `excerpt` shows, for texts, the output's strongest copied
    stretch. Text matches carry `spans`, each output stretch and where it comes from.

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
    fpr_upper: float | None = None
    null_size: int = 0
    reason: str = ""
    carried_by: str | None = None

    def judged(self, j: Judgement) -> Match:
        """This match with the null's judgement applied."""
        return replace(self, verdict=j.verdict, fpr=j.fpr, fpr_upper=j.fpr_upper, null_size=j.null_size,
                       reason=j.reason, carried_by=j.carried_by,
                       transform=None if j.verdict == "unrelated" else self.transform)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "work": self.work.to_dict(),
            "score": round(self.score, 4),
            "verdict": self.verdict,
            "fpr": None if self.fpr is None else round(self.fpr, 6),
            "fpr_upper": None if self.fpr_upper is None else round(self.fpr_upper, 6),
            "null_size": self.null_size,
            "reason": self.reason,
            "carried_by": self.carried_by,
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
