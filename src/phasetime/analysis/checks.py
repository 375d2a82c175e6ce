"""Data-quality checks of a results table: the audit that found the legacy method's flaws.

:func:`run_checks` returns one :class:`CheckResult` per check and scope (a verdict of
``pass``, ``fail``, ``inconclusive``, ``warn``, ``skip`` or ``info``). Pure: no I/O; the thresholds are a
:class:`Thresholds` with documented defaults (``docs/analysis.md``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import UsageError
from .stats import cv, mad_zscores
from ..results.schema import AXES, SUMMARY_PHASES
from .stability import Thresholds as StabilityThresholds
from .stability import judge_table, machine_advice, machine_warnings
from ..results.tables import call_ids, call_means, floats, group_indices, list_values, strings
from .hygiene import hygiene_checks, utilization_checks
from .length import MIN_CELLS, SKIP, TOLERANCE, LengthJudgement, judge_configs
from .verdicts import CheckResult

PARAM_COLUMNS = AXES
# A configuration: every cell parameter but the output length.
CONFIG_COLUMNS = tuple(c for c in AXES if c not in ("max_new_tokens",))
PHASE_COLUMNS = SUMMARY_PHASES


@dataclass(frozen=True)
class Thresholds:
    """Every threshold of ``phasetime check``, with its default."""

    tolerance_ms: float = 0.05  # how far below zero a phase or other_ms may read (rounding)
    length_tolerance: float = TOLERANCE  # TPOT changing more than this from shortest to longest output, significantly, fails
    min_cells: int = MIN_CELLS  # the length effect is judged on at least this many cells (output lengths)
    stability_ratio: float = 2.0  # CV(tpot) of short outputs / long outputs above this warns
    short_tokens: int = 8  # outputs of at most this many tokens are "short"
    outlier_z: float = 3.5  # |modified z| above this flags an outlier (kept, not dropped)
    outlier_share: float = 0.05  # more outliers than this share of a cell warns
    precision: float = 0.05  # half-width of the 95% interval of a cell's mean the repeats should reach
    cv_warn: float = 0.10  # a cell's CV (per sample) from which the stability check warns
    cv_fail: float = 0.20  # robust CV (1.4826 MAD / median) from which it fails: too noisy to trust
    spread_warn: float = 0.25  # median call this much slower than the fastest warns
    n_boot: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("tolerance_ms", "length_tolerance", "stability_ratio", "outlier_z", "outlier_share", "precision", "cv_warn",
                     "cv_fail", "spread_warn"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise UsageError(f"--{name.replace('_', '-')} must be a finite number >= 0, got {value!r}")
        for name in ("precision", "cv_warn", "cv_fail", "outlier_z"):
            if getattr(self, name) <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be greater than 0")
        if self.length_tolerance > 10 or self.outlier_share > 1:
            raise UsageError("--length-tolerance must be at most 10 (1000%) and the outlier share at most 1")
        if self.cv_fail < self.cv_warn:
            raise UsageError("--cv-fail must not be below --cv-warn")
        if self.min_cells < MIN_CELLS or self.short_tokens < 1 or self.n_boot < 100:
            raise UsageError(f"--min-cells must be >= {MIN_CELLS}, --short-tokens >= 1 (and n_boot >= 100)")

    def stability(self) -> StabilityThresholds:
        return StabilityThresholds(cv_warn=self.cv_warn, cv_fail=self.cv_fail, spread_warn=self.spread_warn,
                                   precision=self.precision)


def _grouped(table: pa.Table, columns: Sequence[str]) -> tuple[dict[tuple, np.ndarray], Callable[[tuple], str]]:
    """Row indices per distinct value of the present ``columns``, and a function naming a
    group's scope by the columns that vary in the table ("all rows" when none does)."""
    names = [c for c in columns if c in table.column_names]
    varying = {n for n in names if len(table.column(n).unique()) > 1}

    def scope(keys: tuple) -> str:
        return ", ".join(f"{n}={v}" for n, v in zip(names, keys) if n in varying) or "all rows"

    return group_indices(table, names), scope


