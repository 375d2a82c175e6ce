"""A results directory checks itself: markers against parts, parts against the merged file,
everything against run.json; damage is named by file, never skipped.

:func:`verify` returns an :class:`Inventory`: where each finished cell's rows are, and
every :class:`Problem` found. :func:`read` returns the rows of a sound directory and
refuses a damaged one, listing what is wrong. ``phasetime verify DIR`` prints the
inventory; ``phasetime run ... --resume`` moves damaged files aside (:func:`set_aside`)
and measures their cells again.

Rules (docs/experiments.md, "Integrity"):

* a cell is *done* when its marker ``cells/cell-NNNNN.json`` says so; the marker records
  the cell's row count and key;
* a done cell's rows are in its part ``cells/cell-NNNNN.parquet`` or, once merged, in
  ``measurements.parquet``, with exactly the marker's row count; a part wins over the
  merged file (a part is newer: parts are removed once merged);
* rows in ``measurements.parquet`` of a cell that is not done, a marker that cannot be
  read, a part that cannot be read, a ``run.json`` that is missing or unreadable, a
  marker whose key is not the key ``run.json`` records for that cell: each is a problem;
* a part without a marker is what a run killed mid-cell leaves: a note, not a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .files import (
    CELLS_DIR, MEASUREMENTS_FILE, META_KEY, RUN_FILE, StoreError, read_json, read_table, row_count,
)
from .schema import READABLE_VERSIONS, SCHEMA_VERSION

_MARKER = re.compile(r"^cell-(\d{5,})\.json$")
_RETRIES = 3


@dataclass(frozen=True)
class Problem:
    """Something wrong, by file (relative to the directory); ``cell`` is the cell a new
    measurement repairs, None when only a person can."""

    path: str
    message: str
    cell: int | None = None

    def __str__(self) -> str:
        return f"{self.path} {self.message}"


@dataclass
class Inventory:
    root: Path
    run: dict[str, Any] | None = None
    markers: dict[int, dict[str, Any]] = field(default_factory=dict)
    sources: dict[int, Path] = field(default_factory=dict)  # done cell with rows -> the file holding them
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    merged_cells: set[int] = field(default_factory=set)
    bare: bool = False  # a lone measurements.parquet without markers

    @property
    def done(self) -> set[int]:
        """Cells finished and intact."""
        damaged = self.damaged_cells
        return {i for i, m in self.markers.items() if m.get("status") == "done" and i not in damaged}

    @property
    def damaged_cells(self) -> set[int]:
        return {p.cell for p in self.problems if p.cell is not None}

    def rows(self) -> int:
        return sum(int(self.markers[i]["rows"]) for i in self.sources if i in self.markers)


def _rel(root: Path, path: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _reason(exc: StoreError) -> str:
    """What a read error says about the file, without the file's path."""
    return str(exc).split(": ", 1)[-1]


def _check_run(inv: Inventory) -> None:
    file = inv.root / RUN_FILE
    if not file.exists():
        return
    try:
        run = read_json(file)
    except StoreError as exc:
        inv.problems.append(Problem(RUN_FILE, f"is unreadable ({_reason(exc)})"))
        return
    version = run.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in READABLE_VERSIONS:
        inv.problems.append(Problem(RUN_FILE, f"has schema_version {version!r}, which this phasetime does not read "
                                              f"(it reads {', '.join(map(str, READABLE_VERSIONS))})"))
        return
    if not isinstance(run.get("experiment"), dict):
        inv.problems.append(Problem(RUN_FILE, "has no experiment"))
        return
    inv.run = run


