"""The runner: resumable results, failures, bad samples, Ctrl-C, the example experiments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

import phasetime.experiments.running.run as driver
import phasetime.experiments.running.backends.hf as execute
import phasetime.results.store as store
from phasetime.experiments.running.run import RunError, run_experiment
from phasetime.experiments.plan.grid import expand
from phasetime.experiments.plan.spec import load_experiment, parse_experiment
from phasetime.results import read as read_results
from phasetime.results import verify
from phasetime.results.files import MEASUREMENTS_FILE
from conftest import run_cli


def read_cell_records(out):
    return verify(out).markers

EXAMPLES = Path(__file__).parent.parent / "examples"


def small(**overrides) -> object:
    data = {
        "name": "small", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
        "sweep": {"max_new_tokens": [1, 2, 3, 4]}, "repeats": 2, "warmup": 0, "order": "grid",
    }
    data.update(overrides)
    return parse_experiment(data)


class Killed(BaseException):
    """Stands in for kill -9: not an Exception, so nothing in the runner catches it."""


def assert_complete(out: Path, exp) -> None:
    table = read_results(out)
    cells = expand(exp)
    per_cell = {}
    for row in table.select(["cell", "call_id"]).to_pylist():
        per_cell.setdefault(row["cell"], set()).add(row["call_id"])
    assert sorted(per_cell) == [c.index for c in cells]
    assert all(len(calls) == exp.repeats for calls in per_cell.values())  # no duplicates, no partial cells
    assert table.num_rows == len(cells) * exp.repeats


def die_after_writes(monkeypatch: pytest.MonkeyPatch, writes: int) -> tuple[list[int], object]:
    """The driver dies (as kill -9) right after it has stored ``writes`` cells; returns the
    indices stored and the real ``write_cell``, to put back."""
    real_write, written = driver.write_cell, []

    def write_then_die(out_dir, index, rows, record, side=None):
        real_write(out_dir, index, rows, record, side=side)
        written.append(index)
        if len(written) == writes:
            raise Killed

    monkeypatch.setattr(driver, "write_cell", write_then_die)
    return written, real_write


def test_kill_between_cells_then_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, out = small(), tmp_path / "run"
    _, real_write = die_after_writes(monkeypatch, 2)
    with pytest.raises(Killed):
        run_experiment(exp, out)
    assert sorted(read_cell_records(out)) == [0, 1]
    assert read_results(out).num_rows == 2 * exp.repeats  # finished cells are readable already
    monkeypatch.setattr(driver, "write_cell", real_write)
    result = run_experiment(exp, out, resume=True)
    assert result.skipped == 2 and result.done == 2
    assert_complete(out, exp)
    assert not list((out / "cells").glob("*.parquet"))  # merged into measurements.parquet


def test_kill_mid_cell_and_between_rows_and_marker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, out = small(), tmp_path / "run"
    real_measure = execute.measure
    calls = []

    def measure_then_die(*args, **kwargs):
        calls.append(1)
        if len(calls) == 5:  # the first call of the third cell
            raise Killed
        return real_measure(*args, **kwargs)

    monkeypatch.setattr(execute, "measure", measure_then_die)
    with pytest.raises(Killed):
        run_experiment(exp, out)
    monkeypatch.setattr(execute, "measure", real_measure)
    assert sorted(read_cell_records(out)) == [0, 1]

    # Now die after a cell's rows are written but before its marker: the rows must not count.
    real_json = store.write_json

    def json_then_die(path, data):
        if Path(path).name == "cell-00002.json":
            raise Killed
        real_json(path, data)

    monkeypatch.setattr(store, "write_json", json_then_die)
    with pytest.raises(Killed):
        run_experiment(exp, out, resume=True)
    monkeypatch.setattr(store, "write_json", real_json)
    assert (out / "cells" / "cell-00002.parquet").exists() and 2 not in read_cell_records(out)
    assert set(read_results(out).column("cell").to_pylist()) == {0, 1}

    run_experiment(exp, out, resume=True)
    assert_complete(out, exp)


KILL_AFTER_THREE_CELLS = """
import os, signal, sys
import phasetime.experiments.running.run as driver
real, written = driver.write_cell, []
def write_then_kill(*args, **kwargs):
    real(*args, **kwargs)
    written.append(1)
    if len(written) == 3:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: as kill -9 from outside
