"""Comparisons: direct vs legacy subtraction on one run, and run A vs run B by cell.

Pure functions over result tables; ``phasetime compare`` prints what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..core.errors import UsageError
from .stats import benjamini_hochberg, cv, geometric_mean, holm, mann_whitney_u, median, median_draws, t_quantile
from ..results.schema import AXES, SUMMARY_PHASES
from ..results.tables import call_ids, call_means, floats, group_indices, strings
from .length import judge_configs

PARAM_COLUMNS = AXES
# the server's phases are SUMMARY_PHASES; a load's rows add what the client saw (the others' are null)
COMPARED_PHASES = SUMMARY_PHASES + ("client_ttft_ms", "client_tpot_ms", "client_e2e_ms")


# --- direct vs subtract ------------------------------------------------------------------------
def compare_methods(table: pa.Table) -> dict[str, Any]:
    """The "before / after" of the legacy method on one run made with ``--method both``.

    Returns ``phases`` (per phase: median direct, median subtract, median over matched
    cells of the per-cell difference subtract - direct), ``zero_decode`` (per method, over
    calls with N >= 2: the share with decode <= 0, and the share negative before clamping),
    ``correlation`` (per method, denominator and configuration: the length effect of the
    per-token latency over cells, :mod:`.length`: the change from the shortest to the
    longest output as a share of the mean, with its 95% CI, and Spearman's rho over cells) and ``spread`` (median
    over cells of the CV between calls of decode_ms and of the per-token latency).
    """
    methods = set(table.column("method").to_pylist()) if table.num_rows else set()
    if not {"direct", "subtract"} <= methods:
        raise UsageError(f"--methods needs a run with both methods (--method both); this one has {sorted(methods)}")
    method = strings(table, "method")
    keys = [c for c in PARAM_COLUMNS if c in table.column_names and c != "method"]
    cells = group_indices(table, keys)
    correlation = [{"method": j.method, "scope": j.scope, "cells": j.cells, "calls": j.calls, "how": j.how,
                    "change": j.effect, "ci": j.ci, "verdict": j.verdict, "detail": j.describe()}
                   for j in judge_configs(table)]
    return {"phases": _phase_medians(table, method, cells), "zero_decode": _zero_decode(table, method),
            "correlation": correlation, "spread": _spread(table, method, cells)}


def _phase_medians(table: pa.Table, method: np.ndarray, cells: dict[Any, np.ndarray]) -> list[dict[str, Any]]:
    """Per phase: each method's median, and the median over cells of subtract - direct."""
    phases = []
    for phase in COMPARED_PHASES:
        values = floats(table, phase)
        diffs = []
        for idx in cells.values():
            a = median(values[idx][method[idx] == "direct"])
            b = median(values[idx][method[idx] == "subtract"])
            if a is not None and b is not None:
                diffs.append(b - a)
        phases.append({
            "phase": phase,
            "direct_median": median(values[method == "direct"]),
            "subtract_median": median(values[method == "subtract"]),
            "median_difference": median(diffs),
            "cells": len(diffs),
        })
    return phases


