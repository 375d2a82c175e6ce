"""A results directory checks what its files hold, not only how many rows: rows moved between
cells, relabelled, duplicated or edited, and a run.json edited, are repaired by --resume
with exact rows (what is replaced is kept in damaged/) or named by every command."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import phasetime.experiments.running.run as driver
import phasetime.results.directory as directory
from conftest import run_cli
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.grid import expand
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.results import StoreError, read, verify
from phasetime.results.content import CALL_ID_STRIDE, Expected, faults
from phasetime.results.files import CELLS_DIR, MEASUREMENTS_FILE, META_KEY, OWNER_FILE, RUN_FILE

pytestmark = pytest.mark.anyversion

EXP = parse_experiment({
    "name": "content", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
    "sweep": {"max_new_tokens": [1, 2, 3, 4], "batch_size": [2]}, "repeats": 2, "warmup": 0, "order": "grid",
})
CELLS = len(expand(EXP))
ROWS_PER_CELL = EXP.repeats * 2  # two sequences per call


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    run_experiment(EXP, out)
    return out


def copy(src: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def write(table: pa.Table, path: Path) -> None:
    pq.write_table(table.replace_schema_metadata({META_KEY: b"2"}), path)


def cell_rows(table: pa.Table, cell: int) -> pa.Table:
    return table.filter(pc.equal(table.column("cell"), cell))


def set_column(table: pa.Table, name: str, values: list) -> pa.Table:
    i = table.schema.get_field_index(name)
    return table.set_column(i, name, pa.array(values, table.schema.field(name).type))


# Each damage takes the merged table and the run's directory and writes its damage there;
# it returns the file it damaged.
def move_into_part(t: pa.Table, out: Path, rng: random.Random) -> str:
    a, b = rng.sample(range(CELLS), 2)
    rows = cell_rows(t, a)
    if rng.random() < 0.5:
        rows = set_column(rows, "cell", [b] * rows.num_rows)
    write(rows, out / CELLS_DIR / f"cell-{b:05d}.parquet")
    return f"{CELLS_DIR}/cell-{b:05d}.parquet"


def move_in_merged(t: pa.Table, out: Path, rng: random.Random) -> str:
    a, b = rng.sample(range(CELLS), 2)
    moved = cell_rows(t, a)
    moved = set_column(moved, "cell", [b] * moved.num_rows)
    if rng.random() < 0.5:  # call ids relabelled too: only the parameters and sums tell
        moved = set_column(moved, "call_id", [b * CALL_ID_STRIDE + c % CALL_ID_STRIDE
                                              for c in moved.column("call_id").to_pylist()])
    rest = t.filter(pc.not_equal(t.column("cell"), b))
    write(pa.concat_tables([rest, moved]), out / MEASUREMENTS_FILE)
    return MEASUREMENTS_FILE


def swap_labels(t: pa.Table, out: Path, rng: random.Random) -> str:
    a, b = rng.sample(range(CELLS), 2)
    labels = [b if c == a else a if c == b else c for c in t.column("cell").to_pylist()]
    t = set_column(t, "cell", labels)
    if rng.random() < 0.5:
        t = set_column(t, "call_id", [(b if c // CALL_ID_STRIDE == a else a if c // CALL_ID_STRIDE == b
                                       else c // CALL_ID_STRIDE) * CALL_ID_STRIDE + c % CALL_ID_STRIDE
                                      for c in t.column("call_id").to_pylist()])
    write(t, out / MEASUREMENTS_FILE)
    return MEASUREMENTS_FILE


def duplicate_call(t: pa.Table, out: Path, rng: random.Random) -> str:
    i = rng.randrange(t.num_rows)
    j = rng.choice([k for k in range(t.num_rows) if t.column("cell")[k] == t.column("cell")[i] and k != i])
    if rng.random() < 0.5:
        t = pa.concat_tables([t, t.slice(i, 1)])  # one row more
    else:
        idx = list(range(t.num_rows))
        idx[j] = i  # same count: a row replaced by a copy of another of its cell
        t = t.take(pa.array(idx))
    write(t, out / MEASUREMENTS_FILE)
    return MEASUREMENTS_FILE


def edit_label(t: pa.Table, out: Path, rng: random.Random) -> str:
    i = rng.randrange(t.num_rows)
    labels = t.column("cell").to_pylist()
    labels[i] = rng.choice([c for c in range(CELLS) if c != labels[i]])
    write(set_column(t, "cell", labels), out / MEASUREMENTS_FILE)
    return MEASUREMENTS_FILE


def edit_time(t: pa.Table, out: Path, rng: random.Random) -> str:
    i = rng.randrange(t.num_rows)
    values = t.column("total_ms").to_pylist()
    values[i] *= 0.5
    write(set_column(t, "total_ms", values), out / MEASUREMENTS_FILE)
    return MEASUREMENTS_FILE


def edit_run_json(t: pa.Table, out: Path, rng: random.Random) -> str:
    info = json.loads((out / RUN_FILE).read_text())
    if rng.random() < 0.5:
        info["experiment"]["models"][0]["name"] = "tiny-qwen2-vl"
    else:
        info["cell_params"][rng.randrange(CELLS)]["max_new_tokens"] = 64
    (out / RUN_FILE).write_text(json.dumps(info))
    return RUN_FILE


DAMAGES: list[Callable[[pa.Table, Path, random.Random], str]] = [
    move_into_part, move_in_merged, swap_labels, duplicate_call, edit_label, edit_time, edit_run_json,
]


def resume_is_exact(out: Path, original: pa.Table) -> None:
    run_experiment(EXP, out, resume=True)
    table = read(out)
    assert table.num_rows == CELLS * ROWS_PER_CELL and not verify(out).problems
    assert not verify(out).notes
    for cell in range(CELLS):
        rows = cell_rows(table, cell)
        ids = sorted(set(rows.column("call_id").to_pylist()))
        assert ids == [cell * CALL_ID_STRIDE + k for k in range(EXP.repeats)]
        assert set(rows.column("max_new_tokens").to_pylist()) == {cell + 1}
        assert rows.num_rows == ROWS_PER_CELL


@pytest.mark.parametrize("seed", range(21))
def test_content_damage_is_repaired_or_named_never_read(finished: Path, tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    out = copy(finished, tmp_path)
    original = read(out)
    damage = DAMAGES[seed % len(DAMAGES)]
    name = damage(original, out, rng)
    inv = verify(out)
    if damage is move_into_part:
        # the merged rows of that cell are intact: they are read, the wrong part is noted
        assert not inv.problems and any(name in note for note in inv.notes)
        assert read(out).equals(original)
    else:
        assert any(p.path == name for p in inv.problems), (name, inv.problems)
        with pytest.raises(StoreError, match=name.replace(".", r"\.")):
            read(out)
    before = {p.name: p.read_bytes() for p in [out / MEASUREMENTS_FILE, out / name] if p.exists()}
    resume_is_exact(out, original)
    if name != RUN_FILE:
        # nothing replaced is lost: the damaged file is kept, byte for byte, in damaged/
        kept = {p.read_bytes() for p in (out / "damaged").rglob(Path(name).name)}
        assert before[Path(name).name] in kept


@pytest.mark.parametrize("damage", [move_in_merged, swap_labels, edit_run_json], ids=lambda d: d.__name__)
def test_every_command_names_content_damage(finished: Path, tmp_path: Path, damage) -> None:
    out = copy(finished, tmp_path)
    name = damage(read(out), out, random.Random(1))
    for command in (["verify"], ["check"], ["export", "-o", str(out.parent / "x.csv")],
                    ["report", "-o", str(out.parent / "r.html")], ["compare", "--methods"]):
        result = run_cli(command[0], str(out), *command[1:])
        assert result.exit_code in (1, 2) and name in result.output and "Traceback" not in result.output, result


def test_a_copied_cell_in_a_part_of_a_running_directory_is_named(finished: Path, tmp_path: Path) -> None:
    """The first case of issue 15: cell 2's rows copied into cell 3's part, before any merge."""
    out = copy(finished, tmp_path)
    t = read(out)
    for cell in range(CELLS):  # back to the state of a run killed before its merge
        write(cell_rows(t, cell), out / CELLS_DIR / f"cell-{cell:05d}.parquet")
    (out / MEASUREMENTS_FILE).unlink()
    write(cell_rows(t, 2), out / CELLS_DIR / "cell-00003.parquet")
    inv = verify(out)
    assert [p.path for p in inv.problems] == [f"{CELLS_DIR}/cell-00003.parquet"]
    assert "labelled cell 2" in inv.problems[0].message
    resume_is_exact(out, t)
    assert list((out / "damaged").rglob("cell-00003.parquet"))


def test_faults_of_known_tables() -> None:
    """Hand-made tables: what each check says, and a sound table says nothing."""
    good = pa.table({"cell": [3, 3, 3, 3], "call_id": [3_000_000, 3_000_000, 3_000_001, 3_000_001],
                     "sequence": [0, 1, 0, 1], "max_new_tokens": [4, 4, 4, 4], "model": ["m"] * 4,
                     "total_ms": [1.0, 1.0, 2.0, 2.0], "output_tokens": [4, 4, 4, 4]})
    exp = Expected(4, {"max_new_tokens": 4, "model": "m"}, {"total_ms": 6.0, "output_tokens": 16.0})
    assert faults(good, {3: exp}, whole=3) == {}
    assert "labelled cell 2" in faults(set_column(good, "cell", [2, 2, 2, 2]), {3: exp}, whole=3)[3]
    assert "cell 2's" in faults(set_column(good, "call_id", [2_000_000, 2_000_000, 2_000_001, 2_000_001]), {3: exp})[3]
    assert "2 times" in faults(set_column(good, "sequence", [0, 0, 0, 1]), {3: exp})[3]
    assert "max_new_tokens = 8" in faults(set_column(good, "max_new_tokens", [8] * 4), {3: exp})[3]
    assert "total_ms add up to 7" in faults(set_column(good, "total_ms", [1.0, 1.0, 2.0, 3.0]), {3: exp})[3]
    assert "holds 3 rows" in faults(good.slice(0, 3), {3: exp})[3]


@pytest.mark.parametrize("point", ["mkdir", "lock", "owner", "run.json tmp", "run.json", "first cell"])
def test_a_run_killed_at_any_point_of_start_up_resumes_to_every_cell_once(tmp_path: Path, point: str) -> None:
    out = tmp_path / "run"
    mp = pytest.MonkeyPatch()

    class Killed(BaseException):
        pass

    def die(*args, **kwargs):
        raise Killed

    if point == "mkdir":
        mp.setattr(driver.directory, "DirectoryLock", lambda path: die())
    elif point == "lock":
        mp.setattr(driver.directory, "create", die)
    elif point == "owner":
        real = directory.create

        def create_then_die(path: Path) -> None:
            real(path)
            raise Killed

        mp.setattr(driver.directory, "create", create_then_die)
    elif point == "run.json tmp":
        def half_written(path, data):
            (Path(path).parent / f".{Path(path).name}.abc123.tmp").write_text("{\"sche")
            raise Killed

        mp.setattr(driver, "write_json", half_written)
    elif point == "run.json":
        real_write = driver.write_json

        def write_then_die(path, data):
            real_write(path, data)
            raise Killed

        mp.setattr(driver, "write_json", write_then_die)
    else:
        mp.setattr(driver, "write_cell", die)
    try:
        with pytest.raises(Killed):
            run_experiment(EXP, out)
    finally:
        mp.undo()
    if point != "mkdir":
        assert (out / OWNER_FILE).exists() or point == "lock"
    # a plain run would refuse a started directory; --resume takes over any start-up state
    result = run_experiment(EXP, out, resume=True)
    assert result.done == CELLS and result.failed == 0
    table = read(out)
    assert table.num_rows == CELLS * ROWS_PER_CELL
    assert sorted(set(table.column("cell").to_pylist())) == list(range(CELLS))


def test_a_plain_run_takes_over_a_directory_killed_before_run_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    directory.create(out)  # what a run killed between the owner file and run.json leaves
    (out / CELLS_DIR).mkdir()
    result = run_experiment(EXP, out)
    assert result.done == CELLS and read(out).num_rows == CELLS * ROWS_PER_CELL


def test_a_calls_rows_come_from_the_file_the_inventory_trusts(finished: Path, tmp_path: Path) -> None:
    """The report's timeline reads one call: from the merged file of a finished run, and never
    from a wrong part that verify read around."""
    from phasetime.results.reader import read_call

    out = copy(finished, tmp_path)
    t = read(out)
    call = 3 * CALL_ID_STRIDE
    truth = cell_rows(t, 3).filter(pc.equal(cell_rows(t, 3).column("call_id"), call)).to_pylist()
    assert read_call(out, call) == truth
    fake = set_column(cell_rows(t, 2), "cell", [3] * ROWS_PER_CELL)  # cell 2's rows, relabelled and
    fake = set_column(fake, "call_id", [3 * CALL_ID_STRIDE + c % CALL_ID_STRIDE  # given cell 3's call ids
                                        for c in fake.column("call_id").to_pylist()])
    write(fake, out / CELLS_DIR / "cell-00003.parquet")
    assert any("cell-00003.parquet" in note for note in verify(out).notes)  # read around
    assert read_call(out, call) == truth
