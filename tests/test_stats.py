"""Statistics helpers against fixed numbers and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from phasetime.analysis.stats import median, percentile
from phasetime.results.tables import group_indices

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion


def test_percentiles_by_hand() -> None:
    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]  # sorted: 1 1 2 3 4 5 6 9
    # linear interpolation at position q/100 x 7 of the sorted values
    expected = {0: 1.0, 10: 1.0, 50: 3.5, 90: 6.0 + 0.3 * 3.0, 100: 9.0}
    for q, value in expected.items():
        assert percentile(xs, q) == pytest.approx(value)
    assert median([1.0, None, 3.0, float("nan")]) == 2.0
    assert median(np.array([1.0, np.nan, 3.0])) == 2.0 and median(x for x in (4.0, None)) == 4.0
    assert median([]) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_group_indices_keeps_first_seen_order() -> None:
    import pyarrow as pa

    rows = pa.table({"a": [2, 1, 2, None], "v": [1, 2, 3, 4]})
    groups = group_indices(rows, ["a"])
    assert list(groups) == [(2,), (1,), (None,)]
    assert rows.column("v").take(groups[(2,)]).to_pylist() == [1, 3]


def test_cv_mad_and_geometric_mean() -> None:
    from phasetime.analysis.stats import cv, geometric_mean, mad_zscores

    xs = [10.0, 11.0, 9.0, 10.0, 30.0]
    # mean 14; squared deviations 16 + 9 + 25 + 16 + 256 = 322; sample variance 322 / 4 = 80.5
    assert cv(xs) == pytest.approx(80.5 ** 0.5 / 14)
    assert cv([1.0]) is None
    z = mad_zscores(xs)
    assert z[4] == pytest.approx(0.6745 * 20 / 1.0) and abs(z[0]) == 0
    assert list(mad_zscores([5.0, 5.0, 5.0])) == [0.0, 0.0, 0.0]
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0) and geometric_mean([2.0, 8.0, 4.0]) == pytest.approx(4.0)


def test_holm_and_benjamini_hochberg_by_hand() -> None:
    """Holm (1979)'s step-down by hand: p sorted 0.01, 0.02, 0.03, 0.04 times 4, 3, 2, 1 =
    0.04, 0.06, 0.06, 0.04, made monotone: 0.04, 0.06, 0.06, 0.06. BH: p x m / rank, monotone
    from the top: 0.04, 0.04, 0.04, 0.04."""
    from phasetime.analysis.stats import benjamini_hochberg, holm

    p = [0.03, 0.01, 0.04, 0.02]
    assert holm(p).tolist() == pytest.approx([0.06, 0.04, 0.06, 0.06])
    assert benjamini_hochberg(p).tolist() == pytest.approx([0.04, 0.04, 0.04, 0.04])
    assert holm([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])  # capped at 1


def test_mann_whitney_of_identical_samples_is_no_evidence() -> None:
    from phasetime.analysis.stats import mann_whitney_u

    assert mann_whitney_u([2.0, 2.0, 2.0], [2.0, 2.0])[1] == 1.0
    # every value of y above every value of x, 6 and 6 values: exact p = 2 / C(12, 6) = 2 / 924
    assert mann_whitney_u([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])[1] == pytest.approx(2 / 924)


def test_bootstrap_interval_covers_the_truth() -> None:
    from phasetime.analysis.stats import bootstrap_ci, spearman

    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.5 * x + rng.normal(size=300)
    lo, hi = bootstrap_ci(spearman, [x, y], paired=True, n_boot=400)
    rho = spearman(x, y)
    assert lo < rho < hi and lo > 0.2 and hi < 0.6
    lo, hi = bootstrap_ci(lambda a, b: np.median(b) / np.median(a), [x + 10, x + 12], n_boot=400)
    assert lo < 12 / 10 < hi
    # m-out-of-n: a large sample keeps a narrow interval around its estimate.
    big_x = rng.normal(size=20000)
    lo, hi = bootstrap_ci(spearman, [big_x, big_x + rng.normal(size=20000)], paired=True, n_boot=200, max_n=2000)
    assert hi - lo < 0.05


def test_wilson_interval_by_hand() -> None:
    from phasetime.analysis.stats import wilson_interval

    # 8 of 10: centre (0.8 + 1.96^2/20) / (1 + 1.96^2/10), half-width 1.96 sqrt(.16/10 + 1.96^2/400) / (1 + .38416)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) is None and wilson_interval(0, 5)[0] == 0.0


def test_median_draws_match_resampling() -> None:
    """The bootstrap distribution of a median drawn from its order statistics agrees with
    brute-force resampling (percentiles within a fraction of the interval's width)."""
    from phasetime.analysis.stats import EXACT_MEDIAN_FROM, median_draws

    rng = np.random.default_rng(3)
    for n in (EXACT_MEDIAN_FROM + 1, 3000):
        x = rng.lognormal(0.0, 0.4, n)
        drawn = np.percentile(median_draws(x, 4000, np.random.default_rng(1)), [2.5, 50, 97.5])
        resampled = np.percentile(np.median(x[np.random.default_rng(2).integers(0, n, (4000, n))], axis=1),
                                  [2.5, 50, 97.5])
        width = resampled[2] - resampled[0]
        assert np.all(np.abs(drawn - resampled) < 0.1 * width), (n, drawn, resampled)
    small = rng.normal(5, 1, 50)  # below the threshold: resampled, like np.median of each resample
    draws = median_draws(small, 2000, np.random.default_rng(0))
    brute = np.median(np.sort(small)[np.random.default_rng(0).integers(0, 50, (2000, 50))], axis=1)
    assert np.allclose(draws, brute)
