"""Energy per phase from the GPU's energy counter (NVML), read at phase boundaries.

A model split over several GPUs reads every GPU's counter at each boundary, summed.

NVML's total-energy counter (millijoules since the driver loaded) is read at the call's start
and end, at the first and last boundary of vision, at the start and end of the prefill and at
the start of the decode: a handful of reads per call, never one per decode step. Each read
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
from .phases import PromptCounter
from .sensors import SensorColumn

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
        from .errors import UsageError

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
        self.counter = PromptCounter(0)
        self.decode_steps = 0

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
        self.counter = PromptCounter(prompt_tokens)
        self.decode_steps = 0

    def _once(self, key: str, last: bool = False) -> None:
        if last or key not in self.reads:
            self.reads[key] = self._read()

    def sample(self, kind: str, tokens: int | None = None, output: Any = None) -> None:
        if kind == "call_start":
            self._once("call_start")
        elif kind == "call_end":
            self._once("call_end")
        elif kind == "vision_start":
            self._once("vision_start")
        elif kind == "vision_end":
            self._once("vision_end", last=True)
        elif kind == "forward_start":
            prefill = self.counter.feed(tokens or 0)
            self._once("prefill_start" if prefill else "decode_start")
            self.decode_steps += 0 if prefill else 1
            self._prefill_ending = prefill and self.counter.consumed >= self.counter.prompt_tokens
        elif kind == "forward_end" and getattr(self, "_prefill_ending", False):
            self._once("prefill_end")
            self._prefill_ending = False

    def _span(self, a: str, b: str) -> tuple[float, float] | None:
        if a in self.reads and b in self.reads:
            (ja, ta), (jb, tb) = self.reads[a], self.reads[b]
            return jb - ja, 1000 * (tb - ta)
        return None

    def finish(self, prompt_tokens: int) -> dict[str, Any]:
        spans = {"vision": self._span("vision_start", "vision_end"), "prefill": self._span("prefill_start", "prefill_end"),
                 "decode": self._span("decode_start", "call_end"), "total": self._span("call_start", "call_end")}
        vision, prefill = spans["vision"], spans["prefill"]
        if vision and prefill and self.reads["vision_start"][1] >= self.reads["prefill_start"][1]:
            prefill = (prefill[0] - vision[0], prefill[1] - vision[1])  # vision nested in the prefill forward
            spans["prefill"] = prefill
        coarse = [p for p, s in spans.items() if s and self.interval_ms and s[1] < 2 * self.interval_ms]
        out: dict[str, Any] = {f"energy_{p}_j": (s[0] if s else None) for p, s in spans.items()}
        decode = spans["decode"]
        out["energy_per_token_j"] = decode[0] / self.decode_steps if decode and self.decode_steps else None
        out["energy_interval_ms"] = self.interval_ms
        out["energy_coarse"] = ",".join(coarse) or None
        out["sensor_syncs"] = len(self.reads) if self.cuda else 0
        return out
