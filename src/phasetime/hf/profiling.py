"""One call under ``torch.profiler``: its operators (and kernels, on a GPU) on the call's timeline.

A probe made with ``profile=True`` runs each call it records under the profiler
(:class:`CallProfiler`, started before the call's opening synchronisation and stopped after
its closing one). The profiler counts its events in microseconds from its own clock, not on
``perf_counter``'s: an anchor operator (``aten::rad2deg`` on one element), run between two
readings of ``perf_counter_ns`` three times before the call and three times after it, ties the
two (its middle against the middle of the readings, of each three the one read most tightly; a ``record_function`` range was tried first and its
entry lags the reading by 10-150 us on this machine, an operator's dispatch by about 1 us).
Every event then lands on the host timeline of the call (ms from the host's call-start mark) and :func:`phasetime.core.operators.attribute` can put it in
the probe's own phase windows.

On a CPU model the probe's clock is the host's, and one set of windows serves both. On a GPU
the probe times phases with CUDA events (where the device runs them) while operators run
on the host ahead of the device: the call is recorded a second time on the host clock (a
second recorder, delivered to nobody) for the operators' windows, and kernels, which the
profiler places on the same timeline as the host, go in the device windows. The device's
call-start event is recorded right after a synchronisation, on an idle device, so it runs
microseconds after the host's mark: that is the alignment's error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from typing import Any, Iterator, Sequence

import torch
from torch.autograd import DeviceType

from ..core.errors import UsageError
from ..core.operators import CallProfile, Op, attribute, windows
from ..core.record import Measurement

ANCHOR = "aten::rad2deg"  # an operator generate() has no use for, run on a one-element tensor
ANCHORS = 3  # anchors before the call and after it: the one read most tightly of each counts


@contextlib.contextmanager
def _kineto_quiet() -> Iterator[None]:
    """Kineto writes a ``USDT: ... profiler_start`` (and ``_stop``) line to the process's stderr
    at every start and stop, whatever its log level: those are dropped, anything else it says
    is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not line.startswith(("USDT:", "STAGE:"))]
            if kept:
                sys.stderr.write("".join(kept))