def _read_markers(inv: Inventory) -> None:
    for path in sorted((inv.root / CELLS_DIR).glob("cell-*.json")):
        match = _MARKER.match(path.name)
        if match is None:
            continue
        index = int(match.group(1))
        rel = _rel(inv.root, path)
        try:
            marker = read_json(path)
        except StoreError as exc:
            inv.problems.append(Problem(rel, f"is unreadable ({_reason(exc)})", index))
            continue
        status, rows = marker.get("status"), marker.get("rows")
        if status not in ("done", "failed") or isinstance(rows, bool) or not isinstance(rows, int) or rows < 0 \
                or marker.get("cell") != index:
            inv.problems.append(Problem(rel, "is not a cell marker (needs status done/failed, a row count and its cell)",
                                        index))
            continue
        inv.markers[index] = marker


def _check_keys(inv: Inventory) -> None:
    keys = (inv.run or {}).get("cell_keys")
    if not isinstance(keys, list):
        return
    for index, marker in list(inv.markers.items()):
        rel = _rel(inv.root, inv.root / CELLS_DIR / f"cell-{index:05d}.json")
        if index >= len(keys):
            inv.problems.append(Problem(rel, f"names cell {index}, beyond the {len(keys)} cells of {RUN_FILE}", index))
        elif marker.get("key") != keys[index]:
            inv.problems.append(Problem(rel, f"belongs to another experiment (key {marker.get('key')!r}, "
                                             f"{RUN_FILE} says {keys[index]!r})", index))


def _merged_counts(inv: Inventory) -> dict[int, int] | None:
    """Rows per cell in measurements.parquet; None when it is absent or unreadable."""
    file = inv.root / MEASUREMENTS_FILE
    try:
        table = read_table(file, ["cell"])
    except FileNotFoundError:
        return None
    except StoreError as exc:
        inv.problems.append(Problem(MEASUREMENTS_FILE, f"is unreadable ({_reason(exc)})"))
        return None
    if not inv.markers and inv.run is None and not (inv.root / RUN_FILE).exists():
        inv.bare = True  # a table written by hand or by a script: no cells to check against
        return {}
    if "cell" not in table.column_names:
        inv.problems.append(Problem(MEASUREMENTS_FILE, "has no cell column"))
        return {}
    counts = pc.value_counts(table.column("cell"))
    return {int(v["values"].as_py()): int(v["counts"].as_py()) for v in counts if v["values"].as_py() is not None}


def _locate(inv: Inventory, merged: dict[int, int] | None) -> None:
    merged_file = inv.root / MEASUREMENTS_FILE
    for index, marker in sorted(inv.markers.items()):
        if marker["status"] != "done" or marker["rows"] == 0:
            continue
        expected = int(marker["rows"])
        part = inv.root / CELLS_DIR / f"cell-{index:05d}.parquet"
        rel = _rel(inv.root, part)
        part_problem = None
        try:
            count = row_count(part)
            if count == expected:
                inv.sources[index] = part
                continue
            part_problem = Problem(rel, f"holds {count} rows; its marker says {expected}", index)
        except FileNotFoundError:
            pass
        except StoreError as exc:
            part_problem = Problem(rel, f"is unreadable ({_reason(exc)})", index)
        if merged is not None and merged.get(index) == expected:
            inv.sources[index] = merged_file
            inv.merged_cells.add(index)
            if part_problem is not None:
                inv.notes.append(f"{rel}: {part_problem.message} (its rows are intact in {MEASUREMENTS_FILE})")
            continue
        if part_problem is not None:
            inv.problems.append(part_problem)
            continue
        where = (f"{MEASUREMENTS_FILE} is missing" if merged is None and not merged_file.exists()
                 else f"{MEASUREMENTS_FILE} holds {merged.get(index, 0) if merged is not None else 'none'} of them")
        inv.problems.append(Problem(rel, f"is missing: cell {index} is marked done with {expected} rows, and {where}",
                                    index))
    if merged:
        damaged = inv.damaged_cells
        for index in sorted(set(merged) - set(inv.sources) - damaged):
            status = inv.markers.get(index, {}).get("status")
            if status is None:
                marker_file = _rel(inv.root, inv.root / CELLS_DIR / f"cell-{index:05d}.json")
                inv.problems.append(Problem(marker_file, f"is missing, yet {MEASUREMENTS_FILE} holds {merged[index]} rows "
                                                    f"of cell {index}", index))
            elif status != "done":
                inv.problems.append(Problem(MEASUREMENTS_FILE, f"holds {merged[index]} rows of cell {index}, "
                                                               f"which is marked {status}", index))


