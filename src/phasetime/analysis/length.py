"""Does per-token latency depend on the output length? The measurement method judged apart
from the hardware, with the cell as the unit.

The study phasetime serves asks whether a method's per-token latency is free of the output
length N. Two things make TPOT depend on N, and only one is the method's fault:

- **the hardware's per-position profile**, shared by every call: the first decode steps run
  slower (caches and branch predictors warm up inside each call), and later steps pay for a
  longer context. A 2-token call's TPOT is its first gap, the slowest, so TPOT falls with N on
  a good measurement. That is information about the machine, reported beside the verdict.
- **a method artifact**, which depends on the call's own length: end-of-call work billed to the
  last step, or the legacy ``decode / N`` (N - 1 forwards divided by N). This is what the
  verdict judges.

How (direct method, from the per-step gaps ``itl_ms``):

1. each call is reduced to one gap per position (the mean over its sequences: a batch is one
   call; so are vLLM requests submitted together), and each cell to its median profile over
   calls, ``g_c(k)``, each call's own last gap left out (the one an end-of-call artifact
   would touch);
2. over the cells of one configuration (every parameter but the output length), an additive
   fit of ``log g_c(k) = a_c + b_k`` gives the profile ``b_k`` every call shares;
3. per call, its **last-gap contrast**: the log of its own last gap (where the call ended, at
   its length or earlier at EOS) against the profile there,
   minus the mean of its other gaps against the profile at theirs. The k-th gap of a short call
   is compared with the k-th gaps of longer calls (where k is interior to them), and the call's
   own moment (the machine's speed while it ran, which moves every gap of the call) cancels as
   well as what every call shares. A cell's contrast is the median over its calls;
4. over the cells (those with N >= 3 whose last position longer cells have: N = 2 calls have a
   single gap, whose moment and end-of-call cost cannot be told apart; the longest cell has no
   longer one), the mean contrast ``lambda`` with a t interval (cells - 1 degrees of freedom),
   the cell as the unit. A fixed extra on a call's last gap makes its TPOT read
   ``(exp(lambda) - 1) / (N - 1)`` too high: the **effect** is that at the run's shortest
   output N_min (at N_min = 2, the last gap is the whole TPOT).

On this project's VM the cells' moments differ by up to 2x between cells a few seconds apart
(a tiny-llava cell of four calls took 2.2 ms per step, its neighbours 1.2), so a comparison of
cell levels across cells (the first design, kept in the calibration's history) read intervals
of +-50-80%; the per-call contrast reads +-3-8% on the same runs.

The legacy method has no gaps: where the run has the direct method at the same N, the ratio of
the two per-token values per cell takes the line (the hardware cancels); alone, its own cell
values relative to their mean do (``by its 1/N shape``; the hardware is not separated then).

Each claim gets a verdict (:mod:`.verdicts`) against the tolerance (5%). The intervals of the
configurations one method judges hold together at 95% (Bonferroni: each at 1 - 0.05 /
configurations): ``phasetime check`` and the report judge the same rows at the same level.
Calibration on tables of known truth: ``benchmarks/length_truth.py`` and docs/benchmarks.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ..results.schema import AXES
from ..results.tables import call_ids, call_means, floats, group_indices, strings
from .positions import last_gap_contrast, profiles, shared_profile
from .overcells import MIN_CELLS, fit_line, settle_line, settle_mean
from .stats import t_quantile
from .verdicts import FAIL, INCONCLUSIVE, PASS, decide

CONFIG_COLUMNS = tuple(c for c in AXES if c not in ("max_new_tokens", "method"))
TOLERANCE = 0.05  # how far the shortest calls' per-token value may read from the longest's and count as equal
MIN_CONTRASTS = 2  # the direct method's mean contrast needs two cells (N >= 3, shorter than the longest)
SKIP = "skip"

HOW_POSITION, HOW_DIRECT, HOW_SHAPE = "by position", "against the direct method", "by its 1/N shape"


@dataclass(frozen=True)
class Cell:
    """One cell of a configuration, as a length judgement sees it."""

    n: float  # the cell's output length (median over its rows)
    value: float  # median over calls of each call's mean per-token value (ms)
    calls: int
    log_sd: float | None  # standard deviation of the calls' log per-token values (within the cell)
    value_var: float | None = None  # variance of ``value`` from its calls' spread (a median: pi/2 var / calls)


@dataclass(frozen=True)
class LengthJudgement:
    """A method's length effect in one configuration, judged over its cells."""

    method: str
    how: str  # HOW_POSITION, HOW_DIRECT or HOW_SHAPE
    scope: str
    config: tuple[tuple[str, object], ...]
    cells: int
    calls: int
    n_min: float
    n_max: float
    effect: float | None  # the shortest calls' per-token value against the longest's, relative (see ``how``)
    ci: tuple[float, float] | None
    verdict: str  # pass, fail, inconclusive or skip
    reason: str = ""  # skip: why; inconclusive: what would settle it
    level: float = 0.95  # of the interval (1 - 0.05 / judged)
    judged: int = 1  # configurations of the method judged together
    hardware: float | None = None  # by position: the shared per-position profile's own TPOT change, short vs long
    values: tuple[tuple[float, float], ...] = ()  # (N, cell value) of each cell

    def describe(self) -> str:
        """One whole line: the claim, its size and interval, the unit, and the reason."""
        if self.effect is None or self.ci is None:
            return self.reason
        lo, hi = self.ci
        joint = f", simultaneous over {self.judged} configurations" if self.judged > 1 else ""
        what = {HOW_POSITION: f"TPOT at N={self.n_min:g} from the calls' last gaps against the same positions of "
                              f"longer calls (up to N={self.n_max:g})",
                HOW_DIRECT: f"decode / N against the direct TPOT of the same N, at N={self.n_min:g} against "
                            f"N={self.n_max:g}",
                HOW_SHAPE: f"per-token value at N={self.n_min:g} against N={self.n_max:g} (by its 1/N shape; the "
                           "hardware's per-position profile is not separated)"}[self.how]
        text = (f"{what}: {100 * self.effect:+.1f}%, {100 * self.level:.4g}% CI{joint} [{100 * lo:+.1f}%, "
                f"{100 * hi:+.1f}%]; unit: cell ({self.cells} cells, {self.calls} calls)")
        if self.hardware is not None:
            text += (f"; the hardware's per-position profile alone makes TPOT at N={self.n_min:g} read "
                     f"{100 * self.hardware:+.1f}% against N={self.n_max:g} (information, not a failure)")
        return text + (f"; {self.reason}" if self.reason else "")


