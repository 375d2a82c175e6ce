"""Resources of a cell's calls: the sensors its measured calls carry, and their cost per phase.

Built once per cell by the worker from the experiment's ``resources``: a
:class:`~phasetime.sensors.memory.MemorySensor` (``memory``) and an
:class:`~phasetime.sensors.energy.EnergySensor` (``energy``) ride along every measured call;
``cost`` replays each distinct input shape once, outside the timed calls, to count its FLOPs
per phase (:func:`~phasetime.sensors.cost.count_flops`), adds the bytes each phase must move and
the device's roof (:mod:`phasetime.sensors.roof`). The legacy method gets none of them.
"""

from __future__ import annotations

from typing import Any

import torch

from ...sensors.cost import bytes_moved, language_read_bytes
from ...core.record import Measurement
from ...sensors.memory import MemorySensor
from ...hf.parts import weight_bytes
from ...hf.replay import count_flops
from ..plan.parts import ResourcesSpec


class CellResources:
    """See the module docstring."""

    def __init__(self, spec: ResourcesSpec, model: torch.nn.Module) -> None:
        self.spec = spec
        parameter = next(model.parameters())
        self.device = parameter.device
        self.sensors: list[Any] = []
        if spec.memory:  # the weights by part once the call's media modules are known
            self.sensors.append(MemorySensor(model, lambda: weight_bytes(model)))
        if spec.energy:
            from ...sensors.energy import EnergySensor

            from ...core.clock import model_devices

            gpus = [d for d in model_devices(model) if d.type == "cuda"]
            self.sensors.append(EnergySensor(gpus or self.device))
        self.roof: Any = None
        if spec.cost:
            from ...sensors.roof import roof

            self.roof = roof(self.device, str(parameter.dtype).removeprefix("torch."))
        self._costs: dict[Any, dict[str, Any]] = {}

    def sensors_for(self, method: str) -> list[Any]:
        return self.sensors if method == "direct" else []

    def add_cost(self, m: Measurement, model: torch.nn.Module, inputs: dict[str, Any], kwargs: dict[str, Any],
                 vision: Any) -> Measurement:
        """``m`` with its phases' FLOPs, bytes and the roof (from a replay of this input's shape)."""
        if not self.spec.cost or m.method != "direct":
            return m
        shapes = tuple(sorted((k, tuple(v.shape)) for k, v in inputs.items() if isinstance(v, torch.Tensor)))
        key = (shapes, tuple(sorted((k, repr(v)) for k, v in kwargs.items())))
        if key not in self._costs:
            self._costs[key] = self._replay(model, inputs, kwargs, vision)
        cost = dict(self._costs[key])
        replayed, measured = cost.pop("_decode_steps"), m.decode_steps
        if replayed and replayed != measured:  # sampling ended elsewhere: scale decode to this call's steps
            cost["decode_flops"] = int(cost["decode_flops"] * measured / replayed)
            cost["decode_bytes"] = int(cost["decode_bytes"] * measured / replayed)
        import dataclasses

        return dataclasses.replace(m, resources={**m.resources, **cost})

    def _replay(self, model: torch.nn.Module, inputs: dict[str, Any], kwargs: dict[str, Any], vision: Any) -> dict[str, Any]:
        memory = MemorySensor(model, {})  # for the KV cache's size in the replay
        replay = count_flops(model, inputs, kwargs, vision, sensors=[memory])
        found = replay.resources
        weights = weight_bytes(model)  # the media modules are known after the replay's call
        moved = bytes_moved(language_read_bytes(model, weights), weights, found.get("kv_prefill_bytes"),
                            found.get("kv_end_bytes"), replay.decode_steps, replay.vision_calls > 0)
        flops = {k: int(v) for k, v in found.items() if k.endswith("_flops")}
        return {**flops, **moved, "roof_flops_per_s": self.roof.flops_per_s, "roof_bytes_per_s": self.roof.bytes_per_s,
                "_decode_steps": replay.decode_steps}