def _notes(inv: Inventory) -> None:
    for part in sorted((inv.root / CELLS_DIR).glob("cell-*.parquet")):
        match = re.match(r"^cell-(\d{5,})\.parquet$", part.name)
        if match and int(match.group(1)) not in inv.markers and int(match.group(1)) not in inv.damaged_cells:
            inv.notes.append(f"{_rel(inv.root, part)} has no marker: a cell interrupted before it finished (ignored)")
    if inv.run is None and not (inv.root / RUN_FILE).exists() and (inv.markers or inv.damaged_cells):
        inv.problems.append(Problem(RUN_FILE, "is missing: the run's experiment and environment are lost "
                                              "(phasetime run FILE --out DIR --resume rebuilds it from FILE)"))


def verify(path: str | Path) -> Inventory:
    """The inventory of a results directory; see the module docstring."""
    root = Path(path)
    if not root.is_dir():
        raise StoreError(f"no results directory at {root}")
    inv = Inventory(root)
    _check_run(inv)
    _read_markers(inv)
    _check_keys(inv)
    _locate(inv, _merged_counts(inv))
    _notes(inv)
    if not inv.markers and not inv.bare and not inv.problems and not (root / MEASUREMENTS_FILE).exists():
        if inv.run is None:
            raise StoreError(f"{root} is not a phasetime results directory (no {RUN_FILE}, no cells, no {MEASUREMENTS_FILE})")
    return inv


def damage_report(inv: Inventory, limit: int = 8) -> str:
    """The problems as text for an error message."""
    lines = [str(p) for p in inv.problems[:limit]]
    if len(inv.problems) > limit:
        lines.append(f"... and {len(inv.problems) - limit} more")
    return "; ".join(lines)


def _concat(tables: list[pa.Table]) -> pa.Table:
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return table.replace_schema_metadata({META_KEY: str(SCHEMA_VERSION).encode()})


def _load(inv: Inventory) -> pa.Table:
    merged_file = inv.root / MEASUREMENTS_FILE
    tables = []
    if inv.bare:
        tables.append(read_table(merged_file))
    merged_cells = sorted(inv.merged_cells)
    if merged_cells:
        merged = read_table(merged_file)
        keep = pc.is_in(merged.column("cell"), value_set=pa.array(merged_cells, merged.schema.field("cell").type))
        tables.append(merged if pc.all(keep).as_py() else merged.filter(keep))
    for index in sorted(set(inv.sources) - inv.merged_cells):
        tables.append(read_table(inv.sources[index]))
    if not tables:
        raise StoreError(f"no measurements in {inv.root}")
    return _concat(tables)


def read(path: str | Path) -> pa.Table:
    """Every stored row of a results directory (or of one Parquet file), verified.

    Cell parameters are columns. Rows of unfinished cells are never included. A damaged
    directory raises :class:`~phasetime.results.StoreError` naming every damaged file.
    """
    p = Path(path)
    if p.is_file():
        try:
            return read_table(p)
        except FileNotFoundError:
            raise StoreError(f"{p} is missing") from None
    for attempt in range(_RETRIES):
        inv = verify(p)
        if inv.problems:
            raise StoreError(f"{p} is damaged: {damage_report(inv)} (phasetime verify {p} lists it all; "
                             f"phasetime run ... --out {p} --resume measures damaged cells again)")
        try:
            return _load(inv)
        except FileNotFoundError:
            # a running phasetime merged parts into measurements.parquet while we read: look again
            if attempt == _RETRIES - 1:
                raise StoreError(f"{p} keeps changing while it is read; try again when its run has finished") from None
    raise AssertionError("unreachable")


__all__ = ["Inventory", "Problem", "damage_report", "read", "verify"]