driver.write_cell = write_then_kill
from phasetime.cli import main
main(sys.argv[1:])
"""


def test_kill_9_of_a_real_run_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "run"
    exp_file = tmp_path / "exp.yaml"
    exp_file.write_text(
        "name: killme\nmodels: [tiny-llama]\ninputs: {kind: synthetic, prompt: hi}\n"
        "sweep: {max_new_tokens: [2, 4, 6, 8, 10, 12]}\nrepeats: 2\nwarmup: 0\n"
    )
    args = ["run", str(exp_file), "--out", str(out), "--quiet"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_THREE_CELLS, *args], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert len(read_cell_records(out)) == 3
    resumed = run_cli(*args, "--resume")
    assert resumed.exit_code == 0, resumed
    assert "3 cells done, 0 failed" in resumed.stdout and "3 already done" in resumed.stdout
    assert_complete(out, load_experiment(exp_file))


def test_a_failing_cell_is_recorded_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, out = small(), tmp_path / "run"
    real_measure = execute.measure

    def oom_for_three(model, inputs, **kwargs):
        if kwargs["max_new_tokens"] == 3:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_measure(model, inputs, **kwargs)

    monkeypatch.setattr(execute, "measure", oom_for_three)
    result = run_experiment(exp, out)
    assert (result.done, result.failed) == (3, 1)
    record = read_cell_records(out)[2]
    assert record["status"] == "failed" and "out of memory" in record["error"]
    assert set(read_results(out).column("max_new_tokens").to_pylist()) == {1, 2, 4}
    assert "Traceback" in record["traceback"]  # kept for whoever has to find out why
    monkeypatch.setattr(execute, "measure", real_measure)
    result = run_experiment(exp, out, resume=True)  # failed cells are tried again
    assert (result.skipped, result.done, result.failed) == (3, 1, 0)
    assert_complete(out, exp)


def test_unsupported_modes_are_refused_before_running() -> None:
    with pytest.raises(Exception, match="generation mode 'group_beam_search' is not supported"):
        small(sweep={"max_new_tokens": [2], "generation": [{}, {"num_beams": 4, "num_beam_groups": 2}]})
    with pytest.raises(Exception, match="assistant_early_exit"):
        small(sweep={"max_new_tokens": [2], "generation": [{"assistant_early_exit": 1}]})


def test_resume_refuses_a_changed_experiment(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(small(), out)
    with pytest.raises(RunError, match="differs"):
        run_experiment(small(repeats=3), out, resume=True)
    result = run_experiment(small(), out, resume=True)  # a finished run: nothing to do
    assert result.skipped == 4 and result.calls == 0
    assert_complete(out, small())


def test_ctrl_c_stops_after_the_current_call(tmp_path: Path) -> None:
    exp, out = small(), tmp_path / "run"
    seen = []

    def progress(event, info):
        if event == "call":
            seen.append(info)
            if len(seen) == 3:
                signal.raise_signal(signal.SIGINT)  # to this thread, handled at once; the handler only sets a flag

    result = run_experiment(exp, out, progress=progress)
    # the third call was the first of the second cell: measured, but its cell is not stored
    assert result.interrupted and len(seen) == 3 and result.calls == 2
    assert sorted(read_cell_records(out)) == [0]  # the second cell was not finished: not stored
    assert not (out / MEASUREMENTS_FILE).exists()
    run_experiment(exp, out, resume=True)
    assert_complete(out, exp)


def test_the_plan_announces_every_call_the_run_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The progress bar's total: 4 cells x (1 warm-up + 2 repeats); on resume, what is left."""
    exp, out = small(warmup=1), tmp_path / "run"
    events: list[tuple[str, dict]] = []
    _, real_write = die_after_writes(monkeypatch, 1)
    with pytest.raises(Killed):
        run_experiment(exp, out, progress=lambda event, info: events.append((event, info)))
    assert next(info for event, info in events if event == "plan")["calls"] == 12
    monkeypatch.setattr(driver, "write_cell", real_write)
    events.clear()
    run_experiment(exp, out, resume=True, progress=lambda event, info: events.append((event, info)))
    assert next(info for event, info in events if event == "plan")["calls"] == 9 == sum(e == "call" for e, _ in events)


