"""Does per-token latency depend on the output length? Judged with the cell as the unit.

The repeats of a cell run back to back and share that moment of the machine: its calls are
not independent draws across cells, and its rows even less (a batch's rows are one call).
So a claim across output lengths is made over cells, never over rows:

1. within a cell, each call is reduced to one value (the mean over its sequences), and the
   cell to the median over its calls;
2. over the cells of one configuration (every parameter but the output length), a
   least-squares fit of the cell values on the output length N, ``a + b N + c / N`` (``a + b
   N`` with fewer than 5 cells), gives the **change** from the shortest to the longest
   output, ``(f(N_max) - f(N_min)) / mean``: the fitted rise as a share of the
   configuration's mean cell value, with a 95% confidence interval from the t distribution
   with (cells - parameters) degrees of freedom (of the rise, on the scale of the mean).
   The base is the mean, not ``f(N_min)``: a fit at the shortest output is the
   least certain value of the line (the legacy method's clamped decode reads near 0 there),
   and a ratio to it has an interval that explodes exactly when the effect is largest;
3. the length effect **fails** only when it is both large and significant: ``|change|`` above
   the tolerance (5% by default), a confidence interval that excludes 0, and a permutation
   test over cells that agrees (:func:`permutation_p`: exact under no relation with N whatever
   the shape of the noise between cells, which the t interval assumes normal). The intervals of
   all the configurations a run judges hold together at 95% (Bonferroni: each at
   1 - 0.05 / configurations), so that under no trend a run fails at most as often as 5%,
   whatever the cell-to-cell wobble and however many configurations it has.

The legacy per-token latency (decode / N) has a built-in 1/N bias, ``(N - 1) / N`` of the
true step: from N = 2 to N = 32 it rises by 58% of its mean over the cells of issue 16's run
(2, 3, 4, 6, 8, 16, 24, 32), which fails.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from .stats import spearman, t_quantile
from ..results.schema import AXES
from ..results.tables import call_ids, call_means, floats, group_indices

CONFIG_COLUMNS = tuple(c for c in AXES if c != "max_new_tokens")
TOLERANCE = 0.05  # change of TPOT from the shortest to the longest output, as a share of its mean
MIN_CELLS = 3  # a line and its interval need at least three output lengths


@dataclass(frozen=True)
class LengthEffect:
    """The length effect in one configuration, over its cells."""

    scope: str
    cells: int
    calls: int  # calls behind the cells' values
    n_min: float
    n_max: float
    change: float | None  # (f(N_max) - f(N_min)) / mean cell value (None: fewer than MIN_CELLS cells)
    ci: tuple[float, float] | None
    rho: float | None  # Spearman's rho of the cell values with N (over cells)
    values: tuple[tuple[float, float], ...] = ()  # (N, cell value) of each cell
    config: tuple[tuple[str, object], ...] = ()  # the configuration's parameters (name, value)
    level: float = 0.95  # of the interval: 95% over all the configurations judged together
    judged: int = 1  # configurations judged together (the interval is Bonferroni-adjusted for them)
    p_value: float | None = None  # permutation test over cells of "no relation with N"

    def significant(self) -> bool:
        """The interval excludes 0 and the permutation test agrees (both at the adjusted level)."""
        interval = self.ci is not None and (self.ci[0] > 0 or self.ci[1] < 0)
        return interval and self.p_value is not None and self.p_value < 0.05 / max(self.judged, 1)

    def fails(self, tolerance: float = TOLERANCE) -> bool:
        return self.change is not None and abs(self.change) > tolerance and self.significant()

    def describe(self) -> str:
        if self.change is None or self.ci is None:
            return f"{self.cells} cell(s) with N >= 2 (needs {MIN_CELLS} output lengths)"
        joint = f", simultaneous over {self.judged} configurations" if self.judged > 1 else ""
        p = f", permutation p {self.p_value:.3g}" if self.p_value is not None else ""
        return (f"{100 * self.change:+.1f}% of the mean from N={self.n_min:g} to N={self.n_max:g}, 95% CI{joint} "
                f"[{100 * self.ci[0]:+.1f}%, {100 * self.ci[1]:+.1f}%]{p}; unit: cell ({self.cells} cells, median of "
                f"{self.calls // max(self.cells, 1)} calls each)")


def cell_value(values: np.ndarray, calls: np.ndarray) -> tuple[float | None, int]:
    """A cell's value (the median over its calls of each call's mean) and its number of calls."""
    per_call = call_means(values, calls)
    per_call = per_call[np.isfinite(per_call)]
    return (float(np.median(per_call)) if per_call.size else None), int(per_call.size)


INVERSE_FROM = 5  # cells from which the model has its 1/N term (two degrees of freedom left)


def _design(ns: np.ndarray, inverse: bool) -> np.ndarray:
    """Columns of the model of a cell's value against N: 1, N and (``inverse``) 1/N."""
    return np.column_stack([np.ones_like(ns), ns] + ([1.0 / ns] if inverse else []))


