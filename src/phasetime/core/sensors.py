"""Sensors: resources sampled at the probe's phase boundaries, attributed to the same phases.

A sensor is one class plus its columns. The probe calls :meth:`Sensor.start` before the call,
:meth:`Sensor.sample` at every boundary it marks (call start and end, vision start and end,
each forward's start and end, with the forward's output at its end) and :meth:`Sensor.finish`
after the call, which returns the sensor's column values. Each boundary comes as a
:class:`Boundary` whose phase the call's recorder decided once (:class:`Phases`), the way
:func:`~phasetime.core.phases.derive` decides it: forwards are prefill until the prompt is
consumed, decode after; vision wins inside a forward. No sensor classifies for itself.

Sensors (see docs/metrics.md, "Resources"):

* :class:`MemorySensor` (``--memory``): on CUDA the peak allocated and reserved bytes within
  vision, prefill and decode (allocator statistics are host-side: no synchronisation); on CPU
  the process's resident memory at the boundaries (coarse); the KV cache's bytes after prefill
  and at the end; the model's weights by part.
* :class:`~phasetime.core.cost.FlopSensor` (``--cost``, in a replay of the call, never in the
  timed one): FLOPs per phase.
* :class:`~phasetime.core.energy.EnergySensor` (``--energy``, CUDA): the GPU's energy counter.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .phases import PromptCounter

if TYPE_CHECKING:
    import torch

# This module imports torch only inside functions: the results floor reads the sensors'
# column declarations without it.


@dataclass(frozen=True)
class SensorColumn:
    """A results column a sensor fills (``kind``: "float" or "int")."""

    name: str
    unit: str
    doc: str
    kind: str = "float"


@dataclass(frozen=True)
class Boundary:
    """One boundary of a call, as every sensor sees it: ``kind`` (``call_start``,
    ``vision_end``, ``forward_start``, ...), ``after`` (the phase of the interval it opens:
    vision, prefill, decode or other), ``forward`` (on a forward's start and end: prefill or
    decode) and ``ends_prefill`` (the end of the forward that consumed the prompt's last
    positions)."""

    kind: str
    after: str
    forward: str | None = None
    ends_prefill: bool = False


class Sensor(Protocol):
    name: str
    columns: tuple[SensorColumn, ...]

    def start(self, prompt_tokens: int) -> None: ...

    def sample(self, boundary: Boundary, output: Any = None) -> None: ...

    def finish(self, prompt_tokens: int) -> dict[str, Any]: ...


PHASES = ("vision", "prefill", "decode")


class Phases:
    """Decides each boundary's phase once, for one call (the recorder keeps one): vision
    inside a vision span, prefill or decode inside a forward (by counting the prompt's
    positions, :class:`PromptCounter`), else other."""

    def __init__(self, prompt_tokens: int) -> None:
        self.counter = PromptCounter(prompt_tokens)
        self.forward: str | None = None
        self.vision = 0
        self.ending = False

    def observe(self, kind: str, tokens: int | None = None) -> Boundary:
        forward, ends = None, False
        if kind == "forward_start":
            self.forward = forward = "prefill" if self.counter.feed(tokens or 0) else "decode"
            self.ending = forward == "prefill" and self.counter.consumed >= self.counter.prompt_tokens
        elif kind == "forward_end":
            forward, ends, self.forward, self.ending = self.forward, self.ending, None, False
        elif kind == "vision_start":
            self.vision += 1
        elif kind == "vision_end":
            self.vision -= 1
        return Boundary(kind, "vision" if self.vision > 0 else self.forward or "other", forward, ends)


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
        SensorColumn("weights_projector_bytes", "bytes", "parameter bytes of the projector", "int"),
        SensorColumn("weights_language_bytes", "bytes", "parameter bytes of everything else (the language model)", "int"),
    )

    def __init__(self, model: "torch.nn.Module", weights: dict[str, int] | None = None) -> None:
        import torch

        from .clock import model_devices

        self.torch = torch
        self.device = next(model.parameters()).device
        # every GPU of a model split over several (device_map): their peaks are summed
        self.devices = [d for d in model_devices(model) if d.type == "cuda"]
        self.cuda = bool(self.devices)
        self.weights = weights if weights is not None else weight_bytes(model)
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
        out.update({f"weights_{part}_bytes": value for part, value in self.weights.items()})
        return out


def weight_bytes(model: "torch.nn.Module") -> dict[str, int]:
    """Parameter bytes of the vision tower(s), the projector(s) and the rest."""
    from .vision import PROJECTOR_NAMES, VISION_MODULE_NAMES

    seen: set[int] = set()
    parts = {"vision": 0, "projector": 0, "language": 0}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        part = "vision" if leaf in VISION_MODULE_NAMES else "projector" if leaf in PROJECTOR_NAMES else None
        if part is None:
            continue
        for p in module.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                parts[part] += p.numel() * p.element_size()
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            parts["language"] += p.numel() * p.element_size()
    return parts
