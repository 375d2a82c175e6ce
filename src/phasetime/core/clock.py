"""The one timing primitive of phasetime.

A :class:`Clock` hands out *marks* (opaque timestamps) and turns a list of marks into
milliseconds relative to the first one. Two implementations exist:

* ``perf-counter``: ``time.perf_counter_ns`` on the host; used on CPU.
* ``cuda-event``: a ``torch.cuda.Event(enable_timing=True)`` recorded on the current
  stream; used when the model runs on a CUDA device. The event's timestamp is the moment
  the GPU reaches that point of the stream, so asynchronous kernel launches are timed
  where they execute, not where the host queued them.

Synchronisation rule (the same for both clocks): call :meth:`Clock.sync` once before the
first mark of a measured call and once after its last mark, and never in between. A
per-step synchronisation would change what is measured (it removes the overlap of host
and device work that an unmeasured ``generate()`` enjoys). Only after the closing sync
may :meth:`Clock.resolve_ms` read the marks.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, Sequence

import torch

from .errors import UnsupportedGeneration


class Clock(Protocol):
    """Hands out marks and resolves them to milliseconds; see the module docstring."""

    name: str

    def sync(self) -> None: ...

    def mark(self) -> Any: ...

    def resolve_ms(self, marks: Sequence[Any]) -> list[float]: ...


class PerfCounterClock:
    """Host clock: ``time.perf_counter_ns``; :meth:`sync` is a no-op."""

    name = "perf-counter"

    def sync(self) -> None:
        return None

    def mark(self) -> int:
        return time.perf_counter_ns()

    def resolve_ms(self, marks: Sequence[int]) -> list[float]:
        if not marks:
            return []
        t0 = marks[0]
        return [(m - t0) / 1e6 for m in marks]


class CudaEventClock:
    """Device clock: CUDA events on the current stream of ``device``."""

    name = "cuda-event"

    def __init__(self, device: torch.device | str | int | None = None) -> None:
        self.device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)

    def mark(self) -> torch.cuda.Event:
        event = torch.cuda.Event(enable_timing=True)
        event.record(torch.cuda.current_stream(self.device))
        return event

    def resolve_ms(self, marks: Sequence[torch.cuda.Event]) -> list[float]:
        if not marks:
            return []
        first = marks[0]
        return [0.0] + [float(first.elapsed_time(m)) for m in marks[1:]]


def time_call(clock: Clock, fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(milliseconds, result) of one ``fn(*args, **kwargs)``, following the synchronisation rule."""
    clock.sync()
    start = clock.mark()
    result = fn(*args, **kwargs)
    end = clock.mark()
    clock.sync()
    return clock.resolve_ms([start, end])[1], result


def clock_for(device: torch.device | str | None) -> Clock:
    """The clock for a model living on ``device``: CUDA events on CUDA, perf_counter elsewhere."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        return CudaEventClock(dev)
    if dev.type != "cpu":
        # MPS (and any other asynchronous device): the host clock would time kernel launches,
        # and transformers defers its stop check there, so the work would land in later gaps.
        raise UnsupportedGeneration(f"models on {dev.type!r} devices are not supported: phasetime times CPU and CUDA "
                                    "models (an asynchronous device needs its own synchronised clock)")
    return PerfCounterClock()


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in model.parameters():
        return param.device
    return torch.device("cpu")
