"""The legacy subtraction baseline reproduces the old method, flaws included."""

from __future__ import annotations

import pytest

import phasetime
from conftest import SLACK_MS, fastest_call, inject_delays, load_tiny, tiny_inputs

V, P, D = 10.0, 15.0, 5.0


def test_subtract_reproduces_the_legacy_formulas() -> None:
    model, _ = load_tiny("tiny-llava")
    n = 4
    with inject_delays(model, V, P, D):
        m = fastest_call(lambda: phasetime.measure(
            model, tiny_inputs("tiny-llava"), method="subtract", max_new_tokens=n, min_new_tokens=n))
    assert m.method == "subtract" and m.ttft_ms is None and m.ready_ms == ()
    assert V <= m.vision_ms <= V + SLACK_MS
    # The separate prefill call encodes the image again: vision counted a second time.
    assert V + P <= m.prefill_ms <= V + P + SLACK_MS
    assert m.decode_ms == pytest.approx(max(0.0, m.total_ms - m.vision_ms - m.prefill_ms))
    assert m.tpot_ms == pytest.approx(m.decode_ms / n)  # the biased denominator
    # Vision was paid twice but happened once: decode comes out short by about V.
    assert m.decode_ms < (n - 1) * D + SLACK_MS - V + SLACK_MS


def test_subtraction_clamps_to_zero_where_direct_timing_does_not() -> None:
    model, _ = load_tiny("tiny-llava")
    inputs = tiny_inputs("tiny-llava")
    kwargs = dict(max_new_tokens=2, min_new_tokens=2)
    with inject_delays(model, 30.0, 5.0, 2.0):
        model.generate(**inputs, **kwargs)  # warm-up
        # Vision (30 ms) is subtracted twice but happens once: decode comes out about -28 ms,
        # clamped to 0. Three tries, so that one slow call on a busy machine cannot decide.
        legacy = [phasetime.measure(model, inputs, method="subtract", **kwargs) for _ in range(3)]
        direct = [phasetime.measure(model, inputs, **kwargs) for _ in range(3)]
    clamped = [m for m in legacy if m.decode_ms == 0.0 and m.other_ms < 0]  # the clamp hid a negative decode
    assert len(clamped) >= 2 and all(m.tpot_ms == 0.0 for m in clamped)
    assert all(m.decode_ms >= 2.0 and m.tpot_ms >= 2.0 for m in direct)


def test_subtract_on_a_text_model_has_no_vision() -> None:
    model, _ = load_tiny("tiny-llama")
    m = phasetime.measure(model, tiny_inputs("tiny-llama"), method="subtract", max_new_tokens=3, min_new_tokens=3)
    assert m.vision_ms == 0.0 and m.output_tokens == 3
