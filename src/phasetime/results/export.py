"""Exporting a results directory to CSV, Parquet or JSON lines.

``legacy_names`` adds the column names of the older analysis scripts next to phasetime's
own (the values are phasetime's: ``T_decode_per_token`` is ``tpot_ms``, divided by the
decode steps N - 1, not by ``output_tokens``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv

from ..core.errors import UsageError
from .files import atomic_write, write_table
from .reader import read

FORMATS = ("csv", "parquet", "jsonl")
LEGACY_NAMES = {
    "T_total": "total_ms",
    "T_vision_total": "vision_ms",
    "T_LLM_prefill": "prefill_ms",
    "T_LLM_decode": "decode_ms",
    "T_decode_per_token": "tpot_ms",
}


def with_legacy_names(table: pa.Table) -> pa.Table:
    """``table`` plus the legacy column names (``output_tokens`` keeps its name)."""
    for legacy, name in LEGACY_NAMES.items():
        table = table.append_column(legacy, table.column(name))
    return table


def _flat(table: pa.Table) -> pa.Table:
    """List columns as JSON text, for CSV."""
    for i, f in enumerate(table.schema):
        if pa.types.is_list(f.type) or pa.types.is_large_list(f.type):
            values = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, f.name, pa.array(values, type=pa.string()))
    return table


def export(results: str | Path, fmt: str, output: str | Path | None = None, *, legacy_names: bool = False) -> tuple[Path, int]:
    """Write every row of ``results`` to ``output`` in ``fmt``; returns (path, rows)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    table = read(results)
    if legacy_names:
        table = with_legacy_names(table)
    path = Path(output) if output is not None else Path(results) / f"export.{fmt}"
    if fmt == "parquet":
        write_table(path, table)
    elif fmt == "csv":
        atomic_write(path, lambda tmp: pacsv.write_csv(_flat(table), tmp))
    else:
        def write_jsonl(tmp: str) -> None:
            with open(tmp, "w", encoding="utf-8") as fh:
                for batch in table.to_batches(max_chunksize=65536):
                    for row in batch.to_pylist():
                        fh.write(json.dumps(row) + "\n")

        atomic_write(path, write_jsonl)
    return path, table.num_rows