def _count_check(name: str, mask: np.ndarray, methods: np.ndarray, threshold: str, detail: str) -> list[CheckResult]:
    out = []
    for method in sorted(set(methods.tolist())):
        m = mask[methods == method]
        n_bad = int(m.sum())
        out.append(CheckResult(name, str(method), n_bad, threshold, "fail" if n_bad else "pass",
                               f"{n_bad} of {m.size} rows {detail}" if n_bad else f"{m.size} rows checked"))
    return out


def row_checks(table: pa.Table, t: Thresholds) -> list[CheckResult]:
    """Checks every row must pass: decode present, tpot only where defined, no negative phases
    (the ITL gaps included, when the table has them)."""
    n_tokens = floats(table, "output_tokens")
    decode, tpot, other = floats(table, "decode_ms"), floats(table, "tpot_ms"), floats(table, "other_ms")
    methods = strings(table, "method")
    negative = np.zeros(table.num_rows, dtype=bool)
    for phase in PHASE_COLUMNS:
        values = floats(table, phase)
        negative |= np.nan_to_num(values, nan=0.0) < -t.tolerance_ms
    lowest = pc.min(pc.list_flatten(table.column("itl_ms"))).as_py() if "itl_ms" in table.column_names else None
    if lowest is not None and lowest < -t.tolerance_ms:  # only then find the rows (a million rows' gaps)
        gaps, rows = list_values(table, "itl_ms")
        negative[rows[gaps < -t.tolerance_ms]] = True
    return [
        *_count_check("decode_present", (n_tokens >= 2) & ~(decode > 0), methods, "no such row",
                      "have output_tokens >= 2 but decode_ms <= 0 or missing"),
        *_count_check("tpot_only_when_defined", (n_tokens < 2) & ~np.isnan(tpot), methods, "no such row",
                      "have output_tokens < 2 but a tpot"),
        *_count_check("no_negative_phase", negative, methods, f"no phase < -{t.tolerance_ms} ms", "have a negative phase"),
        *_count_check("phases_within_total", np.nan_to_num(other, nan=0.0) < -t.tolerance_ms, methods,
                      f"other_ms >= -{t.tolerance_ms} ms", "have phases adding up to more than the total"),
        *_count_check("no_compilation", np.nan_to_num(floats(table, "compiles"), nan=0.0) > 0, methods,
                      "no graph compiled during a measured call",
                      "come from calls during which torch.compile compiled (warm up longer)"),
    ]


def correlation_checks(table: pa.Table, t: Thresholds, legacy: bool, run_info: dict[str, Any] | None = None,
                       lengths: list[LengthJudgement] | None = None) -> list[CheckResult]:
    """Per method and configuration: does the per-token latency depend on the output length
    beyond what the hardware's per-position profile explains? A pass, fail or inconclusive
    verdict over cells (:mod:`.length`); ``legacy`` adds decode / N of the direct rows (info);
    ``lengths``: the table's judgements, when the caller made them already (the report)."""
    order = ((run_info or {}).get("experiment") or {}).get("order")
    interleaved = None if order is None else order == "interleaved"
    threshold = f"95% CI within +-{100 * t.length_tolerance:g}% passes; beyond it and excluding 0 fails"
    out = []
    judgements = lengths if lengths is not None else judge_configs(table, t.length_tolerance,
                                                                   interleaved=interleaved)
    several = len({j.method for j in judgements}) > 1
    for j in judgements:
        verdict = j.verdict
        if verdict != SKIP and j.cells < t.min_cells:
            verdict = "inconclusive"
        scope = f"{j.method}: {j.scope}" if several or j.method != "direct" else j.scope
        out.append(CheckResult("tpot_vs_length", scope, None if j.effect is None else round(j.effect, 4), threshold,
                               verdict, j.describe()))
    if legacy:
        n_tokens, decode = floats(table, "output_tokens"), floats(table, "decode_ms")
        with np.errstate(divide="ignore", invalid="ignore"):
            per_token = np.where(n_tokens > 0, decode / n_tokens, np.nan)
        for j in judge_configs(table, t.length_tolerance, values=per_token, interleaved=interleaved):
            out.append(CheckResult("tpot_vs_length[legacy decode/N]", j.scope,
                                   None if j.effect is None else round(j.effect, 4), threshold,
                                   SKIP if j.verdict == SKIP else "info", j.describe()))
    return out