def _estimable(x: np.ndarray) -> bool:
    """A design leaves a degree of freedom for the residuals and has full rank."""
    return x.shape[0] > x.shape[1] and np.linalg.matrix_rank(x) == x.shape[1]


def change_with_ci(ns: np.ndarray, ys: np.ndarray, level: float = 0.95) -> tuple[float, tuple[float, float]] | None:
    """The change of the fitted cell value from the shortest to the longest N as a share of
    the mean cell value, ``(f(N_max) - f(N_min)) / mean(ys)``, with its ``level`` interval (t
    distribution, delta method); None when it cannot be estimated.

    The model is ``a + b N + c / N`` (with 5 cells or more; ``a + b N`` below): ``b`` is the
    linear growth attention brings, ``c`` the shape of a per-token value with a constant
    part divided by N (the legacy decode / N): a straight line alone fits the latter badly,
    and its wide residuals would hide the bias it is there to find. The interval is the t
    interval of the rise (linear in the cell values, ``d @ ys``) on the scale of the mean: the
    mean is the unit the change is stated in, not an estimate whose error is carried, so that
    the interval excludes 0 exactly when the rise is significant (the question asked), whatever
    the base. Its coverage of the change itself, measured on tables of known truth
    (``benchmarks/length_truth.py``): 95.4% with no trend, 95.5% at +10%, 97.3% at +58%.
    """
    inverse = ns.size >= INVERSE_FROM
    x = _design(ns, inverse)
    df = ns.size - x.shape[1]
    if not _estimable(x) or not ys.mean() > 0:
        return None
    solve = np.linalg.pinv(x)  # beta = solve @ ys
    ends = _design(np.array([ns.min(), ns.max()], dtype=float), inverse)
    d = (ends[1] - ends[0]) @ solve  # the fitted rise, d @ ys
    mean = float(ys.mean())
    rise = float(d @ ys)
    change = rise / mean
    residual = ys - x @ (solve @ ys)
    sigma2 = float(residual @ residual) / df
    half = t_quantile(0.5 + level / 2, df) * float(np.sqrt(sigma2 * float(d @ d))) / mean
    return change, (change - half, change + half)


PERMUTATIONS = 20_000  # random orders beyond 8 cells (up to 8, all 40,320 are enumerated)


@functools.lru_cache(maxsize=8)
def _all_orders(n: int) -> np.ndarray:
    return np.array(list(itertools.permutations(range(n))))


