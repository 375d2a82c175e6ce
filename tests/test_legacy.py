"""The legacy subtraction baseline reproduces the old method, flaws included (on the virtual clock: exactly)."""

from __future__ import annotations

import phasetime
from conftest import VirtualClock, inject_delays, load_tiny, tiny_inputs

V, P, D = 10.0, 15.0, 5.0


def subtract(name: str, vision: float, prefill: float, decode: float, n: int) -> phasetime.Measurement:
    model, _ = load_tiny(name)
    clock = VirtualClock()
    with inject_delays(model, vision, prefill, decode, clock=clock):
        return phasetime.measure(model, tiny_inputs(name), method="subtract", clock=clock, max_new_tokens=n,
                                 min_new_tokens=n)


def test_subtract_reproduces_the_legacy_formulas() -> None:
    n = 4
    m = subtract("tiny-llava", V, P, D, n)
    assert m.method == "subtract" and m.ttft_ms is None and m.ready_ms == ()
    assert m.vision_ms == V
    # The separate prefill call encodes the image again: vision counted a second time.
    assert m.prefill_ms == V + P
    assert m.total_ms == V + P + (n - 1) * D
    # Vision was paid twice but happened once: decode comes out short by exactly V.
    assert m.decode_ms == (n - 1) * D - V
    assert m.tpot_ms == m.decode_ms / n  # the biased denominator


def test_subtraction_clamps_to_zero_where_direct_timing_does_not() -> None:
    # Vision (30 ms) is subtracted twice but happens once: decode would be 2 - 30 < 0.
    legacy = subtract("tiny-llava", 30.0, 5.0, 2.0, 2)
    assert legacy.decode_ms == 0.0 and legacy.tpot_ms == 0.0
    assert legacy.other_ms == 2.0 - 30.0  # what the clamp hid
    model, _ = load_tiny("tiny-llava")
    clock = VirtualClock()
    with inject_delays(model, 30.0, 5.0, 2.0, clock=clock):
        direct = phasetime.measure(model, tiny_inputs("tiny-llava"), clock=clock, max_new_tokens=2, min_new_tokens=2)
    assert direct.decode_ms == 2.0 and direct.tpot_ms == 2.0


def test_subtract_on_a_text_model_has_no_vision() -> None:
    m = subtract("tiny-llama", 0.0, P, D, 3)
    assert m.vision_ms == 0.0 and m.output_tokens == 3 and m.prefill_ms == P and m.decode_ms == 2 * D
