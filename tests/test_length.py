"""The length verdict on tables of known truth (phasetime.analysis.calibration): the hardware's
per-position profile never fails the method, an artifact of the call's length fails with its
size, too little data is inconclusive (never pass), and a batch is one call."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from phasetime.analysis.calibration import synthetic_run
from phasetime.analysis.checks import Thresholds, run_checks
from phasetime.analysis.length import HOW_DIRECT, HOW_POSITION, judge_configs

pytestmark = pytest.mark.anyversion

EIGHT = (2, 3, 4, 6, 8, 16, 24, 32)  # the output lengths of issue 16's run
FOUR = (2, 8, 16, 32)
THREE = (2, 8, 32)  # the examples' sweep


def judged(lengths, shape="flat", effect=0.0, noise=0.01, seeds=range(100), **kw):
    rng = np.random.default_rng(sum(seeds) + len(lengths))
    return [judge_configs(synthetic_run(rng, lengths, shape, effect, noise, **kw))[0] for _ in seeds]


def share(found, verdict: str) -> float:
    return sum(j.verdict == verdict for j in found) / len(found)


@pytest.mark.parametrize("shape, size", [("warmup", 0.2), ("growth", 0.2), ("call-scale", 0.1)])
def test_a_physical_profile_does_not_fail_the_method(shape: str, size: float) -> None:
    """The first gaps 20% slower, attention adding 20% by the last position, or every call at its
    own speed (10% sd): shared by every call at a position, so it cancels; the TPOT of the same
    runs does depend on N, and that is reported as the hardware's, not judged. 400 seeds; the
    bound allows the binomial spread around 5% (1,000 seeds of call-scale: 4.1%)."""
    found = judged(EIGHT, shape, size, seeds=range(400))
    assert share(found, "fail") <= 0.065
    assert abs(np.mean([j.effect for j in found])) < 0.01
    assert all(j.how == HOW_POSITION for j in found)
    if shape == "warmup":  # the N = 2 calls' TPOT reads 20% above the N = 32 calls' by construction
        assert np.mean([j.hardware for j in found]) == pytest.approx(0.2, abs=0.01)


def test_noise_fails_no_more_than_the_nominal_rate() -> None:
    """4% between cells and 5% per gap, nothing else: a fail needs the interval to exclude 0
    (95%) and the estimate beyond 5%. 400 seeds; the bound allows the binomial spread around 5%."""
    found = judged(EIGHT, noise=0.04, gap_noise=0.05, seeds=range(400))
    assert share(found, "fail") <= 0.065
    # without the tolerance the interval alone: it misses 0 about as often as 95% says
    missed = np.mean([j.ci[0] > 0 or j.ci[1] < 0 for j in found])
    assert 0.02 <= missed <= 0.09


def test_end_of_call_work_billed_to_the_last_step_fails_with_its_size() -> None:
    """A fixed extra time on every call's last gap, 10% of the N = 2 calls' TPOT, at 1% cell noise."""
    found = judged(EIGHT, "last-gap", 0.10, seeds=range(100))
    assert share(found, "fail") >= 0.9
    assert np.mean([j.effect for j in found]) == pytest.approx(0.10, abs=0.01)
    coverage = np.mean([j.ci[0] <= 0.10 <= j.ci[1] for j in found])
    assert coverage >= 0.85


def test_an_artifact_is_rarely_a_pass() -> None:
    for lengths, noise in ((FOUR, 0.02), (EIGHT, 0.04), (THREE, 0.01)):
        found = judged(lengths, "last-gap", 0.10, noise=noise, seeds=range(100))
        assert share(found, "pass") <= 0.10, (lengths, noise)


def test_three_output_lengths_are_inconclusive_and_say_what_would_settle_it() -> None:
    """N = 2, 8, 32: only the N = 8 calls have a last gap that longer calls have too, and one
    cell gives no interval. Four lengths with little data say how many cells the noise needs."""
    found = judged(THREE, noise=0.04, seeds=range(20))
    assert all(j.verdict == "inconclusive" and j.effect is None for j in found)
    assert "needs 2" in found[0].reason and "would settle with more output lengths between N=3 and N=31" in found[0].reason
    four = judged(FOUR, gap_noise=0.05, seeds=range(30))
    j = next(j for j in four if j.verdict == "inconclusive")
    assert "cells judged; would settle with about" in j.reason


def test_two_output_lengths_cannot_be_judged_and_one_has_nothing_to_judge() -> None:
    rng = np.random.default_rng(0)
    two = judge_configs(synthetic_run(rng, (2, 8)))[0]
    assert two.verdict == "inconclusive" and "needs 2" in two.reason and two.effect is None
    one = judge_configs(synthetic_run(rng, (8,)))[0]
    assert one.verdict == "skip" and "one output length (N=8)" in one.reason
    zero = synthetic_run(rng, (2, 8, 32), "decode/N", 1.0)  # decode / N reading 0 at every N
    zero = zero.set_column(zero.schema.get_field_index("tpot_ms"), "tpot_ms", pa.array([0.0] * zero.num_rows))
    found = judge_configs(zero)[0]
    assert found.verdict == "skip" and found.reason.startswith("per-token value 0 or missing in every call of N=2, N=8, N=32")


def test_the_legacy_method_fails_by_its_shape_and_against_the_direct_method() -> None:
    """decode / N of equal steps: alone, judged by its 1/N shape; beside direct rows of the same
    N, as the ratio of the two (the hardware cancels): (N - 1) / N, -50% at N = 2."""
    rng = np.random.default_rng(3)
    alone = judge_configs(synthetic_run(rng, FOUR, "decode/N", 0.5))[0]
    assert alone.method == "subtract" and alone.verdict == "fail" and alone.effect < -0.3
    both = pa.concat_tables([synthetic_run(rng, FOUR, "decode/N", 0.5), synthetic_run(rng, FOUR, "warmup", 0.2)])
    by_method = {j.method: j for j in judge_configs(both)}
    legacy = by_method["subtract"]
    assert legacy.how == HOW_DIRECT and legacy.verdict == "fail"
    # the two per-token values at N = 2 against N = 32: (1 - 0.5) - (1 - 0.5 / 31)
    assert legacy.ci[0] < -0.5 + 0.5 / 31 < legacy.ci[1]
    assert by_method["direct"].verdict != "fail"


def test_a_batch_is_one_call() -> None:
    """Rows of a batch are one call: its sequences' gaps are averaged per position first, so
    four copies of every row judge like one."""
    one = synthetic_run(np.random.default_rng(5), FOUR, "last-gap", 0.1)
    four = pa.concat_tables([one] * 4)
    four = four.set_column(four.schema.get_field_index("sequence"), "sequence",
                           pa.array(np.repeat(np.arange(4), one.num_rows)))
    a, b = judge_configs(one)[0], judge_configs(four)[0]
    assert a.effect == pytest.approx(b.effect) and a.ci == pytest.approx(b.ci) and b.calls == a.calls


def test_check_and_its_cli_agree_and_inconclusive_exits_0_unless_strict(tmp_path) -> None:
    from typer.testing import CliRunner

    from phasetime.cli import app
    from phasetime.results.files import write_table

    table = synthetic_run(np.random.default_rng(1), THREE, cell_noise=0.04)
    row = next(r for r in run_checks(table, None, Thresholds()) if r.check == "tpot_vs_length")
    assert row.verdict == "inconclusive"
    (tmp_path / "run").mkdir()
    write_table(tmp_path / "run" / "measurements.parquet", table.replace_schema_metadata({b"phasetime.schema": b"1"}))
    runner = CliRunner()
    plain = runner.invoke(app, ["check", str(tmp_path / "run")])
    assert plain.exit_code == 0 and "inconclusive" in plain.output, plain.output
    strict = runner.invoke(app, ["check", str(tmp_path / "run"), "--strict"])
    assert strict.exit_code == 1


def test_the_position_figure_draws_the_profile_the_calls_share() -> None:
    """Without noise, the median gap at each position is the injected profile itself: the first
    gap 1.22 ms, falling towards 1 ms (warm-up), whatever the cell."""
    from phasetime.analysis.report.answers import position_figure

    table = synthetic_run(np.random.default_rng(0), FOUR, "warmup", 0.2, cell_noise=0.0, call_noise=0.0, gap_noise=0.0)
    gaps = table.column("itl_ms").to_pylist()[-1]  # an N = 32 call's 31 gaps: the profile
    line = next(t for t in position_figure(table)["data"] if t.get("mode") == "lines+markers")
    assert line["x"] == list(range(1, 32)) and line["y"] == pytest.approx(gaps)
    assert gaps[0] > 1.2 * gaps[-1]  # the warm-up is there to be seen


def test_noisy_short_cells_do_not_carry_the_legacy_line() -> None:
    """A legacy per-token value with no bias, judged by its shape: the N = 2 cells rest on one
    gap per call (8% noise each), the N = 32 cells on 31. An unweighted line let the noisy short
    cells carry it and failed 16.5% of 400 such runs; weighted by each cell's own spread (and
    the spread between cells), at most the nominal 5% (binomial room on 300 seeds)."""
    found = judged(EIGHT, "decode/N", 0.0, noise=0.005, gap_noise=0.08, seeds=range(300))
    assert share(found, "fail") <= 0.065
    strong = judged(EIGHT, "decode/N", 0.2, noise=0.005, gap_noise=0.08, seeds=range(50))
    assert share(strong, "fail") >= 0.9  # decode / N reading 20% low at N = 2 still fails


def test_a_call_that_stops_early_is_judged_at_its_own_last_gap() -> None:
    """Calls end at EOS anywhere between half and all of max_new_tokens, and each carries 0.1 ms of
    end-of-call work on its own last gap (10% of a 1 ms step; N_min = 4, so TPOT at N = 4 reads
    0.1 / 3 = 3.3% high). The last gap is found per call from its gaps, not from the cell's
    median length, which lands mid-call for half of them."""
    def run(extra: float, seed: int) -> pa.Table:
        rng = np.random.default_rng(seed)
        rows = []
        for cell, top in enumerate((4, 8, 16, 24, 32)):
            for call in range(8):
                n = int(rng.integers(max(2, top // 2), top + 1)) if top > 4 else 4
                gaps = np.exp(rng.normal(0.0, 0.01, n - 1))
                gaps[-1] += extra
                rows.append({"cell": cell, "call_id": cell * 1_000_000 + call, "sequence": 0, "method": "direct",
                             "max_new_tokens": top, "output_tokens": n, "tpot_ms": float(gaps.mean()),
                             "decode_ms": float(gaps.sum()), "itl_ms": gaps.tolist()})
        return pa.Table.from_pylist(rows)

    found = [judge_configs(run(0.1, s))[0] for s in range(20)]
    assert np.mean([j.effect for j in found]) == pytest.approx(0.1 / 3, abs=0.005)
    assert all(j.ci[0] > 0 for j in found)
    clean = [judge_configs(run(0.0, s))[0] for s in range(20)]
    assert all(j.verdict != "fail" for j in clean) and abs(np.mean([j.effect for j in clean])) < 0.005
