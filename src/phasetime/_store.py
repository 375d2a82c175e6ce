"""Results on disk.

A results directory holds ``run.json`` (the resolved experiment and the environment),
``cells/cell-NNNNN.json`` (one marker per finished or failed cell) and the measurements:
``cells/cell-NNNNN.parquet`` while a run is going, merged into ``measurements.parquet``
when it ends. Rows keep raw values (every ITL gap, every ready time, every decode
forward) and the cell's parameters; aggregates are derived when reading.

Every file is written to a temporary name and renamed into place, and a cell's marker is
written only after its rows, so a run killed at any moment leaves complete cells or
nothing of a cell. :func:`read_results` is the one way to read a directory back.

Schema history (``phasetime.schema`` in the Parquet metadata and in run.json):

* 1 -- first version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
import pyarrow.parquet as pq

from ._record import Measurement

SCHEMA_VERSION = 1
MEASUREMENTS_FILE = "measurements.parquet"
RUN_FILE = "run.json"
_META_KEY = b"phasetime.schema"

# The measurement columns, in order; the run's parameters follow them.
MEASUREMENT_SCHEMA = pa.schema(
    [
        ("call_id", pa.int64()),
        ("repeat", pa.int32()),
        ("method", pa.string()),
        ("timer", pa.string()),
        ("sequence", pa.int32()),
        ("call_sequences", pa.int32()),
        ("prompt_tokens", pa.int32()),
        ("output_tokens", pa.int32()),
        ("total_ms", pa.float64()),
        ("vision_ms", pa.float64()),
        ("prefill_ms", pa.float64()),
        ("ttft_ms", pa.float64()),
        ("decode_ms", pa.float64()),
        ("call_decode_ms", pa.float64()),
        ("other_ms", pa.float64()),
        ("decode_steps", pa.int32()),
        ("tpot_ms", pa.float64()),
        ("itl_ms", pa.list_(pa.float64())),
        ("ready_ms", pa.list_(pa.float64())),
        ("decode_forward_ms", pa.list_(pa.float64())),
        ("spans", pa.list_(pa.struct([("name", pa.string()), ("start_ms", pa.float64()), ("end_ms", pa.float64())]))),
        ("prefill_forwards", pa.int32()),
        ("vision_calls", pa.int32()),
    ]
)


class StoreError(RuntimeError):
    """A results directory could not be written or read."""


def measurement_rows(
    m: Measurement,
    *,
    call_id: int,
    repeat: int,
    params: dict[str, Any],
    extras: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per sequence of ``m``; ``decode_ms``/``tpot_ms``/``itl_ms`` are the sequence's own.

    ``params`` (the run's or cell's parameters) go on every row, ``extras[i]`` (per-sample
    fields) on row i. Neither may overwrite a measurement column with a different value.
    """
    rows = []
    for seq in m.sequences:
        row = {
            "call_id": call_id,
            "repeat": repeat,
            "method": m.method,
            "timer": m.timer,
            "sequence": seq.index,
            "call_sequences": m.batch_size,
            "prompt_tokens": m.prompt_tokens,
            "output_tokens": seq.output_tokens,
            "total_ms": m.total_ms,
            "vision_ms": m.vision_ms,
            "prefill_ms": m.prefill_ms,
            "ttft_ms": m.ttft_ms,
            "decode_ms": seq.decode_ms,
            "call_decode_ms": m.decode_ms,
            "other_ms": m.other_ms,
            "decode_steps": m.decode_steps,
            "tpot_ms": seq.tpot_ms,
            "itl_ms": list(seq.itl_ms),
            "ready_ms": list(m.ready_ms),
            "decode_forward_ms": list(m.decode_forward_ms),
            "spans": [{"name": n, "start_ms": a, "end_ms": b} for n, a, b in m.spans],
            "prefill_forwards": m.prefill_forwards,
            "vision_calls": m.vision_calls,
        }
        for added in (params, extras[seq.index] if extras else {}):
            clash = sorted(k for k in set(added) & set(row) if added[k] != row[k])
            if clash:
                raise ValueError(f"parameters may not change measurement columns: {clash}")
            row.update(added)
        rows.append(row)
    return rows


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """A table with the measurement schema first and the parameter columns (types inferred) after."""
    names = [f.name for f in MEASUREMENT_SCHEMA]
    param_names = [k for k in (rows[0] if rows else {}) if k not in names]
    columns = {f.name: pa.array([r[f.name] for r in rows], type=f.type) for f in MEASUREMENT_SCHEMA}
    for name in param_names:
        columns[name] = pa.array([r.get(name) for r in rows])
    table = pa.table(columns)
    return table.replace_schema_metadata({_META_KEY: str(SCHEMA_VERSION).encode()})


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """Create ``path`` through ``write(temporary_name)`` and a rename, so that no reader
    ever sees a half-written file; :class:`StoreError` when it cannot be written."""
    path = Path(path)
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_table(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically."""
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")

    atomic_write(path, write)


def read_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run.json of a results directory."""
    file = Path(path) / RUN_FILE
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {file}: {exc}") from exc


# --- results directories ----------------------------------------------------------------------
CELLS_DIR = "cells"


def cell_files(out: Path, index: int) -> tuple[Path, Path]:
    """(rows, marker) paths of cell ``index``."""
    base = Path(out) / CELLS_DIR / f"cell-{index:05d}"
    return base.with_suffix(".parquet"), base.with_suffix(".json")


def write_cell(out: Path, index: int, rows: list[dict[str, Any]], record: dict[str, Any]) -> None:
    """Store one finished cell: its rows first, then its marker (the proof it is complete)."""
    part, marker = cell_files(out, index)
    part.parent.mkdir(parents=True, exist_ok=True)
    if rows:
        write_table(part, rows_to_table(rows))
    else:
        part.unlink(missing_ok=True)
    write_json(marker, {**record, "cell": index, "rows": len(rows)})


def read_cell_records(out: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    """The markers of every finished or failed cell, by cell index."""
    records = {}
    for marker in sorted((Path(out) / CELLS_DIR).glob("cell-*.json")):
        try:
            record = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"cannot read {marker}: {exc}") from exc
        records[int(record["cell"])] = record
    return records


def _check_version(table: pa.Table, file: Path) -> pa.Table:
    meta = table.schema.metadata or {}
    version = int(meta.get(_META_KEY, b"0"))
    if version != SCHEMA_VERSION:
        raise StoreError(f"{file} has schema version {version}; this phasetime reads version {SCHEMA_VERSION}")
    return table


def _read_parquet(file: Path) -> pa.Table:
    try:
        return _check_version(pq.read_table(file), file)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read {file}: {exc}") from exc


def _pending_parts(out: Path, merged: pa.Table | None) -> list[Path]:
    """Parts of finished cells whose rows are not in measurements.parquet yet."""
    merged_cells: set[int] = set()
    if merged is not None and "cell" in merged.column_names:
        merged_cells = set(merged.column("cell").unique().to_pylist())
    pending = []
    for index, record in read_cell_records(out).items():
        part, _ = cell_files(out, index)
        if record.get("status") == "done" and index not in merged_cells and part.exists():
            pending.append(part)
    return pending


def _stored_tables(out: Path) -> tuple[list[pa.Table], list[Path]]:
    """The tables of measurements.parquet (when present) and of the pending parts; the parts' paths."""
    main = out / MEASUREMENTS_FILE
    merged = _read_parquet(main) if main.exists() else None
    pending = _pending_parts(out, merged)
    return ([merged] if merged is not None else []) + [_read_parquet(part) for part in pending], pending


def _concat(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.replace_schema_metadata({_META_KEY: str(SCHEMA_VERSION).encode()})


def read_results(path: str | os.PathLike[str]) -> pa.Table:
    """One table of every stored row of a results directory (or of one Parquet file).

    Cell parameters are columns. Rows of unfinished cells are never included.
    """
    p = Path(path)
    if p.is_file():
        return _read_parquet(p)
    if not p.is_dir():
        raise StoreError(f"no results directory at {p}")
    tables, _ = _stored_tables(p)
    if not tables:
        raise StoreError(f"no measurements in {p}")
    return _concat(tables)


def consolidate(out: str | os.PathLike[str]) -> None:
    """Merge finished cells' parts into measurements.parquet, then remove the parts.

    Safe to interrupt: until the parts are removed, readers skip parts whose cell is
    already in measurements.parquet.
    """
    p = Path(out)
    tables, pending = _stored_tables(p)
    if not pending:
        return
    write_table(p / MEASUREMENTS_FILE, _concat(tables))
    for part in pending:
        part.unlink(missing_ok=True)
