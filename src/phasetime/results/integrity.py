"""A results directory checks itself: markers against parts, parts against the merged file,
everything against run.json; damage is named by file, never skipped.

:func:`verify` returns an :class:`Inventory`: where each finished cell's rows are, and
every :class:`Problem` found. :func:`phasetime.results.reader.read` returns the rows of a
sound directory and refuses a damaged one, listing what is wrong. ``phasetime verify DIR`` prints the
inventory; ``phasetime run ... --resume`` moves damaged files aside (:func:`set_aside`)
and measures their cells again.

Rules (docs/experiments.md, "Integrity"):

* a cell is *done* when its marker ``cells/cell-NNNNN.json`` says so; the marker records
  the cell's row count, key, parameters and a fingerprint of its rows (:mod:`.content`);
* ``run.json`` records every cell's key and parameters (the plan) and a digest of that
  plan: a ``run.json`` whose plan no longer matches its digest was edited, and is a problem;
* a done cell's rows are in its part ``cells/cell-NNNNN.parquet`` or, once merged, in
  ``measurements.parquet``; they are the cell's only if their content says so
  (:func:`phasetime.results.content.faults`: labels, call ids, parameters, no call twice,
  the marker's count and sums); a sound part wins over the merged file (a part is newer:
  parts are removed once merged), and a wrong part beside sound merged rows is set aside;
* rows in ``measurements.parquet`` of a cell that is not done, a marker that cannot be
  read, a part that cannot be read, a ``run.json`` that is missing or unreadable, a
  marker whose key or parameters are not what ``run.json`` records for that cell: each is
  a problem;
* a done cell's side rows (``--profile``: :mod:`.side`) must be where and as many as its
  marker says, or the cell is damaged;
* a part without a marker is what a run killed mid-cell leaves: a note, not a problem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .content import Expected, check_columns, faults, plan_intact
from .files import CELLS_DIR, MEASUREMENTS_FILE, RUN_FILE, StoreError, cell_files, read_json, read_table
from .schema import READABLE_VERSIONS
from .side import locate as side_locate

_MARKER = re.compile(r"^cell-(\d{5,})\.json$")


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
    stale: list[Path] = field(default_factory=list)  # wrong parts of cells intact in the merged file
    merged_sound: set[int] = field(default_factory=set)  # done cells whose rows in the merged file are right
    side: dict[str, dict[int, Path]] = field(default_factory=dict)  # side table -> done cell -> file (.side)

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
    if not plan_intact(run):
        inv.problems.append(Problem(RUN_FILE, "was edited after the run wrote it: its experiment or cells no longer "
                                              "match its plan_digest (phasetime run FILE --out DIR --resume rebuilds "
                                              "it from the experiment file)"))
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
        elif planned(inv, index) is not None and "params" in marker and marker["params"] != planned(inv, index):
            inv.problems.append(Problem(rel, f"records other parameters than {RUN_FILE} plans for cell {index}", index))


def planned(inv: Inventory, index: int) -> dict[str, Any] | None:
    """The parameters ``run.json`` plans for cell ``index`` (None where it does not record them)."""
    params = (inv.run or {}).get("cell_params")
    if isinstance(params, list) and index < len(params) and isinstance(params[index], dict):
        return params[index]
    return None


def expectation(inv: Inventory, index: int) -> Expected:
    """What cell ``index``'s rows must be, from its marker and the plan."""
    marker = inv.markers[index]
    params = planned(inv, index)
    if params is None and isinstance(marker.get("params"), dict):
        params = marker["params"]
    sums = marker.get("sums") if isinstance(marker.get("sums"), dict) else None
    return Expected(int(marker["rows"]), params, sums)


