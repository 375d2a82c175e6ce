"""``phasetime.measure``: time one ``generate()`` call."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from ..core.clock import Clock
from ..core.errors import UsageError
from .generation import check_generative
from .legacy import measure_subtract
from .probe import Probe
from ..core.record import Measurement

METHODS = ("direct", "subtract")


def measure(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    method: str = "direct",
    *,
    vision: Sequence[str] | None = None,
    audio: Sequence[str] | None = None,
    nvtx: bool = False,
    clock: Clock | None = None,
    sensors: Sequence[Any] = (),
    keep_output: bool = False,
    profile: bool = False,
    **generate_kwargs: Any,
) -> Measurement:
    """Run ``model.generate(**inputs, **generate_kwargs)`` once and time every phase.

    ``inputs`` is the dict a processor or tokenizer returns. ``method="direct"`` (the
    default) times the phases inside the one call with a :class:`Probe`;
    ``method="subtract"`` reproduces the legacy subtraction method as a baseline (three
    separate calls; see ``docs/metrics.md``). ``vision`` and ``audio`` override the media
    encoders found by following the data (see :class:`Probe`; the first call with a kind of
    media runs one short untimed discovery call first); ``nvtx`` names the phases in NVTX ranges;
    ``clock`` replaces the default clock (CUDA events on CUDA, else ``perf_counter_ns``);
    ``sensors`` sample resources at the phase boundaries; ``keep_output`` keeps generate()'s
    whole return in ``output_ids`` (by default: the sequences, on the host); ``profile`` runs the
    call under torch.profiler and puts its operators in its phases (the measurement's ``profile``;
    a profiled call is slower, so its times describe that call only). Several threads may measure one
    model at once: each call is recorded only by its own thread's probe. Raises
    :class:`~phasetime.UnsupportedGeneration` for a call that cannot be timed correctly.
    """
    check_generative(model)
    if not isinstance(inputs, Mapping):
        raise UsageError(f"inputs must be the dict a processor or tokenizer returns, got {type(inputs).__name__}")
    if method == "direct":
        with Probe(model, vision=vision, audio=audio, nvtx=nvtx, clock=clock, sensors=sensors, scope="thread",
                   keep_output=keep_output, profile=profile) as probe:
            model.generate(**inputs, **generate_kwargs)
        return probe.measurements[-1]
    if method == "subtract":
        if vision is not None or audio is not None or nvtx or sensors or profile:
            raise UsageError("vision=, audio=, nvtx=, sensors= and profile= apply to the direct method only")
        return measure_subtract(model, inputs, clock=clock, **generate_kwargs)
    raise UsageError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
