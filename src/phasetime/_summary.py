"""Per-cell summaries of a results table: median and p90 of every phase, mean score."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._stats import median, percentile

SUMMARY_PHASES = ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "decode_ms", "total_ms")
# Columns describing a cell; the ones that vary between cells are shown.
PARAM_COLUMNS = (
    "model", "method", "dtype", "attn_implementation", "image_size", "max_pixels", "max_visual_tokens",
    "batch_size", "generation", "max_new_tokens",
)


def group_indices(table: pa.Table, keys: list[str]) -> dict[tuple, np.ndarray]:
    """Row indices per distinct value of ``keys`` (nulls included), in first-seen order."""
    if not keys:
        return {(): np.arange(table.num_rows)}
    indexed = table.select(keys).append_column("__row", pa.array(np.arange(table.num_rows), pa.int64()))
    grouped = indexed.group_by(keys, use_threads=False).aggregate([("__row", "list")])
    out = {}
    key_values = [grouped.column(k).to_pylist() for k in keys]
    for i, rows in enumerate(grouped.column("__row_list").to_pylist()):
        out[tuple(v[i] for v in key_values)] = np.asarray(rows)
    return dict(sorted(out.items(), key=lambda item: item[1][0]))


def cell_keys(table: pa.Table) -> list[str]:
    """The columns that identify a cell: ``cell`` in a runner's results, else method, length, batch."""
    if "cell" in table.column_names:
        return ["cell"]
    return [k for k in ("method", "max_new_tokens", "batch_size") if k in table.column_names]


def floats(table: pa.Table, name: str) -> np.ndarray:
    """A column as float64 (null -> NaN); all-NaN when the column is absent."""
    if name not in table.column_names:
        return np.full(table.num_rows, np.nan)
    return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype=float)


def strings(table: pa.Table, name: str) -> np.ndarray:
    """A (string) column as a numpy object array, None for null."""
    return table.column(name).to_numpy(zero_copy_only=False)


def list_values(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column's values flattened to float64, and the row index each value came from."""
    column = table.column(name).combine_chunks()
    values = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=float)
    rows = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False))
    return values, rows


def summarize(table: pa.Table) -> list[dict[str, Any]]:
    """One dict per cell: its parameters, ``n`` (rows), ``output_tokens`` (median),
    ``<phase>_median`` / ``<phase>_p90``, ``other_ms_median``, ``visual_tokens`` (median,
    None without the column) and ``accuracy`` (mean score, None if unscored).
    """
    keys = cell_keys(table)
    params = [c for c in PARAM_COLUMNS if c in table.column_names and c not in keys]
    values = {name: floats(table, name)
              for name in (*SUMMARY_PHASES, "other_ms", "output_tokens", "visual_tokens", "score")}
    param_values = {c: table.column(c).to_pylist() for c in params}
    out = []
    for key, idx in group_indices(table, keys).items():
        entry: dict[str, Any] = dict(zip(keys, key))
        for c in params:
            entry.setdefault(c, param_values[c][idx[0]])
        entry["n"] = int(len(idx))
        entry["output_tokens"] = median(values["output_tokens"][idx])
        for phase in SUMMARY_PHASES:
            entry[f"{phase}_median"] = median(values[phase][idx])
            entry[f"{phase}_p90"] = percentile(values[phase][idx], 90)
        entry["other_ms_median"] = median(values["other_ms"][idx])
        entry["visual_tokens"] = median(values["visual_tokens"][idx])
        scores = values["score"][idx]
        entry["accuracy"] = float(np.nanmean(scores)) if np.isfinite(scores).any() else None
        out.append(entry)
    return out


def varying(summary: list[dict[str, Any]]) -> list[str]:
    """The parameter columns whose value differs between cells (what the table should show)."""
    return [c for c in PARAM_COLUMNS if len({repr(s.get(c)) for s in summary}) > 1]