def stability_checks(table: pa.Table, t: Thresholds) -> list[CheckResult]:
    """Per configuration: median over cells of CV(tpot) between calls, short-output cells vs long."""
    groups, scope_of = _grouped(table, CONFIG_COLUMNS)
    tpot, n_tokens, calls = floats(table, "tpot_ms"), floats(table, "output_tokens"), call_ids(table)
    out = []
    for keys, idx in groups.items():
        short: list[float] = []
        long: list[float] = []
        lengths, single = [], []
        for n in np.unique(n_tokens[idx]):
            if not np.isfinite(n) or n < 2:
                continue
            sel = idx[n_tokens[idx] == n]
            lengths.append(f"{n:g}")
            value = cv(call_means(tpot[sel], calls[sel]))  # unit: the call
            if value is not None:
                (short if n <= t.short_tokens else long).append(value)
            else:
                single.append(f"{n:g}")
        scope = scope_of(keys)
        if not short or not long:
            if single:
                why = f"one call (or a constant TPOT) at N = {', '.join(single)}: no spread between calls to compare"
            else:
                why = (f"outputs of N = {', '.join(lengths) or 'none >= 2'}: needs one of <= {t.short_tokens} tokens "
                       f"and one of > {t.short_tokens} (--short-tokens)")
            out.append(CheckResult("tpot_stability", scope, None, f"short/long CV <= {t.stability_ratio}", "skip", why))
            continue
        cv_short, cv_long = float(np.median(short)), float(np.median(long))
        ratio = cv_short / cv_long if cv_long > 0 else math.inf
        out.append(CheckResult("tpot_stability", scope, round(ratio, 2), f"short/long CV <= {t.stability_ratio}",
                               "warn" if ratio > t.stability_ratio else "pass",
                               f"CV between calls: short {100 * cv_short:.1f}%, long {100 * cv_long:.1f}% "
                               f"(median over {len(short)} and {len(long)} cells)"))
    return out


def outlier_checks(table: pa.Table, t: Thresholds) -> list[CheckResult]:
    """Per cell and sample: calls whose total_ms is an outlier by modified z-score among the
    calls of the same sample (a long sample is not an outlier for being long); counted, never dropped."""
    total, calls = floats(table, "total_ms"), call_ids(table)
    flagged, n_calls, worst, worst_scope = 0, 0, 0.0, ""
    groups, scope_of = _grouped(table, [*PARAM_COLUMNS, "sample_id"])
    for keys, idx in groups.items():
        values = call_means(total[idx], calls[idx])  # unit: the call (a batch's rows share its total)
        values = values[np.isfinite(values)]
        n_calls += values.size
        if values.size < 3:
            continue
        n_out = int((np.abs(mad_zscores(values)) > t.outlier_z).sum())
        flagged += n_out
        if n_out / values.size > worst:
            worst, worst_scope = n_out / values.size, scope_of(keys)
    verdict = "warn" if worst > t.outlier_share else "info"
    detail = f"{flagged} of {n_calls} calls flagged (kept)"
    if worst > 0:
        detail += f"; most in {worst_scope} ({100 * worst:.1f}% of its calls)"
    return [CheckResult("outliers_total_ms", "per cell and sample", flagged, f"|z| > {t.outlier_z}, share <= {t.outlier_share}",
                        verdict, detail)]


