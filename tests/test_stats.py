"""Statistics helpers against fixed numbers and numpy."""

from __future__ import annotations

import numpy as np
import pytest

from phasetime._stats import group_by, median, percentile


def test_percentiles_match_numpy() -> None:
    xs = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    for q in (0, 10, 50, 90, 100):
        assert percentile(xs, q) == pytest.approx(np.percentile(xs, q))
    assert median([1.0, None, 3.0, float("nan")]) == 2.0
    assert median([]) is None
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_group_by_keeps_first_seen_order() -> None:
    rows = [{"a": 2, "v": 1}, {"a": 1, "v": 2}, {"a": 2, "v": 3}]
    assert list(group_by(rows, ["a"])) == [(2,), (1,)]
    assert [r["v"] for r in group_by(rows, ["a"])[(2,)]] == [1, 3]


def test_spearman_matches_scipy() -> None:
    from scipy import stats

    from phasetime._stats import ranks, spearman

    x = [1.0, 2.0, 2.0, 3.0, 5.0, 8.0, 8.0, 9.0]
    y = [2.0, 1.0, 4.0, 3.0, 7.0, 6.0, 9.0, 9.0]
    assert ranks(x) == list(stats.rankdata(x))
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic)
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert spearman([1.0, 1.0], [1.0, 2.0]) is None
