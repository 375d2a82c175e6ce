"""The device's roof: peak dense FLOP/s per dtype and peak memory bandwidth.

Two sources. A table of datasheet figures (dense, without structured sparsity; the sources
are listed in :data:`DATASHEETS`), and, better, a short measurement on the machine itself
(:func:`measure`: a large matrix multiplication and a large copy), cached per device, dtype,
torch version and thread count in ``~/.cache/phasetime/roof.json``. On a CPU only the
measurement exists. ``phasetime roof`` prints the datasheet and the cached measurement;
``phasetime roof --measure`` measures anew.

A measurement is :data:`ROUNDS` rounds of the benchmark; the roof is their best, and it is
cached (with the date, the spread of the rounds and the load average) only when the rounds
agree within :data:`MAX_SPREAD`: a roof measured on a busy machine is lower than the
device's and would make every utilisation look higher, for good.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

TF = 1e12
TB = 1e12


@dataclass(frozen=True)
class Datasheet:
    match: tuple[str, ...]  # substrings of torch.cuda.get_device_name(), all required
    name: str
    flops: dict[str, float]  # dense peak FLOP/s by dtype ("float32" means plain FP32, not TF32)
    bandwidth: float  # bytes/s
    source: str


DATASHEETS = (
    Datasheet(("H200",), "NVIDIA H200 SXM", {"float32": 67 * TF, "tf32": 495 * TF, "bfloat16": 989 * TF,
              "float16": 989 * TF}, 4.8 * TB, "NVIDIA H200 Tensor Core GPU datasheet (dense figures: half the sparse ones)"),
    Datasheet(("H100", "PCIe"), "NVIDIA H100 PCIe", {"float32": 51 * TF, "tf32": 378 * TF, "bfloat16": 756 * TF,
              "float16": 756 * TF}, 2.0 * TB, "NVIDIA H100 Tensor Core GPU datasheet, PCIe column"),
    Datasheet(("H100",), "NVIDIA H100 SXM", {"float32": 67 * TF, "tf32": 495 * TF, "bfloat16": 989 * TF,
              "float16": 989 * TF}, 3.35 * TB, "NVIDIA H100 Tensor Core GPU datasheet, SXM column"),
    Datasheet(("A100", "40GB"), "NVIDIA A100 40GB", {"float32": 19.5 * TF, "tf32": 156 * TF, "bfloat16": 312 * TF,
              "float16": 312 * TF}, 1.555 * TB, "NVIDIA A100 Tensor Core GPU datasheet"),
    Datasheet(("A100",), "NVIDIA A100 80GB", {"float32": 19.5 * TF, "tf32": 156 * TF, "bfloat16": 312 * TF,
              "float16": 312 * TF}, 2.039 * TB, "NVIDIA A100 Tensor Core GPU datasheet, 80GB SXM"),
    Datasheet(("L40S",), "NVIDIA L40S", {"float32": 91.6 * TF, "tf32": 183 * TF, "bfloat16": 362 * TF,
              "float16": 362 * TF}, 0.864 * TB, "NVIDIA L40S datasheet"),
    Datasheet(("L4",), "NVIDIA L4", {"float32": 30.3 * TF, "tf32": 60 * TF, "bfloat16": 121 * TF,
              "float16": 121 * TF}, 0.300 * TB, "NVIDIA L4 Tensor Core GPU datasheet"),
    Datasheet(("A10G",), "NVIDIA A10G", {"float32": 31.2 * TF, "tf32": 62.5 * TF, "bfloat16": 125 * TF,
              "float16": 125 * TF}, 0.600 * TB,
              "NVIDIA A10 datasheet (NVIDIA publishes no A10G sheet; AWS's variant runs at similar or lower clocks)"),
    Datasheet(("4090",), "NVIDIA GeForce RTX 4090", {"float32": 82.6 * TF, "bfloat16": 165.2 * TF,
              "float16": 165.2 * TF}, 1.008 * TB,
              "NVIDIA Ada Lovelace architecture whitepaper (tensor FLOPs with FP32 accumulate, dense)"),
)


@dataclass(frozen=True)
class Roof:
    """A device's peak dense FLOP/s (for one dtype) and memory bandwidth, and where they come from."""

    device: str
    dtype: str
    flops_per_s: float
    bytes_per_s: float
    source: str  # "datasheet: ..." or "measured"
    measured_at: str | None = None  # when (UTC, ISO 8601), for a measured roof
    spread: float | None = None  # (best - worst) / best of the rounds, the larger of FLOP/s and bandwidth
    load_average: float | None = None  # the machine's 1-minute load average before measuring

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from platform import machine, processor

    return f"cpu {processor() or machine()} x{torch.get_num_threads()} threads"


