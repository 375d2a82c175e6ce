"""The stability rules on fixed numbers, worked out by hand."""

from __future__ import annotations

import pyarrow as pa
import pytest

from phasetime.analysis.stability import Thresholds, judge, judge_table, machine_advice, machine_warnings, table_warnings

pytestmark = pytest.mark.anyversion


def test_a_steady_cell_passes() -> None:
    j = judge([10.0, 10.5, 11.0, 10.2, 10.4])
    # median 10.4, MAD 0.2: robust CV 1.4826 x 0.2 / 10.4; mean 10.42, sample stdev sqrt(0.568 / 4)
    assert j.verdict == "pass" and j.outliers == 0 and j.reasons == ()
    assert j.robust_cv == pytest.approx(1.4826 * 0.2 / 10.4)
    assert j.cv == pytest.approx((0.568 / 4) ** 0.5 / 10.42)
    assert j.needed == 3  # ceil((1.96 x 0.0362 / 0.05)^2) = ceil(2.01)


def test_one_stalled_call_is_an_outlier_not_instability() -> None:
    j = judge([80.0, 78.0, 82.0, 81.0, 143.0])
    # median 81, MAD 1: z of 143 is 0.6745 x 62 = 42 > 3.5, so it is left out of the CV
    assert j.verdict == "pass" and j.outliers == 1
    assert j.cv == pytest.approx(((0.0625 + 5.0625 + 3.0625 + 0.5625) / 3) ** 0.5 / 80.25)


def test_a_spread_out_cell_fails_with_every_reason() -> None:
    j = judge([10.0, 12.0, 14.0, 16.0, 18.0], what="tpot_ms")
    # median 14, MAD 2: robust CV 0.212 >= 0.20; CV sqrt(10) / 14 = 0.226; median / fastest = 1.4
    assert j.verdict == "fail" and j.robust_cv == pytest.approx(1.4826 * 2 / 14)
    assert j.reasons == ("robust CV of tpot_ms 21% (fails from 20%)", "CV of tpot_ms 23% (warns from 10%)",
                         "median tpot_ms 40% above the fastest call")


def test_stalls_that_hit_most_calls_warn() -> None:
    j = judge([10.0, 13.0, 13.0, 13.1, 13.2])  # median 13.0: 30% above the fastest; MAD 0.1
    assert j.verdict == "warn" and "median total_ms 30% above the fastest call" in j.reasons


def test_too_few_calls_or_a_zero_median_are_not_judged() -> None:
    assert judge([1.0, 5.0]).verdict == "skip"
    assert judge([0.0, 0.0, 0.0, 0.05, 0.05]).verdict == "skip"  # a legacy tpot clamped to 0
    with pytest.raises(ValueError):
        Thresholds(cv_warn=0.0)


def test_tables_are_judged_per_cell_and_sample() -> None:
    table = pa.table({
        "cell": [0] * 5 + [1] * 5, "sample_id": ["a"] * 10, "sequence": [0] * 10, "call_id": list(range(10)),
        "total_ms": [10.0, 10.5, 11.0, 10.2, 10.4, 10.0, 12.0, 14.0, 16.0, 18.0], "tpot_ms": [None] * 10,
    })
    verdicts = {(scope["cell"], phase): j.verdict for scope, phase, j in judge_table(table)}
    assert verdicts == {(0, "total_ms"): "pass", (1, "total_ms"): "fail"}
    assert table_warnings(table) == ["cell=1, sample_id=a: robust CV of total_ms 21% (fails from 20%); CV of total_ms "
                                     "23% (warns from 10%); median total_ms 40% above the fastest call"]


def test_the_machine_is_judged_from_run_json() -> None:
    run = {
        "environment": {"usable_cpus": 2, "torch_threads": 1, "physical_cpus": 2, "cpu_governor": "powersave"},
        "executor": {"executor": "local"},
        # 10 s of run; the machine was busy 25 s of CPU, the run itself 10 s: others kept 1.5 CPUs busy
        "conditions_before": {"load_average": [0.5, 0.5, 0.5],
                              "cpu_seconds": {"machine_busy_s": 100.0, "process_s": 5.0, "monotonic_s": 1000.0}},
        "conditions_after": {"load_average": [2.6, 1.0, 0.6],
                             "cpu_seconds": {"machine_busy_s": 125.0, "process_s": 15.0, "monotonic_s": 1010.0}},
    }
    warnings = machine_warnings(run)
    assert warnings[0].startswith("other processes kept 1.5 of 2 CPUs busy")
    assert "load average 2.6 after the run exceeds the 2 usable CPUs" in warnings[1]
    assert machine_advice(run) == ["CPU frequency governor is 'powersave': 'performance' keeps the clock steady"]
    quiet = {**run, "conditions_after": {"load_average": [0.4, 0.5, 0.5],
                                         "cpu_seconds": {"machine_busy_s": 111.0, "process_s": 15.0, "monotonic_s": 1010.0}}}
    assert machine_warnings(quiet) == []  # others used 0.1 CPU


def test_warnings_count_calls_not_the_rows_of_a_batch() -> None:
    """5 calls at batch 4 (20 rows): the reasons count calls, never the batch's rows (0.2.0 said
    "8 outlier calls" in a cell of 5 calls)."""
    totals = [10.0, 13.0, 13.1, 13.2, 60.0]  # median 13.1, MAD 0.1: 10 and 60 are outliers (|z| > 3.5)
    rows = [{"cell": 0, "max_new_tokens": 4, "sample_id": "s", "call_id": call, "sequence": seq,
             "method": "direct", "total_ms": total, "tpot_ms": total / 4}
            for call, total in enumerate(totals) for seq in range(4)]
    judged = {phase: j for _, phase, j in judge_table(pa.Table.from_pylist(rows))}
    assert judged["total_ms"].n == 5 and judged["tpot_ms"].n == 5
    assert judged["total_ms"].outliers == 2 and "2 outlier call(s)" in judged["total_ms"].reasons
    lines = table_warnings(pa.Table.from_pylist(rows), label="cell 0")
    assert lines and all("outlier call(s)" not in line or "2 outlier call(s)" in line for line in lines)


def test_a_resume_that_measured_nothing_does_not_blame_the_machine() -> None:
    """Two sessions: the first quiet, the second (a resume 560 s later that measured nothing)
    would read as 560 s of other work if its conditions were paired with the first's."""
    from phasetime.analysis.stability import machine_warnings

    def conditions(t: float, busy: float, own: float) -> dict:
        return {"cpu_seconds": {"monotonic_s": t, "machine_busy_s": busy, "process_s": own}, "load_average": [0.5]}

    env = {"usable_cpus": 2, "torch_threads": 1, "physical_cpus": 2}
    first = {"conditions_before": conditions(0, 0, 0), "conditions_after": conditions(100, 100, 95),
             "cells_measured": 8}
    resumed = {"conditions_before": conditions(660, 1200, 100), "conditions_after": conditions(661, 1201, 100.5),
               "cells_measured": 0}
    run = {"environment": env, "sessions": [first, resumed], "conditions_before": first["conditions_before"],
           "conditions_after": first["conditions_after"]}
    assert machine_warnings(run) == []
    # the same resume with cells measured, and busy: judged on its own conditions, named
    resumed_busy = {**resumed, "cells_measured": 3, "conditions_after": conditions(670, 1220, 101)}
    warned = machine_warnings({**run, "sessions": [first, resumed_busy]})
    assert len(warned) == 1 and "session 2 of 2" in warned[0]
