"""A serving engine's own per-request figures beside phasetime's (runs made with ``backend: vllm``)."""

from __future__ import annotations

import html

import numpy as np
import pyarrow as pa

from ...results.tables import floats, group_indices
from ..summary import CellSummary
from .page import fmt, table

# (our column, the engine's own, their headings)
PAIRS = (("ttft_ms", "engine_ttft_ms", "TTFT", "vLLM's TTFT"), ("tpot_ms", "engine_tpot_ms", "TPOT", "vLLM's TPOT"),
         ("vision_ms", "engine_encoder_ms", "vision", "vLLM's encoder"),
         ("prefill_ms", "engine_prefill_ms", "prefill", "vLLM's prefill"))


def engine_table(table_: pa.Table, summary: list[CellSummary], labels: list[str]) -> str:
    """Medians per cell of each phase next to vLLM's own figure of the same requests, with our
    input and queue times; empty when the run has no engine figures."""
    present = [p for p in PAIRS if p[1] in table_.column_names and np.isfinite(floats(table_, p[1])).any()]
    if not present or "cell" not in table_.column_names:
        return ""
    by_cell = group_indices(table_, ["cell"])
    values = {c: floats(table_, c) for p in present for c in p[:2]}
    extra = [c for c in ("input_ms", "queue_ms") if c in table_.column_names]
    values.update({c: floats(table_, c) for c in extra})
    rows = []
    for cell, label in zip(summary, labels):
        idx = by_cell.get((cell.cell,))
        if idx is None:
            continue
        row = [html.escape(label)]
        for column in [c for p in present for c in p[:2]] + extra:
            v = values[column][idx]
            v = v[np.isfinite(v)]
            row.append(fmt(float(np.median(v))) if v.size else "-")
        rows.append(row)
    headers = ["cell", *[h for p in present for h in p[2:]], *[c.removesuffix("_ms") for c in extra]]
    note = ("<p>Medians per cell, ms: each phase as phasetime times it beside vLLM's own figure of the same "
            "requests (docs/metrics.md, \"vLLM\": vLLM's prefill runs from scheduling to the first token, the "
            "encoder included; its TTFT from the request's arrival).</p>")
    return note + table(headers, rows, left=1)
