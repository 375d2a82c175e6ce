"""Per-cell summaries of a results table: typed, with median, p90, quartiles and spread of
every phase, the mean score with its interval, and the cell's parameters."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .stats import cv, percentile, wilson_interval
from ..results.schema import AXES, SUMMARY_PHASES, names
from ..results.tables import floats, group_indices, list_values, strings

__all__ = ["AXES", "CellSummary", "PhaseStats", "SUMMARY_PHASES", "Throughput", "cell_keys", "floats", "group_indices",
           "list_values", "strings", "summarize", "varying"]

# other_ms is summarised too (the report draws it), after the phases tables show.
SUMMARISED = (*SUMMARY_PHASES, "audio_ms", "other_ms")
RESOURCES = tuple(c for c in names("resource") if c != "energy_coarse")


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
class Throughput:
    """What one phase of one cell achieved (median work over median time) against the roof."""

    flops_per_s: float | None
    bytes_per_s: float | None
    intensity: float | None  # FLOP per byte
    mfu: float | None  # achieved FLOP/s / the device's peak
    mbu: float | None  # achieved bytes/s / the device's peak bandwidth

    @classmethod
    def of(cls, flops: float | None, moved: float | None, ms: float | None, roof_flops: float | None,
           roof_bytes: float | None) -> "Throughput":
        seconds = ms / 1000 if ms and ms > 0 else None
        fs = flops / seconds if flops is not None and seconds else None
        bs = moved / seconds if moved is not None and seconds else None
        return cls(fs, bs, flops / moved if flops is not None and moved else None,
                   fs / roof_flops if fs is not None and roof_flops else None,
                   bs / roof_bytes if bs is not None and roof_bytes else None)


@dataclass(frozen=True)
class CellSummary:
    """One cell: its parameters, its rows' count and every phase's :class:`PhaseStats`."""

    params: dict[str, Any]
    n: int
    output_tokens: float | None
    visual_tokens: float | None
    phases: dict[str, PhaseStats]
    accuracy: float | None = None  # mean over samples of each sample's mean score over its repeats
    accuracy_ci: tuple[float, float] | None = None  # Wilson 95% over samples (the unit: a repeat is not a new trial)
    scored: int = 0  # samples scored
    cell: Any = None
    throughput: dict[str, Throughput] = field(default_factory=dict)  # vision, prefill, decode (with --cost)
    resources: dict[str, float | None] = field(default_factory=dict)  # median of each resource column present

    def median(self, phase: str) -> float | None:
        """The phase's median (None where it was not summarised)."""
        found = self.phases.get(phase)
        return found.median if found is not None else None

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
    samples = strings(table, "sample_id") if "sample_id" in table.column_names else None
    present = [c for c in RESOURCES if c in table.column_names and table.column(c).null_count < table.num_rows]
    resource_values = {c: floats(table, c) for c in present}
    groups = group_indices(table, keys)
    # a cell's parameters from its first row (not a million rows turned into Python objects)
    firsts = pa.array([int(idx[0]) for idx in groups.values()], pa.int64())
    first_rows = table.select(params).take(firsts).to_pylist() if params and groups else [{} for _ in groups]
    out = []
    for (key, idx), first_row in zip(groups.items(), first_rows):
        cell_params = dict(zip(keys, key))
        for c in params:
            cell_params.setdefault(c, first_row[c])
        scored = per_sample(values["score"][idx], None if samples is None else samples[idx])
        medians = {c: percentile(v[idx], 50) for c, v in resource_values.items()}
        phases = {p: PhaseStats.of(values[p][idx]) for p in SUMMARISED}
        out.append(CellSummary(
            params=cell_params,
            n=int(len(idx)),
            output_tokens=percentile(values["output_tokens"][idx], 50),
            visual_tokens=percentile(values["visual_tokens"][idx], 50),
            phases=phases,
            accuracy=float(scored.mean()) if scored.size else None,
            accuracy_ci=wilson_interval(float(scored.sum()), int(scored.size)) if scored.size else None,
            scored=int(scored.size),
            cell=cell_params.get("cell"),
            throughput=_throughput(medians, phases),
            resources=medians,
        ))
    return out


def per_sample(scores: np.ndarray, samples: np.ndarray | None) -> np.ndarray:
    """Each sample's mean score over its repeats (its finite scores); every score its own sample
    when the table has no sample ids. Accuracy is a claim over samples: 20 samples scored 5 times
    are 20 trials, not 100."""
    ok = np.isfinite(scores)
    if samples is None:
        return scores[ok]
    keys = np.asarray([str(s) for s in samples[ok]], dtype=object)
    if keys.size == 0:
        return scores[ok]
    _, inverse = np.unique(keys, return_inverse=True)
    return np.bincount(inverse, weights=scores[ok]) / np.bincount(inverse)


def _throughput(medians: dict[str, float | None], phases: dict[str, PhaseStats]) -> dict[str, Throughput]:
    if medians.get("prefill_flops") is None:
        return {}
    roof_flops, roof_bytes = medians.get("roof_flops_per_s"), medians.get("roof_bytes_per_s")
    return {p: Throughput.of(medians.get(f"{p}_flops"), medians.get(f"{p}_bytes"), phases[f"{p}_ms"].median,
                             roof_flops, roof_bytes) for p in ("vision", "prefill", "decode")}


def varying(summary: list[CellSummary]) -> list[str]:
    """The parameter columns whose value differs between cells (what a table should show)."""
    return [c for c in AXES if len({repr(s.get(c)) for s in summary}) > 1]
