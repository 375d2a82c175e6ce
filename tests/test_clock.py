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


class FakeDeviceClock:
    """A virtual clock that says it lives on ``device`` and counts its syncs."""

    name = "virtual"

    def __init__(self, device) -> None:
        import torch

        self.device, self.syncs, self.now = torch.device(device), 0, 0

    def sync(self) -> None:
        self.syncs += 1

    def mark(self) -> int:
        self.now += 1
        return self.now

    def resolve_ms(self, marks):
        return [float(m - marks[0]) for m in marks]


def test_the_clock_follows_the_model_to_its_devices_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe built while the model was on the CPU, then the model split over cuda:0, the CPU
    and cuda:1 (faked on CPU): the call is timed on cuda:0's clock and every GPU is synced at
    its two bounds, and at no other time."""
    import torch

    import phasetime.core.clock as clock_module

    model, _ = load_tiny("tiny-llama")
    probe = phasetime.Probe(model)  # built on the CPU: 0.2 fixed the host clock here
    made: list = []

    def fake_clock_for(device):
        made.append(FakeDeviceClock(device))
        return made[-1]

    synced: list = []
    monkeypatch.setattr(clock_module, "clock_for", fake_clock_for)
    monkeypatch.setattr(clock_module, "model_devices",
                        lambda m: [torch.device("cuda", 0), torch.device("cpu"), torch.device("cuda", 1)])
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(torch.device(device)))
    with probe:
        model.generate(**tiny_inputs("tiny-llama"), max_new_tokens=3, min_new_tokens=3)
    m = probe.measurements[-1]
    assert [c.device for c in made] == [torch.device("cuda", 0)] and m.timer == "virtual"
    assert made[0].syncs == 2  # the main GPU's clock, at the call's start and end
    assert synced == [torch.device("cuda", 1)] * 2  # the other GPU too, and never in between
    assert m.output_tokens == 3 and m.decode_steps == 2