def permutation_p(ns: np.ndarray, ys: np.ndarray, seed: int = 0) -> float | None:
    """P-value of the fitted change under "the cell values do not depend on N": the share of
    orderings of the cell values over the output lengths whose fitted rise from N_min to N_max
    is at least as large (in absolute value) as the one observed. Exact under that hypothesis whatever the
    shape of the noise between cells (a machine that jumps between two speeds, say), which a
    t interval assumes away."""
    inverse = ns.size >= INVERSE_FROM
    x = _design(ns, inverse)
    if not _estimable(x) or not ys.mean() > 0:  # no change to test (change_with_ci's None)
        return None
    solve = np.linalg.pinv(x)  # beta = solve @ y, for every ordering at once
    ends = _design(np.array([ns.min(), ns.max()], dtype=float), inverse) @ solve  # [2, cells]
    if ns.size <= 8:
        orders = _all_orders(ns.size)
    else:
        rng = np.random.default_rng(seed)
        orders = np.argsort(rng.random((PERMUTATIONS, ns.size)), axis=1)
    # The statistic: the fitted rise from N_min to N_max, |f(N_max) - f(N_min)|, linear in the
    # values; the change divides it by their mean, the same in every ordering.
    f = ys[orders] @ ends.T  # [orders, 2]: the fit at N_min and N_max
    rises = np.abs(f[:, 1] - f[:, 0])
    observed = abs(float((ends @ ys)[1] - (ends @ ys)[0]))
    return float(np.sum(rises >= observed * (1 - 1e-9)) / orders.shape[0])


def effect(scope: str, points: list[tuple[float, float, int]], config: tuple[tuple[str, object], ...] = (),
           judged: int = 1) -> LengthEffect:
    """The length effect of (N, cell value, calls) points; its interval holds at 95% jointly
    over ``judged`` configurations (Bonferroni: each at 1 - 0.05 / judged)."""
    points = sorted(points)
    ns = np.array([p[0] for p in points], dtype=float)
    ys = np.array([p[1] for p in points], dtype=float)
    calls = sum(p[2] for p in points)
    lo_n, hi_n = (float(ns.min()), float(ns.max())) if ns.size else (float("nan"), float("nan"))
    rho = spearman(ns, ys) if ns.size >= 2 else None
    level = 1 - 0.05 / max(judged, 1)
    found = change_with_ci(ns, ys, level) if len(np.unique(ns)) >= MIN_CELLS else None
    change, ci = found if found is not None else (None, None)
    p = permutation_p(ns, ys) if found is not None else None
    return LengthEffect(scope, len(points), calls, lo_n, hi_n, change, ci, rho,
                        tuple((float(n), float(y)) for n, y in zip(ns, ys)), config, 0.95, max(judged, 1), p)


def length_effects(table: pa.Table, values: np.ndarray | None = None) -> list[LengthEffect]:
    """The length effect of every configuration of ``table`` (of ``tpot_ms`` unless ``values``,
    one per row, are given: the legacy decode / N, say). Cells with N < 2 are left out."""
    y = floats(table, "tpot_ms") if values is None else values
    n_tokens = floats(table, "output_tokens")
    calls = call_ids(table)
    names = [c for c in CONFIG_COLUMNS if c in table.column_names]
    varying = [n for n in names if len(table.column(n).unique()) > 1]
    cell_keys = [*names, "max_new_tokens"] if "max_new_tokens" in table.column_names else names
    by_config: dict[tuple, list[tuple[float, float, int]]] = {}
    for key, idx in group_indices(table, cell_keys).items():
        n = float(np.nanmedian(n_tokens[idx])) if np.isfinite(n_tokens[idx]).any() else float("nan")
        value, count = cell_value(y[idx], calls[idx])
        config = key[:len(names)]
        by_config.setdefault(config, [])
        if n >= 2 and value is not None:
            by_config[config].append((n, value, count))
    # A run judges every configuration: each interval is widened so that they hold together at
    # 95% (Bonferroni), or a run of many configurations would fail on noise somewhere.
    judged = sum(len({p[0] for p in points}) >= MIN_CELLS for points in by_config.values())
    out = []
    for config, points in by_config.items():
        scope = ", ".join(f"{n}={v}" for n, v in zip(names, config) if n in varying) or "all rows"
        out.append(effect(scope, points, tuple(zip(names, config)), judged))
    return out


__all__ = ["CONFIG_COLUMNS", "LengthEffect", "MIN_CELLS", "TOLERANCE", "call_means", "cell_value", "effect",
           "length_effects"]
