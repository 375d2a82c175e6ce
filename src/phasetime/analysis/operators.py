"""What each phase spends its time on, from a run's profiled calls (``profiles.parquet``).

:func:`phase_ops` sums the rows of every profiled call of a model per phase and divides by the
calls: per call, each phase's time, its top operators (or kernels) by self time with their
shares, the rest of the operators together, and the part no operator covers (host gaps:
Python, generate()'s bookkeeping, launch latency). On a GPU it also gives the kernels' busy
time against the phase's wall time: a decode step whose kernels fill a fifth of it is
launch-bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..core.operators import UNCOVERED, on_device

ORDER = ("vision", "audio", "prefill", "draft", "decode", "other")


@dataclass
class PhaseOps:
    """One model's phase, per profiled call (means over its ``calls``)."""

    model: str
    phase: str
    calls: int
    phase_ms: float
    windows: float  # per call: decode steps, vision calls, ...
    top: list[tuple[str, float]] = field(default_factory=list)  # (name, self ms)
    rest_ms: float = 0.0  # the other operators' self time
    uncovered_ms: float = 0.0  # no operator running
    kernel_ms: float | None = None  # GPU: the kernels' busy time (their union) in the phase
    device_ms: float | None = None  # GPU: the phase's wall time on the device

    @property
    def operators_ms(self) -> float:
        """The operators' self time in the phase (the top ones and the rest)."""
        return sum(ms for _, ms in self.top) + self.rest_ms

    def share(self, ms: float) -> float:
        return ms / self.phase_ms if self.phase_ms > 0 else 0.0


def _sums(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        acc = out.setdefault((r["model"], r["phase"]), {"calls": set(), "host": {}, "device": {}, "names": {},
                                                         "uncovered": 0.0, "kernel_gap": 0.0, "kernels": False})
        acc["calls"].add(r["call_id"])
        where = "device" if on_device(r["kind"], r["name"]) else "host"
        acc[where][(r["call_id"], r["step"], r["start_ms"])] = r["window_ms"]
        if r["kind"] == "operator":
            acc["names"][r["name"]] = acc["names"].get(r["name"], 0.0) + r["self_ms"]
        elif r["kind"] == "kernel":
            acc["kernels"] = True
        elif r["name"] == UNCOVERED["operator"]:
            acc["uncovered"] += r["self_ms"]
        else:
            acc["kernel_gap"] += r["self_ms"]
    return out


def phase_ops(profiles: pa.Table, top: int = 5) -> list[PhaseOps]:
    """Per model and phase, what a profiled call spent (see the module docstring)."""
    out = []
    for (model, phase), acc in _sums(profiles.to_pylist()).items():
        n = len(acc["calls"])
        host_ms = sum(acc["host"].values()) / n
        names = sorted(acc["names"].items(), key=lambda kv: -kv[1])
        shown = [(name, ms / n) for name, ms in names[:top]]
        item = PhaseOps(model, phase, n, host_ms, len(acc["host"]) / n, shown,
                        rest_ms=sum(ms for _, ms in names[top:]) / n, uncovered_ms=acc["uncovered"] / n)
        if acc["kernels"]:
            item.device_ms = sum(acc["device"].values()) / n
            item.kernel_ms = item.device_ms - acc["kernel_gap"] / n
        out.append(item)
    return sorted(out, key=lambda p: (p.model, ORDER.index(p.phase) if p.phase in ORDER else len(ORDER)))
