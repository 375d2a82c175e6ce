"""Pure statistics helpers shared by every summary; no I/O, no pandas."""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats as _scipy


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
    """1-based ranks of a 1-D array, ties sharing their average rank (``scipy.stats.rankdata``)."""
    return np.asarray(_scipy.rankdata(x), dtype=float)


def _pairs(x: ArrayLike, y: ArrayLike) -> tuple[np.ndarray, np.ndarray] | None:
    """x and y as float arrays of equal length; None when there are fewer than 2 pairs."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape:
        raise ValueError("x and y must have the same length")
    return (a, b) if a.size >= 2 else None


def pearson(x: ArrayLike, y: ArrayLike) -> float | None:
    """Pearson's r (``scipy.stats.pearsonr``); None when fewer than 2 pairs or a side is constant."""
    pairs = _pairs(x, y)
    if pairs is None or np.ptp(pairs[0]) == 0 or np.ptp(pairs[1]) == 0:
        return None
    return float(_scipy.pearsonr(*pairs).statistic)


def spearman(x: ArrayLike, y: ArrayLike) -> float | None:
    """Spearman's rho (``scipy.stats.spearmanr``, ties averaged); None when undefined."""
    pairs = _pairs(x, y)
    if pairs is None or np.ptp(pairs[0]) == 0 or np.ptp(pairs[1]) == 0:
        return None
    return float(_scipy.spearmanr(*pairs).statistic)


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
    mad = float(_scipy.median_abs_deviation(x))
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
    """Two-sided Mann-Whitney U test: (U of x, p-value), from ``scipy.stats.mannwhitneyu``
    (exact for small samples without ties, else the normal approximation with tie and
    continuity corrections)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples need values")
    if np.ptp(np.concatenate([a, b])) == 0:
        return a.size * b.size / 2, 1.0  # all equal: no evidence either way (scipy returns NaN)
    found = _scipy.mannwhitneyu(a, b, alternative="two-sided")
    return float(found.statistic), float(found.pvalue)


def geometric_mean(values: Sequence[float]) -> float | None:
    """Geometric mean of positive values; None when empty."""
    x = np.asarray([v for v in values if v is not None and v > 0], dtype=float)
    return float(np.exp(np.log(x).mean())) if x.size else None


def wilson_interval(successes: float, n: int, level: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of a proportion; None when n is 0.

    Used for accuracy over samples: each sample's mean score (its repeats averaged first) in
    [0, 1], their sum standing for the successes of n trials. Exact for 0/1 scores; soft (VQA)
    or averaged scores make it an approximation. Hand-written because scipy's binomial interval
    (``binomtest(...).proportion_ci``) takes whole successes only.
    """
    if n <= 0:
        return None
    z = normal_quantile(0.5 + level / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``scipy.stats.t.ppf``)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    return float(_scipy.t.ppf(p, df))


def normal_quantile(p: float) -> float:
    """The standard normal quantile (``scipy.stats.norm.ppf``)."""
    if not 0 < p < 1:
        raise ValueError(f"need 0 < p < 1, got {p}")
    return float(_scipy.norm.ppf(p))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error over the family given); scipy
    has no Holm, so it is written here: sort ascending, multiply the i-th smallest by (m - i),
    keep them monotone, cap at 1."""
    p = np.asarray(p_values, dtype=float)
    if p.size == 0:
        return p
    order = np.argsort(p)
    scaled = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    out = np.empty_like(p)
    out[order] = np.minimum(scaled, 1.0)
    return out


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate; ``scipy.stats.false_discovery_control``)."""
    p = np.asarray(p_values, dtype=float)
    return p if p.size == 0 else np.asarray(_scipy.false_discovery_control(p, method="bh"), dtype=float)


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
    cdf = _scipy.norm.sf(z)  # P(Bin >= h) = 1 - Phi(z)
    cdf = np.maximum.accumulate(cdf)
    k.flags.writeable = cdf.flags.writeable = False
    return k, cdf
