"""Pure statistics helpers shared by every summary; no I/O, no pandas."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, Sequence

from numpy.typing import ArrayLike

import numpy as np


def finite(values: Iterable[float | None] | np.ndarray) -> np.ndarray:
    """The values as a float array without the missing ones (None, NaN, +-inf)."""
    x = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    return x[np.isfinite(x)]


def percentile(values: Iterable[float | None] | np.ndarray, q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default); None if empty.

    Missing values (None, NaN, +-inf) are ignored.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    x = finite(values)
    return float(np.percentile(x, q)) if x.size else None


def median(values: Iterable[float | None] | np.ndarray) -> float | None:
    """The median, ignoring missing values; None if empty."""
    return percentile(values, 50)


def rank_array(x: np.ndarray) -> np.ndarray:
    """1-based ranks of a 1-D array, ties sharing their average rank (as scipy.stats.rankdata)."""
    return _ranks(x)[0]


def _ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the ranks, the length of every run of equal values). Ties get their run's average rank
    whatever order the sort left them in, so the faster unstable sort does."""
    order = np.argsort(x)
    sorted_x = x[order]
    # Boundaries of runs of equal values.
    starts = np.r_[True, sorted_x[1:] != sorted_x[:-1]]
    run_id = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(x)] - 1
    avg = (first + last) / 2 + 1
    out = np.empty(len(x))
    out[order] = avg[run_id]
    return out, last - first + 1


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """x and y as float arrays of equal length; None when there are fewer than 2 pairs."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError("x and y must have the same length")
    return (a, b) if a.size >= 2 else None


def pearson(x: ArrayLike, y: ArrayLike) -> float | None:
    """Pearson's r; None when fewer than 2 pairs or a side is constant."""
    pairs = _pairs(x, y)
    if pairs is None:
        return None
    a, b = pairs[0] - pairs[0].mean(), pairs[1] - pairs[1].mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if denom == 0:
        return None
    return float((a * b).sum() / denom)


def spearman(x: ArrayLike, y: ArrayLike) -> float | None:
    """Spearman's rho: Pearson's r of the ranks (ties averaged); None when undefined."""
    pairs = _pairs(x, y)
    return None if pairs is None else pearson(rank_array(pairs[0]), rank_array(pairs[1]))


def cv(values: Iterable[float | None] | np.ndarray) -> float | None:
    """Coefficient of variation (sample standard deviation / mean); None when undefined."""
    x = finite(values)
    if x.size < 2 or x.mean() == 0:
        return None
    return float(x.std(ddof=1) / x.mean())


def mad_zscores(values: ArrayLike) -> np.ndarray:
    """Modified z-scores, 0.6745 (x - median) / MAD (Iglewicz and Hoaglin).

    When the MAD is 0 the mean absolute deviation, scaled by 1.2533, stands in for it;
    when both are 0 every score is 0.
    """
    x = np.asarray(values, dtype=float)
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    if mad > 0:
        return 0.6745 * (x - med) / mad
    mean_ad = np.mean(np.abs(x - med))
    if mean_ad > 0:
        return (x - med) / (1.253314 * mean_ad)
    return np.zeros_like(x)