def datasheet(name: str, dtype: str) -> Roof | None:
    """The datasheet roof of a GPU by its name (None when unknown or without that dtype)."""
    for sheet in DATASHEETS:
        if all(part in name for part in sheet.match) and dtype in sheet.flops:
            return Roof(name, dtype, sheet.flops[dtype], sheet.bandwidth, f"datasheet: {sheet.source}")
    return None


def _time(fn: Any, device: torch.device, repeats: int) -> float:
    """The fastest of ``repeats`` calls, in seconds (synchronised on CUDA)."""
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def measure(device: torch.device, dtype: str = "float32") -> Roof:
    """Peak FLOP/s (a square matmul) and bandwidth (a copy: read + write) measured here."""
    cuda = device.type == "cuda"
    n = 8192 if cuda else 1024
    tdtype = getattr(torch, dtype)
    a = torch.randn(n, n, device=device, dtype=tdtype)
    b = torch.randn(n, n, device=device, dtype=tdtype)
    a @ b  # warm-up (and kernel selection)
    seconds = _time(lambda: a @ b, device, 5 if cuda else 3)
    flops = 2 * n**3 / seconds
    elements = (1 << 28 if cuda else 1 << 25) // 4  # 256 MiB on GPU, 32 MiB on CPU, in float32
    src = torch.empty(elements, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = _time(lambda: dst.copy_(src), device, 10 if cuda else 5)
    return Roof(device_name(device), dtype, flops, 2 * src.numel() * src.element_size() / seconds, "measured")


ROUNDS = 3
MAX_SPREAD = 0.10


class NoisyRoof(RuntimeError):
    """A measurement whose rounds disagree by more than :data:`MAX_SPREAD` (a busy machine)."""

    def __init__(self, result: Roof) -> None:
        super().__init__(f"the roof's {ROUNDS} rounds disagree by {100 * (result.spread or 0):.0f}% (more than "
                         f"{100 * MAX_SPREAD:.0f}%): the machine is busy (load average {result.load_average}); "
                         "measure again when it is quiet")
        self.result = result


def measure_repeated(device: torch.device, dtype: str = "float32", rounds: int = ROUNDS) -> Roof:
    """The best of ``rounds`` measurements, with their spread, date and the load average."""
    load = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    results = [measure(device, dtype) for _ in range(rounds)]
    flops, rates = [r.flops_per_s for r in results], [r.bytes_per_s for r in results]
    spread = max((max(v) - min(v)) / max(v) for v in (flops, rates))
    return replace(results[0], flops_per_s=max(flops), bytes_per_s=max(rates), spread=round(spread, 4),
                   load_average=load, measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def cache_file() -> Path:
    return Path(os.environ.get("PHASETIME_CACHE", Path.home() / ".cache" / "phasetime")) / "roof.json"


def _key(device: torch.device, dtype: str) -> str:
    key = f"{device_name(device)} | {dtype} | torch {torch.__version__}"
    if device.type == "cpu":  # a CPU's roof grows with the threads torch may use
        key += f" | {torch.get_num_threads()} threads"
    return key


def _read_cache() -> dict[str, Any]:
    file = cache_file()
    try:
        cached = json.loads(file.read_text()) if file.exists() else {}
    except (OSError, ValueError):
        cached = {}
    return cached if isinstance(cached, dict) else {}


def cached_roof(device: torch.device, dtype: str) -> Roof | None:
    """The measured roof cached for this device, dtype, torch and thread count, if any."""
    entry = _read_cache().get(_key(device, dtype))
    if not isinstance(entry, dict):
        return None
    try:
        return Roof(**entry)
    except TypeError:  # a cache entry of another shape
        return None


def measure_and_cache(device: torch.device, dtype: str) -> Roof:
    """Measure (:func:`measure_repeated`) and cache the roof; :class:`NoisyRoof` (nothing cached)
    when its rounds disagree."""
    result = measure_repeated(device, dtype)
    if result.spread is not None and result.spread > MAX_SPREAD:
        raise NoisyRoof(result)
    cached = _read_cache()
    cached[_key(device, dtype)] = result.to_dict()
    try:
        cache_file().parent.mkdir(parents=True, exist_ok=True)
        cache_file().write_text(json.dumps(cached, indent=2))
    except OSError:
        pass  # a read-only home: measure again next time
    return result


def roof(device: torch.device, dtype: str, *, measured: bool = False) -> Roof:
    """The roof to judge utilisation against: the datasheet's for a known GPU unless ``measured``
    is asked for; else (and always on CPU) the cached measurement, or a new one. A new one
    on a busy machine is used for this run but not cached (its ``source`` says so)."""
    if not measured and device.type == "cuda":
        sheet = datasheet(device_name(device), dtype)
        if sheet is not None:
            return sheet
    found = cached_roof(device, dtype)
    if found is not None:
        return found
    try:
        return measure_and_cache(device, dtype)
    except NoisyRoof as exc:
        return replace(exc.result, source="measured on a busy machine (not cached)")