def _zero_decode(table: pa.Table, method: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per method, over calls with N >= 2 (a batch's rows are one call: it counts when any of its
    sequences does): the share with decode <= 0, and the share negative before the clamp."""
    n, decode, other = floats(table, "output_tokens"), floats(table, "decode_ms"), floats(table, "other_ms")
    calls = call_ids(table)
    zero = {}
    for m in ("direct", "subtract"):
        # Zero decode is a failure only where a decode exists: N = 1 has none (its one token
        # comes out of prefill), so only calls with N >= 2 count, for both methods.
        sel = (method == m) & (n >= 2)
        total = int(np.unique(calls[sel]).size)
        # decode + other is total - vision - prefill: negative exactly where the clamp hid it
        clamped = np.unique(calls[sel & ((decode + other) < 0)]).size
        zero[m] = {
            "calls_with_tokens": total,
            "decode_zero_share": np.unique(calls[sel & ~(decode > 0)]).size / total if total else None,
            "negative_before_clamp_share": clamped / total if total else None,
        }
    return zero


def _spread(table: pa.Table, method: np.ndarray, cells: dict[Any, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Per method: the median over cells of the CV between calls of decode_ms and of the per-token latency."""
    decode, tpot, calls = floats(table, "decode_ms"), floats(table, "tpot_ms"), call_ids(table)
    spread = {}
    for m in ("direct", "subtract"):
        cvs_decode, cvs_token = [], []
        for idx in cells.values():
            sel = idx[method[idx] == m]  # unit: the call
            cvs_decode.append(cv(call_means(decode[sel], calls[sel])))
            cvs_token.append(cv(call_means(tpot[sel], calls[sel])))
        spread[m] = {"decode_cv_median": median(cvs_decode), "tpot_cv_median": median(cvs_token)}
    return spread


# --- run A vs run B ---------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseComparison:
    cell: str
    phase: str
    median_a: float | None
    median_b: float | None
    ratio: float | None  # median_b / median_a
    ci: tuple[float, float] | None
    p_value: float | None
    verdict: str  # "faster", "slower", "not significant", "-"
    p_adjusted: float | None = None  # over every cell and phase of the table (Holm or Benjamini-Hochberg)


def sync_mismatch(a: pa.Table, b: pa.Table) -> str | None:
    """Why two runs' timings should not be compared: one's sensors synchronised the device
    inside its calls (``--energy`` on CUDA), the other's did not. None when they agree."""
    def syncs(t: pa.Table) -> bool:
        return "sensor_syncs" in t.column_names and bool(np.nan_to_num(floats(t, "sensor_syncs")).max(initial=0) > 0)

    sa, sb = syncs(a), syncs(b)
    if sa == sb:
        return None
    which = "A" if sa else "B"
    return (f"run {which}'s sensors synchronised the device inside its calls (--energy) and the other run's did not: "
            "its phases include those waits, so a difference between the runs may be the sensor's, not the setup's")


def match_keys(a: pa.Table, b: pa.Table) -> list[str]:
    """Parameters to match cells on: those both runs have, except ones that are constant
    within each run but differ between them (what is being compared, e.g. the GPU's dtype)."""
    import pyarrow.compute as pc

    keys = []
    for c in PARAM_COLUMNS:
        if c not in a.column_names or c not in b.column_names:
            continue
        va, vb = set(pc.unique(a.column(c)).to_pylist()), set(pc.unique(b.column(c)).to_pylist())
        if len(va) == 1 and len(vb) == 1 and va != vb:
            continue
        keys.append(c)
    return keys


def _ratio(x: np.ndarray, y: np.ndarray) -> float | None:
    mx = np.median(x)
    return float(np.median(y) / mx) if mx > 0 else None


def _ratio_ci(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator,
              level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of median(y) / median(x), the two samples resampled on
    their own (full size; the medians drawn from their order statistics, :func:`median_draws`)."""
    if x.size < 2 or y.size < 2:
        return None
    dx, dy = median_draws(x, n_boot, rng), median_draws(y, n_boot, rng)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = dy / dx
    ratios = ratios[np.isfinite(ratios)]
    if ratios.size < n_boot // 2:
        return None
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


CORRECTIONS = ("holm", "bh")


def compare_runs(
    a: pa.Table, b: pa.Table, *, on: list[str] | None = None, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
    correction: str = "holm",
) -> tuple[list[str], list[PhaseComparison]]:
    """The headline first, then per matched cell and phase: medians, ratio B/A with a bootstrap
    95% CI, Mann-Whitney p, and p adjusted over the whole table.

    The first rows (cell ``"geometric mean"``) summarise each phase over the matched cells, with
    a 95% interval over cells (a t interval of the log ratios: the cell is the unit there): the
    answer to "is B faster than A". Within a cell the unit is the call (a batch's rows are
    reduced to their mean first). A cell's difference counts ("faster"/"slower") only when its
    p, adjusted over every cell and phase tested (``correction``: ``holm`` controls the
    family-wise error, ``bh`` the false discovery rate), is below ``alpha`` and its CI excludes 1:
    a table of many cells no longer names some "faster" by chance.
    """
    if correction not in CORRECTIONS:
        raise UsageError(f"--correction must be one of {', '.join(CORRECTIONS)}, got {correction!r}")
    keys = on if on is not None else match_keys(a, b)
    for k in keys:
        if k not in a.column_names or k not in b.column_names:
            raise UsageError(f"cannot match on {k!r}: not a column of both runs")
    groups_a, groups_b = group_indices(a, keys), group_indices(b, keys)
    common = [k for k in groups_a if k in groups_b]
    if not common:
        raise UsageError(f"no configuration cell appears in both runs (matched on {', '.join(keys) or 'nothing'})")
    varying = [k for k in range(len(keys)) if len({c[k] for c in common}) > 1]
    # within a cell the unit is the call: a batch's rows are one call (their mean)
    per_call_a = {phase: (floats(a, phase), call_ids(a)) for phase in COMPARED_PHASES}
    per_call_b = {phase: (floats(b, phase), call_ids(b)) for phase in COMPARED_PHASES}
    rng = np.random.default_rng(seed)
    results = []
    for cell in common:
        label = ", ".join(f"{keys[k]}={cell[k]}" for k in varying) or "all"
        ia, ib = groups_a[cell], groups_b[cell]
        for phase in COMPARED_PHASES:
            (va, ca), (vb, cb) = per_call_a[phase], per_call_b[phase]
            found = _compare_cell(label, phase, call_means(va[ia], ca[ia]), call_means(vb[ib], cb[ib]), n_boot, rng)
            if found is not None:
                results.append(found)
    return keys, _geometric_means(results) + _adjusted(results, alpha, correction)


def _adjusted(results: list[PhaseComparison], alpha: float, correction: str) -> list[PhaseComparison]:
    """The cells' verdicts with their p adjusted over the whole table."""
    import dataclasses

    tested = [i for i, r in enumerate(results) if r.p_value is not None]
    adjust = holm if correction == "holm" else benjamini_hochberg
    adjusted = dict(zip(tested, adjust([results[i].p_value for i in tested]).tolist()))  # type: ignore[misc]
    out = []
    for i, r in enumerate(results):
        p = adjusted.get(i)
        if r.ratio is None or r.ci is None or p is None:
            verdict = "-"
        elif p < alpha and (r.ci[1] < 1 or r.ci[0] > 1):
            verdict = "faster" if r.ratio < 1 else "slower"
        else:
            verdict = "not significant"
        out.append(dataclasses.replace(r, p_adjusted=p, verdict=verdict))
    return out


def _compare_cell(label: str, phase: str, x: np.ndarray, y: np.ndarray, n_boot: int,
                  rng: np.random.Generator) -> PhaseComparison | None:
    """One cell's phase, run A's calls ``x`` against run B's ``y`` (None: a run has none); its
    verdict is given once every cell's p is known (:func:`_adjusted`)."""
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        return None
    ratio = _ratio(x, y)
    ci = _ratio_ci(x, y, n_boot, rng) if ratio is not None else None
    p = mann_whitney_u(x, y)[1] if x.size > 1 and y.size > 1 else None
    return PhaseComparison(label, phase, median(x), median(y), ratio, ci, p, "-")


def _geometric_means(results: list[PhaseComparison]) -> list[PhaseComparison]:
    """Each phase over the matched cells: the geometric mean ratio and its interval (unit: the cell)."""
    out = []
    for phase in COMPARED_PHASES:
        ratios = [r.ratio for r in results if r.phase == phase and r.ratio is not None and r.ratio > 0]
        if ratios:
            ci = _over_cells(ratios)
            gm = geometric_mean(ratios)
            if ci is None:
                verdict = f"over {len(ratios)} cell (no interval)"
            elif ci[1] < 1 or ci[0] > 1:
                verdict = f"{'faster' if ci[1] < 1 else 'slower'} over {len(ratios)} cells (unit: cell)"
            else:
                verdict = f"not significant over {len(ratios)} cells (unit: cell)"
            out.append(PhaseComparison("geometric mean", phase, None, None, gm, ci, None, verdict))
    return out


def _over_cells(ratios: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """The ``level`` interval of the geometric mean ratio, the cell as the unit: a t interval
    of the cells' log ratios (None with one cell)."""
    logs = np.log(np.asarray(ratios, dtype=float))
    if logs.size < 2:
        return None
    half = t_quantile(0.5 + level / 2, logs.size - 1) * float(logs.std(ddof=1)) / np.sqrt(logs.size)
    return float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half))
