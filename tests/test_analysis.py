"""check, compare, report and trace on runs with known, injected delays and on fixed tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import phasetime.core.clock as clock_module
import phasetime.experiments.models as models_module
from conftest import VirtualClock, inject_delays, load_tiny, run_cli
from phasetime.analysis.checks import Thresholds, failed, run_checks
from phasetime.analysis.compare import compare_methods, compare_runs
from phasetime.analysis.report import build_report
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.results import read as read_results
from phasetime.results.files import read_json
from phasetime.results.trace import trace

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion


def read_run(path: Path) -> dict:
    return read_json(path / "run.json")


class _Cli:
    """``cli.invoke(app, [...])`` of the tests, through the console script's entry."""

    @staticmethod
    def invoke(_app: object, args: list[str]):
        return run_cli(*args)


cli = _Cli()
app = None


DECODE_STEP_MS = 10.0


def delayed_run(out: Path, method: str, monkeypatch: pytest.MonkeyPatch, lengths=(1, 2, 4, 8, 16), **extra) -> Path:
    """A run of tiny-llava whose phases take known times on a virtual clock (decode steps:
    10 ms + 0..2 ms of seeded noise), so that every figure of the run is exact.

    The decode steps do not depend on the output length, so any correlation of tpot with
    N is the seeded noise's.
    """
    model, processor = load_tiny("tiny-llava")
    monkeypatch.setattr(models_module, "load", lambda *a, **k: (model, processor))
    clock = VirtualClock()
    monkeypatch.setattr(clock_module, "clock_for", lambda device=None: clock)
    exp = parse_experiment({
        "name": "gt", "models": ["tiny-llava"], "inputs": {"kind": "synthetic", "image_size": 64},
        "sweep": {"max_new_tokens": list(lengths), "method": [method]}, "repeats": 6, "warmup": 1, **extra,
    })
    with inject_delays(model, 4.0, 6.0, DECODE_STEP_MS, decode_jitter_ms=2.0, clock=clock):
        result = run_experiment(exp, out)
    assert result.failed == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    mp = pytest.MonkeyPatch()
    base = tmp_path_factory.mktemp("runs")
    try:
        # the legacy run has five output lengths with N >= 2: enough for the 1/N shape of its bias
        return {m: delayed_run(base / m, m, mp, lengths=(1, 2, 3, 4, 8, 16) if m == "subtract" else (1, 2, 4, 8, 16))
                for m in ("direct", "subtract", "both")}
    finally:
        mp.undo()


def test_check_passes_the_row_checks_of_a_direct_run(runs: dict[str, Path]) -> None:
    results = run_checks(read_results(runs["direct"]), read_run(runs["direct"]), legacy=True)
    row_checks = ("decode_present", "tpot_only_when_defined", "no_negative_phase", "phases_within_total")
    assert [r.verdict for r in results if r.check in row_checks] == ["pass"] * 4
    # The injected steps do not depend on N (10 ms + 0..2 ms of seeded noise per step): judged
    # by position, the direct method shows no length effect beyond noise (never a failure; four
    # cells leave two degrees of freedom, so the verdict says what would settle it when the
    # interval is wider than the tolerance); decode / N of the same rows shows its 1/N bias:
    # 5 ms per token at N = 2 against 9.4 at N = 16, about -60% of the mean.
    right = next(r for r in results if r.check == "tpot_vs_length")
    legacy = next(r for r in results if r.check == "tpot_vs_length[legacy decode/N]")
    assert right.verdict in ("pass", "inconclusive") and abs(right.value) < 0.1
    assert "same positions" in right.detail
    if right.verdict == "inconclusive":
        assert "would settle with" in right.detail
    assert legacy.verdict == "info" and legacy.value < -0.4 and "unit: cell" in legacy.detail


def test_check_names_the_rows_of_a_negative_gap(runs: dict[str, Path], tmp_path: Path) -> None:
    """A negative gap (here one row's, edited) fails no_negative_phase, its rows counted."""
    import pyarrow.parquet as pq

    full = read_results(runs["direct"])
    rows = full.to_pylist()
    rows[3]["itl_ms"] = [-2.0, *rows[3]["itl_ms"][1:]]
    edited = tmp_path / "edited.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=full.schema), edited)
    result = run_cli("check", str(edited))
    assert result.exit_code == 1 and "no_negative_phase" in result.output and "1 of" in result.output


