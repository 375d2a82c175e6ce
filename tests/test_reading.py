"""The readers' shortcuts for big runs, against plain Python: a bulk column read apart row for
row, a chunked take, the duplicate-call pre-check of verification, and derived columns kept
per table (read-only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from phasetime.analysis.report.figures import take_rows
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.experiments.running.run import run_experiment
from phasetime.results import read, verify
from phasetime.results.content import _maybe_twice
from phasetime.results.reader import read_columns
from phasetime.results.tables import floats, group_indices


def test_take_rows_is_python_indexing_across_chunks() -> None:
    rng = np.random.default_rng(0)
    lists = [[float(v) for v in rng.random(int(rng.integers(0, 4)))] for _ in range(300)]
    chunks = [pa.array(lists[a:b], pa.list_(pa.float64())) for a, b in ((0, 7), (7, 7), (7, 150), (150, 300))]
    column = pa.chunked_array(chunks)
    rows = rng.permutation(300)[:120]
    assert take_rows(column, rows).to_pylist() == [lists[i] for i in rows]
    assert take_rows(column, np.empty(0, np.int64)).to_pylist() == []


def test_a_bulk_column_read_apart_lines_up_with_the_summary_read(tmp_path: Path) -> None:
    exp = parse_experiment({"name": "r", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
                            "sweep": {"max_new_tokens": [2, 3, 4], "batch_size": [1, 2]}, "repeats": 2, "warmup": 0})
    run_experiment(exp, tmp_path / "run")
    inventory = verify(tmp_path / "run")
    whole = read(tmp_path / "run")
    summary = read(tmp_path / "run", exclude=("itl_ms", "ready_ms", "spans", "decode_forward_ms"), inventory=inventory)
    apart = read_columns(tmp_path / "run", ["itl_ms", "ready_ms"], inventory)
    assert apart.column_names == ["itl_ms", "ready_ms"] and apart.num_rows == summary.num_rows == whole.num_rows
    assert summary.column("call_id").to_pylist() == whole.column("call_id").to_pylist()
    assert apart.column("itl_ms").to_pylist() == whole.column("itl_ms").to_pylist()
    with pytest.raises(ValueError, match="inventory"):
        read_columns(tmp_path / "run", ["itl_ms"], None)


@pytest.mark.parametrize("seed", range(20))
def test_the_duplicate_pre_check_never_misses_one(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 300))
    ids = rng.integers(0, 40, n) * 1_000_000 + rng.integers(0, 5, n)
    seq = rng.integers(0, 3, n)
    table = pa.table({"call_id": ids, "sequence": pa.array(seq, pa.int32())})
    twice = len(set(zip(ids.tolist(), seq.tolist()))) < n
    assert _maybe_twice(table) == twice  # without nulls the sort is exact
    with_null = pa.table({"call_id": pa.array([1, 2], mask=[False, True]), "sequence": [0, 0]})
    assert _maybe_twice(with_null)  # nulls: the exact count decides


def test_derived_columns_of_a_big_table_are_shared_and_read_only() -> None:
    table = pa.table({"cell": np.repeat(np.arange(5), 1000), "x": np.arange(5000, dtype=float)})
    a, b = floats(table, "x"), floats(table, "x")
    assert a is b and not a.flags.writeable
    groups = group_indices(table, ["cell"])
    groups.pop((0,))  # the caller's copy of the mapping
    assert (0,) in group_indices(table, ["cell"])
    assert [int(v[0]) for v in group_indices(table, ["cell"]).values()] == [0, 1000, 2000, 3000, 4000]