# --- cells ------------------------------------------------------------------------------------------
def _cells(table: pa.Table, values: np.ndarray, rows: np.ndarray) -> tuple[list[tuple[Cell, np.ndarray]], str]:
    """The cells (with N >= 2 and a positive value) of one configuration's ``rows``, each with
    its row indices; and why cells were left out (empty when none was)."""
    n_tokens, calls = floats(table, "output_tokens"), call_ids(table)
    keys = ["max_new_tokens"] if "max_new_tokens" in table.column_names else []
    sub = group_indices(table.select(keys).take(pa.array(rows)), keys) if keys else {(): np.arange(rows.size)}
    out, dropped = [], []
    for idx in sub.values():
        idx = rows[idx]
        finite_n = n_tokens[idx][np.isfinite(n_tokens[idx])]
        n = float(np.median(finite_n)) if finite_n.size else math.nan
        per_call = call_means(values[idx], calls[idx])
        per_call = per_call[np.isfinite(per_call)]
        if not n >= 2:
            continue  # N = 1 has no decode: nothing to judge, nothing wrong
        if per_call.size == 0 or not np.median(per_call) > 0:
            dropped.append(f"N={n:g}")
            continue
        positive = per_call[per_call > 0]
        log_sd = float(np.log(positive).std(ddof=1)) if positive.size >= 2 else None
        value_var = math.pi / 2 * float(per_call.var(ddof=1)) / per_call.size if per_call.size >= 2 else None
        out.append((Cell(n, float(np.median(per_call)), int(per_call.size), log_sd, value_var), idx))
    out.sort(key=lambda c: c[0].n)
    reason = f"per-token value 0 or missing in every call of {', '.join(dropped)}" if dropped else ""
    return out, reason


def _claim(method: str, how: str, scope: str, config: tuple, cells: list[Cell], judged: int,
           hardware: float | None) -> tuple[float, dict]:
    """(the level's alpha, Bonferroni over ``judged`` configurations; what every judgement of
    these cells says whatever its verdict)."""
    alpha = 0.05 / max(judged, 1)
    ns = [c.n for c in cells]
    return alpha, dict(method=method, how=how, scope=scope, config=config, cells=len(cells),
                       calls=sum(c.calls for c in cells), n_min=min(ns), n_max=max(ns), level=1 - alpha,
                       judged=max(judged, 1), values=tuple((c.n, c.value) for c in cells), hardware=hardware)


