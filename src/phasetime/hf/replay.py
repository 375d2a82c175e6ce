"""A ``generate()`` call replayed outside any timed call: its FLOPs per phase.

The replay runs under ``torch.utils.flop_counter.FlopCounterMode`` with a probe whose
:class:`~phasetime.sensors.cost.FlopSensor` reads the counter at every phase boundary
(docs/metrics.md, "Resources"). Never a timed call: the counter slows every operation.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from ..sensors.cost import FlopSensor
from .probe import Probe

if TYPE_CHECKING:
    import torch


def count_flops(model: "torch.nn.Module", inputs: dict[str, Any], generate_kwargs: dict[str, Any],
                vision: Any = None, sensors: Any = ()) -> Any:
    """A replay of ``model.generate(**inputs, **generate_kwargs)`` under a FLOP counter: its
    :class:`~phasetime.Measurement`, whose ``resources`` hold the FLOPs per phase (and what
    any extra ``sensors`` recorded). Never a timed call: the counter slows every operation."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


    def attention(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
        return sdpa_flop_count(query, key, value)

    # PyTorch counts its CUDA attention kernels but not the CPU one: count it the same way
    cpu_attention = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    counter = FlopCounterMode(display=False, custom_mapping={cpu_attention: attention} if cpu_attention else None)
    kwargs = copy.copy(generate_kwargs)
    with counter, Probe(model, vision=vision, sensors=[FlopSensor(counter), *sensors], scope="thread") as probe:
        model.generate(**inputs, **kwargs)
    return probe.measurements[-1]
