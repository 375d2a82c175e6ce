"""The command line: a real run on a tiny model, bad input, and the summary table's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from phasetime.cli import parse_int_list
from phasetime.experiments.plan.checks import RunError
from phasetime.results import read as read_results

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion

PHASES = ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "decode_ms", "total_ms")


def _cell(method: str, n: float, medians: tuple, p90s: tuple, accuracy: float | None = None):
    from phasetime.analysis.summary import CellSummary, PhaseStats

    phases = {p: PhaseStats(5, m, p90, None, None, None) for p, m, p90 in zip(PHASES, medians, p90s)}
    phases["other_ms"] = PhaseStats(0, None, None, None, None, None)
    return CellSummary(params={"method": method, "max_new_tokens": int(n), "batch_size": 1}, n=5, output_tokens=n,
                       visual_tokens=None, phases=phases, accuracy=accuracy)


GOLDEN_SUMMARY = [
    _cell("direct", 1.0, (1.5, 2.25, 4.0, None, 0.0, 4.0), (1.75, 2.5, 4.5, None, 0.0, 4.5)),
    _cell("direct", 8.0, (1.5, 2.25, 4.0, 1.25, 8.75, 12.75), (1.75, 2.5, 4.5, 1.5, 10.0, 14.0), 0.5),
    _cell("subtract", 8.0, (1.25, 3.5, None, 1.0, 8.0, 12.75), (1.5, 4.0, None, 1.25, 9.0, 14.0), 0.25),
]


def invoke(*args: str):
    return run_cli(*args)


def test_run_writes_parquet_and_run_json(tmp_path: Path) -> None:
    out = tmp_path / "res"
    result = invoke(
        "run", "--model", "tiny-llava", "--max-new-tokens", "1,3", "--repeats", "2", "--warmup", "1",
        "--batch-size", "2", "--method", "both", "--image-size", "64", "--out", str(out),
    )
    assert result.exit_code == 0, result.output
    assert "16 rows" in result.output
    table = read_results(out)
    rows = table.to_pylist()
    assert len(rows) == 2 * 2 * 2 * 2  # lengths x methods x repeats x batch
    direct = [r for r in rows if r["method"] == "direct"]
    assert {r["output_tokens"] for r in direct} == {1, 3}
    assert all(len(r["itl_ms"]) == r["output_tokens"] - 1 for r in direct)
    assert all((r["tpot_ms"] is None) == (r["output_tokens"] < 2) for r in direct)
    assert {r["min_new_tokens"] for r in rows} == {1, 3}  # min = max unless told
    assert {r["image_width"] for r in rows} == {64}
    run = json.loads((out / "run.json").read_text())
    assert run["environment"]["torch"] and run["environment"]["transformers"]
    assert sorted(p.name for p in out.iterdir()) == [".lock", ".phasetime-results", "cells", "measurements.parquet",
                                                     "run.json"]
    assert run["experiment"]["sweep"]["method"] == ["both"]
    assert [p.name for p in tmp_path.iterdir()] == ["res"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-new-tokens", "0"], "must be within 1..1000000"),
        (["--max-new-tokens", "abc"], "integers (up to 1,000,000) separated by commas"),
        (["--max-new-tokens", "99999999999999999999"], "--max-new-tokens takes integers"),
        (["--max-new-tokens", "5000"], "does not fit model 'tiny-llava', which has 4096 positions"),
        (["--model", "no-such-model"], "unknown model"),
        (["--model", "x" * 300], "unknown model"),
        (["--image", "missing.png"], "image not found"),
        (["--method", "guess"], "sweep.method[0]"),
        (["--repeats", "0"], "repeats: Input should be greater than or equal to 1"),
        (["--dtype", "int3"], "models[0].dtype: Input should be"),
        (["--device", "foo"], "unknown device 'foo'"),
        (["--device", "cuda:7"], "device"),
        (["--seed", "-1"], "seed: Input should be greater than or equal to 0"),
        (["--threads", "0"], "--threads takes"),
        (["--image-size", "2147483648"], "image_size: Input should be less than or equal to 8192"),
        (["--executor", "slurm"], "executor.kind"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "res"
    result = invoke("run", *args, "--out", str(out), "--quiet")
    assert result.exit_code == 2, result
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines[0].startswith("error:") and message in result.output, result.output
    assert "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []


def test_unreadable_image_and_existing_out(tmp_path: Path) -> None:
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = invoke("run", "--image", str(bad), "--out", str(tmp_path / "o"), "--quiet")
    assert result.exit_code == 2 and "cannot read image" in result.output
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    result = invoke("run", "--out", str(full), "--quiet")
    assert result.exit_code == 2 and "not a phasetime results directory" in result.output
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


def test_parse_int_list() -> None:
    assert parse_int_list("1, 2,4", "--x") == (1, 2, 4)
    with pytest.raises(RunError):
        parse_int_list("1,,2", "--x")


def test_summary_table_text(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from phasetime.cli import consoles
    from phasetime.cli.output import print_summary

    console = Console(width=100, record=True, color_system=None)
    consoles.out = console
    print_summary(GOLDEN_SUMMARY, "tiny-llava: 3 cells")
    consoles.reset()
    golden = Path(__file__).parent / "golden" / "summary.txt"
    assert console.export_text() == golden.read_text()


def test_models_command_lists_builtins() -> None:
    result = invoke("models")
    assert result.exit_code == 0
    for name in ("tiny-llama", "tiny-llava", "tiny-qwen2-vl"):
        assert name in result.output


def test_experiment_file_resume_and_export(tmp_path: Path) -> None:
    exp = tmp_path / "e.yaml"
    exp.write_text("name: e\nmodels: [tiny-llama]\nsweep: {max_new_tokens: [1, 2]}\nrepeats: 2\nwarmup: 0\n")
    out = tmp_path / "out"
    result = invoke("run", str(exp), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 cells done, 0 failed; 4 measured calls, 4 rows" in result.output
    again = invoke("run", str(exp), "--out", str(out), "--resume", "--quiet")
    assert again.exit_code == 0 and "2 already done" in again.output
    clash = invoke("run", str(exp), "--model", "tiny-llava", "--out", str(tmp_path / "x"))
    assert clash.exit_code == 2 and "--model applies only without an experiment file" in clash.output
    exported = invoke("export", str(out), "--format", "jsonl", "--legacy-names")
    assert exported.exit_code == 0 and "wrote 4 rows" in exported.output
    first = json.loads((out / "export.jsonl").read_text().splitlines()[0])
    assert first["T_LLM_decode"] == first["decode_ms"]


def test_invalid_experiment_file_lists_its_problems(tmp_path: Path) -> None:
    exp = tmp_path / "bad.yaml"
    exp.write_text("name: e\nmodels: [tiny-llama]\nrepeat: 2\nsweep: {max_new_tokens: [0]}\n")
    result = invoke("run", str(exp), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "repeat: unknown key" in result.output and "sweep.max_new_tokens[0]" in result.output
    assert not (tmp_path / "o").exists()