def _judge(method: str, how: str, scope: str, config: tuple, cells: list[Cell], w: np.ndarray, y: np.ndarray,
           log_scale: bool, span: float, tolerance: float, judged: int, interleaved: bool | None,
           hardware: float | None = None, dropped: str = "", y_var: np.ndarray | None = None) -> LengthJudgement:
    alpha, base = _claim(method, how, scope, config, cells, judged, hardware)
    ns = [c.n for c in cells]
    line = fit_line(w, y, y_var)
    if line is None:
        why = (f"{len(cells)} output length(s) with N >= 2 ({', '.join(f'N={n:g}' for n in ns)}): a line over cells "
               f"needs {MIN_CELLS}")
        return LengthJudgement(**base, effect=None, ci=None, verdict=INCONCLUSIVE,  # type: ignore[arg-type]
                               reason="; ".join(filter(None, [why, dropped])))
    delta = line.theta * span
    half = t_quantile(1 - alpha / 2, line.df) * line.se * abs(span)
    lo, hi = delta - half, delta + half
    to = math.expm1 if log_scale else (lambda v: v)
    effect, ci = to(delta), (to(lo), to(hi))
    verdict = decide(effect, ci, tolerance)
    reason = dropped
    if verdict == INCONCLUSIVE:
        scale_tol = math.log1p(tolerance) if log_scale else tolerance
        within = [c.log_sd**2 / c.calls for c in cells if c.log_sd is not None and c.calls > 0]
        calls = int(np.median([c.calls for c in cells]))
        settle = settle_line(line, abs(span), delta, scale_tol, alpha, len(cells), within, calls, interleaved)
        reason = "; ".join(filter(None, [settle.describe(len(cells), calls), dropped]))
    return LengthJudgement(**base, effect=effect, ci=ci, verdict=verdict, reason=reason)  # type: ignore[arg-type]


def _ratio_var(legacy: Cell, direct: Cell) -> float:
    """The variance of legacy / direct - 1 from both cells' own (delta method); NaN when either lacks one."""
    if legacy.value_var is None or direct.value_var is None:
        return math.nan
    return legacy.value_var / direct.value**2 + legacy.value**2 * direct.value_var / direct.value**4


def _weights(ns: np.ndarray) -> np.ndarray:
    return (ns.min() - 1) / (ns - 1)


def judge_configs(table: pa.Table, tolerance: float = TOLERANCE, values: np.ndarray | None = None,
                  interleaved: bool | None = None) -> list[LengthJudgement]:
    """Every length judgement of ``table``: per method and configuration (see the module's
    text). ``values`` (one per row) replaces the per-token value and is judged by its shape
    (``check --legacy``'s decode / N of the direct rows). ``interleaved``: whether the run
    interleaved its cells (None: unknown), for the advice of an inconclusive verdict."""
    methods = strings(table, "method") if "method" in table.column_names else np.full(table.num_rows, "direct", object)
    names = [c for c in CONFIG_COLUMNS if c in table.column_names]
    varying = [n for n in names if len(table.column(n).unique()) > 1]
    per_token = floats(table, "tpot_ms") if values is None else values
    groups = group_indices(table, names)
    plans = []
    for method in dict.fromkeys(methods.tolist()):
        for key, rows in groups.items():
            rows = rows[methods[rows] == method]
            if rows.size == 0:
                continue
            scope = ", ".join(f"{n}={v}" for n, v in zip(names, key) if n in varying) or "all rows"
            plans.append((str(method), key, scope, rows))
    judged_per_method: dict[str, int] = {}
    prepared = []
    for method, key, scope, rows in plans:
        cells, dropped = _cells(table, per_token, rows)
        prepared.append((method, key, scope, rows, cells, dropped))
        if len({c.n for c, _ in cells}) >= MIN_CELLS:
            judged_per_method[method] = judged_per_method.get(method, 0) + 1
    direct_cells = {key: cells for method, key, _, _, cells, _ in prepared if method == "direct"}
    out = []
    for method, key, scope, rows, cells, dropped in prepared:
        config = tuple(zip(names, key))
        judged = judged_per_method.get(method, 1)
        if len({c.n for c, _ in cells}) < 2:
            only = ", ".join(f"N={c.n:g}" for c, _ in cells)
            if only:
                reason = "; ".join(filter(None, [f"one output length ({only}) with a value: no length effect to judge",
                                                 dropped]))
            else:
                reason = (f"{dropped}: no per-token value to judge (a decode of 0 with tokens generated is counted "
                          "as zero decode)" if dropped else "no cell with N >= 2: no length effect to judge")
            out.append(LengthJudgement(method, HOW_SHAPE, scope, config, len(cells), sum(c.calls for c, _ in cells),
                                       math.nan, math.nan, None, None, SKIP, reason))
            continue
        out.append(_judge_one(table, method, scope, config, cells, direct_cells.get(key), values is not None,
                              tolerance, judged, interleaved, dropped))
    return out


