"""Rows, Parquet round trip, schema versions, atomic writes, and the one schema."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from phasetime import Measurement, SequenceTiming
from phasetime.results import read
from phasetime.results.files import StoreError, read_json, write_json, write_table
from phasetime.results.rows import measurement_rows, rows_to_table
from phasetime.results.schema import COLUMNS, SCHEMA_VERSION, markdown_table

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion

DOCS = Path(__file__).parent.parent / "docs" / "experiments.md"


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
    with pytest.raises(ValueError, match="not a results column"):
        measurement_rows(sample(), call_id=0, repeat=0, params={"modle": "typo"})
    same = measurement_rows(sample(), call_id=0, repeat=0, params={"method": "direct"},
                            extras=[{"sample_id": "a"}, {"sample_id": "b"}])
    assert [r["sample_id"] for r in same] == ["a", "b"]


def test_parquet_round_trip_keeps_raw_values_and_declared_types(tmp_path: Path) -> None:
    rows = measurement_rows(sample(), call_id=0, repeat=0, params={"model": "m"})
    write_table(tmp_path / "measurements.parquet", rows_to_table(rows))
    table = read(tmp_path)
    assert table.num_rows == 2 and table.column_names == [c.name for c in COLUMNS]
    assert table.schema.field("image_size").type == pa.int64()  # declared, although every value is null
    back = table.to_pylist()
    assert back[0]["itl_ms"] == [3.0, 3.0] and back[0]["ready_ms"] == [4.0, 7.0, 10.0]
    assert back[1]["tpot_ms"] is None and back[0]["model"] == "m"
    meta = pq.read_schema(tmp_path / "measurements.parquet").metadata
    assert meta[b"phasetime.schema"] == str(SCHEMA_VERSION).encode()


@pytest.mark.parametrize("tag, message", [(b"99", "schema version 99"), (b"abc", "not a number")])
def test_a_file_of_another_schema_version_is_refused(tmp_path: Path, tag: bytes, message: str) -> None:
    table = rows_to_table(measurement_rows(sample(), call_id=0, repeat=0, params={}))
    pq.write_table(table.replace_schema_metadata({b"phasetime.schema": tag}), tmp_path / "measurements.parquet")
    with pytest.raises(StoreError, match=message):
        read(tmp_path)
    with pytest.raises(StoreError, match="no results directory"):
        read(tmp_path / "elsewhere")


def test_a_version_1_file_is_still_read(tmp_path: Path) -> None:
    rows = measurement_rows(sample(), call_id=0, repeat=0, params={"model": "m"})
    old = pa.Table.from_pylist([{k: v for k, v in r.items() if k not in ("probe_ms", "decode_vision_ms")} for r in rows])
    pq.write_table(old.replace_schema_metadata({b"phasetime.schema": b"1"}), tmp_path / "measurements.parquet")
    assert read(tmp_path).column("model").to_pylist() == ["m", "m"]


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json(target, {"a": 1})
    with pytest.raises(StoreError, match="cannot write"):
        write_json(target, {"a": object()})
    with pytest.raises(StoreError, match="cannot write"):
        write_json(target, {"a": float("nan")})
    assert target.read_text() == '{\n  "a": 1\n}\n'  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]
    with pytest.raises(StoreError, match="cannot write"):
        write_json(tmp_path / "missing-dir" / "run.json", {})


@pytest.mark.parametrize("content, message", [
    (b"[]", "expected a JSON dict"), (b"\xff\xfe", "not UTF-8"), (b"{", "not valid JSON"), (b"[" * 5000, "not valid JSON"),
])
def test_unreadable_json_is_one_error_naming_the_file(tmp_path: Path, content: bytes, message: str) -> None:
    (tmp_path / "x.json").write_bytes(content)
    with pytest.raises(StoreError, match=re.escape(str(tmp_path / "x.json")) + ".*" + message):
        read_json(tmp_path / "x.json")


def test_the_docs_column_table_is_the_schema() -> None:
    text = DOCS.read_text()
    start, end = text.index("<!-- columns:start -->"), text.index("<!-- columns:end -->")
    assert text[start:end].split("\n", 1)[1].strip() == markdown_table()
