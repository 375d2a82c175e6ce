"""The memory sensor: bytes per phase, the KV cache and the weights by part.

Sensors (:mod:`.base`; see docs/metrics.md, "Resources"):

* :class:`MemorySensor` (``--memory``): on CUDA the peak allocated and reserved bytes within
  vision, prefill and decode (allocator statistics are host-side: no synchronisation); on CPU
  the process's resident memory at the boundaries (coarse); the KV cache's bytes after prefill
  and at the end; the model's weights by part.
* :class:`~phasetime.sensors.cost.FlopSensor` (``--cost``, in a replay of the call, never in the
  timed one): FLOPs per phase.
* :class:`~phasetime.sensors.energy.EnergySensor` (``--energy``, CUDA): the GPU's energy counter.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ..core.boundaries import Boundary
from .base import PHASES, SensorColumn

if TYPE_CHECKING:
    import torch

# This module imports torch only inside functions: the results floor reads the sensors'
# column declarations without it.


def cache_bytes(output: Any) -> int | None:
    """Bytes held by the key/value cache a forward returned (None when it returned none)."""
    import torch

    # a ModelOutput is a dict of the fields set: "cache" since transformers 5.24,
    # "past_key_values" before (reading the old name as an attribute there warns)
    getter = getattr(output, "get", None)
    cache = (getter("cache") or getter("past_key_values")) if callable(getter) else None
    if cache is None:
        return None
    total = 0
    for layer in getattr(cache, "layers", []) or []:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    if not getattr(cache, "layers", None):  # older caches: lists of tensors
        for tensors in (getattr(cache, "key_cache", []), getattr(cache, "value_cache", [])):
            total += sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    return total


class _Rss:
    """The process's resident memory: ``/proc/self/statm`` read through a descriptor kept open
    (a few microseconds), else psutil (other systems)."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        try:
            self.fd: int | None = os.open("/proc/self/statm", os.O_RDONLY)
        except OSError:
            import psutil

            self.fd, self.process = None, psutil.Process()

    def __call__(self) -> int:
        if self.fd is not None:
            return int(os.pread(self.fd, 128, 0).split()[1]) * self.page
        return int(self.process.memory_info().rss)

    def __del__(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)  # type: ignore[arg-type]


class MemorySensor:
    """Peak memory per phase, the KV cache's size, and the weights by part; see the module docstring."""

    name = "memory"
    columns = (
        *(SensorColumn(f"mem_{p}_peak_bytes", "bytes", f"CUDA: peak bytes allocated during {p}; CPU: peak resident "
                                                       f"memory of the process at {p}'s boundaries", "int")
          for p in PHASES),
        *(SensorColumn(f"mem_{p}_reserved_bytes", "bytes", f"CUDA: peak bytes the allocator reserved during {p}", "int")
          for p in PHASES),
        SensorColumn("kv_prefill_bytes", "bytes", "bytes held by the KV cache after the prefill", "int"),
        SensorColumn("kv_end_bytes", "bytes", "bytes held by the KV cache at the end of the call", "int"),
        SensorColumn("weights_vision_bytes", "bytes", "parameter bytes of the vision tower", "int"),
        SensorColumn("weights_projector_bytes", "bytes", "parameter bytes of the projector (every medium's connectors)", "int"),
        SensorColumn("weights_audio_bytes", "bytes", "parameter bytes of the audio encoder", "int"),
        SensorColumn("weights_language_bytes", "bytes", "parameter bytes of everything else (the language model)", "int"),
    )

    def __init__(self, model: "torch.nn.Module", weights: "dict[str, int] | Callable[[], dict[str, int]] | None" = None) -> None:
        import torch

        from ..core.clock import model_devices

        self.torch = torch
        self.device = next(model.parameters()).device
        # every GPU of a model split over several (device_map): their peaks are summed
        self.devices = [d for d in model_devices(model) if d.type == "cuda"]
        self.cuda = bool(self.devices)
        # the weights by part: a dict, or a function asked once, at the end of the first call (the media
        # modules are known once a call with media ran); None: all counted as language
        self.weights = weights if weights is not None else parameter_bytes(model, {"vision": [], "projector": [], "audio": []})
        self.rss = _Rss() if not self.cuda else None
        self.samples: list[tuple[str, int, int]] = []  # (phase after the boundary, allocated, reserved)
        self.kv_prefill: int | None = None
        self.last_output: Any = None

    def start(self, prompt_tokens: int) -> None:
        self.samples.clear()
        self.kv_prefill, self.last_output = None, None
        for device in self.devices:
            self.torch.cuda.reset_peak_memory_stats(device)

    def sample(self, boundary: Boundary, output: Any = None) -> None:
        if self.cuda:
            cuda = self.torch.cuda
            allocated = sum(cuda.max_memory_allocated(d) for d in self.devices)
            reserved = sum(cuda.max_memory_reserved(d) for d in self.devices)
            for device in self.devices:
                cuda.reset_peak_memory_stats(device)
        else:
            assert self.rss is not None
            allocated, reserved = self.rss(), 0
        self.samples.append((boundary.after, allocated, reserved))
        if boundary.kind == "forward_end":
            if boundary.ends_prefill and self.kv_prefill is None:
                self.kv_prefill = cache_bytes(output)
            self.last_output = output

    def finish(self, prompt_tokens: int) -> dict[str, Any]:
        peaks = {p: 0 for p in PHASES}
        reserved = {p: 0 for p in PHASES}
        for i, (after, allocated, res) in enumerate(self.samples[1:], 1):
            # on CUDA a sample holds the peak since the previous boundary; on CPU the current
            # RSS, which belongs to both intervals it separates
            phases = {self.samples[i - 1][0]} | (set() if self.cuda else {after})
            for phase in phases & set(PHASES):
                peaks[phase] = max(peaks[phase], allocated)
                reserved[phase] = max(reserved[phase], res)
        out: dict[str, Any] = {f"mem_{p}_peak_bytes": peaks[p] or None for p in PHASES}
        out.update({f"mem_{p}_reserved_bytes": (reserved[p] or None) if self.cuda else None for p in PHASES})
        out["kv_prefill_bytes"] = self.kv_prefill
        out["kv_end_bytes"] = cache_bytes(self.last_output)
        self.last_output = None  # do not keep the cache alive
        if callable(self.weights):  # asked once, after the first call: its media modules are known then
            self.weights = self.weights()
        out.update({f"weights_{part}_bytes": value for part, value in self.weights.items()})
        return out


def parameter_bytes(model: "torch.nn.Module", parts: Mapping[str, Sequence["torch.nn.Module"]]) -> dict[str, int]:
    """Parameter bytes of each named part (its modules' parameters, each parameter counted once,
    in the first part that holds it) and of the rest, ``language``."""
    seen: set[int] = set()
    out = {name: 0 for name in parts}
    for name, modules in parts.items():
        for module in modules:
            for p in module.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    out[name] += p.numel() * p.element_size()
    out["language"] = sum(p.numel() * p.element_size() for p in model.parameters() if id(p) not in seen)
    return out
