"""Writing a results directory: cells as they finish, the merge at the end, damage set aside.

A results directory holds ``.phasetime-results`` (written first: the directory is
phasetime's), ``run.json`` (the resolved experiment, the cells' keys and the environment),
``cells/cell-NNNNN.json`` (one marker per finished or failed cell) and the measurements:
``cells/cell-NNNNN.parquet`` while a run is going, merged into ``measurements.parquet``
when it ends. Every file is written atomically (:mod:`.files`) and a cell's marker only
after its rows, so a run killed at any moment leaves complete cells or nothing of a cell.
Only the driver of a run writes here, holding the directory's lock (:mod:`.directory`).
"""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .files import DAMAGED_DIR, MEASUREMENTS_FILE, StoreError, cell_files, read_table, write_json, write_table
from .content import fingerprint
from .integrity import Inventory, damage_report, verify
from .reader import concat
from .rows import rows_to_table
from .side import MARKER_KEY, SIDE_TABLES, side_part, write_parts
from .side import merge as side_merge


def write_cell(out: str | os.PathLike[str], index: int, rows: list[dict[str, Any]] | pa.Table,
               record: dict[str, Any], side: dict[str, pa.Table] | None = None) -> None:
    """Store one finished cell: its side tables and rows first, then its marker (the proof it is
    complete), which records the rows' count and fingerprint
    (:func:`phasetime.results.content.fingerprint`) and each side table's count (:mod:`.side`)."""
    part, marker = cell_files(out, index)
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {part.parent}: {exc.strerror or exc}") from None
    table = rows if isinstance(rows, pa.Table) else rows_to_table(rows)
    counts = write_parts(out, index, side)
    if counts:
        record = {**record, MARKER_KEY: counts}
    if table.num_rows:
        write_table(part, table, part=True)
    else:
        part.unlink(missing_ok=True)
    write_json(marker, {**record, "cell": index, "rows": table.num_rows, "sums": fingerprint(table)})


def consolidate(out: str | os.PathLike[str]) -> None:
    """Merge finished cells' parts into measurements.parquet, then remove the parts.

    Rows of the merged file are kept only for the cells verified to live there (a part of
    the same cell is newer and replaces them); when rows are dropped, the old merged file
    is first copied into ``damaged/``. Safe to interrupt: until the parts are removed,
    readers take a cell's rows from its part.
    """
    root = Path(out)
    inv = verify(root)
    if inv.problems:
        raise StoreError(f"{root} cannot be merged: {damage_report(inv)}")
    side_merge(root, {name: {i: f for i, f in cells.items() if i in inv.done} for name, cells in inv.side.items()})
    parts = sorted(i for i in inv.sources if i not in inv.merged_cells)
    merged_file = root / MEASUREMENTS_FILE
    if not parts and (not merged_file.exists() or _merged_is_exact(inv)):
        return
    tables = []
    if merged_file.exists():
        merged = read_table(merged_file)
        cell_type = merged.schema.field("cell").type
        keep = pc.is_in(merged.column("cell"), value_set=pa.array(sorted(inv.merged_cells), cell_type))
        # Rows dropped that are not an exact copy of a part (an interrupted merge leaves those):
        # keep the old file in damaged/ before it is replaced.
        benign = pa.array(sorted(inv.merged_cells | (inv.merged_sound & set(parts))), cell_type)
        if not pc.all(pc.is_in(merged.column("cell"), value_set=benign)).as_py():
            copy_aside(root, merged_file)
        if inv.merged_cells:
            tables.append(merged.filter(keep))
    tables += [read_table(inv.sources[i]) for i in parts]
    if tables:
        write_table(merged_file, concat(tables))
    else:
        merged_file.unlink(missing_ok=True)  # its copy is in damaged/: nothing in it belongs to a done cell
    for i in parts:
        inv.sources[i].unlink(missing_ok=True)


def _merged_is_exact(inv: Inventory) -> bool:
    """Whether measurements.parquet holds the rows of exactly the cells sourced from it."""
    cells = set(pc.unique(read_table(inv.root / MEASUREMENTS_FILE, ["cell"]).column("cell")).to_pylist())
    return cells == inv.merged_cells


def set_aside(root: Path, paths: list[Path], *, copy: bool = False) -> list[str]:
    """Move damaged files into ``damaged/<time>/`` (never deleting them), or copy them there
    (``copy``: a file about to be replaced); returns where each went."""
    if not paths:
        return []
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    moved = []
    for path in paths:
        if not path.exists():
            continue
        target = root / DAMAGED_DIR / stamp / path.relative_to(root)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            if copy:
                shutil.copy2(str(path), str(target))
            else:
                shutil.move(str(path), str(target))
        except OSError as exc:
            verb = "copy" if copy else "move"
            raise StoreError(f"cannot {verb} {path} aside to {target}: {exc.strerror or exc}") from None
        moved.append(f"{path.relative_to(root)} -> {target.relative_to(root)}")
    return moved


def copy_aside(root: Path, path: Path) -> list[str]:
    """Keep a copy of ``path`` in ``damaged/`` before it is rewritten without some of its rows."""
    return set_aside(root, [path], copy=True)


def repair(root: Path) -> tuple[Inventory, list[str]]:
    """Set aside what makes cells damaged, so that a resumed run measures them again.

    Returns the inventory after the repair and one line per file moved. Problems a new
    measurement cannot repair (an unreadable run.json, say) are left for the caller.
    """
    inv = verify(root)
    damaged = inv.damaged_cells
    files: list[Path] = []
    for problem in inv.problems:
        path = root / problem.path
        if problem.cell is not None and path.name != MEASUREMENTS_FILE:
            files.append(path)
    if any(p.path == MEASUREMENTS_FILE and p.cell is None for p in inv.problems):
        files.append(root / MEASUREMENTS_FILE)  # unreadable: the cells only it held are re-measured
    for index in damaged:
        part, marker = cell_files(root, index)
        sides = [side_part(root, index, name) for name in SIDE_TABLES]
        files += [p for p in (part, marker, *sides) if p.exists() and p not in files]
    files += [p for p in inv.stale if p.exists() and p not in files]  # wrong parts beside sound merged rows
    lines = set_aside(root, sorted(set(files)))
    after = verify(root)
    # Cells whose rows were only in an unreadable merged file now read as missing: set their
    # markers aside too, so they are measured again.
    more = [cell_files(root, p.cell)[1] for p in after.problems if p.cell is not None]
    lines += set_aside(root, [m for m in more if m.exists()])
    return verify(root), lines

