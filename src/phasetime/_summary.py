"""Per-cell summaries of a results table (medians and p90 of every phase)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ._stats import group_by, median, percentile

SUMMARY_PHASES = ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "decode_ms", "total_ms")
CELL_KEYS = ("method", "max_new_tokens", "batch_size")


def summarize(table: pa.Table, keys: tuple[str, ...] = CELL_KEYS) -> list[dict[str, Any]]:
    """One dict per cell: the cell keys, ``n`` (rows), ``output_tokens`` (median), and median/p90 per phase."""
    present = [k for k in keys if k in table.column_names]
    rows = table.select(present + ["output_tokens", *SUMMARY_PHASES]).to_pylist()
    out = []
    for cell, members in group_by(rows, present).items():
        entry: dict[str, Any] = dict(zip(present, cell))
        entry["n"] = len(members)
        entry["output_tokens"] = median(r["output_tokens"] for r in members)
        for phase in SUMMARY_PHASES:
            values = [r[phase] for r in members]
            entry[f"{phase}_median"] = median(values)
            entry[f"{phase}_p90"] = percentile(values, 90)
        out.append(entry)
    return out
