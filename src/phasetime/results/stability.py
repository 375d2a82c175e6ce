"""Is a cell's measurement stable enough to trust? One rule set, used during a run (warnings
as cells finish), by ``phasetime check`` (the ``stability`` check) and by the report (its
banner).

The rules follow pyperf's ``check`` and go further (docs/analysis.md, "Stability"):

* spread: the coefficient of variation (sample stdev / mean) of the repeated calls of one
  sample in one cell warns from ``cv_warn`` (10%, pyperf's threshold) and fails from
  ``cv_fail`` (25%: a 95% interval of the mean of 5 calls is then about +-30% wide);
* stalls: the median call more than ``spread_warn`` (25%) slower than the fastest one
  (pyperf looks at the extremes: a maximum 50% above the mean warns there, and here);
* repeats: fewer calls than needed for a 95% interval of the mean within +-``precision``
  (5%), n = (1.96 CV / precision)^2, is reported (``needed``; the ``enough_repeats`` check
  warns), not counted against the cell's stability;
* the machine: a load average above the usable CPUs, before or after the run, warns; so do
  more torch threads than physical cores. A CPU frequency governor other than
  ``performance`` and GPU clocks below their maximum are reported as advice, as pyperf's
  ``system tune`` would.

Pure functions over numbers and run.json dictionaries; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

JUDGED = ("total_ms", "tpot_ms")  # the phases whose spread is judged per cell


@dataclass(frozen=True)
class Thresholds:
    cv_warn: float = 0.10
    cv_fail: float = 0.25
    spread_warn: float = 0.25
    max_warn: float = 0.50
    precision: float = 0.05
    min_repeats: int = 3  # fewer calls than this: the spread is not judged

    def __post_init__(self) -> None:
        for name in ("cv_warn", "cv_fail", "spread_warn", "max_warn", "precision"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"stability threshold {name} must be a positive number, got {value!r}")
        if self.cv_fail < self.cv_warn:
            raise ValueError("the stability failure threshold must not be below the warning threshold")
        if self.min_repeats < 2:
            raise ValueError("min_repeats must be at least 2")


@dataclass(frozen=True)
class Judgement:
    """The verdict on one group of repeated calls: pass, warn or fail, with the reasons."""

    n: int
    cv: float | None
    spread: float | None  # median / fastest - 1
    max_excess: float | None  # max / mean - 1
    needed: int | None  # repeats for the asked precision
    verdict: str
    reasons: tuple[str, ...] = field(default_factory=tuple)


def needed_repeats(cv: float, precision: float) -> int:
    """Calls needed for a 95% interval of the mean within +-precision (normal approximation)."""
    return max(2, math.ceil((1.96 * cv / precision) ** 2))


def judge(values: Sequence[float] | np.ndarray, t: Thresholds = Thresholds(), what: str = "total_ms") -> Judgement:
    """Judge the repeated calls of one sample in one cell (missing values ignored)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n < t.min_repeats or x.mean() <= 0:
        return Judgement(n, None, None, None, None, "skip", (f"{n} calls (needs {t.min_repeats})",))
    mean = float(x.mean())
    cv = float(x.std(ddof=1) / mean)
    fastest, median = float(x.min()), float(np.median(x))
    spread = median / fastest - 1 if fastest > 0 else math.inf
    max_excess = float(x.max()) / mean - 1
    needed = needed_repeats(cv, t.precision)
    reasons, verdict = [], "pass"
    if cv >= t.cv_fail:
        reasons.append(f"CV of {what} {100 * cv:.0f}% (fails from {100 * t.cv_fail:.0f}%)")
        verdict = "fail"
    elif cv >= t.cv_warn:
        reasons.append(f"CV of {what} {100 * cv:.0f}% (warns from {100 * t.cv_warn:.0f}%)")
        verdict = "warn"
    if spread >= t.spread_warn:
        reasons.append(f"median {what} {100 * spread:.0f}% above the fastest call")
        verdict = verdict if verdict == "fail" else "warn"
    if max_excess >= t.max_warn:
        reasons.append(f"slowest {what} {100 * max_excess:.0f}% above the mean")
        verdict = verdict if verdict == "fail" else "warn"
    return Judgement(n, cv, spread, max_excess, needed, verdict, tuple(reasons))


def machine_warnings(run: dict[str, Any] | None) -> list[str]:
    """Warnings about the machine a run was measured on, from its run.json."""
    if not run:
        return []
    env = run.get("environment") or {}
    usable = env.get("usable_cpus") or env.get("logical_cpus")
    out = []
    for when in ("conditions_before", "conditions_after"):
        load = ((run.get(when) or {}).get("load_average") or [None])[0]
        if isinstance(load, (int, float)) and isinstance(usable, int) and load > usable:
            out.append(f"load average {load:.1f} {when.split('_')[1]} the run exceeds the {usable} usable CPUs: "
                       "other work competed with the measured calls")
    threads, physical = env.get("torch_threads"), env.get("physical_cpus")
    if isinstance(threads, int) and isinstance(physical, int) and threads > physical:
        out.append(f"torch used {threads} threads on {physical} physical cores: threads compete with each other "
                   "(--threads 1 gives steadier numbers on CPU)")
    return out


def machine_advice(run: dict[str, Any] | None) -> list[str]:
    """What would make the machine steadier (pyperf's 'system tune' advice, for phasetime)."""
    if not run:
        return []
    env = run.get("environment") or {}
    out = []
    governor = env.get("cpu_governor")
    if governor and governor != "performance":
        out.append(f"CPU frequency governor is {governor!r}: 'performance' keeps the clock steady")
    gpu = ((run.get("conditions_before") or {}).get("gpu")) or {}
    sm, top = gpu.get("clocks.sm"), gpu.get("clocks.max.sm")
    if sm and top and sm != top:
        out.append(f"GPU SM clock {sm} MHz below its maximum {top} MHz at the start: lock it (nvidia-smi -lgc)")
    others = gpu.get("other_processes")
    if others:
        out.append(f"{len(others)} other process(es) on the GPU at the start: {', '.join(others[:3])}")
    return out


def judge_table(table: Any, t: Thresholds = Thresholds()) -> list[tuple[dict[str, Any], str, Judgement]]:
    """Every (cell, sample) group of a results table judged on each phase of :data:`JUDGED`:
    (the group's keys, the phase, the judgement). Rows of one call count once."""
    from .tables import floats, group_indices

    keys = [k for k in ("cell", "method", "max_new_tokens", "sample_id") if k in table.column_names]
    first = floats(table, "sequence") == 0 if "sequence" in table.column_names else np.ones(table.num_rows, bool)
    columns = {phase: floats(table, phase) for phase in JUDGED}
    out = []
    for group, idx in group_indices(table, keys).items():
        scope = dict(zip(keys, group))
        for phase in JUDGED:
            # a call-level phase once per call; a per-sequence one for every sequence
            rows = idx[first[idx]] if phase == "total_ms" else idx
            values = columns[phase][rows]
            if np.isfinite(values).sum() >= 2:
                out.append((scope, phase, judge(values, t, phase)))
    return out


def table_warnings(table: Any, t: Thresholds = Thresholds(), label: str = "") -> list[str]:
    """One line per group and phase that does not pass (the run's live warnings)."""
    lines = []
    for scope, _, j in judge_table(table, t):
        if j.verdict in ("warn", "fail"):
            where = label or ", ".join(f"{k}={v}" for k, v in scope.items())
            sample = f" sample {scope['sample_id']}" if scope.get("sample_id") not in (None, "synthetic") else ""
            lines.append(f"{where}{sample}: {'; '.join(j.reasons)}")
    return lines
