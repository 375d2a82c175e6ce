"""Resources per phase against independent counts: FLOPs by hand, KV bytes from the config,
weights from the parameters, energy from a fake NVML on the virtual clock, the roof."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch

import phasetime
from conftest import VirtualClock, discover, inject_delays, load_tiny, tiny_inputs
from phasetime.hf.replay import count_flops
from phasetime.sensors.energy import EnergySensor
from phasetime.sensors.roof import datasheet, roof
from phasetime.hf.parts import weight_bytes
from phasetime.sensors.memory import MemorySensor


def llama_inputs(t: int) -> dict:
    ids = torch.arange(5, 5 + t)[None, :]
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def test_prefill_and_decode_flops_match_a_hand_count() -> None:
    model, _ = load_tiny("tiny-llama")
    c = model.config
    head = c.hidden_size // c.num_attention_heads
    linear = sum(p.numel() for p in model.model.layers.parameters() if p.dim() == 2)  # q, k, v, o, gate, up, down

    def forward(t: int, s: int) -> int:
        # 2 x weights x new positions, the output layer on the last position only (generate
        # keeps one logit row), and attention: scores and weighted values over s positions
        return 2 * linear * t + 2 * c.hidden_size * c.vocab_size + c.num_hidden_layers * 2 * 2 * c.num_attention_heads * t * s * head

    for t in (8, 32):
        replay = count_flops(model, llama_inputs(t), {"max_new_tokens": 4, "min_new_tokens": 4})
        flops = replay.resources
        assert flops["prefill_flops"] == pytest.approx(forward(t, t), rel=0.01)
        assert flops["decode_flops"] == pytest.approx(sum(forward(1, t + k) for k in range(1, 4)), rel=0.01)
        assert flops["vision_flops"] == 0


def test_kv_and_weight_bytes_match_the_model() -> None:
    model, _ = load_tiny("tiny-llama")
    c = model.config
    per_position = 2 * c.num_hidden_layers * c.num_key_value_heads * (c.hidden_size // c.num_attention_heads) * 4
    sensor = MemorySensor(model)
    m = phasetime.measure(model, llama_inputs(20), sensors=[sensor], max_new_tokens=5, min_new_tokens=5)
    assert m.resources["kv_prefill_bytes"] == 20 * per_position  # float32: 4 bytes
    assert m.resources["kv_end_bytes"] == (20 + 4) * per_position  # the last token is never fed back
    # (the peaks themselves: test_memory_peaks_see_a_known_allocation below)
    llava, _ = load_tiny("tiny-llava")
    parts = weight_bytes(llava)
    size = lambda module: sum(p.numel() * p.element_size() for p in module.parameters())  # noqa: E731
    assert parts["vision"] == size(llava.model.vision_tower)
    assert parts["projector"] == size(llava.model.multi_modal_projector)
    assert sum(parts.values()) == size(llava)


class FakeNvml:
    """A GPU drawing a constant 100 W, its counter read from the virtual clock (millijoules)."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        return f"gpu{index}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> float:
        return 100.0 * self.clock.now_ns / 1e6  # 100 W = 100 mJ per ms


def energy_call(sensor: EnergySensor, clock: VirtualClock, decode_ms: float = 10.0, **kwargs: Any) -> Any:
    """tiny-llava on the virtual clock (vision 20 ms, prefill 30, each decode step ``decode_ms``)
    with ``sensor``: the call's resources."""
    model, _ = load_tiny("tiny-llava")
    discover(model, tiny_inputs("tiny-llava"))  # before the delays: they would move the clock the counter reads
    with inject_delays(model, 20.0, 30.0, decode_ms, clock=clock):
        return phasetime.measure(model, tiny_inputs("tiny-llava"), clock=clock, sensors=[sensor], **kwargs)


def test_energy_per_phase_from_the_counter() -> None:
    clock = VirtualClock()
    now = lambda: clock.now_ns / 1e9  # noqa: E731
    sensor = EnergySensor(torch.device("cpu"), nvml=FakeNvml(clock), interval_ms=10.0, now=now)
    r = energy_call(sensor, clock, max_new_tokens=4, min_new_tokens=4).resources
    assert r["energy_vision_j"] == pytest.approx(2.0) and r["energy_prefill_j"] == pytest.approx(3.0)
    assert r["energy_decode_j"] == pytest.approx(3.0) and r["energy_total_j"] == pytest.approx(8.0)
    assert r["energy_per_token_j"] == pytest.approx(1.0)  # 3 decode steps of 10 ms at 100 W
    assert r["energy_coarse"] is None  # every phase lasted at least two 10 ms counter steps
    short = EnergySensor(torch.device("cpu"), nvml=FakeNvml(clock), interval_ms=12.0, now=now)
    m = energy_call(short, clock, max_new_tokens=2, min_new_tokens=2)
    assert m.resources["energy_coarse"] == "vision,decode"  # 20 ms and 10 ms: under two 12 ms steps