def noise_checks(table: pa.Table, run_info: dict[str, Any] | None, t: Thresholds,
                 judged: list[Any] | None = None) -> list[CheckResult]:
    """The stability rules (``phasetime.analysis.stability``) on every cell and sample, and the
    machine; ``judged``: ``judge_table(table, t.stability())`` when the caller has it already."""
    judged = judged if judged is not None else judge_table(table, t.stability())
    threshold = (f"robust CV < {t.cv_fail:g}; CV without outliers < {t.cv_warn:g} and median/fastest < "
                 f"{1 + t.spread_warn:g} (else warn)")
    out = []
    if not judged:
        load = "rate" in table.column_names and table.column("rate").null_count < table.num_rows
        why = ("the requests of a load vary by the queueing the load causes (phasetime load reports them)" if load
               else "fewer than 2 calls per cell")
        out.append(CheckResult("stability", "per cell", None, threshold, "skip", why))
    else:
        order = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}
        worst = max(judged, key=lambda g: (order[g[2].verdict], g[2].robust_cv or 0))
        counts = {v: sum(1 for _, _, j in judged if j.verdict == v) for v in ("fail", "warn")}
        scope = ", ".join(f"{k}={v}" for k, v in worst[0].items())
        cvs = [j.robust_cv for _, _, j in judged if j.robust_cv is not None]
        detail = (f"{counts['fail']} failing and {counts['warn']} warning of {len(judged)} groups (cell, sample, phase)"
                  + (f"; worst: {scope}: {'; '.join(worst[2].reasons)}" if worst[2].reasons else ""))
        verdict = "fail" if counts["fail"] else "warn" if counts["warn"] else "pass"
        out.append(CheckResult("stability", "per cell", round(max(cvs), 3) if cvs else None, threshold, verdict, detail))
        needed = max((j.needed or 0) for _, _, j in judged)
        repeats = ((run_info or {}).get("experiment") or {}).get("repeats")
        if repeats is not None:
            out.append(CheckResult("enough_repeats", "run", needed, f"repeats ({repeats}) >= n",
                                   "pass" if repeats >= needed else "warn",
                                   f"n = (1.96 CV / {t.precision:g})^2 for a 95% interval within "
                                   f"+-{100 * t.precision:g}%, noisiest group"))
    if run_info is None:
        out.append(CheckResult("machine", "run", None, "load <= CPUs", "skip", "no run.json"))
    else:
        warnings = machine_warnings(run_info)
        out.append(CheckResult("machine", "run", len(warnings), "load <= usable CPUs, threads <= cores",
                               "warn" if warnings else "pass", "; ".join(warnings)))
        for advice in machine_advice(run_info):
            out.append(CheckResult("machine_advice", "run", None, "steady clocks", "info", advice))
    return out


def run_checks(table: pa.Table, run_info: dict[str, Any] | None = None, thresholds: Thresholds | None = None,
               *, legacy: bool = False, judged: list[Any] | None = None,
               lengths: list[LengthJudgement] | None = None) -> list[CheckResult]:
    """Every check on ``table``; ``legacy`` adds the correlation under the old denominator;
    ``judged`` and ``lengths``: the table's stability and length judgements, when the caller
    made them already."""
    t = thresholds or Thresholds()
    return [
        *row_checks(table, t),
        *correlation_checks(table, t, legacy, run_info, lengths),
        *stability_checks(table, t),
        *outlier_checks(table, t),
        *noise_checks(table, run_info, t, judged),
        *utilization_checks(table),
        *hygiene_checks(table, run_info),
    ]


def one_method(table: pa.Table, method: str | None) -> pa.Table:
    """The rows of one method (``direct`` or ``subtract``) of a run; all rows for None."""
    if method is None:
        return table

    mask = pc.equal(table.column("method"), method) if "method" in table.column_names else None
    if mask is None or not pc.any(mask).as_py():
        present = sorted(set(strings(table, "method").tolist())) if mask is not None else []
        raise UsageError(f"--method {method}: this run has method(s) {', '.join(map(str, present)) or 'none'}")
    return table.filter(mask)


def failed(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.verdict == "fail"]


def inconclusive(results: list[CheckResult]) -> list[CheckResult]:
    return [r for r in results if r.verdict == "inconclusive"]
