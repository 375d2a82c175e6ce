"""The clock: resolution of marks and the synchronisation rule (once before, once after a call)."""

from __future__ import annotations

import pytest
import torch

import phasetime
from conftest import load_tiny, tiny_inputs
from phasetime.core.clock import CudaEventClock, PerfCounterClock, clock_for


class CountingClock(PerfCounterClock):
    """perf_counter with a count of synchronisations and marks."""

    def __init__(self) -> None:
        self.syncs = 0
        self.marks = 0

    def sync(self) -> None:
        self.syncs += 1

    def mark(self) -> int:
        self.marks += 1
        return super().mark()


def test_one_sync_before_and_one_after_each_call_never_per_step() -> None:
    model, _ = load_tiny("tiny-llava")
    clock = CountingClock()
    with phasetime.Probe(model, clock=clock) as probe:
        model.generate(**tiny_inputs("tiny-llava"), max_new_tokens=8, min_new_tokens=8)
    assert clock.syncs == 2
    # call start/end, vision start/end, and start/end of 1 prefill + 7 decode forwards
    assert clock.marks == 2 + 2 + 2 * 8
    assert probe.measurements[-1].timer == "perf-counter"


class FakeEvent:
    """Stands in for torch.cuda.Event: a timestamp set when recorded."""

    now = 0.0

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing
        self.t = None

    def record(self, stream=None) -> None:
        FakeEvent.now += 1.5
        self.t = FakeEvent.now

    def elapsed_time(self, other: "FakeEvent") -> float:
        return other.t - self.t


def test_cuda_event_clock_records_events_and_resolves_relative_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "stream")
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    clock = CudaEventClock("cuda:0")
    clock.sync()
    marks = [clock.mark() for _ in range(3)]
    clock.sync()
    assert clock.resolve_ms(marks) == [0.0, 1.5, 3.0]
    assert clock.name == "cuda-event" and len(syncs) == 2


def test_clock_choice() -> None:
    assert clock_for("cpu").name == "perf-counter"
    assert isinstance(clock_for(torch.device("cuda", 0)), CudaEventClock)
    assert PerfCounterClock().resolve_ms([5_000_000, 6_500_000]) == [0.0, 1.5]
