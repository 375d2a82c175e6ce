"""Per-cell summaries of a results table: typed, with median, p90, quartiles and spread of
every phase, the mean score with its interval, and the cell's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..core.stats import cv, percentile, wilson_interval
from ..results.schema import AXES, SUMMARY_PHASES
from ..results.tables import floats, group_indices, list_values, strings

__all__ = ["AXES", "CellSummary", "PhaseStats", "SUMMARY_PHASES", "cell_keys", "floats", "group_indices",
           "list_values", "strings", "summarize", "varying"]

# other_ms is summarised too (the report draws it), after the phases tables show.
SUMMARISED = (*SUMMARY_PHASES, "other_ms")


@dataclass(frozen=True)
class PhaseStats:
    """One phase of one cell: percentiles and spread of its rows (None where no row has a value)."""

    n: int
    median: float | None
    p90: float | None
    q1: float | None
    q3: float | None
    cv: float | None

    @classmethod
    def of(cls, values: np.ndarray) -> "PhaseStats":
        x = values[np.isfinite(values)]
        if x.size == 0:
            return cls(0, None, None, None, None, None)
        q1, median, q3, p90 = (float(v) for v in np.percentile(x, [25, 50, 75, 90]))
        return cls(int(x.size), median, p90, q1, q3, cv(x))


@dataclass(frozen=True)
class CellSummary:
    """One cell: its parameters, its rows' count and every phase's :class:`PhaseStats`."""

    params: dict[str, Any]
    n: int
    output_tokens: float | None
    visual_tokens: float | None
    phases: dict[str, PhaseStats]
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None
    scored: int = 0
    cell: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    def median(self, phase: str) -> float | None:
        return self.phases[phase].median

    def get(self, name: str, default: Any = None) -> Any:
        """A parameter of the cell (``model``, ``max_new_tokens``, ...), or its median
        ``output_tokens`` / ``visual_tokens``."""
        if name in self.params:
            return self.params[name]
        if name in ("output_tokens", "visual_tokens"):
            return getattr(self, name)
        return default


def cell_keys(table: pa.Table) -> list[str]:
    """The columns that identify a cell: ``cell`` in a runner's results, else method, length, batch."""
    if "cell" in table.column_names:
        return ["cell"]
    return [k for k in ("method", "max_new_tokens", "batch_size") if k in table.column_names]


def summarize(table: pa.Table) -> list[CellSummary]:
    """One :class:`CellSummary` per cell, in the order cells first appear."""
    keys = cell_keys(table)
    params = [c for c in AXES if c in table.column_names and c not in keys]
    values = {name: floats(table, name) for name in (*SUMMARISED, "output_tokens", "visual_tokens", "score")}
    param_values = {c: table.column(c).to_pylist() for c in params}
    out = []
    for key, idx in group_indices(table, keys).items():
        cell_params = dict(zip(keys, key))
        for c in params:
            cell_params.setdefault(c, param_values[c][idx[0]])
        scores = values["score"][idx]
        scored = scores[np.isfinite(scores)]
        out.append(CellSummary(
            params=cell_params,
            n=int(len(idx)),
            output_tokens=percentile(values["output_tokens"][idx], 50),
            visual_tokens=percentile(values["visual_tokens"][idx], 50),
            phases={p: PhaseStats.of(values[p][idx]) for p in SUMMARISED},
            accuracy=float(scored.mean()) if scored.size else None,
            accuracy_ci=wilson_interval(float(scored.sum()), int(scored.size)) if scored.size else None,
            scored=int(scored.size),
            cell=cell_params.get("cell"),
        ))
    return out


def varying(summary: list[CellSummary]) -> list[str]:
    """The parameter columns whose value differs between cells (what a table should show)."""
    return [c for c in AXES if len({repr(s.get(c)) for s in summary}) > 1]
