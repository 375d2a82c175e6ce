"""Results on disk: ``measurements.parquet`` (one row per sequence per call) and ``run.json``.

Rows keep raw values (every ITL gap, every ready time, every decode forward) and the
run's parameters; aggregates are derived when reading. Every file is written to a
temporary name and renamed into place, so a reader never sees a half-written file.

Schema history (``phasetime.schema`` in the Parquet metadata and in run.json):

* 1 -- first version.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
        ("batch_size", pa.int32()),
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
        ("prefill_forwards", pa.int32()),
        ("vision_calls", pa.int32()),
    ]
)


class StoreError(RuntimeError):
    """A results directory could not be written or read."""


def measurement_rows(m: Measurement, *, call_id: int, repeat: int, params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per sequence of ``m``; ``decode_ms``/``tpot_ms``/``itl_ms`` are the sequence's own."""
    rows = []
    for seq in m.sequences:
        row = {
            "call_id": call_id,
            "repeat": repeat,
            "method": m.method,
            "timer": m.timer,
            "sequence": seq.index,
            "batch_size": m.batch_size,
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
            "prefill_forwards": m.prefill_forwards,
            "vision_calls": m.vision_calls,
        }
        clash = set(params) & set(row)
        if clash:
            raise ValueError(f"run parameters may not reuse measurement column names: {sorted(clash)}")
        row.update(params)
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


def _atomic_write(path: Path, write: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are ordinary files
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_table(path: Path, table: pa.Table) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically."""
    try:
        _atomic_write(path, lambda tmp: pq.write_table(table, tmp))
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}") from exc


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as indented JSON, atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")

    try:
        _atomic_write(path, write)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc}") from exc


def read_table(path: str | os.PathLike[str]) -> pa.Table:
    """Read a results directory (or a measurements file) and check its schema version."""
    p = Path(path)
    file = p / MEASUREMENTS_FILE if p.is_dir() else p
    if not file.exists():
        raise StoreError(f"no {MEASUREMENTS_FILE} in {p}")
    try:
        table = pq.read_table(file)
    except (OSError, pa.ArrowInvalid) as exc:
        raise StoreError(f"cannot read {file}: {exc}") from exc
    meta = table.schema.metadata or {}
    version = int(meta.get(_META_KEY, b"0"))
    if version != SCHEMA_VERSION:
        raise StoreError(f"{file} has schema version {version}; this phasetime reads version {SCHEMA_VERSION}")
    return table


def read_run(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run.json of a results directory."""
    file = Path(path) / RUN_FILE
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise StoreError(f"cannot read {file}: {exc}") from exc
