"""Rows, Parquet round trip, schema version, atomic writes."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from phasetime import Measurement, SequenceTiming
from phasetime._store import (
    SCHEMA_VERSION, StoreError, measurement_rows, read_results, rows_to_table, write_json, write_table,
)


def sample() -> Measurement:
    return Measurement(
        method="direct", timer="perf-counter", total_ms=10.0, vision_ms=1.0, prefill_ms=2.0, ttft_ms=4.0,
        decode_ms=6.0, other_ms=1.0, decode_steps=2, prompt_tokens=5,
        sequences=(SequenceTiming(0, 3, 6.0, 3.0, (3.0, 3.0)), SequenceTiming(1, 1, 0.0, None, ())),
        ready_ms=(4.0, 7.0, 10.0), decode_forward_ms=(1.0, 1.0),
    )


def test_one_row_per_sequence_with_its_own_values() -> None:
    rows = measurement_rows(sample(), call_id=7, repeat=2, params={"model": "m", "max_new_tokens": 3})
    assert [r["sequence"] for r in rows] == [0, 1]
    assert rows[0]["tpot_ms"] == 3.0 and rows[1]["tpot_ms"] is None
    assert rows[1]["itl_ms"] == [] and rows[1]["call_decode_ms"] == 6.0
    assert rows[0]["model"] == "m" and rows[0]["call_id"] == 7 and rows[0]["repeat"] == 2
    with pytest.raises(ValueError, match="may not change"):
        measurement_rows(sample(), call_id=0, repeat=0, params={"tpot_ms": 1})
    same = measurement_rows(sample(), call_id=0, repeat=0, params={"method": "direct"}, extras=[{"a": 1}, {"a": 2}])
    assert [r["a"] for r in same] == [1, 2]


def test_parquet_round_trip_keeps_raw_values(tmp_path: Path) -> None:
    rows = measurement_rows(sample(), call_id=0, repeat=0, params={"model": "m"})
    write_table(tmp_path / "measurements.parquet", rows_to_table(rows))
    table = read_results(tmp_path)
    assert table.num_rows == 2
    back = table.to_pylist()
    assert back[0]["itl_ms"] == [3.0, 3.0] and back[0]["ready_ms"] == [4.0, 7.0, 10.0]
    assert back[1]["tpot_ms"] is None and back[0]["model"] == "m"
    assert pq.read_schema(tmp_path / "measurements.parquet").metadata[b"phasetime.schema"] == str(SCHEMA_VERSION).encode()


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    table = rows_to_table(measurement_rows(sample(), call_id=0, repeat=0, params={}))
    pq.write_table(table.replace_schema_metadata({b"phasetime.schema": b"99"}), tmp_path / "measurements.parquet")
    with pytest.raises(StoreError, match="schema version 99"):
        read_results(tmp_path)
    with pytest.raises(StoreError, match="no results directory"):
        read_results(tmp_path / "elsewhere")


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json(target, {"a": 1})
    with pytest.raises(TypeError):
        write_json(target, {"a": object.__new__(type("Weird", (), {"__str__": None}))})
    assert target.read_text() == '{\n  "a": 1\n}\n'  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    with pytest.raises(StoreError, match="cannot write"):
        write_json(tmp_path / "missing-dir" / "run.json", {})
