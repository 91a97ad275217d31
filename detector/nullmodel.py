"""Verdicts from error rates: a collection's null, per-signal tails, the fused rate, the verdict.

A collection's *null* is what its unrelated outputs score (`detector.calibration` makes
them). For each null output it keeps the strongest value, over all works, of every calibrated
signal (`detector.signals`) and of the prior score. From those:

1. **Per-signal tails.** A value *v* of signal *s* has tail probability
   ``p_s(v) = (#null outputs with s >= v + 1) / (n + 1)``: how often an unrelated output's best
   match is at least this strong on this signal alone. Each signal is on its own scale; tails
   are on one.
2. **Fusion (Tippett's minimum-p).** A match's statistic is ``T = min_s p_s``: its most
   unusual signal. The minimum over several signals is itself calibrated on the null (each
   null output's own ``T``), so looking at several signals does not make false alarms more
   common: ``fpr = (#null outputs with T_i <= T + 1) / (n + 1)``. A match that beats every null
   output on one signal gets the smallest rate the null can state, ``1 / (n + 1)``, whatever
   the other signals say, so the fusion ranks a copy at least as far out as its best signal.
3. **Sample size and upper bound.** With the rate come ``n`` and a one-sided
   `config.FPR_CONFIDENCE` (95 %) Clopper-Pearson upper bound: with ``k`` null outputs at least
   as unusual, the largest false-positive rate that would make seeing only ``k`` plausible.
   With ``k = 0`` it is about ``3 / n``: a null of 300 outputs can never say "below 1 %", one of
   3,000 can say "below 0.1 %".
4. **Verdicts.** ``copy`` needs the upper bound at or below the collection's copy level
   (`config.COPY_LEVEL`, 0.1 %) *and* copying-type evidence: a ``copy`` signal (SSCD, PDQ,
   copied words) that is itself this rare under the null and past its prior "similar" cut
   point. ``similar`` needs the upper bound at or below the similar level (1 %) and a signal
   that is rare and past its prior "similar" cut point: in the far tail a null has few
   independent samples (a few edits of each work), so a value just past its largest is weak
   evidence whatever its rank. Anything else is ``unrelated``. When the null is too small to reach a level at all, the match's `reason`
   says so and how to make it bigger; there is no confident ``copy`` without the numbers.
   Without a null (a collection with one work and no negatives) there is no error rate: the
   verdict is at most ``similar``, from the prior cut points, and says so.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from detector import config, scoring, signals
from detector.errors import InputError
from detector.results import Calibration, Judgement, Verdict

#: The column of the prior fused score (`scoring.combine`) in a null.
SCORE = "score"
#: Stored null format; older calibrations (one score per output) are made again.
FORMAT = 2
#: Values are stored and compared at this many decimals.
DECIMALS = 6


@dataclass(frozen=True)
class Levels:
    """The false-positive rates a collection's verdicts are stated at."""

    copy: float
    similar: float

    @classmethod
    def default(cls, copy: float | None = None, similar: float | None = None) -> Levels:
        """The configured levels (`config.COPY_LEVEL`, `config.SIMILAR_LEVEL`), or the ones given."""
        return cls(config.COPY_LEVEL if copy is None else copy, config.SIMILAR_LEVEL if similar is None else similar)

    def __post_init__(self) -> None:
        for name, value in (("copy level", self.copy), ("similar level", self.similar)):
            if not isinstance(value, int | float) or not 0 < value < 1 or value != value:
                raise InputError(f"{name} must be a rate between 0 and 1 (e.g. 0.001 for 0.1 %), got {value!r}")
        if self.copy > self.similar:
            raise InputError(f"copy level ({self.copy}) must not be above the similar level ({self.similar})")