def bootstrap_ci(
    statistic: Callable[..., Any],
    samples: Sequence[ArrayLike],
    *,
    paired: bool = False,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_n: int = 5000,
    vectorized: bool = False,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of ``statistic(*samples)``.

    ``paired`` resamples the same indices in every sample (for correlations); otherwise
    each sample is resampled on its own (for comparing two groups). Samples larger than
    ``max_n`` use the m-out-of-n bootstrap (resamples of ``max_n``), with the interval
    rescaled by sqrt(max_n / n) around the full-sample estimate, which keeps the cost
    bounded on millions of rows. ``vectorized``: the statistic takes arrays whose last
    axis holds a sample, and all resamples are computed in one call. None when the
    statistic is undefined.
    """
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if any(a.size < 2 for a in arrays):
        return None
    estimate = statistic(*arrays)
    if estimate is None or not math.isfinite(float(estimate)):
        return None
    rng = np.random.default_rng(seed)
    if paired:
        n = arrays[0].size
        idx = rng.integers(0, n, size=(n_boot, min(n, max_n)))
        indices = [idx] * len(arrays)
    else:
        indices = [rng.integers(0, a.size, size=(n_boot, min(a.size, max_n))) for a in arrays]
    if vectorized:
        values = np.asarray(statistic(*(a[i] for a, i in zip(arrays, indices))), dtype=float)
    else:
        values = np.array([np.nan if (v := statistic(*(a[i[b]] for a, i in zip(arrays, indices)))) is None else v
                           for b in range(n_boot)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size < n_boot // 2:
        return None
    alpha = (1 - level) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    n_min = min(a.size for a in arrays)
    if n_min > max_n:
        scale = math.sqrt(max_n / n_min)
        lo, hi = estimate - (estimate - lo) * scale, estimate + (hi - estimate) * scale
    return float(lo), float(hi)


def pearson_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray | float:
    """Pearson's r along the last axis (NaN where a side is constant); vectorised."""
    a = x - x.mean(axis=-1, keepdims=True)
    b = y - y.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def spearman_ci(
    x: ArrayLike, y: ArrayLike, *, n_boot: int = 1000, seed: int = 0, exact_up_to: int = 2000,
    max_n: int = 5000,
) -> tuple[float, float] | None:
    """Bootstrap 95% CI of Spearman's rho.

    Up to ``exact_up_to`` pairs every resample is ranked again. Beyond, the pairs are
    ranked once and each resample's Pearson r of those ranks stands for its Spearman rho
    (the two agree closely at that size), computed for all resamples at once, with the
    m-out-of-n scheme of :func:`bootstrap_ci` above ``max_n``.
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size <= exact_up_to:
        return bootstrap_ci(spearman, [a, b], paired=True, n_boot=n_boot, seed=seed)
    return bootstrap_ci(pearson_rows, [rank_array(a), rank_array(b)], paired=True, n_boot=n_boot, seed=seed,
                        max_n=max_n, vectorized=True)


def mann_whitney_u(x: ArrayLike, y: ArrayLike) -> tuple[float, float]:
    """Two-sided Mann-Whitney U test: (U of x, p-value).

    Normal approximation with tie correction and continuity correction (scipy's
    ``method="asymptotic"``).
    """
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n1, n2 = a.size, b.size
    if n1 == 0 or n2 == 0:
        raise ValueError("both samples need values")
    r, counts = _ranks(np.concatenate([a, b]))
    u1 = float(r[:n1].sum() - n1 * (n1 + 1) / 2)
    n = n1 + n2
    counts = counts.astype(float)
    tie_term = float((counts**3 - counts).sum())
    sigma = math.sqrt(n1 * n2 / 12 * ((n + 1) - tie_term / (n * (n - 1))))
    if sigma == 0:
        return u1, 1.0
    mu = n1 * n2 / 2
    u = max(u1, n1 * n2 - u1)
    z = (u - mu - 0.5) / sigma
    p = min(1.0, math.erfc(z / math.sqrt(2)))
    return u1, p


def geometric_mean(values: Sequence[float]) -> float | None:
    """Geometric mean of positive values; None when empty."""
    x = np.asarray([v for v in values if v is not None and v > 0], dtype=float)
    return float(np.exp(np.log(x).mean())) if x.size else None


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """Wilson score interval of a proportion (95% for z = 1.96); None when n is 0.

    Used for accuracy: a mean of scores in [0, 1] is treated as a proportion of n trials,
    which is exact for 0/1 scores and a close approximation for soft (VQA) scores.
    """
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom: exact for 1 and 2,
    else the Cornish-Fisher expansion around the normal quantile (within 0.2% at df = 3,
    0.01% from df = 10; checked against scipy in the tests)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = _normal_quantile(p)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


def _normal_quantile(p: float) -> float:
    """The standard normal quantile (Acklam's rational approximation, refined by one Halley step)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    q = min(p, 1 - p)
    if q < 0.02425:
        r = math.sqrt(-2 * math.log(q))
        x = (((((c[0] * r + c[1]) * r + c[2]) * r + c[3]) * r + c[4]) * r + c[5]) / \
            ((((d[0] * r + d[1]) * r + d[2]) * r + d[3]) * r + 1)
        x = x if p < 0.5 else -x
    else:
        r = (p - 0.5) ** 2
        x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * (p - 0.5) / \
            (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    e = 0.5 * math.erfc(-x / math.sqrt(2)) - p  # one Halley step to full double precision
    u = e * math.sqrt(2 * math.pi) * math.exp(x * x / 2)
    return x - u / (1 + x * u / 2)


EXACT_MEDIAN_FROM = 200  # samples this large draw their bootstrap medians from the order statistics


def median_draws(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``n_boot`` draws from the bootstrap distribution of a sample's median, without resampling.

    A resample's (lower) median is at most the k-th smallest value x_(k) exactly when at
    least h = ceil(n / 2) of its n draws are, and that count is Binomial(n, k / n): so
    P(median <= x_(k)) = P(Bin(n, k / n) >= h), here with the normal approximation (with a
    continuity correction) from :data:`EXACT_MEDIAN_FROM` values on, where it is accurate, and
    by resampling below. Each draw costs a search instead of a partition of n values: the
    full-size bootstrap of a million-row run in milliseconds.
    """
    x = np.sort(finite(values))
    n = x.size
    if n == 0:
        return np.full(n_boot, np.nan)
    if n < EXACT_MEDIAN_FROM:
        return np.median(x[rng.integers(0, n, size=(n_boot, n))], axis=1)
    k, cdf = _median_cdf(n)
    picks = np.searchsorted(cdf, rng.random(n_boot), side="left")
    return x[k[np.minimum(picks, k.size - 1)] - 1]


@functools.lru_cache(maxsize=64)
def _median_cdf(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(k, P(median <= x_(k))) of a bootstrapped sample of size n: it depends on n alone, so the
    cells of a run, all of one size, share it."""
    h = math.ceil(n / 2)
    half = int(6 * math.sqrt(n)) + 2  # beyond 12 sd of the count, the probability is 0 or 1
    k = np.arange(max(1, h - half), min(n, h + half) + 1)
    p = k / n
    z = (h - 0.5 - n * p) / np.sqrt(n * p * (1 - p) + 1e-12)
    cdf = np.array([0.5 * math.erfc(v / math.sqrt(2)) for v in z])  # P(Bin >= h) = 1 - Phi(z)
    cdf = np.maximum.accumulate(cdf)
    k.flags.writeable = cdf.flags.writeable = False
    return k, cdf