class CallProfiler:
    """``torch.profiler`` around one call (CPU operators; CUDA kernels when the model is on a GPU)."""

    def __init__(self, devices: Sequence[torch.device]) -> None:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if any(d.type == "cuda" for d in devices):
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.prof = torch.profiler.profile(activities=activities)
        self._tensor = torch.zeros(1)
        self.anchors: list[tuple[int, int]] = []  # each anchor's host time (perf_counter_ns) and uncertainty
        self.alignment_us: float | None = None  # how far the call's two anchors disagree
        self.cost_ns = 0  # the profiler's own start, stop and reading, outside the call
        self.running = False

    def _anchor(self) -> tuple[int, int]:
        """Run the anchor operator: (the middle of the host's readings around it, their distance), ns."""
        before = time.perf_counter_ns()
        torch.rad2deg(self._tensor)
        after = time.perf_counter_ns()
        return (before + after) // 2, after - before

    def start(self) -> None:
        t0 = time.perf_counter_ns()
        if torch.autograd.profiler._is_profiler_enabled:  # a second one would stop the first's session
            raise UsageError("profile=True cannot start torch.profiler: another profiler is running in this process "
                             "(stop it, or leave profiling to phasetime)")
        try:
            with _kineto_quiet():
                self.prof.start()
        except RuntimeError as exc:
            raise UsageError(f"profile=True cannot start torch.profiler ({exc}); is another profiler running "
                             "in this process?") from None
        self.running = True
        self._anchor()  # the first operator under a fresh profiler runs slow: not an anchor
        self.anchors += [self._anchor() for _ in range(ANCHORS)]
        self.cost_ns += time.perf_counter_ns() - t0

    def stop(self) -> None:
        if self.running:
            t0 = time.perf_counter_ns()
            self.anchors += [self._anchor() for _ in range(ANCHORS)]
            self.running = False
            with _kineto_quiet():
                self.prof.stop()
            self.cost_ns += time.perf_counter_ns() - t0

    def ops(self, origin_ns: int) -> list[Op]:
        """Every event of the profile on the host timeline of the call whose start mark is
        ``origin_ns`` (``perf_counter_ns``). Read from the profiler's raw events (``prof.events()``
        builds Python objects for every event and takes 10-20 times as long); each operator's
        self time and whether it is top-level come from nesting the events of its thread."""
        raw = [e for e in self.prof.profiler.kineto_results.events() if not e.is_hidden_event()]
        found: list[Any] = []
        for e in sorted((e for e in raw if e.name() == ANCHOR), key=lambda e: e.start_ns()):
            if not found or e.start_ns() >= found[-1].end_ns():  # not the op's own inner call of itself
                found.append(e)
        if len(found) < 1 + 2 * ANCHORS or len(self.anchors) != 2 * ANCHORS:
            raise RuntimeError(f"the profile holds {len(found)} {ANCHOR} events, expected at least {1 + 2 * ANCHORS}: "
                               "its events cannot be placed on the call")
        # the anchors are the first operators of the profile and the last ones: a model's own calls
        # of the operator lie between them (inside the call), and are its operators like any other
        anchors = found[:1 + ANCHORS] + found[len(found) - ANCHORS:]
        # profiler ns -> host ns: the middle of an anchor operator against the middle of the host's
        # readings around it; of each group (before the call, after it) the one read most tightly
        # (a stall between a reading and its operator widens the readings, and moves the middle)
        pairs = list(zip(self.anchors, anchors[1:]))
        shifts = [host - (e.start_ns() + e.end_ns()) // 2
                  for (host, _), e in (min(group, key=lambda pair: pair[0][1])
                                       for group in (pairs[:ANCHORS], pairs[ANCHORS:]))]
        self.alignment_us = abs(shifts[1] - shifts[0]) / 1e3
        shift = shifts[0] - origin_ns
        host: dict[int, list[tuple[int, int, str]]] = {}
        out: list[Op] = []
        for e in raw:  # (the anchors lie outside the call: attribute() leaves them out)
            name = e.name()
            if e.is_async():
                continue
            start, end = e.start_ns() + shift, e.start_ns() + shift + e.duration_ns()
            if e.device_type() == DeviceType.CPU:
                host.setdefault(e.start_thread_id(), []).append((start, end, name))
            else:
                device = f"{e.device_type().name.lower()}:{e.device_index()}"
                out.append(Op(name, "kernel", device, start / 1e6, end / 1e6, (end - start) / 1e6))
        for events in host.values():
            out.extend(_nested(events))
        return out

    def profile(self, m: Measurement, host: Measurement, origin_ns: int) -> CallProfile:
        """The :class:`CallProfile` of the call measured as ``m`` (``host``: the same call on the
        host clock, ``m`` itself on a CPU)."""
        t0 = time.perf_counter_ns()
        ops = self.ops(origin_ns)
        host_windows = windows(host)
        device_windows = windows(m) if m.timer == "cuda-event" else None
        rows = attribute(host_windows, device_windows, ops)
        self.cost_ns += time.perf_counter_ns() - t0
        shown = tuple(op for op in ops if op.top and 0 <= op.start_ms < host.total_ms)
        return CallProfile(tuple(rows), tuple(host_windows), None if device_windows is None else tuple(device_windows),
                           events=len(ops), profiler_ms=self.cost_ns / 1e6, top_ops=shown,
                           alignment_us=self.alignment_us)


def _nested(events: list[tuple[int, int, str]]) -> list[Op]:
    """One thread's operators with their self time (their span less their direct children's)
    and whether they are top-level (nested in no other), from their spans (ns)."""
    events.sort(key=lambda e: (e[0], -e[1]))
    children = [0] * len(events)
    parent_of: list[int | None] = [None] * len(events)
    stack: list[int] = []
    for i, (start, end, _) in enumerate(events):
        while stack and events[stack[-1]][1] <= start:
            stack.pop()
        if stack:
            parent_of[i] = stack[-1]
            children[stack[-1]] += end - start
        stack.append(i)
    return [Op(name, "operator", "cpu", start / 1e6, end / 1e6, max(end - start - children[i], 0) / 1e6,
               top=parent_of[i] is None) for i, (start, end, name) in enumerate(events)]
