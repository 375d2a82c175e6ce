"""The one timing primitive of phasetime.

A :class:`Clock` hands out *marks* (opaque timestamps) and turns a list of marks into
milliseconds relative to the first one. Two implementations exist:

* ``perf-counter``: ``time.perf_counter_ns`` on the host; used on CPU.
* ``cuda-event``: a ``torch.cuda.Event(enable_timing=True)`` recorded on the current
  stream; used when the model runs on a CUDA device. The event's timestamp is the moment
  the GPU reaches that point of the stream, so asynchronous kernel launches are timed
  where they execute, not where the host queued them.

The clock is chosen at each call from the devices holding the model
(:func:`clock_for_call`): a model split over several GPUs, or partly offloaded to the CPU, is
timed with CUDA events on every GPU it holds (:class:`CallClock`: each mark on each GPU, one
timeline, a boundary when the last GPU reaches it) and every GPU is synchronised at the
call's bounds.

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


class CallClock:
    """The clock of one call on a model spread over several CUDA devices.

    Every mark is a CUDA event recorded on the current stream of *each* device, so each
    device says when it reached the boundary; :meth:`sync` waits for every device. The
    call's first mark is recorded right after the opening sync, when every device is idle:
    each device's events are timed from its own first event, which puts them on one timeline
    (to within the microseconds between recording the first events). A boundary is reached
    when the last device gets there, so a mark resolves to the latest of its devices' times:
    work still queued on the second GPU when a forward ends on the first counts in that
    forward. With one CUDA device this is :class:`CudaEventClock` exactly.
    """

    name = "cuda-event"

    def __init__(self, main: Clock, devices: Sequence[torch.device]) -> None:
        self.main = main
        self.device = getattr(main, "device", None)
        self.devices = [d for d in devices if d.type == "cuda"]
        self.clocks = [main if d == self.device else clock_for(d) for d in self.devices]

    def sync(self) -> None:
        for clock in self.clocks:
            clock.sync()

    def mark(self) -> list[Any]:
        return [clock.mark() for clock in self.clocks]

    def resolve_ms(self, marks: Sequence[Any]) -> list[float]:
        if not marks:
            return []
        per_device = [clock.resolve_ms([m[i] for m in marks]) for i, clock in enumerate(self.clocks)]
        return [max(times) for times in zip(*per_device)]


def model_devices(model: torch.nn.Module) -> list[torch.device]:
    """Every device holding the model's parameters or buffers, in first-seen order (a model split
    with ``device_map`` over GPUs, or with layers offloaded to the CPU, has several)."""
    seen: dict[torch.device, None] = {}
    for tensor in (*model.parameters(), *model.buffers()):
        seen.setdefault(tensor.device, None)
    return list(seen) or [torch.device("cpu")]


def clock_for_call(devices: Sequence[torch.device]) -> Clock:
    """The clock of a call on ``devices`` (looked up at the call, not when the probe was built:
    a probe made before ``model.to("cuda")`` still gets CUDA events): CUDA events on every CUDA
    device (:class:`CallClock` when there are several), each synced at the bounds; the host
    clock on a CPU-only model (CPU offload: the host waits for the CPU's work anyway)."""
    cuda = [d for d in devices if d.type == "cuda"]
    odd = [d for d in devices if d.type not in ("cpu", "cuda", "meta")]
    if odd:
        clock_for(odd[0])  # refuses it by name
    if not cuda:
        return clock_for("cpu")
    main = clock_for(cuda[0])
    return main if len(cuda) == 1 else CallClock(main, cuda)


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    for param in model.parameters():
        return param.device
    return torch.device("cpu")