def _merged(inv: Inventory, columns: list[str]) -> pa.Table | None:
    """The checked columns of measurements.parquet; None when it is absent or unreadable."""
    file = inv.root / MEASUREMENTS_FILE
    try:
        table = read_table(file, columns)
    except FileNotFoundError:
        return None
    except StoreError as exc:
        inv.problems.append(Problem(MEASUREMENTS_FILE, f"is unreadable ({_reason(exc)})"))
        return None
    if not inv.markers and inv.run is None and not (inv.root / RUN_FILE).exists():
        inv.bare = True  # a table written by hand or by a script: no cells to check against
        return table.slice(0, 0)
    if "cell" not in table.column_names:
        inv.problems.append(Problem(MEASUREMENTS_FILE, "has no cell column"))
        return table.slice(0, 0)
    return table


def _part_fault(inv: Inventory, index: int, exp: Expected, columns: list[str]) -> Problem | None | bool:
    """Cell ``index``'s part: False when there is none, None when it is sound, else its problem."""
    part = cell_files(inv.root, index)[0]
    rel = _rel(inv.root, part)
    try:
        table = read_table(part, columns)
    except FileNotFoundError:
        return False
    except StoreError as exc:
        return Problem(rel, f"is unreadable ({_reason(exc)})", index)
    fault = faults(table, {index: exp}, whole=index).get(index)
    return None if fault is None else Problem(rel, fault, index)


def _locate(inv: Inventory) -> None:
    merged_file = inv.root / MEASUREMENTS_FILE
    expected = {i: expectation(inv, i) for i, m in sorted(inv.markers.items()) if m["status"] == "done" and m["rows"]}
    columns = check_columns(expected)
    merged = _merged(inv, columns)
    merged_faults = faults(merged, expected) if merged is not None and merged.num_rows else None
    if merged_faults is not None:
        inv.merged_sound = set(expected) - set(merged_faults)
    for index, exp in expected.items():
        part = cell_files(inv.root, index)[0]
        rel = _rel(inv.root, part)
        part_problem = _part_fault(inv, index, exp, columns)
        if part_problem is None:
            inv.sources[index] = part
            continue
        if merged_faults is not None and index not in merged_faults:
            inv.sources[index] = merged_file
            inv.merged_cells.add(index)
            if isinstance(part_problem, Problem):
                inv.notes.append(f"{rel}: {part_problem.message} (its rows are intact in {MEASUREMENTS_FILE}; "
                                 "--resume sets the part aside)")
                inv.stale.append(part)
            continue
        if isinstance(part_problem, Problem):
            inv.problems.append(part_problem)
        elif merged_faults is not None and index in merged_faults and not merged_faults[index].startswith("holds 0 "):
            inv.problems.append(Problem(MEASUREMENTS_FILE, merged_faults[index], index))
        else:
            where = (f"{MEASUREMENTS_FILE} is missing" if merged is None and not merged_file.exists()
                     else f"{MEASUREMENTS_FILE} holds none of them")
            inv.problems.append(Problem(rel, f"is missing: cell {index} is marked done with {exp.rows} rows, and "
                                             f"{where}", index))
    if merged is not None and merged.num_rows and not inv.bare:
        _strays(inv, merged)
    inv.side, side_problems = side_locate(inv.root, {i: inv.markers[i] for i in expected})
    known = inv.damaged_cells
    inv.problems.extend(Problem(path, message, cell) for path, message, cell in side_problems if cell not in known)


def _strays(inv: Inventory, merged: pa.Table) -> None:
    """Rows in the merged file of cells that are not done."""
    counts = {int(v["values"].as_py()): int(v["counts"].as_py())
              for v in pc.value_counts(merged.column("cell")) if v["values"].as_py() is not None}
    damaged = inv.damaged_cells
    for index in sorted(set(counts) - set(inv.sources) - damaged):
        status = inv.markers.get(index, {}).get("status")
        if status is None:
            marker_file = _rel(inv.root, inv.root / CELLS_DIR / f"cell-{index:05d}.json")
            inv.problems.append(Problem(marker_file, f"is missing, yet {MEASUREMENTS_FILE} holds {counts[index]} rows "
                                                     f"of cell {index}", index))
        elif status != "done":
            inv.problems.append(Problem(MEASUREMENTS_FILE, f"holds {counts[index]} rows of cell {index}, "
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
    _locate(inv)
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


__all__ = ["Inventory", "Problem", "damage_report", "verify"]