def test_energy_follows_derives_rule_when_vision_reruns_in_decode() -> None:
    """Without a cache, transformers <= 5.17 re-encodes the image in every forward: vision's
    energy is every vision span's, and prefill and decode leave out the vision nested in them
    (0.2 read vision from its first start to its last end, across the decode, and gave a
    negative prefill energy). On >= 5.18 vision runs once, before the prefill."""
    clock = VirtualClock()
    sensor = EnergySensor(torch.device("cpu"), nvml=FakeNvml(clock), interval_ms=1.0, now=lambda: clock.now_ns / 1e9)
    # without a cache every forward is a "prefill" to the injector: 30 ms each
    m = energy_call(sensor, clock, 30.0, max_new_tokens=4, min_new_tokens=4, use_cache=False)
    r, encodes = m.resources, m.vision_calls // 2  # two media modules per encoding: the tower, the projector
    assert m.vision_calls in (2, 8)
    assert r["energy_vision_j"] == pytest.approx(2.0 * encodes)  # 20 ms at 100 W per encoding
    assert r["energy_prefill_j"] == pytest.approx(3.0) and r["energy_decode_j"] == pytest.approx(3 * 3.0)
    assert r["energy_total_j"] == pytest.approx(2.0 * encodes + 3.0 + 9.0)


def test_the_energy_sensor_sums_every_gpu_of_a_split_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two GPUs at 100 W each (faked, by physical id through CUDA_VISIBLE_DEVICES): each phase's
    energy is twice one GPU's, both are synchronised at every read."""
    import phasetime.sensors.gpu_id as gpu_id

    clock = VirtualClock()
    nvml = FourGpus(clock)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    monkeypatch.setattr(gpu_id, "cuda_uuid", lambda index: None)
    synced: list = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synced.append(torch.device(device)))
    sensor = EnergySensor([torch.device("cuda", 0), torch.device("cuda", 1)], nvml=nvml, interval_ms=10.0,
                          now=lambda: clock.now_ns / 1e9)
    assert sensor.handles == ["physical 2", "physical 0"]
    r = energy_call(sensor, clock, max_new_tokens=4, min_new_tokens=4).resources
    assert r["energy_vision_j"] == pytest.approx(4.0) and r["energy_prefill_j"] == pytest.approx(6.0)
    assert r["energy_total_j"] == pytest.approx(16.0) and r["energy_per_token_j"] == pytest.approx(2.0)
    assert synced and synced.count(torch.device("cuda", 0)) == synced.count(torch.device("cuda", 1)) == r["sensor_syncs"]


def test_the_roof_from_datasheets_and_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h100 = datasheet("NVIDIA H100 80GB HBM3", "bfloat16")
    assert h100 is not None and h100.flops_per_s == 989e12 and h100.bytes_per_s == 3.35e12
    assert datasheet("NVIDIA H100 PCIe", "bfloat16").flops_per_s == 756e12
    assert datasheet("NVIDIA A100-SXM4-40GB", "float16").bytes_per_s == 1.555e12
    assert datasheet("NVIDIA H200", "float32").flops_per_s == 67e12 and datasheet("Some GPU", "float32") is None
    monkeypatch.setenv("PHASETIME_CACHE", str(tmp_path))
    measured = roof(torch.device("cpu"), "float32")
    assert measured.source.startswith("measured") and measured.flops_per_s > 1e8 and measured.bytes_per_s > 1e8
    assert measured.spread is not None and measured.measured_at is not None
    if measured.source == "measured":  # steady rounds: cached (a busy machine's roof is not; test_new_user)
        assert (tmp_path / "roof.json").exists() and roof(torch.device("cpu"), "float32") == measured


