"""Compiled forwards: the marks stay out of the compiled graph, and a measured call during
which torch.compile compiled is flagged (``compiles``) and failed by ``check``, never reported
as a latency on its own."""

from __future__ import annotations

import pyarrow as pa
import pytest
import torch
import transformers
from packaging.version import Version

import phasetime
from conftest import VirtualClock, inject_delays, tiny_inputs
from phasetime.analysis.checks import run_checks
from phasetime.experiments import models

# transformers <= 5.17 runs the vision encoder inside the (compiled) prefill forward.
VISION_IN_FORWARD = Version(transformers.__version__) < Version("5.18")


def test_a_compiled_warm_up_without_the_probe_is_flagged_when_the_probe_recompiles() -> None:
    model, _ = models.load("tiny-llava", device="cpu", dtype="float32")  # its own: the session's stays eager
    model.forward = torch.compile(model.forward, backend="eager")
    inputs = tiny_inputs("tiny-llava")
    model.generate(**inputs, max_new_tokens=3, min_new_tokens=3)  # compiled and warmed up, no probe
    measured = []
    for _ in range(2):
        clock = VirtualClock()
        # the language model's delay on the top module: hooks inside a compiled forward that
        # were not there when it compiled never fire (dynamo does not guard on them)
        with inject_delays(model, 4.0, 6.0, 1.0, clock=clock, language_model=model):
            measured.append(phasetime.measure(model, inputs, clock=clock, max_new_tokens=3, min_new_tokens=3))
    first, second = measured
    # the timed encoder inside the compiled forward makes dynamo compile again, once
    assert (first.compiles > 0) == VISION_IN_FORWARD
    assert second.compiles == 0
    for m in measured:  # the marks still see vision and prefill exactly (virtual clock)
        assert m.vision_ms == 4.0 and m.prefill_ms == 6.0 and m.itl_ms == (1.0, 1.0)


def test_a_call_that_compiled_fails_the_check() -> None:
    t = pa.table({"method": ["direct"] * 3, "output_tokens": [4] * 3, "decode_ms": [3.0] * 3, "tpot_ms": [1.0] * 3,
                  "other_ms": [0.1] * 3, "total_ms": [9.0, 9.0, 900.0], "compiles": [0, 0, 2]})
    result = next(r for r in run_checks(t) if r.check == "no_compilation")
    assert result.verdict == "fail" and result.value == 1 and "torch.compile compiled" in result.detail
    clean = next(r for r in run_checks(t.slice(0, 2)) if r.check == "no_compilation")
    assert clean.verdict == "pass"


def test_hooks_added_after_compiling_a_forward_fire_after_a_flagged_recompile() -> None:
    """The language model's forward compiled and run without the probe; then the probe names the
    vision tower inside it (on transformers <= 5.17; newer ones encode before the forward, outside
    the compiled frame). torch guards the compiled frame on the module's hooks: the first
    measured call recompiles (``compiles`` > 0: not a latency, the check fails it) and from then
    on the tower's hooks fire in every call: vision is never silently billed to prefill."""
    from conftest import load_tiny, tiny_inputs

    model, _ = load_tiny("tiny-llava")
    inner = model.model
    original = inner.forward
    inner.forward = torch.compile(original, backend="eager")
    try:
        inputs = tiny_inputs("tiny-llava")
        model.generate(**inputs, max_new_tokens=2, min_new_tokens=2)  # compiled without the probe
        first = phasetime.measure(model, inputs, vision=["model.vision_tower"], max_new_tokens=3, min_new_tokens=3)
        second = phasetime.measure(model, inputs, vision=["model.vision_tower"], max_new_tokens=3, min_new_tokens=3)
    finally:
        inner.forward = original
    inside = Version(transformers.__version__) < Version("5.18")  # vision inside the compiled forward
    assert first.vision_calls == 1 and (first.compiles > 0 or not inside)
    assert second.vision_calls == 1 and second.compiles == 0 and second.vision_ms > 0
