"""The run's hygiene (warm-up, locked GPU clocks) and what is physically impossible (a phase
above the device's roof): checks that read the run's conditions, not its timings' statistics."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from .verdicts import CheckResult


def utilization_checks(table: pa.Table) -> list[CheckResult]:
    """A phase that reads above the device's roof (utilisation > 1) is physically impossible:
    its timing, its cost model or the roof is wrong."""
    if "prefill_flops" not in table.column_names or table.column("prefill_flops").null_count == table.num_rows:
        return []
    from .summary import summarize

    worst, where = 0.0, ""
    for cell in summarize(table):
        for phase, t in cell.throughput.items():
            for name, value in (("compute", t.mfu), ("bandwidth", t.mbu)):
                if value is not None and value > worst:
                    worst, where = value, f"{phase} {name} in cell {cell.cell if cell.cell is not None else cell.params}"
    return [CheckResult("utilization", "per cell", round(worst, 3), "<= 1 (of the roof)", "fail" if worst > 1 else "pass",
                        f"highest: {where}" if where else "")]


def hygiene_checks(table: pa.Table, run_info: dict[str, Any] | None) -> list[CheckResult]:
    """Warm-up and locked GPU clocks."""
    out = []
    experiment = (run_info or {}).get("experiment") or {}
    warmup = experiment.get("warmup")
    if warmup is None:
        out.append(CheckResult("warmup", "run", None, ">= 1", "skip", "no run.json"))
    else:
        out.append(CheckResult("warmup", "run", warmup, ">= 1", "pass" if warmup >= 1 else "warn",
                               "" if warmup >= 1 else "no warm-up: first calls include one-off costs"))
    gpu = ((run_info or {}).get("conditions_before") or {}).get("gpu") or ((run_info or {}).get("environment") or {}).get("gpu") or {}
    if not gpu:
        out.append(CheckResult("clocks_locked", "run", None, "SM clock = max", "skip", "no GPU clocks recorded"))
    else:
        sm, top = gpu.get("clocks.sm"), gpu.get("clocks.max.sm")
        locked = sm is not None and sm == top
        out.append(CheckResult("clocks_locked", "run", f"{sm}/{top} MHz", "SM clock = max", "pass" if locked else "warn",
                               "" if locked else "clocks not locked at max: results may drift (nvidia-smi -lgc)"))
    return out
