"""Exports: CSV, Parquet, JSON lines, legacy column names."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from phasetime.results.export import export
from conftest import run_cli
from phasetime.results.files import write_table
from phasetime.results.rows import measurement_rows, rows_to_table
from test_store import sample

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    rows = measurement_rows(sample(), call_id=0, repeat=0, params={"model": "m"})
    write_table(tmp_path / "measurements.parquet", rows_to_table(rows))
    return tmp_path


def test_csv_with_legacy_names(results: Path) -> None:
    path, n = export(results, "csv", legacy_names=True)
    assert path == results / "export.csv" and n == 2
    rows = list(csv.DictReader(path.open()))
    assert float(rows[0]["T_decode_per_token"]) == float(rows[0]["tpot_ms"]) == 3.0
    assert float(rows[0]["T_total"]) == 10.0 and rows[0]["output_tokens"] == "3"
    assert json.loads(rows[0]["itl_ms"]) == [3.0, 3.0]  # list columns as JSON text
    assert rows[1]["T_decode_per_token"] == ""  # N = 1: no tpot, never 0.0


def test_jsonl_and_parquet(results: Path, tmp_path: Path) -> None:
    path, _ = export(results, "jsonl", tmp_path / "out.jsonl")
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["itl_ms"] == [3.0, 3.0] and lines[1]["tpot_ms"] is None and "T_total" not in lines[0]
    path, _ = export(results, "parquet", tmp_path / "out.parquet")
    assert pq.read_table(path).num_rows == 2
    with pytest.raises(ValueError, match="unknown format"):
        export(results, "xlsx")


@pytest.mark.parametrize("command", [
    ["export", "--format", "csv"], ["export", "--format", "jsonl"], ["export", "--format", "parquet"],
    ["report"], ["trace"], ["check"],
])
def test_an_unwritable_output_is_one_line_and_leaves_nothing(results: Path, tmp_path: Path, command: list[str]) -> None:
    target = tmp_path / "no-such-dir" / "out"
    out = run_cli(command[0], str(results), *command[1:], "-o", str(target))
    assert out.exit_code == 2, out.output
    assert "Traceback" not in out.output and out.output.startswith("error:")
    assert f"cannot write {target}: No such file or directory" in " ".join(out.output.split())
    assert not target.parent.exists()
