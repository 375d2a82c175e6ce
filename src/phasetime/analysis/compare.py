"""Comparisons: direct vs legacy subtraction on one run, and run A vs run B by cell.

Pure functions over result tables; ``phasetime compare`` prints what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from ..core.errors import UsageError
from ..core.stats import bootstrap_ci, cv, geometric_mean, mann_whitney_u, median, spearman
from ..results.schema import AXES, SUMMARY_PHASES
from ..results.tables import floats, group_indices, strings

PARAM_COLUMNS = AXES
COMPARED_PHASES = SUMMARY_PHASES
# Cells with more rows than this are bootstrapped m-out-of-n (see _stats.bootstrap_ci), so
# that comparing two runs of a million rows each stays within seconds.
RATIO_BOOTSTRAP_N = 500


# --- direct vs subtract ------------------------------------------------------------------------
def compare_methods(table: pa.Table) -> dict[str, Any]:
    """The "before / after" of the legacy method on one run made with ``--method both``.

    Returns ``phases`` (per phase: median direct, median subtract, median over matched
    cells of the per-cell difference subtract - direct), ``zero_decode`` (per method: the
    share of calls with tokens but decode <= 0, and for subtract the share negative before
    clamping), ``correlation`` (Spearman rho of per-token latency with output length under
    each method and denominator) and ``spread`` (median over cells of the CV of decode_ms
    and of the per-token latency).
    """
    methods = set(table.column("method").to_pylist()) if table.num_rows else set()
    if not {"direct", "subtract"} <= methods:
        raise UsageError(f"--methods needs a run with both methods (--method both); this one has {sorted(methods)}")
    method = strings(table, "method")
    n = floats(table, "output_tokens")
    decode, other = floats(table, "decode_ms"), floats(table, "other_ms")
    keys = [c for c in PARAM_COLUMNS if c in table.column_names and c != "method"]
    cells = group_indices(table, keys)

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

    zero = {}
    for m, min_tokens in (("direct", 2), ("subtract", 1)):
        sel = (method == m) & (n >= min_tokens)
        total = int(sel.sum())
        zero[m] = {
            "calls_with_tokens": total,
            "decode_zero_share": float((decode[sel] <= 0).mean()) if total else None,
            # decode + other is total - vision - prefill: negative exactly where the clamp hid it
            "negative_before_clamp_share": float(((decode + other)[sel] < 0).mean()) if total else None,
        }

    correlation = []
    for m in ("direct", "subtract"):
        for label, denominator in (("N - 1", n - 1), ("N", n)):
            sel = (method == m) & (denominator > 0) & np.isfinite(decode)
            per_token = decode[sel] / denominator[sel]
            correlation.append({"method": m, "denominator": label, "n": int(sel.sum()),
                                "rho": spearman(n[sel], per_token) if sel.sum() >= 2 else None})

    spread = {}
    tpot = floats(table, "tpot_ms")
    for m in ("direct", "subtract"):
        cvs_decode, cvs_token = [], []
        for idx in cells.values():
            sel = idx[method[idx] == m]
            cvs_decode.append(cv(decode[sel]))
            cvs_token.append(cv(tpot[sel]))
        spread[m] = {
            "decode_cv_median": median(cvs_decode),
            "tpot_cv_median": median(cvs_token),
        }
    return {"phases": phases, "zero_decode": zero, "correlation": correlation, "spread": spread}


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


def match_keys(a: pa.Table, b: pa.Table) -> list[str]:
    """Parameters to match cells on: those both runs have, except ones that are constant
    within each run but differ between them (what is being compared, e.g. the GPU's dtype)."""
    keys = []
    for c in PARAM_COLUMNS:
        if c not in a.column_names or c not in b.column_names:
            continue
        va, vb = set(a.column(c).to_pylist()), set(b.column(c).to_pylist())
        if len(va) == 1 and len(vb) == 1 and va != vb:
            continue
        keys.append(c)
    return keys


def _ratio(x: np.ndarray, y: np.ndarray) -> float | None:
    mx = np.median(x)
    return float(np.median(y) / mx) if mx > 0 else None


def _ratios(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Median ratio along the last axis (all bootstrap resamples at once)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.median(y, axis=-1) / np.median(x, axis=-1)


def compare_runs(
    a: pa.Table, b: pa.Table, *, on: list[str] | None = None, alpha: float = 0.05, n_boot: int = 1000, seed: int = 0,
) -> tuple[list[str], list[PhaseComparison]]:
    """Per matched cell and phase: medians, ratio B/A with a bootstrap 95% CI, Mann-Whitney p.

    A difference counts ("faster"/"slower") only when p < ``alpha`` and the CI excludes 1.
    The last rows (cell ``"geometric mean"``) summarise each phase over the matched cells.
    """
    keys = on if on is not None else match_keys(a, b)
    for k in keys:
        if k not in a.column_names or k not in b.column_names:
            raise UsageError(f"cannot match on {k!r}: not a column of both runs")
    groups_a, groups_b = group_indices(a, keys), group_indices(b, keys)
    common = [k for k in groups_a if k in groups_b]
    if not common:
        raise UsageError(f"no configuration cell appears in both runs (matched on {', '.join(keys) or 'nothing'})")
    varying = [k for k in range(len(keys)) if len({c[k] for c in common}) > 1]
    values_a = {phase: floats(a, phase) for phase in COMPARED_PHASES}
    values_b = {phase: floats(b, phase) for phase in COMPARED_PHASES}
    results = []
    for cell in common:
        label = ", ".join(f"{keys[k]}={cell[k]}" for k in varying) or "all"
        for phase in COMPARED_PHASES:
            x = values_a[phase][groups_a[cell]]
            y = values_b[phase][groups_b[cell]]
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            if x.size == 0 or y.size == 0:
                continue
            ratio = _ratio(x, y)
            ci = (bootstrap_ci(_ratios, [x, y], n_boot=n_boot, seed=seed, max_n=RATIO_BOOTSTRAP_N, vectorized=True)
                  if ratio is not None else None)
            p = mann_whitney_u(x, y)[1] if x.size > 1 and y.size > 1 else None
            if ratio is None or ci is None or p is None:
                verdict = "-"
            elif p < alpha and (ci[1] < 1 or ci[0] > 1):
                verdict = "faster" if ratio < 1 else "slower"
            else:
                verdict = "not significant"
            results.append(PhaseComparison(label, phase, median(x), median(y), ratio, ci, p, verdict))
    for phase in COMPARED_PHASES:
        ratios = [r.ratio for r in results if r.phase == phase and r.ratio is not None]
        if ratios:
            results.append(PhaseComparison("geometric mean", phase, None, None, geometric_mean(ratios), None, None,
                                           f"over {len(ratios)} cells"))
    return keys, results
