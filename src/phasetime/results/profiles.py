"""The profiled calls of a run (``--profile``) as tables: ``profiles.parquet`` and ``operators.parquet``.

``profiles.parquet`` has one row per profiled call, window and name
(:class:`phasetime.core.operators.OpRow`): ``cell``, ``call_id``, ``model``, ``phase``, ``step``
(the window's number within its phase: decode step k is step k), ``start_ms`` and
``window_ms`` (the window's start, ms from the call's, and its length), ``phase_ms`` (that
phase's time in the profiled call: its windows summed, the device's for kernels), ``name``, ``kind``
(``operator``, ``kernel`` or ``uncovered``: the window's time no operator or kernel covers),
``device``, ``calls``, ``self_ms``, ``total_ms``, and the call's ``call_ms`` and
``alignment_us`` (how well its profiler events are placed on its clock).

``operators.parquet`` holds the top-level operators and the kernels of each profiled call, in
time order (``cell``, ``call_id``, ``name``, ``kind``, ``device``, ``start_ms``, ``end_ms``,
``self_ms``): what ``phasetime trace`` draws under the phases. A profiled call's id follows
its cell's timed calls, so it never names a timed row.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from ..core.operators import on_device
from ..core.record import Measurement
from .files import META_KEY
from .integrity import verify
from .schema import SCHEMA_VERSION
from .side import read_side

PROFILE_SCHEMA = pa.schema([
    ("cell", pa.int64()), ("call_id", pa.int64()), ("model", pa.string()), ("phase", pa.string()),
    ("step", pa.int64()), ("start_ms", pa.float64()), ("window_ms", pa.float64()), ("phase_ms", pa.float64()),
    ("name", pa.string()),
    ("kind", pa.string()), ("device", pa.string()), ("calls", pa.int64()), ("self_ms", pa.float64()),
    ("total_ms", pa.float64()), ("call_ms", pa.float64()), ("alignment_us", pa.float64()),
], metadata={META_KEY: str(SCHEMA_VERSION).encode()})

OPERATOR_SCHEMA = pa.schema([
    ("cell", pa.int64()), ("call_id", pa.int64()), ("name", pa.string()), ("kind", pa.string()),
    ("device", pa.string()), ("start_ms", pa.float64()), ("end_ms", pa.float64()), ("self_ms", pa.float64()),
], metadata={META_KEY: str(SCHEMA_VERSION).encode()})


def profile_tables(m: Measurement, *, cell: int, call_id: int, model: str) -> dict[str, list[dict[str, Any]]]:
    """The rows a profiled call adds to each side table."""
    p = m.profile
    if p is None:
        raise ValueError("this measurement was not profiled (profile=True)")
    common = {"cell": cell, "call_id": call_id}
    phases = {w.phase for w in (*p.host, *(p.device or ()))}
    phase_ms = {(phase, device): p.phase_ms(phase, "kernel" if device else "operator")
                for phase in phases for device in (False, True)}
    profiles = [{**common, "model": model, "phase": r.phase, "step": r.step, "start_ms": r.start_ms,
                 "window_ms": r.window_ms, "phase_ms": phase_ms[r.phase, on_device(r.kind, r.name)], "name": r.name, "kind": r.kind, "device": r.device, "calls": r.calls,
                 "self_ms": r.self_ms, "total_ms": r.total_ms, "call_ms": m.total_ms, "alignment_us": p.alignment_us}
                for r in p.rows]
    operators = [{**common, "name": op.name, "kind": op.kind, "device": op.device, "start_ms": op.start_ms,
                  "end_ms": op.end_ms, "self_ms": op.self_ms} for op in p.top_ops]
    return {"profiles": profiles, "operators": operators}


def to_tables(rows: dict[str, list[dict[str, Any]]]) -> dict[str, pa.Table]:
    """Side tables from rows (:func:`profile_tables`, several calls' concatenated)."""
    return {"profiles": pa.Table.from_pylist(rows.get("profiles", []), schema=PROFILE_SCHEMA),
            "operators": pa.Table.from_pylist(rows.get("operators", []), schema=OPERATOR_SCHEMA)}


def read_profiles(path: str | Path, name: str = "profiles") -> pa.Table | None:
    """The profiled calls' rows of a results directory (``name``: ``profiles`` or ``operators``);
    None when the run profiled nothing. The directory is verified first: the rows of damaged or
    unfinished cells are never read."""
    inv = verify(path)
    return read_side(Path(path), name, inv.side.get(name, {}), inv.done)
