"""Every signal factor4 computes, declared once.

A *signal* is one raw number a scan measures for a pair (output, work): SSCD cosine, PDQ
distance, MiniLM cosine, copied words and so on. Each is declared here with

- its modality and direction (PDQ distance: lower is stronger; everything else: higher);
- its *kind*: ``copy`` signals measure copying of the work's own pixels or words and may
  support a ``copy`` verdict; ``resemblance`` signals (CLIP, MiniLM, reworded alignment)
  measure same subject, style or content and support at most ``similar``; ``lift`` signals
  (keypoint inliers) only raise the prior score of a match the others found; ``report``
  signals (coverage, longest run) are shown, never scored;
- whether it is *calibrated*: its value's tail probability under the collection's null
  (`detector.calibration`) is one input of the fused false-positive rate;
- its prior cut points (`config.SIGNAL_THRESHOLDS`), which map it onto the descriptive
  0..1 `Match.score` before any collection is calibrated.

Everything else refers to these declarations. An unknown signal name is an error
(`UnknownSignal`), never a silent zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from detector import config
from detector.errors import Factor4Error

Kind = Literal["copy", "resemblance", "lift", "report"]


class UnknownSignal(Factor4Error, KeyError):
    """A signal name that no declaration in `detector.signals` knows."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else "unknown signal"


@dataclass(frozen=True)
class Signal:
    """One declared signal (see the module docstring)."""

    name: str
    modality: Literal["image", "text"]
    kind: Kind
    higher_is_stronger: bool = True
    doc: str = ""
    #: What a value says, in words, with ``{}`` for the value (the "why" line of a match).
    says: str = ""

    @property
    def calibrated(self) -> bool:
        """Whether the collection's null keeps this signal's tail (copy and resemblance signals)."""
        return self.kind in ("copy", "resemblance")

    @property
    def prior(self) -> tuple[float, float, float, float] | None:
        """(floor, similar, copy, ceiling) in the signal's units, or None for unscored signals."""
        return config.SIGNAL_THRESHOLDS.get(self.name) if self.calibrated else None

    def strength(self, value: float | None) -> float | None:
        """The value oriented so that larger is stronger (a distance is negated); None stays None."""
        if value is None or value != value:  # NaN
            return None
        return float(value) if self.higher_is_stronger else -float(value)


_DECLARED = (
    Signal("sscd", "image", "copy",
           doc="SSCD cosine of the whole output with the work (its whole or an indexed region)",
           says="copy-detection (SSCD) cosine {} with the work"),
    Signal("sscd_distilled", "image", "copy",
           doc="the same with the distilled SSCD model (3.5 MB); its cosines run lower than the full model's",
           says="distilled SSCD cosine {} with the work"),
    Signal("sscd_normalised", "image", "copy",
           doc="best over the output and its regions of SSCD cosine minus that region's background cosine",
           says="SSCD cosine {} after subtracting what look-alike pictures score"),
    Signal("sscd_background", "image", "report",
           doc="the background cosine that sscd_normalised subtracted: the SSCD_NORM_RANK-th most similar "
               "work of the collection and the background corpus, for the output region that scored best"),
    Signal("pdq_distance", "image", "copy", higher_is_stronger=False,
           doc="smallest PDQ Hamming distance over the output's 8 rotations and flips (of 256 bits)",
           says="perceptual hashes (PDQ) {} of 256 bits apart"),
    Signal("clip", "image", "resemblance", doc="CLIP cosine: same subject or style, never a copy alone",
           says="CLIP cosine {}: same subject or style"),
    Signal("keypoint_inliers", "image", "lift",
           doc="ORB keypoints that agree in one similarity transform; lifts a match SSCD found"),
    Signal("minilm", "text", "resemblance", doc="MiniLM cosine of the best output window with the best passage",
           says="sentence-embedding (MiniLM) cosine {}: the same content, in other words or the same"),
    Signal("copied_words", "text", "copy",
           doc="words of one aligned stretch matched verbatim or near-verbatim, common phrases discounted",
           says="{} words copied verbatim or near-verbatim in one stretch"),
    Signal("copied_total_words", "text", "copy",
           doc="words matched verbatim or near-verbatim over all aligned stretches (reordered copies), common "
               "phrases discounted",
           says="{} words copied verbatim or near-verbatim over all stretches"),
    Signal("aligned_words", "text", "resemblance",
           doc="words of one aligned stretch matched in order, reworded pieces included",
           says="{} words align with the work in order, reworded pieces included"),
    Signal("coverage", "text", "report", doc="share of the output's words in matched stretches"),
    Signal("longest_run_words", "text", "report", doc="longest run of consecutive equal words"),
)

REGISTRY: dict[str, Signal] = {s.name: s for s in _DECLARED}

for _s in _DECLARED:  # a scored signal without prior cut points would score 0: refuse at import
    if _s.calibrated and _s.name not in config.SIGNAL_THRESHOLDS:
        raise RuntimeError(f"signal {_s.name!r} is declared without cut points in config.SIGNAL_THRESHOLDS")
    if _s.calibrated and "{}" not in _s.says:
        raise RuntimeError(f"signal {_s.name!r} is declared without saying what a value means (says=)")


def get(name: str) -> Signal:
    """The declaration of signal *name*; `UnknownSignal` if there is none."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownSignal(f"unknown signal {name!r}: declared signals are {', '.join(sorted(REGISTRY))} "
                            "(declare new ones in detector/signals.py)") from None


def calibrated(modality: str | None = None) -> tuple[Signal, ...]:
    """The signals whose null tails are kept, of *modality* (or all), in declaration order."""
    return tuple(s for s in _DECLARED if s.calibrated and (modality is None or s.modality == modality))


def copy_kind(name: str) -> bool:
    return get(name).kind == "copy"
