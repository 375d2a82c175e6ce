"""Side tables of a results directory: rows that are not timed calls, kept as safely as those.

A run with ``--profile`` stores what its profiled calls spent each phase on
(:mod:`phasetime.results.profiles`) in two side tables, ``profiles.parquet`` and
``operators.parquet``. They follow the rules of the measurements (:mod:`.store`,
:mod:`.integrity`): a cell's side parts ``cells/cell-NNNNN.<table>.parquet`` are written
before its marker, which records how many rows each holds; the end of the run merges them
into ``<table>.parquet``. A done cell whose side rows are missing or of another count is
damaged, like a cell whose measurements are (``--resume`` measures it again); rows of a cell
that is not done, or that its marker does not count, are never read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .files import CELLS_DIR, StoreError, read_table, write_table

SIDE_TABLES = ("profiles", "operators")
SIDE_FILES = tuple(f"{name}.parquet" for name in SIDE_TABLES)
MARKER_KEY = "side_rows"  # in a cell's marker: {table: rows}


def side_part(out: str | os.PathLike[str], index: int, name: str) -> Path:
    return Path(out) / CELLS_DIR / f"cell-{index:05d}.{name}.parquet"


def write_parts(out: str | os.PathLike[str], index: int, tables: dict[str, pa.Table] | None) -> dict[str, int]:
    """Write a cell's side tables (before its marker); the row counts its marker records. A
    table the cell does not have is removed, so an old part never passes for the new cell's."""
    counts: dict[str, int] = {}
    for name in SIDE_TABLES:
        table = (tables or {}).get(name)
        part = side_part(out, index, name)
        if table is not None and table.num_rows:
            write_table(part, table, part=True)
            counts[name] = table.num_rows
        else:
            part.unlink(missing_ok=True)
    return counts


def _counted(marker: dict[str, Any]) -> dict[str, int]:
    counts = marker.get(MARKER_KEY)
    return {k: v for k, v in counts.items() if isinstance(v, int)} if isinstance(counts, dict) else {}


def _cell_counts(table: pa.Table) -> dict[int, int]:
    return {int(v["values"].as_py()): int(v["counts"].as_py()) for v in pc.value_counts(table.column("cell"))}


def _merged_counts(root: Path, name: str) -> tuple[dict[int, int], str | None]:
    file = root / f"{name}.parquet"
    if not file.exists():
        return {}, None
    try:
        return _cell_counts(read_table(file, ["cell"])), None
    except StoreError as exc:
        return {}, str(exc).split(": ", 1)[-1]


def locate(root: Path, markers: dict[int, dict[str, Any]]) -> tuple[dict[str, dict[int, Path]], list[tuple[str, str, int]]]:
    """Where each done cell's side rows are ({table: {cell: file}}), and the problems
    (path, message, cell) of the cells whose rows are not where their marker says."""
    sources: dict[str, dict[int, Path]] = {name: {} for name in SIDE_TABLES}
    problems: list[tuple[str, str, int]] = []
    merged = {name: _merged_counts(root, name) for name in SIDE_TABLES}
    for index, marker in sorted(markers.items()):
        if marker.get("status") != "done":
            continue
        for name, want in _counted(marker).items():
            if name not in sources or want == 0:
                continue
            part = side_part(root, index, name)
            rel = str(part.relative_to(root))
            if part.exists():
                try:
                    have = read_table(part, ["cell"]).num_rows
                except StoreError as exc:
                    problems.append((rel, f"is unreadable ({str(exc).split(': ', 1)[-1]})", index))
                    continue
                if have == want:
                    sources[name][index] = part
                    continue
                problems.append((rel, f"holds {have} rows, its marker says {want}", index))
                continue
            counts, unreadable = merged[name]
            if counts.get(index) == want:
                sources[name][index] = root / f"{name}.parquet"
            elif unreadable:
                problems.append((f"{name}.parquet", f"is unreadable ({unreadable})", index))
            else:
                problems.append((rel, f"is missing: cell {index} is marked done with {want} {name} rows, and "
                                      f"{name}.parquet holds {counts.get(index, 0)}", index))
    return sources, problems


def _rows(sources: dict[int, Path], root: Path, name: str, columns: list[str] | None = None) -> pa.Table | None:
    merged_file = root / f"{name}.parquet"
    tables = []
    in_merged = sorted(i for i, f in sources.items() if f == merged_file)
    if in_merged:
        merged = read_table(merged_file, columns)
        tables.append(merged.filter(pc.is_in(merged.column("cell"), pa.array(in_merged, merged.schema.field("cell").type))))
    tables += [read_table(f, columns) for i, f in sorted(sources.items()) if f != merged_file]
    if not tables:
        return None
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def merge(root: Path, sources: dict[str, dict[int, Path]]) -> None:
    """Merge the side rows of the cells in ``sources`` (where :func:`locate` found them sound) into
    each ``<table>.parquet`` (atomically, then remove the parts); rows of other cells are dropped."""
    for name in SIDE_TABLES:
        merged_file = root / f"{name}.parquet"
        parts = [f for f in sources.get(name, {}).values() if f != merged_file]
        if not parts and (not merged_file.exists() or set(_merged_counts(root, name)[0]) == set(sources.get(name, {}))):
            continue
        table = _rows(sources.get(name, {}), root, name)
        if table is None:
            merged_file.unlink(missing_ok=True)
        else:
            write_table(merged_file, table)
        for part in parts:
            part.unlink(missing_ok=True)


def read_side(root: str | os.PathLike[str], name: str, sources: dict[int, Path], cells: set[int]) -> pa.Table | None:
    """The side table ``name`` of ``cells``, from where :func:`locate` found them (None when none
    has rows in it)."""
    return _rows({i: f for i, f in sources.items() if i in cells}, Path(root), name)