def test_a_run_with_memory_and_cost_fills_every_column(tmp_path: Path) -> None:
    from phasetime.analysis import summarize
    from phasetime.experiments.running.run import run_experiment
    from phasetime.experiments.plan.spec import parse_experiment
    from phasetime.results import read

    exp = parse_experiment({"name": "r", "models": ["tiny-llava"], "inputs": {"kind": "synthetic", "image_size": 64},
                            "sweep": {"max_new_tokens": [4]}, "repeats": 2, "warmup": 0,
                            "resources": {"memory": True, "cost": True}})
    run_experiment(exp, tmp_path / "r")
    table = read(tmp_path / "r")
    for column in ("mem_vision_peak_bytes", "kv_prefill_bytes", "weights_vision_bytes", "vision_flops", "prefill_flops",
                   "decode_flops", "vision_bytes", "prefill_bytes", "decode_bytes", "roof_flops_per_s", "probe_ms"):
        assert table.column(column).null_count == 0, column
    cell = summarize(table)[0]
    decode = cell.throughput["decode"]
    assert decode.flops_per_s == pytest.approx(cell.resources["decode_flops"] / (cell.median("decode_ms") / 1000))
    assert 0 < decode.mfu < 1 and 0 < decode.mbu < 1


def test_a_utilization_above_the_roof_fails_the_check() -> None:
    from phasetime.analysis import check

    table = pa.table({"cell": [0, 0], "method": ["direct"] * 2, "output_tokens": [4, 4], "decode_ms": [1.0, 1.0],
                      "tpot_ms": [0.33, 0.33], "total_ms": [5.0, 5.0], "prefill_ms": [1.0, 1.0], "vision_ms": [1.0, 1.0],
                      "prefill_flops": [1e9, 1e9], "decode_flops": [1e12, 1e12], "vision_flops": [1e9, 1e9],
                      "roof_flops_per_s": [1e12, 1e12], "roof_bytes_per_s": [1e11, 1e11]})
    result = next(r for r in check(table) if r.check == "utilization")
    assert result.verdict == "fail" and result.value == 1000.0  # 1e12 FLOP in 1 ms on a 1e12 FLOP/s roof


class FourGpus:
    """NVML of a machine with four GPUs: handles only for what exists, energy from the virtual clock."""

    UUIDS = {f"GPU-{i}aaa": i for i in range(4)}

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def nvmlDeviceGetHandleByIndex(self, index: int) -> str:
        if not 0 <= index < 4:
            raise RuntimeError(f"NVML: no GPU {index}")
        return f"physical {index}"

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.UUIDS:
            raise RuntimeError(f"NVML: no GPU {uuid}")
        return f"physical {self.UUIDS[uuid]}"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: str) -> float:
        return 100.0 * self.clock.now_ns / 1e6


