"""The length effect judged over cells, on synthetic tables of known truth: cell-to-cell noise
without a trend passes (false failures at most the nominal 5%), the legacy 1/N bias fails, a
real 10% trend fails and is reported with its size."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from phasetime.analysis.checks import Thresholds, run_checks
from phasetime.analysis.length import change_with_ci, length_effects
from phasetime.analysis.stats import t_quantile

pytestmark = pytest.mark.anyversion

LENGTHS = (2, 3, 4, 6, 8, 16, 24, 32)  # the output lengths of the run in issue 16
REPEATS = 4


def truth(seed: int, tpot_of_n, cell_sd: float = 0.04, row_sd: float = 0.01, batch: int = 1) -> pa.Table:
    """A results table whose TPOT is ``tpot_of_n(N)`` x a per-cell offset (``cell_sd``) x a
    per-call noise (``row_sd``); a batch's rows share their call."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {k: [] for k in ("cell", "call_id", "sequence", "method", "max_new_tokens",
                                             "output_tokens", "tpot_ms", "decode_ms", "total_ms", "other_ms")}
    for cell, n in enumerate(LENGTHS):
        offset = rng.normal(1.0, cell_sd)
        for call in range(REPEATS):
            tpot = tpot_of_n(n) * offset * rng.normal(1.0, row_sd)
            for seq in range(batch):
                for key, value in (("cell", cell), ("call_id", cell * 1_000_000 + call), ("sequence", seq),
                                   ("method", "direct"), ("max_new_tokens", n), ("output_tokens", n),
                                   ("tpot_ms", tpot), ("decode_ms", tpot * (n - 1)), ("total_ms", tpot * n + 5.0),
                                   ("other_ms", 0.5)):
                    rows[key].append(value)
    return pa.table(rows)


def verdict(table: pa.Table, **thresholds) -> str:
    return next(r for r in run_checks(table, None, Thresholds(**thresholds)) if r.check == "tpot_vs_length").verdict


def flat(n: float) -> float:
    return 2.0


def test_cell_noise_without_a_trend_fails_at_most_the_nominal_rate() -> None:
    seeds = range(400)
    failures = sum(verdict(truth(s, flat)) == "fail" for s in seeds)
    assert failures / len(seeds) <= 0.05, failures
    # The interval itself is honest, not merely wide: without the size tolerance it misses
    # about as often as a 95% interval should (a row-level interval missed in 16 of 40).
    misses = sum(verdict(truth(s, flat), length_tolerance=0.0) == "fail" for s in seeds)
    assert 0.02 <= misses / len(seeds) <= 0.08, misses


def test_a_machine_jumping_between_two_speeds_fails_at_most_the_nominal_rate() -> None:
    """Each cell at 1x or 1.5x at random (a VM that jumps between two clock states): far from
    normal noise. The permutation test over cells is exact whatever the noise's shape."""
    def jumping(seed: int) -> pa.Table:
        t = truth(seed, flat, cell_sd=0.0)
        rng = np.random.default_rng(10_000 + seed)
        speed = rng.choice([1.0, 1.5], size=len(LENGTHS))
        factor = np.array([speed[c] for c in t.column("cell").to_pylist()])
        return t.set_column(t.schema.get_field_index("tpot_ms"), "tpot_ms", pa.array(t.column("tpot_ms").to_numpy() * factor))

    effects = [length_effects(jumping(s))[0] for s in range(300)]
    assert sum(e.fails() for e in effects) / len(effects) <= 0.05
    assert all(e.p_value is not None and 0 < e.p_value <= 1 for e in effects)


def test_the_issue_16_tables_no_longer_fail() -> None:
    """4% cell offsets and 1% row noise, 40 seeds: the row-level check failed 16 of them."""
    assert sum(verdict(truth(s, flat)) == "fail" for s in range(40)) <= 2