def manifest(tmp_path: Path, bad: str | None) -> Path:
    Image.new("RGB", (32, 32), (200, 0, 0)).save(tmp_path / "ok.png")
    records = [{"id": f"s{i}", "image": "ok.png", "question": "Color?", "answers": ["red"]} for i in range(3)]
    if bad == "missing":
        records[1]["image"] = "gone.png"
    elif bad == "corrupt":
        (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
        records[1]["image"] = "corrupt.png"
    elif bad == "truncated":  # a real JPEG cut short: its header reads fine, its pixels do not
        Image.new("RGB", (64, 64), (0, 200, 0)).save(tmp_path / "full.jpg", quality=95)
        data = (tmp_path / "full.jpg").read_bytes()
        (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
        records[1]["image"] = "cut.jpg"
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("bad", ["missing", "corrupt", "truncated"])
def test_bad_samples_stop_the_run_or_are_skipped(tmp_path: Path, bad: str) -> None:
    exp = small(models=["tiny-llava"], inputs={"kind": "manifest", "path": str(manifest(tmp_path, bad))},
                metric="exact_match", sweep={"max_new_tokens": [2]}, repeats=1)
    with pytest.raises(RunError, match="sample 's1'.*--skip-bad-samples"):
        run_experiment(exp, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    result = run_experiment(exp, tmp_path / "b", skip_bad_samples=True)
    assert result.failed_samples == ["s1"] and result.done == 1
    assert read_results(tmp_path / "b").column("sample_id").to_pylist() == ["s0", "s2"]
    info = json.loads((tmp_path / "b" / "run.json").read_text())
    assert info["failed_samples"][0]["sample_id"] == "s1"


def test_resolution_sweep_changes_visual_tokens(tmp_path: Path) -> None:
    exp = small(models=["tiny-qwen2-vl"], inputs={"kind": "synthetic", "image_size": 448},
                sweep={"max_new_tokens": [2], "max_visual_tokens": [16, 64]}, repeats=1)
    run_experiment(exp, tmp_path / "r")
    rows = read_results(tmp_path / "r").to_pylist()
    assert [r["visual_tokens"] for r in rows] == [16, 64]
    with pytest.raises(RunError, match="dynamic-resolution"):
        exp = small(models=["tiny-llava"], sweep={"max_new_tokens": [2], "max_pixels": [3136]}, repeats=1)
        result = run_experiment(exp, tmp_path / "s")
        raise RunError(result.errors[0])


@pytest.mark.parametrize("name", ["latency", "motivation", "accuracy"])
def test_example_experiments_run_end_to_end(example_runs, name: str) -> None:
    exp, out, result = example_runs[name]
    assert result.failed == 0 and not result.interrupted
    table = read_results(out)
    cells = expand(exp)
    rows_per_cell: dict[int, int] = {}
    for cell in table.column("cell").to_pylist():
        rows_per_cell[cell] = rows_per_cell.get(cell, 0) + 1
    samples = 1 if exp.inputs.kind == "synthetic" else len(set(table.column("sample_id").to_pylist()))
    # by hand: repeats x samples x (batch size for a synthetic prompt, copied per row)
    assert rows_per_cell == {c.index: exp.repeats * samples * (c.params["batch_size"] if samples == 1 else 1)
                             for c in cells}
    assert set(table.column("worker").to_pylist()) == {"local"}
    info = json.loads((out / "run.json").read_text())
    assert info["experiment"]["name"] == name and info["environment"]["python"]
    meta = pq.read_schema(out / MEASUREMENTS_FILE).metadata
    assert meta[b"phasetime.schema"] == b"2"
    if name == "accuracy":
        rows = table.to_pylist()
        assert len(rows) == 2 * 20 and all(r["score"] is not None and r["prediction"] is not None for r in rows)
        assert all(r["preprocess_ms"] > 0 and r["visual_tokens"] > 0 for r in rows)


def test_cells_run_shuffled_within_each_model_unless_grid_order() -> None:
    from phasetime.experiments.plan.grid import execution_order

    exp = parse_experiment({"name": "o", "models": ["tiny-llama", "tiny-llava"],
                            "sweep": {"max_new_tokens": [1, 2, 4, 8, 16, 32]}, "seed": 3})
    cells = expand(exp)
    order = [c.index for c in execution_order(cells, exp)]
    assert sorted(order[:6]) == list(range(6)) and sorted(order[6:]) == list(range(6, 12))  # a model loads once
    assert order != sorted(order) and order == [c.index for c in execution_order(cells, exp)]  # seeded
    grid = exp.model_copy(update={"order": "grid"})
    assert [c.index for c in execution_order(cells, grid)] == list(range(12))


def test_dtype_and_attention_sweeps_load_each_variant(tmp_path: Path) -> None:
    exp = small(sweep={"max_new_tokens": [2], "dtype": ["float32", "bfloat16"], "attn_implementation": ["eager", "sdpa"]},
                repeats=1)
    result = run_experiment(exp, tmp_path / "r")
    assert result.done == 4 and result.failed == 0
    rows = read_results(tmp_path / "r").to_pylist()
    assert {(r["dtype"], r["attn_implementation"]) for r in rows} == {
        ("float32", "eager"), ("float32", "sdpa"), ("bfloat16", "eager"), ("bfloat16", "sdpa")}


def test_threads_an_engine_pinned_are_asked_for_once(monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """vLLM's CPU worker replaces torch.set_num_threads with a warning: phasetime asked once per
    cell (142 warnings in one example's log). Refused once, it says so once and stops asking."""
    import torch

    from phasetime.experiments.running import conditions

    asked: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", lambda n: asked.append(n))  # refuses, as vLLM's does
    monkeypatch.setattr(conditions, "_PINNED", set())
    wanted = torch.get_num_threads() + 1
    with caplog.at_level("WARNING", logger="phasetime"):
        for _ in range(5):
            conditions.apply_threads(wanted)
    assert asked == [wanted]
    assert sum("pinned" in r.getMessage() for r in caplog.records) == 1
