"""``phasetime.measure``: time one ``generate()`` call."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ._legacy import measure_subtract
from ._probe import Probe
from ._record import Measurement


def measure(
    model: torch.nn.Module,
    inputs: dict[str, Any],
    method: str = "direct",
    *,
    vision: Sequence[str] | None = None,
    nvtx: bool = False,
    **generate_kwargs: Any,
) -> Measurement:
    """Run ``model.generate(**inputs, **generate_kwargs)`` once and time every phase.

    ``inputs`` is the dict a processor or tokenizer returns. ``method="direct"`` (the
    default) times the phases inside the one call with a :class:`Probe`;
    ``method="subtract"`` reproduces the legacy subtraction method as a baseline (three
    separate calls; see ``docs/metrics.md``). ``vision`` overrides the automatic
    vision-encoder lookup with module paths; ``nvtx`` names the phases in NVTX ranges
    (see :class:`Probe`). Raises
    :class:`~phasetime.UnsupportedGeneration` for modes that cannot be timed correctly.
    """
    if method == "direct":
        with Probe(model, vision=vision, nvtx=nvtx) as probe:
            model.generate(**inputs, **generate_kwargs)
        return probe.measurements[-1]
    if method == "subtract":
        if vision is not None or nvtx:
            raise ValueError("vision= and nvtx= apply to the direct method only")
        return measure_subtract(model, inputs, **generate_kwargs)
    raise ValueError(f"method must be 'direct' or 'subtract', got {method!r}")
