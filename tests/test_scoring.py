"""Signals -> prior evidence -> prior score (verdicts: tests/test_nullmodel.py)."""

from __future__ import annotations

import pytest

from detector import config, signals
from detector.scoring import NEVER_COPY, combine, evidence


@pytest.mark.parametrize("signal", sorted(config.SIGNAL_THRESHOLDS))
def test_thresholds_land_on_the_verdict_cut_points(signal: str) -> None:
    floor, similar, copy, ceiling = config.SIGNAL_THRESHOLDS[signal]
    assert evidence(signal, floor) == 0.0
    assert evidence(signal, similar) == pytest.approx(config.SIMILAR_SCORE)
    if signal not in NEVER_COPY:
        assert evidence(signal, copy) == pytest.approx(config.COPY_SCORE)
        assert evidence(signal, ceiling) == 1.0


@pytest.mark.parametrize("signal", sorted(config.SIGNAL_THRESHOLDS))
def test_evidence_is_monotonic_in_the_signal(signal: str) -> None:
    floor, _, _, ceiling = config.SIGNAL_THRESHOLDS[signal]
    values = [floor + (ceiling - floor) * i / 50 for i in range(-5, 56)]
    ev = [evidence(signal, v) for v in values]
    assert ev == sorted(ev)  # distances: floor > ceiling, so values descend and evidence rises
    assert all(0.0 <= e <= 1.0 for e in ev)


def test_pdq_distance_smaller_is_stronger() -> None:
    assert evidence("pdq_distance", 0) == 1.0
    assert evidence("pdq_distance", 10) > evidence("pdq_distance", 31) > evidence("pdq_distance", 90)
    assert evidence("pdq_distance", 200) == 0.0


def test_clip_alone_never_makes_a_copy() -> None:
    assert evidence("clip", 1.0) < config.COPY_SCORE
    assert config.SIMILAR_SCORE <= combine({"clip": 1.0}) < config.COPY_SCORE
    assert combine({"clip": 1.0, "sscd": 0.9}) >= config.COPY_SCORE
    assert signals.get("clip").kind == "resemblance" and not signals.copy_kind("clip")


def test_missing_signals_count_as_no_evidence() -> None:
    assert combine({"sscd": None, "pdq_distance": None}) == 0.0
    assert combine({}) == 0.0
    assert combine({"sscd": float("nan")}) == 0.0


def test_ignored_signal_does_not_count() -> None:
    assert combine({"pdq_distance": 0.0, "sscd": 0.1}, ignore=frozenset({"pdq_distance"})) == 0.0


def test_every_scored_signal_is_declared_with_cut_points() -> None:
    for sig in signals.calibrated():
        assert sig.prior == config.SIGNAL_THRESHOLDS[sig.name]
    assert set(config.SIGNAL_THRESHOLDS) == {s.name for s in signals.calibrated()}


def test_an_unknown_signal_is_an_error_not_a_zero() -> None:
    with pytest.raises(signals.UnknownSignal, match="unknown signal 'shingles'.*declared signals"):
        combine({"shingles": 0.9})
    with pytest.raises(signals.UnknownSignal):
        evidence("sscd_v2", 0.9)


def test_the_distilled_sscd_scores_like_sscd() -> None:
    assert combine({"sscd_distilled": 0.95}) == combine({"sscd": 0.95}) == 1.0
    assert signals.copy_kind("sscd_distilled")


def test_reported_signals_are_declared_but_not_scored() -> None:
    assert combine({"coverage": 1.0, "longest_run_words": 500}) == 0.0
    assert signals.get("coverage").prior is None and not signals.get("coverage").calibrated
