"""Reading a results directory: the rows of every intact finished cell, verified first.

:func:`read` runs :func:`phasetime.results.integrity.verify` and refuses a damaged
directory, naming every damaged file; a sound one gives each done cell's rows from
where the inventory found them sound (its part, or the merged file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from .content import CALL_ID_STRIDE
from .files import MEASUREMENTS_FILE, META_KEY, StoreError, cell_files, read_table
from .integrity import Inventory, damage_report, verify
from .schema import SCHEMA_VERSION

_RETRIES = 3


def concat(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.replace_schema_metadata({META_KEY: str(SCHEMA_VERSION).encode()})


# The per-step list columns that only a call's timeline or trace needs: the bulk of a large
# run's bytes. Commands that summarise (check, compare, report) read without them.
BULK_COLUMNS = ("ready_ms", "decode_forward_ms", "spans")


def _sources(inv: Inventory) -> tuple[Path | None, list[Path]]:
    """What a read takes rows from: the merged file (None: nothing in it counts) and the parts
    of the cells it does not hold."""
    merged = inv.root / MEASUREMENTS_FILE if inv.bare or inv.merged_cells else None
    return merged, [inv.sources[i] for i in sorted(set(inv.sources) - inv.merged_cells)]


def _load(inv: Inventory, exclude: Sequence[str] = (), columns: list[str] | None = None) -> pa.Table:
    merged_file, parts = _sources(inv)
    wanted = None if columns is None else [*columns, "cell"]  # (the merged file is filtered by cell)
    tables = []
    if merged_file is not None:
        merged = read_table(merged_file, columns=wanted, exclude=exclude)
        if inv.merged_cells:  # (a bare file, without markers, counts whole)
            cells = pa.array(sorted(inv.merged_cells), merged.schema.field("cell").type)
            keep = pc.is_in(merged.column("cell"), value_set=cells)
            merged = merged if pc.all(keep).as_py() else merged.filter(keep)
        tables.append(merged)
    tables.extend(read_table(part, columns=wanted, exclude=exclude) for part in parts)
    if not tables:
        raise StoreError(f"no measurements in {inv.root}")
    table = concat(tables)
    return table if columns is None else table.select([c for c in columns if c in table.column_names])


def read(path: str | Path, exclude: Sequence[str] = (), inventory: Inventory | None = None) -> pa.Table:
    """Every stored row of a results directory (or of one Parquet file), verified; without
    the columns in ``exclude`` (:data:`BULK_COLUMNS`, say) when told. ``inventory``: what a
    :func:`~phasetime.results.integrity.verify` of ``path`` found moments before (not verified again).

    Cell parameters are columns. Rows of unfinished cells are never included. A damaged
    directory raises :class:`~phasetime.results.StoreError` naming every damaged file.
    """
    p = Path(path)
    if p.is_file():
        try:
            return read_table(p, exclude=exclude)
        except FileNotFoundError:
            raise StoreError(f"{p} is missing") from None
    for attempt in range(_RETRIES):
        inv = inventory if inventory is not None and attempt == 0 else verify(p)
        if inv.problems:
            raise StoreError(f"{p} is damaged: {damage_report(inv)} (phasetime verify {p} lists it all; "
                             f"phasetime run ... --out {p} --resume measures damaged cells again)")
        try:
            return _load(inv, exclude)
        except FileNotFoundError:
            # a running phasetime merged parts into measurements.parquet while we read: look again
            if attempt == _RETRIES - 1:
                raise StoreError(f"{p} keeps changing while it is read; try again when its run has finished") from None
    raise AssertionError("unreachable")



def read_columns(path: str | Path, columns: list[str], inventory: Inventory | None) -> pa.Table:
    """Only ``columns`` of the rows a :func:`read` of ``path`` with the same ``inventory`` gave,
    row for row in the same order (a summary read first, a bulk column for some rows later)."""
    p = Path(path)
    if p.is_file():
        return read_table(p, columns=columns)
    if inventory is None:
        raise ValueError("read_columns of a directory needs the inventory its first read used")
    return _load(inventory, columns=columns)


def read_call(path: str | Path, call_id: int) -> list[dict[str, Any]]:
    """Every column of one call's rows, from a directory :func:`read` verified moments before.
    A finished run keeps no parts: its merged file is read, without verifying again. Where the
    call's cell still has a part, the inventory decides which file holds its sound rows."""
    p = Path(path)
    cell = int(call_id) // CALL_ID_STRIDE
    part = cell_files(p, cell)[0]
    if p.is_file():
        files = [p]
    elif part.exists():
        source = verify(p).sources.get(cell)
        files = [source] if source is not None else []
    else:
        files = [p / MEASUREMENTS_FILE] if (p / MEASUREMENTS_FILE).exists() else []
    for file in files:
        rows = read_table(file, filters=[("call_id", "==", int(call_id))]).to_pylist()
        if rows:
            return rows
    return []


__all__ = ["BULK_COLUMNS", "concat", "read", "read_call", "read_columns"]
