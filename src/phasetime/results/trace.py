"""Chrome / Perfetto trace-event export of measured calls.

Each call becomes one process (``pid`` = call id) with two tracks: ``phases`` (the
call, vision, prefill and decode as ``ph: "X"`` complete events) and ``decode steps``
(every decode forward, plus an instant event when each token is ready). A profiled call
(``run --profile``) has its phase windows, then its top-level operators (and, on a GPU, its
kernels) on tracks of their own below them. Times are
microseconds from the call's start. Open the file in https://ui.perfetto.dev or
chrome://tracing next to an Nsight Systems or torch profiler trace.
"""

from __future__ import annotations

from typing import Any, Sequence

import pyarrow as pa
import pyarrow.compute as pc

from ..core.errors import UsageError
from ..core.operators import UNCOVERED

PHASE_TRACK, STEP_TRACK = 1, 2


def _x(name: str, pid: int, tid: int, start_ms: float, end_ms: float, args: dict[str, Any] | None = None) -> dict[str, Any]:
    event = {"name": name, "ph": "X", "pid": pid, "tid": tid, "ts": start_ms * 1000.0,
             "dur": max(0.0, end_ms - start_ms) * 1000.0}
    if args:
        event["args"] = args
    return event


def call_events(row: dict[str, Any]) -> list[dict[str, Any]]:
    """Trace events of one call, from any of its rows (call-level fields are shared)."""
    pid = int(row["call_id"])
    details = [str(row["model"])] if row.get("model") else []
    if row.get("max_new_tokens") is not None:
        details.append(f"N={row['max_new_tokens']}")
    label = f"call {pid}" + (f" ({', '.join(details)})" if details else "")
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": pid, "args": {"name": label}},
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": PHASE_TRACK, "args": {"name": "phases"}},
        {"name": "thread_name", "ph": "M", "pid": pid, "tid": STEP_TRACK, "args": {"name": "decode steps"}},
        _x("generate", pid, PHASE_TRACK, 0.0, row["total_ms"], {
            "method": row["method"], "timer": row["timer"], "total_ms": row["total_ms"], "ttft_ms": row["ttft_ms"],
            "other_ms": row["other_ms"], "prompt_tokens": row["prompt_tokens"],
        }),
    ]
    for span in row.get("spans") or []:
        if span["name"] in ("vision", "prefill"):
            events.append(_x(span["name"], pid, PHASE_TRACK, span["start_ms"], span["end_ms"]))
    ready = row.get("ready_ms") or []
    if len(ready) >= 2:
        events.append(_x("decode", pid, PHASE_TRACK, ready[0], ready[-1],
                         {"decode_ms": row["call_decode_ms"], "decode_steps": row["decode_steps"]}))
    steps = [s for s in row.get("spans") or [] if s["name"] == "decode"]
    rounds = bool(row.get("rounds"))  # assisted / prompt lookup: a decode forward verifies a round
    for k, span in enumerate(steps, 1):
        label = f"verify, round {k + 1}" if rounds else f"decode step {k}"
        events.append(_x(label, pid, STEP_TRACK, span["start_ms"], span["end_ms"]))
    for k, span in enumerate((s for s in row.get("spans") or [] if s["name"] == "draft"), 1):
        events.append(_x(f"draft, round {k}", pid, STEP_TRACK, span["start_ms"], span["end_ms"]))
    for k, t in enumerate(ready, 1):
        events.append({"name": f"token {k} ready", "ph": "i", "s": "t", "pid": pid, "tid": STEP_TRACK, "ts": t * 1000.0})
    return events


OPERATOR_TRACK, KERNEL_TRACK = 3, 4


def profiled_call_events(call_id: int, windows: pa.Table, ops: pa.Table | None) -> list[dict[str, Any]]:
    """Trace events of one profiled call (``--profile``): its phase windows on the ``phases`` track,
    its top-level operators on ``operators`` and its kernels on ``kernels``, one timeline (the
    host's call start; kernels placed by the profiler on the same clock)."""
    rows = windows.filter(pc.equal(windows.column("call_id"), call_id)).to_pylist()
    model = rows[0]["model"] if rows else ""
    events: list[dict[str, Any]] = [
        {"name": "process_name", "ph": "M", "pid": call_id, "args": {"name": f"profiled call {call_id} ({model})"}},
        {"name": "thread_name", "ph": "M", "pid": call_id, "tid": PHASE_TRACK, "args": {"name": "phases"}},
        {"name": "thread_name", "ph": "M", "pid": call_id, "tid": OPERATOR_TRACK, "args": {"name": "operators"}},
    ]
    seen = set()
    for r in rows:
        key = (r["phase"], r["step"], r["start_ms"])
        if r["kind"] != "uncovered" or r["name"] != UNCOVERED["operator"] or key in seen:
            continue
        seen.add(key)
        label = f"decode step {r['step']}" if r["phase"] == "decode" else r["phase"]
        events.append(_x(label, call_id, PHASE_TRACK, r["start_ms"], r["start_ms"] + r["window_ms"]))
    mine = [] if ops is None else ops.filter(pc.equal(ops.column("call_id"), call_id)).to_pylist()
    if any(op["kind"] == "kernel" for op in mine):
        events.append({"name": "thread_name", "ph": "M", "pid": call_id, "tid": KERNEL_TRACK, "args": {"name": "kernels"}})
    for op in mine:
        track = KERNEL_TRACK if op["kind"] == "kernel" else OPERATOR_TRACK
        events.append(_x(op["name"], call_id, track, op["start_ms"], op["end_ms"], {"self_ms": op["self_ms"]}))
    return events


def trace(table: pa.Table, call_ids: Sequence[int] | None = None, profiles: pa.Table | None = None,
          operators: pa.Table | None = None) -> dict[str, Any]:
    """A trace-event document of the given calls (default: the first call of the table); an id
    of a profiled call (``profiles``, ``operators``: the run's side tables) draws that call's
    phases with its operators under them."""
    if table.num_rows == 0:
        raise UsageError("no measurements to trace")
    ids = list(call_ids) if call_ids else [int(table.column("call_id")[0].as_py())]
    profiled = set() if profiles is None else set(pc.unique(profiles.column("call_id")).to_pylist())
    events: list[dict[str, Any]] = []
    for call_id in ids:
        if call_id in profiled:
            assert profiles is not None
            events.extend(profiled_call_events(call_id, profiles, operators))
            continue
        rows = table.filter(pc.equal(table.column("call_id"), call_id))
        if rows.num_rows == 0:
            more = f"; profiled calls: {', '.join(map(str, sorted(profiled)[:8]))}" if profiled else ""
            raise UsageError(f"no call with id {call_id} (ids run from {pc.min(table.column('call_id')).as_py()} "
                             f"to {pc.max(table.column('call_id')).as_py()}{more})")
        events.extend(call_events(rows.slice(0, 1).to_pylist()[0]))
    return {"traceEvents": events, "displayTimeUnit": "ms"}
