"""Measurement / SequenceTiming validation."""

from __future__ import annotations

import pytest

from phasetime import Measurement, SequenceTiming


def make(**overrides: object) -> Measurement:
    fields = dict(
        method="direct", timer="perf-counter", total_ms=10.0, vision_ms=1.0, prefill_ms=2.0, ttft_ms=4.0,
        decode_ms=6.0, other_ms=1.0, decode_steps=2, prompt_tokens=5,
        sequences=(SequenceTiming(0, 3, 6.0, 3.0, (3.0, 3.0)),),
    )
    fields.update(overrides)
    return Measurement(**fields)  # type: ignore[arg-type]


def test_single_sequence_accessors() -> None:
    m = make()
    assert (m.output_tokens, m.tpot_ms, m.itl_ms, m.batch_size) == (3, 3.0, (3.0, 3.0), 1)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(method="guess"), "method"),
        (dict(timer="sundial"), "timer"),
        (dict(prefill_ms=-1.0), "prefill_ms"),
        (dict(other_ms=-0.5), "other_ms"),
        (dict(total_ms=float("nan")), "total_ms"),
        (dict(sequences=()), "at least one sequence"),
        (dict(sequences=(SequenceTiming(0, 1, 0.0, 0.0),)), "tpot_ms must be None"),
        (dict(sequences=(SequenceTiming(0, 3, 6.0, 3.0, (6.0,)),)), "ITL gaps"),
    ],
)
def test_invalid_records_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**overrides)


def test_legacy_records_may_carry_the_legacy_flaws() -> None:
    # subtract: tpot = decode / N even for N = 1, and a clamped decode leaves other < 0.
    m = make(method="subtract", ttft_ms=None, other_ms=-3.0, sequences=(SequenceTiming(0, 1, 0.0, 0.0),))
    assert m.tpot_ms == 0.0 and m.ttft_ms is None
