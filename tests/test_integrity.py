"""A results directory that checks itself: every damaged file is named or repaired, never skipped."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import phasetime.experiments.running.run as driver
from conftest import run_cli
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.grid import expand
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.results import StoreError, read, verify
from phasetime.results.files import CELLS_DIR, MEASUREMENTS_FILE, RUN_FILE

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion

EXP = parse_experiment({
    "name": "small", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
    "sweep": {"max_new_tokens": [1, 2, 3, 4]}, "repeats": 2, "warmup": 0, "order": "grid",
})
ROWS = len(expand(EXP)) * EXP.repeats


class Killed(BaseException):
    """Stands in for kill -9 between cells."""


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(EXP, out)
    return out


@pytest.fixture(scope="module")
def unmerged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run killed after its third cell: three parts and markers, nothing merged."""
    out = tmp_path_factory.mktemp("unmerged") / "run"
    mp = pytest.MonkeyPatch()
    real, written = driver.write_cell, []

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        written.append(1)
        if len(written) == 3:
            raise Killed

    mp.setattr(driver, "write_cell", write_then_die)
    try:
        with pytest.raises(Killed):
            run_experiment(EXP, out)
    finally:
        mp.undo()
    return out


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def damage(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(how.encode() if how != "binary" else b"\xff\xfe\x00garbage")


def resume_is_exact(out: Path) -> list[str]:
    result = run_experiment(EXP, out, resume=True)
    assert result.failed == 0 and not result.interrupted
    table = read(out)
    per_cell: dict[int, set[int]] = {}
    for row in table.select(["cell", "call_id"]).to_pylist():
        per_cell.setdefault(row["cell"], set()).add(row["call_id"])
    assert table.num_rows == ROWS and sorted(per_cell) == list(range(4))
    assert all(len(calls) == EXP.repeats for calls in per_cell.values())
    assert not verify(out).problems
    return result.repaired


def every_reader_names(out: Path, name: str) -> None:
    with pytest.raises(StoreError, match=name.replace(".", r"\.")):
        read(out)
    for command in (["verify"], ["check"], ["export", "-o", str(out.parent / "x.csv")], ["report", "-o",
                    str(out.parent / "r.html")], ["compare", "--methods"]):
        result = run_cli(command[0], str(out), *command[1:])
        assert result.exit_code in (1, 2) and name in result.output and "Traceback" not in result.output, result


def test_a_finished_run_verifies(finished: Path) -> None:
    inv = verify(finished)
    assert not inv.problems and inv.done == {0, 1, 2, 3} and inv.rows() == ROWS
    assert run_cli("verify", str(finished)).exit_code == 0


def test_a_missing_part_is_named_and_measured_again(unmerged: Path, tmp_path: Path) -> None:
    out = copy(unmerged, tmp_path)
    (out / CELLS_DIR / "cell-00001.parquet").unlink()
    every_reader_names(out, "cells/cell-00001.parquet")
    repaired = resume_is_exact(out)
    assert any("cell-00001.json" in line for line in repaired)  # its marker set aside: the cell ran again


def test_a_lost_merged_file_is_detected_and_every_cell_measured_again(finished: Path, tmp_path: Path) -> None:
    out = copy(finished, tmp_path)
    (out / MEASUREMENTS_FILE).unlink()
    every_reader_names(out, MEASUREMENTS_FILE)
    result = run_experiment(EXP, out, resume=True)
    assert result.done == 4 and result.skipped == 0 and read(out).num_rows == ROWS


def test_a_truncated_part_is_set_aside_never_deleted(unmerged: Path, tmp_path: Path) -> None:
    out = copy(unmerged, tmp_path)
    part = out / CELLS_DIR / "cell-00002.parquet"
    damage(part, "truncate")
    original = part.read_bytes()
    every_reader_names(out, "cells/cell-00002.parquet")
    repaired = resume_is_exact(out)
    kept = list((out / "damaged").rglob("cell-00002.parquet"))
    assert len(kept) == 1 and kept[0].read_bytes() == original and any("cell-00002.parquet" in r for r in repaired)


@pytest.mark.parametrize("content", ["{}", "[1]", "binary"])
def test_a_garbage_marker_is_named_and_its_cell_measured_again(finished: Path, tmp_path: Path, content: str) -> None:
    out = copy(finished, tmp_path)
    damage(out / CELLS_DIR / "cell-00003.json", content)
    every_reader_names(out, "cells/cell-00003.json")
    resume_is_exact(out)


def test_rows_of_a_cell_not_marked_done_are_not_read(finished: Path, tmp_path: Path) -> None:
    # the interleaving of two writers that marked a cell with 0 rows, say: the merged file
    # then holds rows its markers do not vouch for
    out = copy(finished, tmp_path)
    (out / CELLS_DIR / "cell-00000.json").unlink()
    every_reader_names(out, "cells/cell-00000.json is missing, yet measurements.parquet holds 2 rows of cell 0")
    resume_is_exact(out)  # the cell is measured again and its old rows replaced, not doubled


@pytest.mark.parametrize("content", ["[]", "binary", '{"schema_version": "abc", "experiment": {}}'])
def test_a_garbage_run_json_is_named_and_rebuilt_on_resume(finished: Path, tmp_path: Path, content: str) -> None:
    out = copy(finished, tmp_path)
    damage(out / RUN_FILE, content)
    every_reader_names(out, RUN_FILE)
    result = run_experiment(EXP, out, resume=True)
    assert result.skipped == 4 and any("rebuilt" in note for note in result.notes)
    assert not verify(out).problems and read(out).num_rows == ROWS


def test_resume_without_run_json_refuses_another_experiment(finished: Path, tmp_path: Path) -> None:
    out = copy(finished, tmp_path)
    (out / RUN_FILE).unlink()
    other = EXP.model_copy(update={"repeats": 3})
    with pytest.raises(driver.RunError, match="do not match this experiment"):
        run_experiment(other, out, resume=True)
    assert (out / MEASUREMENTS_FILE).exists() and len(list((out / CELLS_DIR).glob("*.json"))) == 4


def files_of(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


@pytest.mark.parametrize("state", ["finished", "unmerged"])
@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_any_one_damaged_file_is_repaired_or_named(finished: Path, unmerged: Path, tmp_path: Path, state: str,
                                                   how: str) -> None:
    source = finished if state == "finished" else unmerged
    for i, name in enumerate(files_of(source)):
        out = copy(source, tmp_path / str(i))
        damage(out / name, how)
        try:
            table = read(out)
        except StoreError as exc:
            assert name in str(exc) or Path(name).name in str(exc), (name, str(exc))
        else:
            # Files that hold no measurement survive damage unnoticed: the lock, the owner tag. A
            # lost marker of an unmerged cell makes it what a cell killed before its marker
            # looks like: unfinished (verify notes its part), and --resume measures it again.
            if name.endswith(".json") and name.startswith(CELLS_DIR) and state == "unmerged" and how == "delete":
                part = name.replace(".json", ".parquet")
                assert any(part in note for note in verify(out).notes) and table.num_rows == 4
            else:
                assert name in (".lock", ".phasetime-results"), name
                assert table.num_rows == (ROWS if state == "finished" else 6)
        if state == "finished" or name != ".phasetime-results":
            resume_is_exact(out)
