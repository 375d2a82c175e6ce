"""Reading columns of a results table as numpy arrays, and grouping its rows: the small
helpers every reader of results (stability rules, summaries, checks, reports) shares."""

from __future__ import annotations

import weakref
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


_SMALL = 2000
# What was derived from a big table, kept while the table lives (a report asks for the same
# columns and groups a dozen times): id(table) -> {(what, args): result}. Results are read-only.
_MEMO: dict[int, dict[tuple[Any, ...], Any]] = {}


def _memo(table: pa.Table, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    if table.num_rows <= _SMALL:
        return make()
    found = _MEMO.get(id(table))
    if found is None:
        found = _MEMO[id(table)] = {}
        weakref.finalize(table, _MEMO.pop, id(table), None)
    if key not in found:
        found[key] = make()
    return found[key]


def _read_only(array: np.ndarray) -> np.ndarray:
    array.flags.writeable = False
    return array


def group_indices(table: pa.Table, keys: list[str]) -> dict[tuple, np.ndarray]:
    """Row indices per distinct value of ``keys`` (nulls included), in first-seen order."""
    groups: dict[tuple, np.ndarray] = _memo(table, ("groups", tuple(keys)), lambda: _group_indices(table, keys))
    return dict(groups)


def _group_indices(table: pa.Table, keys: list[str]) -> dict[tuple, np.ndarray]:
    if not keys:
        return {(): np.arange(table.num_rows)}
    if table.num_rows <= _SMALL:
        # A cell's rows, say: a dict is ~50x faster than Arrow's group_by at this size.
        rows: dict[tuple, list[int]] = {}
        for i, key in enumerate(zip(*(table.column(k).to_pylist() for k in keys))):
            rows.setdefault(key, []).append(i)
        return {key: np.asarray(idx) for key, idx in rows.items()}
    indexed = table.select(keys).append_column("__row", pa.array(np.arange(table.num_rows), pa.int64()))
    grouped = indexed.group_by(keys, use_threads=False).aggregate([("__row", "list")])
    out = {}
    key_values = [grouped.column(k).to_pylist() for k in keys]
    for i, rows in enumerate(grouped.column("__row_list").to_pylist()):
        out[tuple(v[i] for v in key_values)] = _read_only(np.asarray(rows))
    return dict(sorted(out.items(), key=lambda item: item[1][0]))


def floats(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 (null -> NaN); all-NaN when the column is absent or holds no numbers."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    column = table.column(name)
    if pa.types.is_null(column.type):
        return np.full(table.num_rows, np.nan)
    return _memo(table, ("floats", name), lambda: _read_only(np.asarray(column.to_numpy(zero_copy_only=False), dtype=float)))


def strings(table: pa.Table, name: str) -> np.ndarray:
    """A (string) column as a numpy object array, None for null."""
    return _memo(table, ("strings", name), lambda: _read_only(table.column(name).to_numpy(zero_copy_only=False)))


def list_values(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column's values flattened to float64, and the row index each value came from."""
    column = table.column(name).combine_chunks()
    values = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=float)
    rows = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False))
    return values, rows


def call_ids(table: pa.Table) -> np.ndarray:
    """Each row's call as a float array (a batch's rows share it); each row its own call in a
    table without call ids."""
    return floats(table, "call_id") if "call_id" in table.column_names else np.arange(table.num_rows, dtype=float)


def call_means(values: np.ndarray, calls: np.ndarray) -> np.ndarray:
    """One value per call: the mean of its rows' finite values (NaN for a call with none)."""
    _, inverse = np.unique(calls, return_inverse=True)
    ok = np.isfinite(values)
    sums = np.bincount(inverse[ok], weights=values[ok], minlength=inverse.max(initial=-1) + 1)
    counts = np.bincount(inverse[ok], minlength=sums.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
