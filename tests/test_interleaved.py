"""order: interleaved: the repeats of a block's cells run in rounds, the cells come out as
they would back to back (same rows, same sampled tokens), and a stop loses only the block."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

import phasetime.experiments.running.backends.hf as execute
import phasetime.experiments.running.run as driver
from phasetime.experiments.plan.grid import RunOptions, blocks, expand, tasks
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.experiments.running.run import run_experiment
from phasetime.results import read as read_results
from phasetime.results import verify
from phasetime.results.files import MEASUREMENTS_FILE
from test_runner import Killed, assert_complete, die_after_writes, small

LENGTHS = [1, 2, 3, 4]


def calls_of(exp, out: Path) -> tuple[list[dict], object]:
    seen: list[dict] = []
    result = run_experiment(exp, out, progress=lambda event, info: seen.append(info) if event == "call" else None)
    return seen, result


def test_each_round_runs_one_repeat_of_every_cell_of_the_block(tmp_path: Path) -> None:
    exp = small(order="interleaved", repeats=4, warmup=1, sweep={"max_new_tokens": LENGTHS})
    seen, result = calls_of(exp, tmp_path / "run")
    assert result.done == 4 and result.calls == 16
    warmups, measured = seen[:4], seen[4:]
    assert all(c["warmup"] for c in warmups) and sorted(c["cell"] for c in warmups) == [0, 1, 2, 3]
    assert not any(c["warmup"] for c in measured) and len(measured) == 16
    rounds = [[c["cell"] for c in measured[i:i + 4]] for i in range(0, 16, 4)]
    assert all(sorted(r) == [0, 1, 2, 3] for r in rounds)  # every cell once per round
    assert len({tuple(r) for r in rounds}) > 1  # a new order each round (seeded)
    again, _ = calls_of(exp, tmp_path / "again")
    assert again == seen  # the same seed, the same order
    assert_complete(tmp_path / "run", exp)
    # back to back, by contrast, a cell's calls are consecutive
    back, _ = calls_of(small(order="shuffled", repeats=4, warmup=1, sweep={"max_new_tokens": LENGTHS}),
                       tmp_path / "back")
    assert [c["cell"] for c in back[:5]] == [back[0]["cell"]] * 5


def test_rows_and_sampled_tokens_are_those_of_the_cells_run_back_to_back(tmp_path: Path) -> None:
    """Sampling draws from torch's global generator: each cell keeps its own stream, so
    interleaving other cells' calls changes no token it samples."""
    def run(order: str) -> dict:
        exp = small(order=order, repeats=3, warmup=1,
                    sweep={"max_new_tokens": [3, 5, 8], "generation": [{"do_sample": True, "temperature": 1.5}]})
        out = tmp_path / order
        run_experiment(exp, out)
        rows = read_results(out).select(["call_id", "cell", "repeat", "prediction", "output_tokens"]).to_pylist()
        return {r["call_id"]: (r["cell"], r["repeat"], r["prediction"], r["output_tokens"]) for r in rows}

    grid, interleaved = run("grid"), run("interleaved")
    assert interleaved == grid and len(grid) == 9
    assert len({v[2] for v in grid.values()}) > 3  # sampled: the calls of a cell differ, and yet match


def test_ctrl_c_loses_the_block_under_way_and_resume_measures_it_again(tmp_path: Path) -> None:
    exp = small(order="interleaved", interleave_block=2, repeats=3, warmup=0, sweep={"max_new_tokens": LENGTHS})
    out, seen = tmp_path / "run", []

    def progress(event, info):
        if event == "call":
            seen.append(info)
            if len(seen) == 8:  # the second call of the second block's second round
                signal.raise_signal(signal.SIGINT)  # to this thread, handled at once

    result = run_experiment(exp, out, progress=progress)
    assert result.interrupted and result.done == 2  # the first block (6 calls) stored, the second not
    assert len(verify(out).markers) == 2 and not (out / MEASUREMENTS_FILE).exists()
    run_experiment(exp, out, resume=True)
    assert_complete(out, exp)


def test_a_kill_while_a_block_is_being_stored_resumes_to_every_cell_once(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The cells of a block finish together and are stored one by one: a kill between two of
    them leaves the first stored, and resume measures only the others."""
    exp, out = small(order="interleaved", repeats=2, sweep={"max_new_tokens": LENGTHS}), tmp_path / "run"
    written, real_write = die_after_writes(monkeypatch, 1)
    with pytest.raises(Killed):
        run_experiment(exp, out)
    assert list(verify(out).markers) == written
    monkeypatch.setattr(driver, "write_cell", real_write)
    result = run_experiment(exp, out, resume=True)
    assert (result.skipped, result.done) == (1, 3)
    assert_complete(out, exp)


def test_a_cell_that_fails_in_a_block_leaves_the_others_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    exp, out = small(order="interleaved", repeats=3, sweep={"max_new_tokens": LENGTHS}), tmp_path / "run"
    real_measure, calls = execute.measure, {"n": 0}

    def fails_on_its_second_call(model, inputs, **kwargs):
        if kwargs["max_new_tokens"] == 3:
            calls["n"] += 1
            if calls["n"] == 2:
                raise RuntimeError("CUDA out of memory (simulated)")
        return real_measure(model, inputs, **kwargs)

    monkeypatch.setattr(execute, "measure", fails_on_its_second_call)
    result = run_experiment(exp, out)
    assert (result.done, result.failed) == (3, 1) and "out of memory" in result.errors[2]
    assert sorted(set(read_results(out).column("max_new_tokens").to_pylist())) == [1, 2, 4]
    monkeypatch.setattr(execute, "measure", real_measure)
    run_experiment(exp, out, resume=True)
    assert_complete(out, exp)


def test_blocks_hold_cells_of_one_model_up_to_the_block_size() -> None:
    exp = parse_experiment({"name": "b", "models": ["tiny-llama", "tiny-llava"], "order": "interleaved",
                            "interleave_block": 4, "sweep": {"max_new_tokens": [1, 2, 4, 8, 16, 32]}})
    todo = tasks(expand(exp), set(), exp, [], RunOptions())
    found = blocks(todo)
    assert [len(b) for b in found] == [4, 2, 4, 2]
    assert all(len({t.cell.model.name for t in b}) == 1 for b in found)
    assert [t.cell.index for b in found for t in b] == [t.cell.index for t in todo]  # execution order kept
    shuffled = exp.model_copy(update={"order": "shuffled"})
    assert [len(b) for b in blocks(tasks(expand(shuffled), set(), shuffled, [], RunOptions()))] == [1] * 12


def test_interleaved_is_refused_on_ray_and_keeps_the_cells_keys() -> None:
    with pytest.raises(Exception, match="order: interleaved runs on the local executor"):
        small(order="interleaved", executor={"kind": "ray"})
    # how the calls are ordered is not part of what a cell measures: its key is the same
    assert [c.key for c in expand(small(order="interleaved"))] == [c.key for c in expand(small(order="grid"))]
