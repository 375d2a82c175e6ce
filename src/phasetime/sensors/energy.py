"""Energy per phase from the GPU's energy counter (NVML), read at phase boundaries.

A model split over several GPUs reads every GPU's counter at each boundary, summed.

NVML's total-energy counter (millijoules since the driver loaded) is read at the call's start
and end, at the start and end of every vision span, at the start and end of the prefill and at
the start of the decode: a handful of reads per call, never one per decode step (unless
vision re-runs in every step: then its spans are read too, so that its energy is vision's,
as its time is). Each read
follows a device synchronisation, so that the counter has seen the phase's work: this is the
only sensor that synchronises inside a call, which is why it is off unless asked for
(``--energy``), and why its calls' timings should not be mixed with those of runs without it.

The counter advances in steps (every few tens of milliseconds on current GPUs); the sensor
measures that interval once (``energy_interval_ms``) and names the phases shorter than two
intervals in ``energy_coarse``: their energy is a count of counter steps, not a measurement.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .gpu_id import nvml_handle
from ..core.boundaries import Boundary
from .base import SensorColumn

if TYPE_CHECKING:
    import torch

ENERGY_COLUMNS = (
    SensorColumn("energy_vision_j", "J", "GPU energy during vision (NVML counter; every GPU of the model, summed)"),
    SensorColumn("energy_prefill_j", "J", "GPU energy during prefill, without nested vision"),
    SensorColumn("energy_decode_j", "J", "GPU energy during decode"),
    SensorColumn("energy_total_j", "J", "GPU energy of the whole call"),
    SensorColumn("energy_per_token_j", "J", "decode energy per output token: energy_decode_j / (N - 1), the decode steps "
                 "(a step of a batch makes one token per sequence)"),
    SensorColumn("energy_interval_ms", "ms", "how often the GPU's energy counter advances"),
    SensorColumn("energy_coarse", "", "phases shorter than two counter intervals (their energy is coarse)", "str"),
    SensorColumn("sensor_syncs", "", "device synchronisations a sensor made inside the call (the energy sensor's, at "
                 "phase boundaries): such calls' timings are not comparable with calls made without them", "int"),
)


def _nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        from ..core.errors import UsageError

        raise UsageError("--energy needs NVML's Python bindings: pip install nvidia-ml-py") from None
    pynvml.nvmlInit()
    return pynvml


class EnergySensor:
    """See the module docstring. ``nvml`` stands in for the ``pynvml`` module (tests use a fake)."""

    name = "energy"
    columns = ENERGY_COLUMNS

    def __init__(self, device: "torch.device | Sequence[torch.device]", nvml: Any = None, interval_ms: float | None = None,
                 now: Callable[[], float] = time.perf_counter) -> None:
        import torch

        self.torch = torch
        self.nvml = nvml if nvml is not None else _nvml()
        self.now = now  # seconds; a test's virtual clock stands in for the real one
        # several devices: a model split over GPUs (device_map); their energies are summed
        self.devices = [device] if isinstance(device, torch.device) else list(device)
        indices = [d.index if d.index is not None else (torch.cuda.current_device() if d.type == "cuda" else 0)
                   for d in self.devices]
        # by UUID: torch's index is not NVML's (CUDA_VISIBLE_DEVICES)
        self.handles = [nvml_handle(self.nvml, index) for index in indices]
        self.handle = self.handles[0]
        self.cuda = any(d.type == "cuda" for d in self.devices)
        self.device = self.devices[0]
        self.interval_ms = interval_ms if interval_ms is not None else self._interval_ms()
        self.reads: dict[str, tuple[float, float]] = {}
        self.start(0)

    def _read(self) -> tuple[float, float]:
        """(joules, seconds) now, after the device has finished its queued work."""
        for device in self.devices:
            if device.type == "cuda":
                self.torch.cuda.synchronize(device)
        joules = sum(self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self.handles) / 1000.0
        return joules, self.now()

    def _interval_ms(self, timeout_s: float = 1.0) -> float | None:
        """Time between two advances of the counter (None when it did not advance twice)."""
        start = time.perf_counter()
        changes: list[float] = []
        last = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
        while len(changes) < 2 and time.perf_counter() - start < timeout_s:
            value = self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle)
            if value != last:
                changes.append(time.perf_counter())
                last = value
            time.sleep(0.0005)
        return 1000 * (changes[1] - changes[0]) if len(changes) == 2 else None

    def start(self, prompt_tokens: int) -> None:
        self.reads = {}
        self.visions: list[tuple[tuple[float, float], tuple[float, float]]] = []  # every vision span's reads
        self.vision_open: tuple[float, float] | None = None
        self.decode_steps = 0

    def _once(self, key: str) -> None:
        if key not in self.reads:
            self.reads[key] = self._read()

    def sample(self, boundary: "Boundary", output: Any = None) -> None:
        kind = boundary.kind
        if kind in ("call_start", "call_end"):
            self._once(kind)
        elif kind == "vision_start" and boundary.after == "vision" and self.vision_open is None:
            self.vision_open = self._read()
        elif kind == "vision_end" and boundary.after != "vision" and self.vision_open is not None:
            self.visions.append((self.vision_open, self._read()))
            self.vision_open = None
        elif kind == "forward_start":
            self._once("prefill_start" if boundary.forward == "prefill" else "decode_start")
            self.decode_steps += boundary.forward == "decode"
        elif kind == "forward_end" and boundary.ends_prefill:
            self._once("prefill_end")

    def _span(self, a: str, b: str) -> tuple[float, float] | None:
        if a in self.reads and b in self.reads:
            return _between(self.reads[a], self.reads[b])
        return None

    def _vision_within(self, span: tuple[str, str]) -> tuple[float, float]:
        """Energy and time of the vision spans inside the reads ``span`` (nested vision)."""
        if span[0] not in self.reads or span[1] not in self.reads:
            return 0.0, 0.0
        lo, hi = self.reads[span[0]][1], self.reads[span[1]][1]
        inside = [_between(a, b) for a, b in self.visions if lo <= a[1] and b[1] <= hi]
        return sum(j for j, _ in inside), sum(ms for _, ms in inside)

    def finish(self, prompt_tokens: int) -> dict[str, Any]:
        """Energy per phase, by derive's rule: vision is every vision span; prefill and decode
        leave out the vision nested in them (5.17 encodes inside the prefill forward; a model
        re-encoding every step runs vision inside decode)."""
        visions = [_between(a, b) for a, b in self.visions]
        spans: dict[str, tuple[float, float] | None] = {
            "vision": (sum(j for j, _ in visions), sum(ms for _, ms in visions)) if visions else None,
            "prefill": self._span("prefill_start", "prefill_end"), "decode": self._span("decode_start", "call_end"),
            "total": self._span("call_start", "call_end")}
        for phase, keys in (("prefill", ("prefill_start", "prefill_end")), ("decode", ("decode_start", "call_end"))):
            got = spans[phase]
            if got is not None:
                nested = self._vision_within(keys)
                spans[phase] = (got[0] - nested[0], got[1] - nested[1])
        coarse = [p for p, s in spans.items() if s and self.interval_ms and s[1] < 2 * self.interval_ms]
        out: dict[str, Any] = {f"energy_{p}_j": (s[0] if s else None) for p, s in spans.items()}
        decode = spans["decode"]
        out["energy_per_token_j"] = decode[0] / self.decode_steps if decode and self.decode_steps else None
        out["energy_interval_ms"] = self.interval_ms
        out["energy_coarse"] = ",".join(coarse) or None
        out["sensor_syncs"] = (len(self.reads) + 2 * len(self.visions)) if self.cuda else 0
        return out


def _between(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    """(joules, ms) from read ``a`` to read ``b``."""
    return b[0] - a[0], 1000 * (b[1] - a[1])
