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
    # call start/end, start/end of the two vision modules (tower, projector), and start/end of
    # 1 prefill + 7 decode forwards (the discovery call before it marks nothing)
    assert clock.marks == 2 + 2 * 2 + 2 * 8
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
    """One fake GPU's event clock: an event fires at the virtual host time plus ``lag`` ms for
    the next mark only (work still queued on this device when the host marks a boundary), and
    never before the device's previous event (a stream runs in order); counts its syncs."""

    name = "cuda-event"

    def __init__(self, device, host: "VirtualClock") -> None:
        import torch

        self.device, self.host, self.syncs, self.lag, self.last = torch.device(device), host, 0, 0.0, 0.0

    def sync(self) -> None:
        self.syncs += 1

    def mark(self) -> float:
        self.last, self.lag = max(self.host.now_ns / 1e6 + self.lag, self.last), 0.0
        return self.last

    def resolve_ms(self, marks):
        return [m - marks[0] for m in marks]


def test_a_model_split_over_gpus_is_timed_on_every_gpu_on_one_timeline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe built while the model was on the CPU, then the model split over cuda:0, the CPU
    and cuda:1 (faked on CPU): the call gets a clock on each GPU, each synced at the call's two
    bounds only, and a boundary resolves to the GPU that reached it last: when cuda:1 is still
    busy 2 ms after the host ends each forward, the prefill waits for it (2 ms more, which a
    clock on cuda:0 alone would miss), every later forward starts behind it, and the call ends
    when cuda:1 is done."""
    import torch

    import phasetime.core.clock as clock_module
    from conftest import VirtualClock, inject_delays

    model, _ = load_tiny("tiny-llama")
    probe = phasetime.Probe(model)  # built on the CPU: 0.2 fixed the host clock here
    host = VirtualClock()
    made: dict = {}

    def fake_clock_for(device):
        made[torch.device(device)] = FakeDeviceClock(device, host)
        return made[torch.device(device)]

    monkeypatch.setattr(clock_module, "clock_for", fake_clock_for)
    monkeypatch.setattr(clock_module, "model_devices",
                        lambda m: [torch.device("cuda", 0), torch.device("cpu"), torch.device("cuda", 1)])

    def gpu1_behind(module, args, output) -> None:  # runs before the probe's own post-hook
        made[torch.device("cuda", 1)].lag = 2.0

    handle = model.register_forward_hook(gpu1_behind)
    try:
        with probe, inject_delays(model, 0.0, 5.0, 1.0, clock=host):
            model.generate(**tiny_inputs("tiny-llama"), max_new_tokens=4, min_new_tokens=4)
    finally:
        handle.remove()
    m = probe.measurements[-1]
    assert list(made) == [torch.device("cuda", 0), torch.device("cuda", 1)] and m.timer == "cuda-event"
    assert [c.syncs for c in made.values()] == [2, 2]  # both GPUs, at the call's start and end only
    assert m.prefill_ms == pytest.approx(5.0 + 2.0) and m.ttft_ms == pytest.approx(5.0 + 2.0)
    assert m.decode_forward_ms == pytest.approx((1.0,) * 3) and m.tpot_ms == pytest.approx(1.0)
    assert m.total_ms == pytest.approx(5.0 + 3 * 1.0 + 2.0)  # cuda:0 alone would read 8.0
    assert m.output_tokens == 4 and m.decode_steps == 3


def test_the_multi_gpu_clock_resolves_each_mark_to_its_latest_gpu() -> None:
    from phasetime.core.clock import CallClock

    class Scripted:
        def __init__(self, times):
            self.times, self.syncs = list(times), 0

        def sync(self):
            self.syncs += 1

        def mark(self):
            return self.times.pop(0)

        def resolve_ms(self, marks):
            return [m - marks[0] for m in marks]

    clock = CallClock.__new__(CallClock)
    clock.clocks = [Scripted([10.0, 11.0, 15.0]), Scripted([40.0, 43.0, 44.0])]  # GPU 1's own epoch: 40
    marks = [clock.mark() for _ in range(3)]
    assert clock.resolve_ms(marks) == [0.0, 3.0, 5.0]  # mark 1: GPU 1 (3 ms), mark 2: GPU 0 (5 ms)
