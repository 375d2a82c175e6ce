"""Files of a results directory: their names, and reading and writing them safely.

Every write goes to a temporary name in the same directory, is flushed to disk and then
renamed into place, so no reader ever sees a half-written file; a write that fails is one
:class:`StoreError` naming the file. Reads turn every way a file can be broken (missing,
truncated, not UTF-8, not JSON, the wrong shape, a schema this version cannot read) into a
:class:`StoreError` naming the file too.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import PhasetimeError
from .schema import READABLE_VERSIONS, SCHEMA_VERSION

OWNER_FILE = ".phasetime-results"  # written first: the directory is ours
RUN_FILE = "run.json"
MEASUREMENTS_FILE = "measurements.parquet"
CELLS_DIR = "cells"
LOCK_FILE = ".lock"
DAMAGED_DIR = "damaged"
SERVER_DIR = "server"  # backend vllm-server: the server's log and its probe's records
META_KEY = b"phasetime.schema"
ROW_GROUP_ROWS = 64 * 1024
# Outputs of later commands, written into the directory when the user asks: ours as well.
OUTPUT_FILES = ("check.json", "report.html", "report.md", "report.tex", "compare.html", "export.csv", "export.parquet",
                "export.jsonl")


class StoreError(PhasetimeError):
    """A results directory or file that cannot be written or read."""


def cell_files(out: str | os.PathLike[str], index: int) -> tuple[Path, Path]:
    """(rows, marker) paths of cell ``index``."""
    base = Path(out) / CELLS_DIR / f"cell-{index:05d}"
    return base.with_suffix(".parquet"), base.with_suffix(".json")


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
        if isinstance(exc, (OSError, ValueError)) and not isinstance(exc, PhasetimeError):
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise StoreError(f"cannot write {path}: {reason}") from exc
        raise


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write ``data`` as indented JSON, atomically; a value JSON cannot hold is a StoreError."""
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except (TypeError, ValueError) as exc:
        raise StoreError(f"cannot write {path}: {exc}") from None

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    atomic_write(path, write)


def read_json(path: str | os.PathLike[str], expect: type = dict) -> Any:
    """The JSON value of ``path``, which must be a ``expect`` (a dict unless told)."""
    file = Path(path)
    try:
        data = json.loads(file.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{file} is missing") from None
    except OSError as exc:
        raise StoreError(f"cannot read {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise StoreError(f"cannot read {file}: not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise StoreError(f"cannot read {file}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(data, expect):
        raise StoreError(f"cannot read {file}: expected a JSON {expect.__name__}, got {type(data).__name__}")
    return data


def write_table(path: str | os.PathLike[str], table: pa.Table, *, part: bool = False) -> None:
    """Write ``table`` as Parquet, atomically. A cell's ``part`` (small, short-lived) skips
    dictionary encoding and statistics: half the time of the driver's work per cell."""
    # The merged file in row groups of 64Ki rows: a read of one call (a report's timeline)
    # skips the others by their statistics instead of decoding a million rows.
    options: dict[str, Any] = ({"use_dictionary": False, "write_statistics": False} if part
                               else {"row_group_size": ROW_GROUP_ROWS})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp, **options))


def table_version(schema: pa.Schema, file: Path) -> int:
    """The schema version a Parquet file declares; StoreError for one this version cannot read."""
    raw = (schema.metadata or {}).get(META_KEY, b"0")
    try:
        version = int(raw)
    except ValueError:
        raise StoreError(f"{file} declares schema version {raw[:20]!r}, which is not a number") from None
    if version not in READABLE_VERSIONS:
        raise StoreError(f"{file} has schema version {version}; this phasetime reads versions "
                         f"{', '.join(map(str, READABLE_VERSIONS))} (write version {SCHEMA_VERSION})")
    return version


def read_table(file: Path, columns: list[str] | None = None, exclude: Sequence[str] = (),
               filters: Any = None) -> pa.Table:
    """A Parquet file of ours (all columns, or the given ones present in it, less ``exclude``;
    ``filters`` as pyarrow's, to read some rows only)."""
    try:
        schema = pq.read_schema(file)
        table_version(schema, file)
        wanted = None if columns is None else [c for c in columns if c in schema.names]
        if exclude:
            wanted = [c for c in (wanted if wanted is not None else schema.names) if c not in exclude]
        return pq.read_table(file, columns=wanted, filters=filters)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise StoreError(f"cannot read {file}: {str(exc).splitlines()[0][:120]}") from None
