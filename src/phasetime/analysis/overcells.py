"""Claims over cells, the cell as the unit: a line through the cells' values (ordinary, or
weighted by each cell's own spread with the spread between cells), and what more data would
settle an interval that cannot decide (:mod:`.length` states the claims)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .stats import t_quantile
from .verdicts import Settle

MIN_CELLS = 3  # a line and its interval need three cells (one degree of freedom)
MAX_CELLS_SEARCHED = 200


@dataclass(frozen=True)
class Line:
    theta: float
    se: float  # of theta
    df: int
    sigma: float  # residual standard deviation over cells
    sxx: float


def fit_line(w: np.ndarray, y: np.ndarray, v: np.ndarray | None = None) -> Line | None:
    """The slope of ``y`` on ``w`` over cells with its standard error. With ``v`` (each ``y``'s
    variance from its own cell's calls) a random-effects weighted fit: the between-cell variance
    by moments (DerSimonian-Laird), the error with the modified Knapp-Hartung scale (never
    below its model's), so that a short-output cell, whose value rests on one gap per call and
    is noisier, does not carry the line with the weight of a precise one; without (or when a
    cell has none) ordinary least squares."""
    if w.size < MIN_CELLS or np.ptp(w) == 0:
        return None
    x = np.column_stack([np.ones_like(w), w])
    df = w.size - 2
    sxx = float(((w - w.mean()) ** 2).sum())
    if v is None or not np.all(np.isfinite(v)) or not np.all(v > 0):
        beta, *_ = np.linalg.lstsq(x, y, rcond=None)
        residual = y - x @ beta
        sigma = math.sqrt(float(residual @ residual) / df)
        return Line(float(beta[1]), sigma / math.sqrt(sxx), df, sigma, sxx)
    weights = 1 / v
    beta, cov = _weighted(x, y, weights)
    q = float((weights * (y - x @ beta) ** 2).sum())
    trace = float(weights.sum() - np.trace(cov @ (x.T * weights**2) @ x))
    tau2 = max(0.0, (q - df) / trace) if trace > 0 else 0.0
    weights = 1 / (v + tau2)
    beta, cov = _weighted(x, y, weights)
    q = float((weights * (y - x @ beta) ** 2).sum())
    se = math.sqrt(float(cov[1, 1]) * max(1.0, q / df))
    return Line(float(beta[1]), se, df, se * math.sqrt(sxx), sxx)


def _weighted(x: np.ndarray, y: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares: (the coefficients, their covariance (X' W X)^-1)."""
    cov = np.linalg.inv((x.T * weights) @ x)
    return cov @ (x.T * weights) @ y, cov


def settle_line(line: Line, span: float, estimate: float, tolerance: float, alpha: float, cells: int,
                within: list[float], calls: int, interleaved: bool | None) -> Settle:
    """How many cells (or repeats) the observed noise needs for a line's interval to decide: to
    fit within the tolerance when the estimate does, else to exclude 0. ``within``: each cell's
    variance from its own calls (what repeats shrink); ``calls``: a cell's calls now."""
    room = tolerance - abs(estimate) if abs(estimate) < tolerance else abs(estimate)
    target = (room * math.sqrt(line.sxx) / (t_quantile(1 - alpha / 2, line.df) * span)) ** 2
    return _settle(lambda m: t_quantile(1 - alpha / 2, m - 2) * line.sigma * span / math.sqrt(line.sxx * m / cells),
                   cells, room, line.sigma, target, float(np.mean(within)) if within else None, calls, interleaved)


def settle_mean(sigma: float, m: int, room: float, alpha: float, within: float | None, calls: int,
                interleaved: bool | None) -> Settle:
    """Cells or repeats a mean over cells with this spread needs for its interval's half-width to
    fit in ``room``."""
    target = (room * math.sqrt(m) / t_quantile(1 - alpha / 2, m - 1)) ** 2
    return _settle(lambda k: t_quantile(1 - alpha / 2, k - 1) * sigma / math.sqrt(k), m, room, sigma, target,
                   within, calls, interleaved)


def _settle(half_at: Callable[[int], float], cells: int, room: float, sigma: float, target: float,
            within: float | None, calls: int, interleaved: bool | None) -> Settle:
    """The fewest cells whose interval's half-width ``half_at(cells)`` fits in ``room``, and the
    repeats per cell that would do instead: they shrink only the part of a cell's variance its
    own calls carry (``within``), so they cannot once the rest (between cells) exceeds ``target``,
    the variance the claim can afford."""
    needed = next((k for k in range(cells + 1, MAX_CELLS_SEARCHED + 1) if half_at(k) <= room), None) \
        if room > 0 else None
    repeats = None
    if within is not None and within > 0 and room > 0:
        between = max(sigma**2 - within, 0.0)
        if between < target:
            repeats = math.ceil(calls * within / (target - between))
    return Settle(needed, repeats, interleaved is False)


__all__ = ["Line", "fit_line", "settle_line", "settle_mean"]