def test_the_legacy_one_over_n_bias_fails_every_time() -> None:
    legacy = [verdict(truth(s, lambda n: 2.0 * (n - 1) / n)) for s in range(100)]
    assert legacy.count("fail") == 100


def test_a_real_ten_percent_trend_fails_with_its_size() -> None:
    def trend(n: float) -> float:
        return 2.0 * (1 + 0.10 * (n - 2) / 30)  # +10% from N = 2 to N = 32

    # the size as the check defines it: the rise from N = 2 to N = 32 over the mean of the cells
    true = (trend(32) - trend(2)) / np.mean([trend(n) for n in LENGTHS])
    assert true == pytest.approx(0.0968, abs=1e-4)
    results = []
    for seed in range(50):
        effect = length_effects(truth(seed, trend, cell_sd=0.01))[0]
        results.append(effect)
        assert effect.fails() and effect.ci[0] < effect.change < effect.ci[1]
    changes = np.array([e.change for e in results])
    assert abs(changes.mean() - true) < 0.01  # the size is reported, unbiased
    coverage = np.mean([e.ci[0] <= true <= e.ci[1] for e in results])
    assert coverage >= 0.85
    row = next(r for r in run_checks(truth(0, trend, cell_sd=0.01)) if r.check == "tpot_vs_length")
    assert "of the mean from N=2 to N=32" in row.detail and "unit: cell" in row.detail
    assert row.value == pytest.approx(true, abs=0.03)


def test_a_single_wild_cell_at_the_shortest_output_does_not_blow_up_the_interval() -> None:
    """issue 16, a subtract run on a quiet machine: two of the four N = 2 calls clamped to 0,
    so that cell's median sits far below the fitted curve. Relative to the fit at N = 2 (0.2's
    definition) the change read +121% with an interval of [-4%, +247%] and the check passed
    a legacy run with permutation p = 0.0005; relative to the mean the interval stays finite."""
    ns = np.array(LENGTHS, dtype=float)
    ys = np.array([0.361, 0.918, 1.029, 0.967, 1.015, 1.075, 1.099, 1.115])  # the run's cell values (ms)
    change, (lo, hi) = change_with_ci(ns, ys)
    assert lo > 0.2 and hi < 1.0 and lo < change < hi


def test_a_batch_is_one_call() -> None:
    """Rows of a batch are one call: replicating them changes nothing."""
    one, four = truth(3, flat, batch=1), truth(3, flat, batch=4)
    assert length_effects(one)[0].change == pytest.approx(length_effects(four)[0].change)
    assert length_effects(four)[0].calls == len(LENGTHS) * REPEATS


def test_two_output_lengths_are_not_judged() -> None:
    t = truth(0, lambda n: 2.0 * (n - 1) / n).filter(pa.array([n in (2, 3) for n in
                                                                truth(0, flat).column("max_new_tokens").to_pylist()]))
    assert verdict(t) == "skip"


def test_the_straight_line_fit_and_t_quantile_against_scipy() -> None:
    """With fewer than 5 cells the change comes from a straight line: its size and interval
    agree with scipy's regression (the interval's half-width: t times the delta-method error)."""
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 5, 8, 30, 200):
        assert t_quantile(0.975, df) == pytest.approx(stats.t.ppf(0.975, df), rel=2e-3)
    rng = np.random.default_rng(1)
    x = np.array([2.0, 4.0, 8.0, 16.0])
    y = 1.0 + 0.05 * x + rng.normal(0, 0.1, x.size)
    change, (lo, hi) = change_with_ci(x, y)
    fit = stats.linregress(x, y)
    rise, mean = fit.slope * (16.0 - 2.0), y.mean()
    assert change == pytest.approx(rise / mean)
    # the rise's standard error from scipy's slope error, on the scale of the mean
    var = (14.0 * fit.stderr) ** 2 / mean**2
    assert (hi - lo) / 2 == pytest.approx(stats.t.ppf(0.975, 2) * var**0.5, rel=1e-6)