def test_the_gpu_is_named_to_nvml_by_uuid_not_by_torchs_index(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CUDA_VISIBLE_DEVICES=3,1 torch's cuda:0 is physical GPU 3: NVML must read GPU 3."""
    import phasetime.sensors.gpu_id as gpu_id
    from phasetime.core.errors import UsageError
    from phasetime.experiments.running import conditions

    nvml = FourGpus(VirtualClock())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    monkeypatch.setattr(gpu_id, "cuda_uuid", lambda index: None)  # a torch that gives no UUID
    assert EnergySensor(torch.device("cpu", 0), nvml=nvml, interval_ms=10.0).handle == "physical 3"
    assert gpu_id.nvml_handle(nvml, 1) == "physical 1"
    with pytest.raises(UsageError, match="not among CUDA_VISIBLE_DEVICES"):
        gpu_id.physical_id(2)
    monkeypatch.setattr(gpu_id, "cuda_uuid", lambda index: ["GPU-3aaa", "GPU-1aaa"][index])  # what torch reports
    assert gpu_id.nvml_handle(nvml, 0) == "physical 3" and gpu_id.nvml_handle(nvml, 1) == "physical 1"
    asked: list[list[str]] = []
    monkeypatch.setattr(conditions, "_nvidia_smi", lambda args: asked.append(args) or None)
    conditions.gpu_conditions(0)
    assert asked and all(args[0] == "--id=GPU-3aaa" for args in asked)  # nvidia-smi too, by UUID


def test_runs_whose_sensors_synced_are_flagged_against_runs_that_did_not() -> None:
    from phasetime.analysis.compare import sync_mismatch

    base = {"cell": [0, 0], "method": ["direct"] * 2, "max_new_tokens": [4, 4], "total_ms": [10.0, 11.0]}
    plain, synced = pa.table(base), pa.table({**base, "sensor_syncs": [6, 6]})
    assert sync_mismatch(plain, plain) is None and sync_mismatch(synced, synced) is None
    assert "run B's sensors synchronised" in sync_mismatch(plain, synced)
    assert "run A's sensors synchronised" in sync_mismatch(synced, plain)


def test_memory_peaks_see_a_known_allocation() -> None:
    """64 MiB allocated (and touched) in the second decode step and kept to the end of the call:
    the decode peak (the process's resident memory, on CPU) is at least 60 MiB above prefill's."""
    model, _ = load_tiny("tiny-llama")
    held: list[torch.Tensor] = []
    steps = {"n": 0}

    def allocate(module, args, kwargs):
        steps["n"] += 1
        if steps["n"] == 3:  # prefill, decode 1, then decode 2
            held.append(torch.ones(16 * 2**20, dtype=torch.float32))  # 64 MiB, every page written

    handle = model.register_forward_pre_hook(allocate, with_kwargs=True)
    try:
        m = phasetime.measure(model, llama_inputs(20), sensors=[MemorySensor(model)], max_new_tokens=5, min_new_tokens=5)
    finally:
        handle.remove()
    r = m.resources
    assert held and r["mem_decode_peak_bytes"] - r["mem_prefill_peak_bytes"] >= 60 * 2**20


class FakeCuda:
    """torch.cuda's allocator counters, scripted: the peak since the last reset of each interval
    (``per_device``: a script per device index)."""

    def __init__(self, peaks: list[int], per_device: dict[int, list[int]] | None = None) -> None:
        self.scripts = per_device if per_device is not None else {0: list(peaks)}
        self.resets = 0

    def reset_peak_memory_stats(self, device) -> None:
        self.resets += 1

    def max_memory_allocated(self, device) -> int:
        return self.scripts[torch.device(device).index or 0].pop(0)

    def max_memory_reserved(self, device) -> int:
        return 2 * 2**30


def test_the_memory_sensor_sums_every_gpu_of_a_split_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model split over cuda:0 and cuda:1 (faked): each phase's peak is the sum of the two
    GPUs' own peaks in that interval, and both GPUs are reset at every boundary."""
    import phasetime.core.clock as clock_module

    model, _ = load_tiny("tiny-llama")
    monkeypatch.setattr(clock_module, "model_devices", lambda m: [torch.device("cuda", 0), torch.device("cuda", 1)])
    sensor = MemorySensor(model)
    monkeypatch.undo()  # the call itself runs on the CPU clock
    assert sensor.devices == [torch.device("cuda", 0), torch.device("cuda", 1)] and sensor.cuda
    fake = FakeCuda([], per_device={0: [1, 500, 300, 400, 90, 450, 120, 470], 1: [1, 5, 30, 4, 9, 45, 12, 47]})
    sensor.rss, sensor.torch = None, type("T", (), {"cuda": fake})()
    r = phasetime.measure(model, llama_inputs(10), sensors=[sensor], max_new_tokens=3, min_new_tokens=3).resources
    assert fake.resets == 2 * 9
    assert r["mem_prefill_peak_bytes"] == 300 + 30 and r["mem_decode_peak_bytes"] == max(90 + 9, 120 + 12)
    assert r["mem_prefill_reserved_bytes"] == 2 * 2 * 2**30


def test_the_cuda_memory_sensor_keeps_each_phases_own_peak() -> None:
    """On CUDA a sample is the allocator's peak since the previous boundary (reset at each): the
    prefill peak is the largest of the prefill intervals, the decode peak of the decode ones."""
    model, _ = load_tiny("tiny-llama")
    sensor = MemorySensor(model)
    # boundaries of a text call with 3 output tokens: call_start, forward_start/end (prefill),
    # forward_start/end twice (decode), call_end: 8 samples, each the peak of the interval
    # before it; the gaps between forwards (generate()'s own work) peak higher, and count for
    # neither phase
    fake = FakeCuda([1, 500, 300, 400, 90, 450, 120, 470])
    sensor.cuda, sensor.rss, sensor.devices = True, None, [torch.device("cuda", 0)]
    sensor.torch = type("T", (), {"cuda": fake})()
    m = phasetime.measure(model, llama_inputs(10), sensors=[sensor], max_new_tokens=3, min_new_tokens=3)
    r = m.resources
    assert fake.resets == 9  # at the start and after every one of the 8 samples
    assert r["mem_prefill_peak_bytes"] == 300  # the interval of the prefill forward
    assert r["mem_decode_peak_bytes"] == 120  # the largest decode interval
    assert r["mem_prefill_reserved_bytes"] == 2 * 2**30