@lru_cache(maxsize=4096)
def upper_bound(k: int, n: int, confidence: float = config.FPR_CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound on a rate seen *k* times in *n* trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    from scipy.stats import beta  # imported here: scipy.stats is slow to import and few calls need it

    return float(beta.ppf(confidence, k + 1, n - k))


@lru_cache(maxsize=64)
def needed(level: float, confidence: float = config.FPR_CONFIDENCE) -> int:
    """The smallest null that can state a rate at or below *level* (its upper bound with no
    null output as unusual): about 3 / level at 95 %."""
    n = max(1, math.ceil(math.log(1 - confidence) / math.log1p(-level)))
    while upper_bound(0, n, confidence) > level:
        n += 1
    return n


def tops(evidences: Iterable[tuple[Mapping[str, float | None], frozenset[str], float]]) -> dict[str, float]:
    """One null output's row: for each calibrated signal, and for the prior score, the strongest
    value over the works it matched; *evidences* is (signals, unreliable signals, prior score)
    per work."""
    row: dict[str, float] = {}
    for values, unreliable, score in evidences:
        for name, value in values.items():
            sig = signals.get(name)
            if not sig.calibrated or name in unreliable:
                continue
            v = sig.strength(value)
            if v is not None and v > row.get(name, -math.inf):
                row[name] = v
        row[SCORE] = max(row.get(SCORE, 0.0), float(score))
    row.setdefault(SCORE, 0.0)
    return row


class NullModel:
    """A collection's null for one modality (see the module docstring)."""

    def __init__(self, info: Calibration, levels: Levels, columns: tuple[str, ...], rows: np.ndarray,
                 background_rows: int = 0) -> None:
        for c in columns:
            if c != SCORE:
                signals.get(c)  # an unknown signal in a stored null is an error
        self.info = info
        self.levels = levels
        self.columns = columns
        self.rows = np.round(np.asarray(rows, dtype=np.float64).reshape(-1, len(columns)), DECIMALS)
        #: the last rows come from the background corpus: they may make a rate more cautious, never
        #: bolder (see `judge`)
        self.background_rows = max(0, min(int(background_rows), self.n - 1)) if self.n else 0
        main = self.rows[: self.n - self.background_rows]
        self._sorted = {c: np.sort(self.rows[:, j]) for j, c in enumerate(columns)}
        self._sorted_main = {c: np.sort(main[:, j]) for j, c in enumerate(columns)} if self.background_rows \
            else self._sorted
        n = self.n
        if n:
            # each null output's own fused statistic, from the same tails
            tails = np.stack([self._tails(c, self.rows[:, j]) for j, c in enumerate(columns)], axis=1)
            self._t = np.sort(tails.min(axis=1))
            if self.background_rows:  # the collection's own null, on its own tails
                own = np.stack([self._tails(c, main[:, j], main=True) for j, c in enumerate(columns)], axis=1)
                self._t_main = np.sort(own.min(axis=1))
            else:
                self._t_main = self._t
        else:
            self._t = self._t_main = np.zeros(0)

    @classmethod
    def from_rows(cls, info: Calibration, levels: Levels, rows: list[dict[str, float]],
                  background_rows: int = 0) -> NullModel:
        names = sorted({k for r in rows for k in r if k != SCORE}, key=_order) + [SCORE]
        data = np.array([[r.get(c, -math.inf) for c in names] for r in rows], dtype=np.float64)
        return cls(info, levels, tuple(names), data.reshape(len(rows), len(names)), background_rows)

    @property
    def n(self) -> int:
        return int(self.rows.shape[0])

    def _tails(self, column: str, values: np.ndarray, main: bool = False) -> np.ndarray:
        col = (self._sorted_main if main else self._sorted)[column]
        at_least = len(col) - np.searchsorted(col, np.round(values, DECIMALS) - 1e-9, side="left")
        return (at_least + 1) / (len(col) + 1)

    def tail(self, column: str, strength: float | None) -> float:
        """p_s: the share of null outputs at least as strong on *column* (1 for no value or an
        unknown column); with background rows, the larger of the share among all null outputs
        and among the collection's own (and the user's negatives)."""
        if strength is None or column not in self._sorted:
            return 1.0
        value = np.array([strength])
        pooled = float(self._tails(column, value)[0])
        return max(pooled, float(self._tails(column, value, main=True)[0])) if self.background_rows else pooled

    def judge(self, values: Mapping[str, float | None], unreliable: frozenset[str], score: float) -> Judgement:
        """The fused false-positive rate of a match and the verdict it supports."""
        tails: dict[str, float] = {}
        strengths: dict[str, float] = {}
        for name, value in values.items():
            sig = signals.get(name)
            if sig.calibrated and name not in unreliable and (v := sig.strength(value)) is not None:
                strengths[name] = v
                tails[name] = self.tail(name, v)
        tails[SCORE] = self.tail(SCORE, score)
        # the rate among all null outputs, or among the collection's own (and the negatives) when
        # that is higher: background outputs may be easier than the collection's own domain, and
        # must not make a stated rate bolder
        t_pooled = min([self._pooled_tail(c, v) for c, v in strengths.items()] + [self._pooled_tail(SCORE, score)])
        n, k = self.n, self._beyond(t_pooled)
        if self.background_rows:
            n_main = self.n - self.background_rows
            t_main = min([self._main_tail(c, v) for c, v in strengths.items()] + [self._main_tail(SCORE, score)])
            k_main = int(np.searchsorted(self._t_main, t_main + 1e-12, side="right"))
            if upper_bound(k_main, n_main) > upper_bound(k, n):
                n, k = n_main, k_main
        fpr = (k + 1) / (n + 1)
        upper = upper_bound(k, n)
        # a verdict needs a signal that is both rare under the null and strong on its own scale
        # (past its prior "similar" cut point): in the far tail the null has few independent
        # samples, and a value just past its largest is weak evidence whatever its rank
        strong = [c for c in tails if tails[c] <= self.levels.similar and _strong(c, values, score)]
        carrier = min(strong or tails, key=lambda c: (tails[c], not _copy_column(c, values, score), _order(c)))
        copy_ev = [c for c in strong if _copy_column(c, values, score) and tails[c] <= self.levels.copy]
        shown = _describe(carrier, values, score)
        verdict: Verdict
        if not _past_floor(carrier, values, score):
            verdict, reason = "unrelated", f"{shown}: no signal past its floor"
        elif not strong and upper <= self.levels.similar:
            verdict = "unrelated"
            reason = (f"{shown}: unusual (fpr <= {_pct(upper)}) but weak: no signal past its prior similar "
                      "cut point")
        elif upper <= self.levels.copy and copy_ev:
            verdict = "copy"
            reason = (f"{_describe(copy_ev[0], values, score)}: beyond {n - k} of {n} unrelated outputs; "
                      f"fpr <= {_pct(upper)} (95 %), copy level {_pct(self.levels.copy)}")
        elif upper <= self.levels.similar:
            verdict = "similar"
            if copy_ev or any(_copy_column(c, values, score) for c in tails if tails[c] <= self.levels.similar):
                if n < needed(self.levels.copy):
                    reason = (f"{shown}: copy-type evidence, but a null of {n} outputs cannot state fpr <= "
                              f"{_pct(self.levels.copy)} (needs {needed(self.levels.copy)}: "
                              f"factor4 calibrate COLL --queries {needed(self.levels.copy)})")
                else:
                    reason = (f"{shown}: copy-type evidence at fpr <= {_pct(upper)} (95 %), above the copy "
                              f"level {_pct(self.levels.copy)}")
            else:
                reason = (f"{shown}: resemblance only (no verbatim text or copied pixels); fpr <= {_pct(upper)}"
                          + _resemblance_note(values, score))
        else:
            verdict = "unrelated"
            if n < needed(self.levels.similar) and k == 0:
                reason = (f"{shown}: beyond every unrelated output, but a null of {n} outputs cannot state fpr <= "
                          f"{_pct(self.levels.similar)} (needs {needed(self.levels.similar)})")
            else:
                reason = f"{shown}: {k} of {n} unrelated outputs score as unusual (fpr {_pct(fpr)})"
        return Judgement(verdict, reason, fpr, upper, n, carrier, tails[carrier])

    def _beyond(self, t: float) -> int:
        """k: the null outputs whose own fused statistic is at most *t* (at least as unusual)."""
        return int(np.searchsorted(self._t, t + 1e-12, side="right"))

    def _pooled_tail(self, column: str, strength: float) -> float:
        if column not in self._sorted:
            return 1.0
        return float(self._tails(column, np.array([strength]))[0])

    def _main_tail(self, column: str, strength: float) -> float:
        if column not in self._sorted_main:
            return 1.0
        return float(self._tails(column, np.array([strength]), main=True)[0])

    def fpr_of_row(self, row: np.ndarray) -> float:
        """The fused rate of a row of strengths in this null's columns (-inf = no value)."""
        tails = [self.tail(c, float(v)) for c, v in zip(self.columns, row, strict=True) if math.isfinite(v)]
        return (self._beyond(min(tails, default=1.0)) + 1) / (self.n + 1)

    def reliability(self, stated: tuple[float, ...] = config.RELIABILITY_LEVELS, seed: int = 0
                    ) -> list[tuple[float, float, int]]:
        """Stated against measured, by two-fold cross-fitting: the null is split in halves; each
        half's outputs get the rate the other half states for them; for each level, the share of
        held-out outputs stated at or below it. An honest null measures about the level (at most
        it). Returns (stated level, measured share, held-out outputs)."""
        n = self.n
        if n < 4:
            return []
        order = np.random.default_rng(seed).permutation(n)
        halves = (order[: n // 2], order[n // 2 :])
        rates: list[float] = []
        for a, b in (halves, halves[::-1]):
            model = NullModel(self.info, self.levels, self.columns, self.rows[a])
            rates.extend(model.fpr_of_row(self.rows[i]) for i in b)
        arr = np.asarray(rates)
        return [(level, float(np.mean(arr <= level + 1e-12)), len(arr)) for level in stated]

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "info": self.info.to_dict(),
            "levels": {"copy": self.levels.copy, "similar": self.levels.similar},
            "columns": list(self.columns),
            "background_rows": self.background_rows,
            "rows": [[None if not math.isfinite(v) else v for v in row] for row in self.rows.tolist()],
        }

    @classmethod
    def from_dict(cls, body: Mapping) -> NullModel | None:
        """The stored null, or None when it is in an older format (it is then made again)."""
        if body.get("format") != FORMAT:
            return None
        info = body["info"]
        cal = Calibration(**{**info, "makeup": tuple(tuple(x) for x in info.get("makeup", ())),
                             "left_out": tuple(info.get("left_out", ()))})
        columns = tuple(body["columns"])
        rows = np.array([[-math.inf if v is None else float(v) for v in row] for row in body["rows"]],
                        dtype=np.float64).reshape(len(body["rows"]), len(columns))
        return cls(cal, Levels(**body["levels"]), columns, rows, int(body.get("background_rows", 0)))


def without_null(values: Mapping[str, float | None], unreliable: frozenset[str], score: float,
                 why: str) -> Judgement:
    """A match in a collection with no null: no error rate; at most ``similar`` (prior cut points)."""
    tails_known = [n for n, v in values.items() if signals.get(n).calibrated and v is not None and n not in unreliable]
    carrier = max(tails_known, key=lambda n: scoring.evidence(n, values[n]), default=SCORE)
    verdict: Verdict = "similar" if score >= config.SIMILAR_SCORE else "unrelated"
    reason = f"{_describe(carrier, values, score)}: no error rate ({why}); without one the verdict is at most similar"
    return Judgement(verdict, reason, None, None, 0, carrier, None)


_ORDER = {name: k for k, name in enumerate(signals.REGISTRY)}


def _order(column: str) -> int:
    """Declaration order of a column (the prior score last): ties between tails go to the first."""
    return _ORDER.get(column, len(_ORDER))


def _copy_column(column: str, values: Mapping[str, float | None], score: float) -> bool:
    """Whether *column*'s value is copying-type evidence past its prior "similar" cut point."""
    if column == SCORE:
        return score >= config.COPY_SCORE  # a copy signal, or keypoints, crossed a copy cut point
    return signals.copy_kind(column) and scoring.evidence(column, values.get(column)) >= config.SIMILAR_SCORE


def _strong(column: str, values: Mapping[str, float | None], score: float) -> bool:
    """Whether *column*'s value is past its prior "similar" cut point."""
    if column == SCORE:
        return score >= config.SIMILAR_SCORE
    return scoring.evidence(column, values.get(column)) >= config.SIMILAR_SCORE


def _past_floor(column: str, values: Mapping[str, float | None], score: float) -> bool:
    if column == SCORE:
        return score > 0
    return scoring.evidence(column, values.get(column)) > 0


def _describe(column: str, values: Mapping[str, float | None], score: float) -> str:
    """The carrying signal in words, its name and value: "232 words copied verbatim or
    near-verbatim in one stretch (copied_words 232)"."""
    if column == SCORE:
        return f"combined score {score:.3f}"
    v = values.get(column)
    if v is None:
        return column
    shown = f"{int(v)}" if float(v).is_integer() and abs(v) >= 1 else f"{float(v):.3f}"
    says = signals.get(column).says
    return f"{says.format(shown)} ({column} {shown})" if says else f"{column} {shown}"


def _resemblance_note(values: Mapping[str, float | None], score: float) -> str:
    """Why a resemblance-only match is not a copy, in numbers: its longest verbatim run, and the
    cap on its score."""
    parts = []
    run = values.get("longest_run_words")
    if run is not None:
        parts.append(f"longest verbatim run {int(run)} words (a copy needs {config.VERBATIM_MIN_WORDS}+)")
    if score >= scoring.RESEMBLANCE_CAP - 1e-9:
        parts.append(f"score held at {scoring.RESEMBLANCE_CAP:.2f}: resemblance alone never reaches copy")
    return "; " + "; ".join(parts) if parts else ""


def _pct(rate: float) -> str:
    pct = 100 * rate
    return f"{pct:.2g} %" if pct < 1 else f"{pct:.1f} %"
