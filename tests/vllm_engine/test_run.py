"""A whole run on vLLM, then the same cells on generate(): stored, verified, checked, compared.

One engine (tiny-llama-h32, the text built-in vLLM's CPU attention can run)."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from phasetime.analysis.checks import run_checks
from phasetime.analysis.compare import compare_runs, match_keys
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.experiments.running.run import run_experiment
from phasetime.results import read, verify
from phasetime.results.files import RUN_FILE, read_json


def experiment(backend: str) -> object:
    return parse_experiment({
        "name": "vllm-test", "backend": backend, "models": ["tiny-llama-h32"],
        "inputs": {"kind": "synthetic", "prompt": "Tell me a story."},
        "sweep": {"max_new_tokens": [2, 8], "batch_size": [1, 2]}, "repeats": 3, "warmup": 1,
    })


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("runs")
    run_experiment(experiment("vllm"), root / "vllm", profile=1)
    run_experiment(experiment("hf"), root / "hf", profile=1)
    return root / "vllm", root / "hf"


def test_a_vllm_run_is_stored_like_any_other(runs: tuple[Path, Path]) -> None:
    out, _ = runs
    assert not verify(out).problems
    table = read(out)
    # 4 cells; 3 repeats of 1 and of 2 requests: a row per request
    assert table.num_rows == 2 * 3 * (1 + 2)
    assert set(table.column("backend").to_pylist()) == {"vllm"}
    assert pc.min(table.column("engine_tpot_ms")).as_py() is not None
    lengths = dict(zip(table.column("max_new_tokens").to_pylist(), table.column("output_tokens").to_pylist()))
    assert lengths == {2: 2, 8: 8}
    # the requests submitted together are one call: 4 cells x 3 repeats, a sequence per request
    assert len(set(table.column("call_id").to_pylist())) == 4 * 3
    assert sorted(set(table.column("sequence").to_pylist())) == [0, 1]
    result = run_experiment(experiment("vllm"), out, resume=True)  # resume: nothing left to measure
    assert result.done == 0 and result.skipped == 4
    checks = run_checks(read(out), read_json(out / RUN_FILE))
    assert {c.check for c in checks} >= {"decode_present", "tpot_vs_length", "phases_within_total"}
    structural = ("decode_present", "tpot_only_when_defined", "no_negative_phase", "phases_within_total")
    assert all(c.verdict == "pass" for c in checks if c.check in structural)


def test_both_engines_profile_calls_apart_from_the_timed_ones(runs: tuple[Path, Path]) -> None:
    from phasetime.analysis.operators import phase_ops
    from phasetime.results.profiles import read_profiles

    for out in runs:
        timed = set(read(out).column("call_id").to_pylist())
        profiles = read_profiles(out)
        profiled = set(profiles.column("call_id").to_pylist())
        assert len(profiled) == 4 and not profiled & timed  # one profiled call per cell
        decode = next(p for p in phase_ops(profiles) if p.phase == "decode")
        assert decode.top and decode.phase_ms > 0 and 0 < decode.share(decode.uncovered_ms) < 1
        print(out.name, "decode:", decode.top[:3])


def test_compare_matches_the_cells_of_both_engines(runs: tuple[Path, Path]) -> None:
    vllm_dir, hf_dir = runs
    a, b = read(hf_dir), read(vllm_dir)
    assert "backend" not in match_keys(a, b)  # what is being compared
    keys, rows = compare_runs(a, b)
    matched = {r.cell for r in rows if r.cell != "geometric mean"}
    assert len(matched) == 4
    assert {r.phase for r in rows} >= {"ttft_ms", "tpot_ms", "total_ms"}


def test_an_interleaved_vllm_run_stores_the_same_cells(tmp_path: Path, runs: tuple[Path, Path]) -> None:
    """order: interleaved on one engine: round r submits the r-th repeat of every cell; the
    rows are those of the back-to-back run (same cells, call ids, greedy tokens)."""
    seen: list[int] = []
    exp = experiment("vllm").model_copy(update={"order": "interleaved"})
    result = run_experiment(exp, tmp_path / "run", progress=lambda event, info: seen.append(info["cell"])
                            if event == "call" and not info["warmup"] else None)
    assert result.done == 4 and not result.errors, result
    assert [sorted(seen[i:i + 4]) for i in range(0, 12, 4)] == [[0, 1, 2, 3]] * 3  # a cell per round each
    columns = ["call_id", "sequence", "cell", "repeat", "output_tokens", "prediction"]
    back_to_back, interleaved = (sorted(read(d).select(columns).to_pylist(), key=lambda r: (r["call_id"], r["sequence"]))
                                 for d in (runs[0], tmp_path / "run"))
    assert interleaved == back_to_back and not verify(tmp_path / "run").problems