def correlated_table(tpot_of_n, lengths=(2, 4, 8, 16, 32), repeats: int = 6) -> pa.Table:
    n_rows = len(lengths) * repeats
    n = np.repeat(lengths, repeats)
    noise = np.tile([0.03, -0.02, 0.01, -0.01, 0.0, 0.02], n_rows // 6 + 1)[:n_rows]
    tpot = np.array([tpot_of_n(v) for v in n]) + noise
    return table(method=["direct"] * n_rows, output_tokens=n, max_new_tokens=n, tpot_ms=tpot,
                 decode_ms=tpot * (n - 1), total_ms=tpot * n + 5, other_ms=[0.5] * n_rows,
                 call_id=np.repeat(np.arange(len(lengths)) * 1_000_000, repeats) + np.tile(np.arange(repeats), len(lengths)))


@pytest.mark.parametrize(
    "tpot_of_n, lengths, verdict",
    [
        (lambda n: 1.0, (2, 4, 8, 16, 32), "pass"),  # flat: noise only
        (lambda n: 1.0 * (n - 1) / n, (2, 4, 8, 16, 32), "fail"),  # decode / N: the legacy bias
        (lambda n: 1.0 * (n - 1) / n, (2, 4), "inconclusive"),  # two output lengths: no interval over cells
    ],
)
def test_correlation_check_on_fixed_tables(tpot_of_n, lengths, verdict: str) -> None:
    """Tables without per-step gaps: judged by the shape of the cells' TPOT."""
    result = next(r for r in run_checks(correlated_table(tpot_of_n, lengths)) if r.check == "tpot_vs_length")
    assert result.verdict == verdict, result
    if len(lengths) < 3:
        assert "needs 3" in result.detail and "N=2, N=4" in result.detail


def test_check_fails_on_the_legacy_method_naming_the_checks(runs: dict[str, Path]) -> None:
    results = run_checks(read_results(runs["subtract"]), read_run(runs["subtract"]), legacy=True)
    names = {r.check for r in failed(results)}
    assert {"tpot_only_when_defined", "tpot_vs_length"} <= names
    effect = next(r for r in results if r.check == "tpot_vs_length")
    assert effect.value < -0.3 and effect.verdict == "fail"  # decode / N reads low at short N


def test_check_cli_writes_json_and_exits_by_verdict(runs: dict[str, Path], tmp_path: Path) -> None:
    from phasetime.results.files import write_table

    flat = tmp_path / "flat"
    flat.mkdir()
    write_table(flat / "measurements.parquet", correlated_table(lambda n: 1.0).replace_schema_metadata({b"phasetime.schema": b"1"}))
    ok = cli.invoke(app, ["check", str(flat)])
    assert ok.exit_code == 0 and "0 failed" in ok.output, ok.output
    before = sorted(p.name for p in runs["subtract"].iterdir())
    bad = cli.invoke(app, ["check", str(runs["subtract"]), "--legacy", "-o", str(tmp_path / "check.json")])
    assert bad.exit_code == 1
    assert sorted(p.name for p in runs["subtract"].iterdir()) == before  # check writes only where told
    summary = next(line for line in bad.output.splitlines() if " checks, " in line)
    failed_names = [name.strip() for name in summary.split("failed: ")[-1].split(",")]
    assert {"tpot_only_when_defined", "tpot_vs_length"} <= set(failed_names)
    saved = json.loads((tmp_path / "check.json").read_text())
    assert saved["thresholds"]["length_tolerance"] == 0.05 and any(c["verdict"] == "fail" for c in saved["checks"])
    assert any(c["check"] == "tpot_vs_length[legacy decode/N]" for c in saved["checks"])
    loose = cli.invoke(app, ["check", str(runs["subtract"]), "--length-tolerance", "9", "--tolerance-ms", "1"])
    assert "tpot_vs_length" not in loose.output.split("failed:")[-1]


def table(**columns) -> pa.Table:
    return pa.table(columns)


def test_row_checks_on_fixed_rows() -> None:
    t = table(
        method=["direct"] * 4, output_tokens=[1, 2, 3, 5], decode_ms=[0.0, 0.0, 4.0, 8.0],
        tpot_ms=[None, None, 2.0, 2.0], other_ms=[0.1, 0.1, -0.2, 0.0], total_ms=[5.0, 6.0, 7.0, 9.0],
        vision_ms=[1.0, 1.0, 1.0, -1.0], prefill_ms=[1.0] * 4, ttft_ms=[5.0, 3.0, 3.0, 1.0],
    )
    results = {r.check: r for r in run_checks(t, None, Thresholds(tolerance_ms=0.05))}
    assert results["decode_present"].value == 1  # N = 2 with decode 0
    assert results["tpot_only_when_defined"].value == 0
    assert results["phases_within_total"].value == 1
    assert results["no_negative_phase"].value == 1
    assert results["warmup"].verdict == "skip"


def test_outliers_are_counted_not_dropped() -> None:
    totals = [10.0] * 19 + [100.0]
    t = table(method=["direct"] * 20, output_tokens=[4] * 20, decode_ms=[3.0] * 20, tpot_ms=[1.0] * 20,
              other_ms=[0.0] * 20, total_ms=totals, max_new_tokens=[4] * 20)
    r = next(r for r in run_checks(t) if r.check == "outliers_total_ms")
    assert r.value == 1 and "kept" in r.detail


def test_compare_methods_before_and_after(runs: dict[str, Path]) -> None:
    result = compare_methods(read_results(runs["both"]))
    phases = {p["phase"]: p for p in result["phases"]}
    # The separate prefill call encodes the image again: subtract's prefill is the injected
    # 4 ms of vision longer, exactly (virtual clock).
    assert phases["prefill_ms"]["median_difference"] == pytest.approx(4.0)
    corr = {c["method"]: c for c in result["correlation"]}
    # Over cells: the direct method judged by position shows nothing beyond noise; the legacy
    # decode / N against the direct TPOT of the same N shows its 1/N bias. The steps are equal
    # (10 ms + noise), so decode / N over decode / (N - 1) is (N - 1) / N: 0.5 at N = 2 and
    # 0.9375 at N = 16, on a line in w = 1 / (N - 1) (exactly: (N - 1) / N = 1 - w / (1 + w)
    # is close to it), a change of about -44% from N = 16 down to N = 2.
    direct = corr["direct"]
    assert direct["how"] == "by position" and direct["verdict"] != "fail" and direct["ci"][0] < 0 < direct["ci"][1]
    legacy = corr["subtract"]
    assert legacy["how"] == "against the direct method" and legacy["cells"] == 4 and legacy["verdict"] == "fail"
    assert legacy["ci"][0] < 0.5 - 0.9375 < legacy["ci"][1]
    assert result["zero_decode"]["direct"]["decode_zero_share"] == 0.0
    out = cli.invoke(app, ["compare", str(runs["both"]), "--methods"])
    assert out.exit_code == 0 and "negative before clamping" in out.output
    with pytest.raises(ValueError, match="both methods"):
        compare_methods(read_results(runs["direct"]))


def test_compare_runs_finds_a_real_difference_and_no_false_one() -> None:
    rng = np.random.default_rng(0)
    n = 40

    def run(decode_scale: float) -> pa.Table:
        cells = np.repeat([0, 1], n)
        lengths = np.repeat([8, 16], n)
        decode = rng.normal(10.0, 0.3, 2 * n) * decode_scale * lengths / 8
        return table(method=["direct"] * 2 * n, max_new_tokens=lengths, cell=cells, vision_ms=rng.normal(5, 0.2, 2 * n),
                     prefill_ms=rng.normal(3, 0.2, 2 * n), ttft_ms=rng.normal(9, 0.3, 2 * n), tpot_ms=decode / (lengths - 1),
                     decode_ms=decode, total_ms=decode + 9, dtype=["float32"] * 2 * n)

    a, b = run(1.0), run(2.0)
    b = b.set_column(b.column_names.index("dtype"), "dtype", pa.array(["bfloat16"] * 2 * n))
    keys, rows = compare_runs(a, b, n_boot=300)
    assert "dtype" not in keys and "max_new_tokens" in keys  # what differs is compared, not matched
    by = {(r.cell, r.phase): r for r in rows}
    decode = by[("max_new_tokens=8", "decode_ms")]
    assert decode.verdict == "slower" and decode.ratio == pytest.approx(2.0, rel=0.05)
    assert decode.ci[0] < 2.0 < decode.ci[1]
    assert by[("max_new_tokens=8", "vision_ms")].verdict == "not significant"
    assert by[("geometric mean", "decode_ms")].ratio == pytest.approx(2.0, rel=0.05)
    with pytest.raises(ValueError, match="no configuration cell"):
        compare_runs(a, b, on=["cell", "dtype"])


def test_trace_export(runs: dict[str, Path], tmp_path: Path) -> None:
    t = read_results(runs["direct"])
    call = int(t.column("call_id")[-1].as_py())
    doc = trace(t, [call])
    events = doc["traceEvents"]
    names = [e["name"] for e in events if e["ph"] == "X"]
    # the tower and the projector are two vision spans (transformers <= 5.17: inside the prefill)
    assert names[0] == "generate" and [n for n in names[1:5] if n != "vision"] == ["prefill", "decode"]
    assert names[1:5].count("vision") == 2
    steps = [e for e in events if e["ph"] == "X" and e["name"].startswith("decode step")]
    assert len(steps) == 15 and all(e["tid"] == 2 and e["dur"] >= DECODE_STEP_MS * 1000 for e in steps)  # in us
    vision = next(e for e in events if e["name"] == "vision")
    assert 4000 <= vision["dur"] <= 50000  # 4 ms injected: microseconds, not ms or ns
    assert {e["args"]["name"] for e in events if e["name"] == "thread_name"} == {"phases", "decode steps"}
    out = cli.invoke(app, ["trace", str(runs["direct"]), "--call", str(call), "-o", str(tmp_path / "t.json")])
    assert out.exit_code == 0 and json.loads((tmp_path / "t.json").read_text())["traceEvents"]
    missing = cli.invoke(app, ["trace", str(runs["direct"]), "--call", "7", "-o", str(tmp_path / "u.json")])
    assert missing.exit_code == 2 and "no call with id 7" in missing.output


def figures_of(page: str) -> dict[str, dict]:
    """The Plotly figures embedded in a report, by figure id."""
    data = json.loads(re.search(r"var FIGURES = (\{.*?\});", page, re.S).group(1))
    return {key.removeprefix("plot-"): value for key, value in data.items()}


def test_report_has_every_figure_with_data(runs: dict[str, Path]) -> None:
    page, ids = build_report(read_results(runs["both"]), read_run(runs["both"]))
    assert ids == ["fig-breakdown", "fig-length", "fig-positions", "fig-vs-max_new_tokens", "fig-itl", "fig-timeline"]
    figures = figures_of(page)
    assert list(figures) == ids
    for fid, fig in figures.items():
        points = sum(len(trace.get("x") or trace.get("z") or []) for trace in fig["data"])
        assert points > 3, fid
    for section in ("environment", "configuration", "summary", "checks"):
        assert f"id='{section}'" in page
    assert not re.search(r"<script[^>]*\bsrc=", page)  # plotly is inlined: the page opens offline
    assert "<script src=" not in page  # everything inline: it opens offline


def test_a_negative_other_is_drawn_left_of_zero(runs: dict[str, Path]) -> None:
    table = read_results(runs["subtract"])
    page, _ = build_report(table, read_run(runs["subtract"]))
    other = next(t for t in figures_of(page)["fig-breakdown"]["data"] if t.get("name") == "other")
    assert min(other["x"]) < 0  # the clamp hid a negative decode: the bar says so, left of zero


def test_outliers_are_judged_within_a_sample() -> None:
    """Two samples, one three times as long as the other, four calls each: judged across the
    samples the long one's calls would all look alike and the short ones too, but one call of
    the short sample at 3x its own is an outlier only among its own sample's calls."""
    totals = [10.0, 10.1, 9.9, 30.0] + [30.0, 30.3, 29.7, 30.1] + [10.0, 10.2, 9.8, 10.1]
    samples = ["short"] * 4 + ["long"] * 4 + ["short"] * 4
    t = table(method=["direct"] * 12, output_tokens=[4] * 12, decode_ms=[3.0] * 12, tpot_ms=[1.0] * 12,
              other_ms=[0.0] * 12, total_ms=totals, max_new_tokens=[4] * 12, sample_id=samples,
              call_id=list(range(12)))
    r = next(r for r in run_checks(t) if r.check == "outliers_total_ms")
    assert r.value == 1 and "sample_id=short" in r.detail


def test_compare_controls_the_family_wise_error_over_its_table() -> None:
    """40 pairs of runs drawn from one distribution, 12 cells x their phases each: tested at 5%
    one by one, nearly every pair named some cell faster or slower (0.3: 19 of 20). Adjusted
    over the table (Holm), a pair names one at most as often as 5% says, with room for the
    binomial spread of 40 pairs."""
    rng = np.random.default_rng(11)

    def run() -> pa.Table:
        cells, calls = np.repeat(np.arange(12), 8), np.arange(96)
        values = {p: rng.lognormal(np.log(10.0), 0.1, 96) for p in ("vision_ms", "prefill_ms", "decode_ms",
                                                                    "total_ms", "ttft_ms", "tpot_ms")}
        return pa.table({"cell": cells, "call_id": calls, "max_new_tokens": cells, **values})

    named = {"holm": 0, "bh": 0}
    unadjusted = 0
    for _ in range(40):
        a, b = run(), run()
        for correction in named:
            _, rows = compare_runs(a, b, n_boot=200, correction=correction)
            named[correction] += any(r.verdict in ("faster", "slower") for r in rows)
        unadjusted += any(r.p_value is not None and r.p_value < 0.05 and r.cell != "geometric mean" for r in rows)
    assert unadjusted >= 30  # what 0.3 reported
    assert named["holm"] <= 4 and named["bh"] <= 4, named
