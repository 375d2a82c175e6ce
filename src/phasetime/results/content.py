"""What a cell's rows must hold, checked on the rows themselves, not on their count alone.

A finished cell's rows are the cell's when every row

* is labelled with the cell's index (``cell``) and carries a call id of that cell
  (``call_id // CALL_ID_STRIDE == cell``);
* carries the cell's parameters as planned (``model``, ``method``, ``max_new_tokens``, ...,
  equal to ``run.json``'s ``cell_params`` and to the cell's marker);
* is one sequence of one call: no ``(call_id, sequence)`` twice;

and the rows together add up to what the marker recorded when the cell was written: its
row count, and the sums of ``total_ms`` and ``output_tokens`` (:func:`fingerprint`). Rows
copied from another cell, relabelled, duplicated or swapped fail at least one of these.

:func:`faults` checks many cells of one table at once (the merged file of a million rows
in well under a second): grouped Arrow kernels, no Python loop over rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

CALL_ID_STRIDE = 1_000_000  # call ids are cell * stride + the call's number within the cell
SUMMED = ("total_ms", "output_tokens")  # the marker's fingerprint of a cell's rows
# The columns a verification reads (the parameter columns are added per cell).
CHECK_COLUMNS = ("cell", "call_id", "sequence", *SUMMED)
_TOLERANCE = 1e-9  # relative: a float sum in another order differs in its last bits only


@dataclass(frozen=True)
class Expected:
    """What one cell's rows must be: ``rows`` of them, with ``params`` (None: not recorded) and
    ``sums`` (the marker's fingerprint; None for cells written before it was recorded)."""

    rows: int
    params: dict[str, Any] | None = None
    sums: dict[str, float] | None = None


def fingerprint(table: pa.Table) -> dict[str, float]:
    """Sums of :data:`SUMMED` over a cell's rows, recorded in its marker."""
    out = {}
    for name in SUMMED:
        if name in table.column_names:
            value = pc.sum(table.column(name)).as_py()
            out[name] = float(value) if value is not None else 0.0
    return out


def plan_digest(experiment: Any, cell_keys: Any, cell_params: Any) -> str:
    """The digest ``run.json`` keeps of its own plan: the experiment and every cell's key and parameters."""
    blob = json.dumps({"experiment": experiment, "cell_keys": cell_keys, "cell_params": cell_params},
                      sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_intact(run: dict[str, Any]) -> bool:
    """Whether a run.json's plan still matches the digest it was written with (True for a
    run.json of phasetime 0.2, which has no digest)."""
    digest = run.get("plan_digest")
    return digest is None or digest == plan_digest(run.get("experiment"), run.get("cell_keys"), run.get("cell_params"))


def _add(out: dict[int, str], cell: int, reason: str) -> None:
    out.setdefault(cell, reason)


def _labels(table: pa.Table, expected: dict[int, Expected], whole: int | None, out: dict[int, str]) -> None:
    cells = table.column("cell")
    if whole is not None and table.num_rows:
        others = pc.unique(pc.filter(cells, pc.not_equal(cells, whole))).to_pylist()
        if others or cells.null_count:
            _add(out, whole, f"holds rows labelled cell {others[0] if others else 'null'}, not {whole}")
    counts = {int(v["values"].as_py()): int(v["counts"].as_py())
              for v in pc.value_counts(cells) if v["values"].as_py() is not None}
    for index, exp in expected.items():
        found = counts.get(index, 0)
        if found != exp.rows:
            _add(out, index, f"holds {found} rows of cell {index}; its marker says {exp.rows}")


def _call_ids(table: pa.Table, expected: dict[int, Expected], out: dict[int, str]) -> None:
    if "call_id" not in table.column_names:
        return
    cells, ids = table.column("cell"), table.column("call_id")
    owner = pc.divide(ids, pa.scalar(CALL_ID_STRIDE, ids.type))
    wrong = pc.fill_null(pc.not_equal(owner, pc.cast(cells, ids.type)), True)
    if pc.any(wrong).as_py():
        bad = table.filter(wrong)
        for label, call in zip(bad.column("cell").to_pylist(), bad.column("call_id").to_pylist()):
            if label in expected:
                source = "null" if call is None else call // CALL_ID_STRIDE
                _add(out, label, f"holds rows labelled cell {label} whose call ids are cell {source}'s")
    keys = [c for c in ("cell", "call_id", "sequence") if c in table.column_names]
    if not _maybe_twice(table):
        return
    grouped = table.select(keys).group_by(keys).aggregate([([], "count_all")])
    twice = grouped.filter(pc.greater(grouped.column("count_all"), 1))
    for row in twice.to_pylist():
        if row["cell"] in expected:
            _add(out, row["cell"], f"holds call {row['call_id']} sequence {row.get('sequence')} "
                                   f"{row['count_all']} times")


_SEQUENCES = 1 << 16  # sequences per call the shortcut of _maybe_twice encodes (batch_size is at most 4096)


def _maybe_twice(table: pa.Table) -> bool:
    """False when no (call id, sequence) appears twice, told by one sort of numbers (a million
    rows in tens of ms; Arrow's group-by takes ten times as long); True when it may, or when the
    columns do not allow the shortcut (nulls, odd sequences): the exact count then decides."""
    ids = table.column("call_id")
    sequence = table.column("sequence") if "sequence" in table.column_names else None
    if ids.null_count or (sequence is not None and sequence.null_count):
        return True
    key = np.asarray(ids.to_numpy(), dtype=np.int64)
    if sequence is not None:
        seq = np.asarray(sequence.to_numpy(), dtype=np.int64)
        if seq.size and (seq.min() < 0 or seq.max() >= _SEQUENCES or np.abs(key).max() >= 2**62 // _SEQUENCES):
            return True
        key = key * _SEQUENCES + seq
    key = np.sort(key)
    return bool(key.size > 1 and (key[1:] == key[:-1]).any())


def _params(table: pa.Table, expected: dict[int, Expected], out: dict[int, str]) -> None:
    wanted = sorted({k for e in expected.values() if e.params for k in e.params if k in table.column_names})
    if not wanted:
        return
    combos = table.select(["cell", *wanted]).group_by(["cell", *wanted]).aggregate([])
    for row in combos.to_pylist():
        index = row.pop("cell")
        exp = expected.get(index)
        if exp is None or exp.params is None:
            continue
        for name, value in row.items():
            if name in exp.params and exp.params[name] != value:
                _add(out, index, f"holds rows with {name} = {value!r}; cell {index} has {name} = "
                                 f"{exp.params[name]!r}")
                break


def _sums(table: pa.Table, expected: dict[int, Expected], out: dict[int, str]) -> None:
    names = [n for n in SUMMED if n in table.column_names and any(e.sums and n in e.sums for e in expected.values())]
    if not names:
        return
    sums = table.select(["cell", *names]).group_by("cell").aggregate([(n, "sum") for n in names])
    for row in sums.to_pylist():
        exp = expected.get(row["cell"])
        if exp is None or not exp.sums:
            continue
        for name in names:
            want, got = exp.sums.get(name), row[f"{name}_sum"] or 0.0
            if want is not None and not math.isclose(got, want, rel_tol=_TOLERANCE, abs_tol=1e-9):
                _add(out, row["cell"], f"holds rows whose {name} add up to {got:.6g}; its marker recorded {want:.6g}")
                break


def faults(table: pa.Table, expected: dict[int, Expected], whole: int | None = None) -> dict[int, str]:
    """Why each of the ``expected`` cells' rows in ``table`` are not that cell's (cells found
    right are absent). ``whole``: the table is that one cell's part, so every row must be its."""
    out: dict[int, str] = {}
    if "cell" not in table.column_names:
        return {i: "has no cell column" for i in expected}
    _labels(table, expected, whole, out)
    _call_ids(table, expected, out)
    _params(table, expected, out)
    _sums(table, expected, out)
    return out


def check_columns(expected: dict[int, Expected]) -> list[str]:
    """The columns :func:`faults` reads for these cells."""
    params = sorted({k for e in expected.values() if e.params for k in e.params})
    return list(dict.fromkeys([*CHECK_COLUMNS, *params]))


__all__ = ["CALL_ID_STRIDE", "Expected", "check_columns", "faults", "fingerprint", "plan_digest", "plan_intact"]