def _judge_one(table: pa.Table, method: str, scope: str, config: tuple, cells: list[tuple[Cell, np.ndarray]],
               direct: list[tuple[Cell, np.ndarray]] | None, replaced: bool, tolerance: float, judged: int,
               interleaved: bool | None, dropped: str) -> LengthJudgement:
    plain = [c for c, _ in cells]
    ns = np.array([c.n for c in plain])
    w = _weights(ns)
    span = float(w.max() - w.min())
    if method == "subtract" or replaced:
        by_n = {c.n: c for c, _ in direct or []}
        pairs = [(c, by_n[c.n]) for c in plain if c.n in by_n and by_n[c.n].value > 0] if not replaced else []
        if len(pairs) >= MIN_CELLS:
            matched = [c for c, _ in pairs]
            y = np.array([c.value / d.value - 1 for c, d in pairs])
            y_var = np.array([_ratio_var(c, d) for c, d in pairs])
            wm = _weights(np.array([c.n for c in matched]))
            return _judge(method, HOW_DIRECT, scope, config, matched, wm, y, False, float(wm.max() - wm.min()),
                          tolerance, judged, interleaved, dropped=dropped, y_var=y_var)
        values = np.array([c.value for c in plain])
        y_var = np.array([np.nan if c.value_var is None else c.value_var for c in plain]) / values.mean() ** 2
        return _judge(method, HOW_SHAPE, scope, config, plain, w, values / values.mean() - 1, False, span, tolerance,
                      judged, interleaved, dropped=dropped, y_var=y_var)
    found = profiles(table, cells)
    b = shared_profile([p for p, _ in found]) if found is not None else None
    if b is None or found is None:  # no per-step gaps (an older run, a table read without them): TPOT by shape
        y_var = np.array([np.nan if c.value_var is None else c.value_var / c.value**2 for c in plain])
        return _judge(method, HOW_SHAPE, scope, config, plain, w, np.log([c.value for c in plain]), True, span,
                      tolerance, judged, interleaved, dropped=dropped, y_var=y_var)
    profile = np.exp(b)
    shortest, longest = int(round(ns.min())) - 1, int(round(ns.max())) - 1
    hardware = float(np.nanmean(profile[:shortest]) / np.nanmean(profile[:longest]) - 1)
    contrasts = [(cell, found_) for cell, (_, grid) in zip(plain, found)
                 if (found_ := last_gap_contrast(grid, b)) is not None]
    return _judge_contrasts(method, scope, config, plain, contrasts, float(ns.min()), tolerance, judged, interleaved,
                            hardware, dropped)


def _judge_contrasts(method: str, scope: str, config: tuple, cells: list[Cell],
                     contrasts: list[tuple[Cell, tuple[float, float | None, int]]], n_min: float, tolerance: float,
                     judged: int, interleaved: bool | None, hardware: float, dropped: str) -> LengthJudgement:
    """The direct method's verdict from its cells' last-gap contrasts (see the module's text)."""
    alpha, base = _claim(method, HOW_POSITION, scope, config, cells, judged, hardware)
    ns = [c.n for c in cells]
    if len(contrasts) < MIN_CONTRASTS:
        used = ", ".join(f"N={c.n:g}" for c, _ in contrasts) or "none"
        why = (f"{len(contrasts)} output length(s) with N >= 3 below the longest ({used}): a call's last gap is "
               f"judged against the same position in longer calls, and an interval over cells needs {MIN_CONTRASTS}; "
               f"would settle with more output lengths between N=3 and N={max(ns) - 1:g}")
        return LengthJudgement(**base, effect=None, ci=None, verdict=INCONCLUSIVE,  # type: ignore[arg-type]
                               reason="; ".join(filter(None, [why, dropped])))
    d = np.array([v[0] for _, v in contrasts])
    m = d.size
    sigma = float(d.std(ddof=1))
    lam = float(d.mean())
    half = t_quantile(1 - alpha / 2, m - 1) * sigma / math.sqrt(m)

    def to(v: float) -> float:  # a last gap exp(v) times its position's: TPOT at N_min reads this much more
        return math.expm1(v) / (n_min - 1)

    effect, ci = to(lam), (to(lam - half), to(lam + half))
    verdict = decide(effect, ci, tolerance)
    reason = dropped
    if verdict == INCONCLUSIVE:
        room_scale = math.log1p(tolerance * (n_min - 1))
        room = room_scale - abs(lam) if abs(lam) < room_scale else abs(lam)
        within = [v[1] for _, v in contrasts if v[1] is not None]
        calls = int(np.median([v[2] for _, v in contrasts]))
        settle = settle_mean(sigma, m, room, alpha, float(np.mean(within)) if within else None, calls, interleaved)
        reason = "; ".join(filter(None, [settle.describe(m, calls), dropped]))
    return LengthJudgement(**base, effect=effect, ci=ci, verdict=verdict, reason=reason)  # type: ignore[arg-type]


__all__ = ["CONFIG_COLUMNS", "FAIL", "HOW_DIRECT", "HOW_POSITION", "HOW_SHAPE", "INCONCLUSIVE", "LengthJudgement",
           "MIN_CELLS", "PASS", "SKIP", "TOLERANCE", "judge_configs"]
