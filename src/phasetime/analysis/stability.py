"""Is a cell's measurement stable enough to trust? One rule set, used during a run (warnings
as cells finish), by ``phasetime check`` (the ``stability`` check) and by the report (its
banner).

The rules start from pyperf's ``check`` and make them robust (docs/analysis.md, "Stability").
For the repeated calls of one sample in one cell:

* **fails** when the robust coefficient of variation, 1.4826 MAD / median, reaches
  ``cv_fail`` (20%): half the calls are then more than ~13.5% away from the median, and the
  median itself is not to be trusted;
* **warns** when the CV (stdev / mean) of the calls that are not outliers reaches ``cv_warn``
  (10%, pyperf's threshold), or when the median call is ``spread_warn`` (25%) or more above the
  fastest (stalls that hit most calls). pyperf applies its CV rule to all values, so that one
  stalled call (a page fault, a VM's hiccup) warns about a measurement whose median it does not
  move; here such calls are outliers (modified z-score above 3.5), named in the reasons and
  counted by the ``outliers_total_ms`` check, but they do not make the cell unstable;
* repeats: the calls needed for a 95% interval of the mean within +-``precision`` (5%),
  n = (1.96 CV / precision)^2, are reported (``needed``; the ``enough_repeats`` check warns);
* the machine: other processes using more CPU during the run than the CPUs the run left
  free (from the machine's and the run's own CPU time, before and after), a load average
  above the usable CPUs before or after the run, or more torch threads than physical cores
  warn. A CPU frequency governor other than ``performance`` and GPU clocks below their
  maximum are reported as advice, as pyperf's ``system tune`` would.

Pure functions over numbers and run.json dictionaries; no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)

from .stats import mad_zscores

JUDGED = ("total_ms", "tpot_ms")  # the phases whose spread is judged per cell
OUTLIER_Z = 3.5


@dataclass(frozen=True)
class Thresholds:
    cv_warn: float = 0.10
    cv_fail: float = 0.20
    spread_warn: float = 0.25
    precision: float = 0.05
    min_repeats: int = 3  # fewer calls than this: the spread is not judged

    def __post_init__(self) -> None:
        for name in ("cv_warn", "cv_fail", "spread_warn", "precision"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"stability threshold {name} must be a positive number, got {value!r}")
        if self.min_repeats < 2:
            raise ValueError("min_repeats must be at least 2")


@dataclass(frozen=True)
class Judgement:
    """The verdict on one group of repeated calls: pass, warn or fail, with the reasons."""

    n: int
    cv: float | None  # stdev / mean of the calls that are not outliers
    robust_cv: float | None  # 1.4826 MAD / median of all calls
    spread: float | None  # median / fastest - 1
    outliers: int
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
    if n < t.min_repeats:
        return Judgement(n, None, None, None, 0, None, "skip", (f"{n} calls (needs {t.min_repeats})",))
    median, fastest = float(np.median(x)), float(x.min())
    if median <= 0:  # the legacy method's clamped decode, say: nothing to judge a spread against
        return Judgement(n, None, None, None, 0, None, "skip", (f"median {what} is {median:g}",))
    robust_cv = 1.4826 * float(np.median(np.abs(x - median))) / median
    inliers = x[np.abs(mad_zscores(x)) <= OUTLIER_Z]
    cv = float(inliers.std(ddof=1) / inliers.mean()) if inliers.size >= 2 else 0.0
    spread = median / fastest - 1 if fastest > 0 else 0.0  # a zero fastest call: nothing to compare with
    reasons, verdict = [], "pass"
    if robust_cv >= t.cv_fail:
        reasons.append(f"robust CV of {what} {100 * robust_cv:.0f}% (fails from {100 * t.cv_fail:.0f}%)")
        verdict = "fail"
    if cv >= t.cv_warn:
        reasons.append(f"CV of {what} {100 * cv:.0f}% (warns from {100 * t.cv_warn:.0f}%)")
        verdict = verdict if verdict == "fail" else "warn"
    if spread >= t.spread_warn:
        reasons.append(f"median {what} {100 * spread:.0f}% above the fastest call")
        verdict = verdict if verdict == "fail" else "warn"
    outliers = n - int(inliers.size)
    if outliers and reasons:
        reasons.append(f"{outliers} outlier call(s)")
    return Judgement(n, cv, robust_cv, spread, outliers, needed_repeats(max(cv, robust_cv), t.precision), verdict,
                     tuple(reasons))


def other_work_cpus(run: dict[str, Any]) -> float | None:
    """CPUs other processes kept busy, on average, while the run measured (from the machine's
    and the run's own CPU time before and after it; None when either is missing)."""
    before = (run.get("conditions_before") or {}).get("cpu_seconds")
    after = (run.get("conditions_after") or {}).get("cpu_seconds")
    if not isinstance(before, dict) or not isinstance(after, dict):
        return None
    try:
        elapsed = after["monotonic_s"] - before["monotonic_s"]
        other = (after["machine_busy_s"] - before["machine_busy_s"]) - (after["process_s"] - before["process_s"])
    except (KeyError, TypeError):
        return None
    return max(0.0, other / elapsed) if elapsed > 0 else None


def sessions(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The run's sessions (the first run, then each ``--resume``), each with its own conditions
    before and after; a run.json from before sessions were recorded is one session."""
    found = run.get("sessions")
    if isinstance(found, list) and found:
        return [s for s in found if isinstance(s, dict)]
    return [{key: run[key] for key in ("conditions_before", "conditions_after") if key in run}]


def machine_warnings(run: dict[str, Any] | None) -> list[str]:
    """Warnings about the machine a run was measured on, from its run.json: each session (the
    first run and each resume) judged on its own conditions, a session that measured no cell not at all."""
    if not run:
        return []
    env = run.get("environment") or {}
    usable = env.get("usable_cpus") or env.get("logical_cpus")
    out = []
    local = (run.get("executor") or {}).get("executor") in (None, "local")
    threads = env.get("torch_threads") or 1
    found = sessions(run)
    for i, session in enumerate(found):
        if session.get("cells_measured") == 0:
            continue  # nothing was measured meanwhile: its conditions judge no number
        which = f" (session {i + 1} of {len(found)})" if len(found) > 1 else ""
        other = other_work_cpus(session) if local else None
        if other is not None and isinstance(usable, int) and other > max(usable - threads, 0) + 0.25:
            out.append(f"other processes kept {other:.1f} of {usable} CPUs busy while the run measured{which} (it "
                       f"needed {threads}): the calls competed for the CPU")
        for when in ("conditions_before", "conditions_after"):
            load = ((session.get(when) or {}).get("load_average") or [None])[0]
            if isinstance(load, (int, float)) and isinstance(usable, int) and load > usable:
                out.append(f"load average {load:.1f} {when.split('_')[1]} the run{which} exceeds the {usable} usable "
                           "CPUs: other work competed with the measured calls")
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
    (the group's keys, the phase, the judgement). The unit is the call: a batch's rows count
    once, as their mean; rows of the
    legacy subtraction method are left out (their spread is the method's, not the machine's), and
    so are the requests of a load (``rate``: their spread is the queueing the load causes, what
    :mod:`.load` reports, not noise)."""
    from ..results.tables import call_ids, call_means, floats, group_indices

    keys = [k for k in ("cell", "max_new_tokens", "sample_id") if k in table.column_names]
    # only the columns judged (a big run's list columns would be copied by the filter for nothing)
    table = table.select([c for c in (*keys, "call_id", "method", "rate", *JUDGED) if c in table.column_names])
    if "method" in table.column_names:  # the legacy baseline's spread is not a measurement's
        table = table.filter(pa.compute.equal(table.column("method"), "direct"))
    if "rate" in table.column_names and table.column("rate").null_count < table.num_rows:
        table = table.filter(pa.compute.is_null(table.column("rate")))
    calls = call_ids(table)
    columns = {phase: floats(table, phase) for phase in JUDGED}
    out = []
    for group, idx in group_indices(table, keys).items():
        scope = dict(zip(keys, group))
        for phase in JUDGED:
            # the unit is the call: a batch's rows are one call (a per-sequence phase: their mean)
            values = call_means(columns[phase][idx], calls[idx])
            if np.isfinite(values).sum() >= 2:
                out.append((scope, phase, judge(values, t, phase)))
    return out


def table_warnings(table: Any, t: Thresholds = Thresholds(), label: str = "") -> list[str]:
    """One line per group and phase that does not pass (the run's live warnings)."""
    lines = []
    for scope, _, j in judge_table(table, t):
        if j.verdict in ("warn", "fail"):
            if label:
                sample = scope.get("sample_id")
                where = label + (f" sample {sample}" if sample not in (None, "synthetic") else "")
            else:
                where = ", ".join(f"{k}={v}" for k, v in scope.items())
            lines.append(f"{where}: {'; '.join(j.reasons)}")
    return lines
