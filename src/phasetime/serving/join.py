"""The client's records joined with the server probe's: one row per request, purely.

The server side comes from the plugin's record files (:mod:`phasetime.vllm.plugin`): the
engine's steps (each with the tokens and encoder inputs it scheduled per request) and, per
finished request, vLLM's own figures. A client request is found in them by its id: phasetime
sends ``X-Request-Id: <id>``, vLLM names the request ``cmpl-<id>-0`` or ``chatcmpl-<id>`` and
the engine appends a suffix of its own; the front end's record maps one to the other.

**Clocks.** Client and server both read CLOCK_MONOTONIC (``time.perf_counter``). On one host
that is one clock (offset 0). Across hosts the offset is measured from the requests
themselves (:func:`clock_offset`): the server must queue a request after the client sent it
and sample its first token before the client received it, so every request bounds the offset
from both sides; the midpoint of the tightest bounds is used, its half-width recorded.

**Phases.** The server's phases are the offline backend's: :func:`phasetime.vllm.steps.request_events`
from the client's send (on the server clock), so ``input_ms`` is the send to vLLM's queue
(HTTP, tokenising, image processing in the API server), ``queue_ms`` the queue to the first
step, and vision, prefill and decode split off the engine's steps, a shared step split by
scheduled tokens (docs/metrics.md, "vLLM").

**What shared a gap.** Token k + 1 of a request comes out of its k-th decode step; what that
step held besides the request is written per gap: the other requests in it
(``gap_requests``), their prompt tokens (``gap_prefill_tokens``: prefill chunks, the usual
cause of a slow gap) and their images (``gap_encoder_inputs``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from ..core.phases import derive
from ..core.record import Measurement
from ..vllm.steps import Step, request_events


class JoinError(ValueError):
    """The server's records cannot account for a request."""


@dataclass
class ServerRecords:
    """What the probe wrote: steps in time order, finished requests by external id, its processes."""

    steps: list[Step] = field(default_factory=list)
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)
    processes: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    probes: int = 0  # workers that installed the step probe
    _index: dict[str, Any] = field(default_factory=dict, repr=False)

    def places(self, rid: str) -> list[int]:
        """Where in :attr:`steps` engine request ``rid`` took part, in time order (indexed once)."""
        if "steps" not in self._index:
            by: dict[str, list[int]] = {}
            for i, step in enumerate(self.steps):
                for r, n in step.tokens.items():
                    if n > 0:
                        by.setdefault(r, []).append(i)
            self._index["steps"] = by
        return list(self._index["steps"].get(rid, []))

    def named(self, request_id: str) -> tuple[list[dict[str, Any]], set[str]]:
        """(front-end records, engine ids) vLLM named after ``request_id``: ``cmpl-<id>``,
        ``chatcmpl-<id>``, either with ``-<digits>`` after it, and an engine id with one more
        suffix of the engine's own (indexed once)."""
        if "names" not in self._index:
            fronts: dict[str, list[dict[str, Any]]] = {}
            for ext, record in self.requests.items():
                for base in _bases(ext):
                    fronts.setdefault(base, []).append(record)
            engines: dict[str, set[str]] = {}
            for step in self.steps:
                for r in step.tokens:
                    for base in _bases(r) | _bases(r.rpartition("-")[0]):
                        engines.setdefault(base, set()).add(r)
            self._index["names"] = (fronts, engines)
        fronts, engines = self._index["names"]
        return fronts.get(request_id, []), set(engines.get(request_id, set()))


def _bases(name: str) -> set[str]:
    """The request ids vLLM could have named ``name`` after (none: not one of its names)."""
    for prefix in ("chatcmpl-", "cmpl-"):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            head, _, tail = rest.rpartition("-")
            return {rest, head} if head and tail.isdigit() else {rest}
    return set()


def parse_records(lines: Iterable[str]) -> ServerRecords:
    """The records of JSON lines (a torn last line, from a process killed mid-write, is skipped)."""
    out = ServerRecords()
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        kind = record.get("kind")
        if kind == "step":
            out.steps.append(Step(start_ms=record["start_ms"], end_ms=record["end_ms"],
                                  forward=tuple(record["forward"]) if record["forward"] else None,
                                  tokens=record["tokens"], encoder=tuple(tuple(s) for s in record["encoder"]),
                                  encoder_inputs=record["encoder_inputs"]))
        elif kind == "request":
            out.requests[record["external_id"]] = record
        elif kind == "process":
            out.processes.append(record)
        elif kind == "probe":
            out.probes += 1
        elif kind == "error":
            out.errors.append(f"{record.get('where')}: {record.get('error')}")
    out.steps.sort(key=lambda s: s.start_ms)
    return out


def read_records(folder: str | Path) -> ServerRecords:
    """Every record file of the probe's folder, merged."""
    lines: list[str] = []
    for path in sorted(Path(folder).glob("*.jsonl")):
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return parse_records(lines)


def find_request(records: ServerRecords, request_id: str) -> tuple[str, dict[str, Any] | None]:
    """(the engine's id of the request, the front end's record of it or None)."""
    found, engine = records.named(request_id)
    if len(found) == 1:
        return str(found[0]["id"]), found[0]
    if len(engine) != 1:
        raise JoinError(f"request {request_id}: {len(engine)} of the server's requests match it")
    return engine.pop(), None


def clock_offset(pairs: list[tuple[dict[str, Any], dict[str, Any]]], same_host: bool) -> tuple[float, float]:
    """(server clock - client clock, its half-width) in ms from (client record, front-end record)
    pairs: 0 on one host; else each request bounds it (queued after sent, first token sampled
    before received) and the tightest bounds' midpoint is taken."""
    if same_host:
        return 0.0, 0.0
    upper = min((s["queued_ms"] - c["sent_ms"] for c, s in pairs), default=None)
    lower = max((s["first_token_ms"] - c["chunks"][0] for c, s in pairs if c["chunks"]), default=None)
    if upper is None or lower is None:
        raise JoinError("the clocks of client and server cannot be aligned: no request reached the server's records")
    if lower > upper:  # the bounds cross: the server's first-token stamp is later than its send (it batches)
        lower, upper = upper, lower
    return (lower + upper) / 2, (upper - lower) / 2


def prompt_phases(steps: list[Step], prompts: dict[str, int]) -> list[dict[str, int]]:
    """Per step, the tokens each request scheduled that were prompt tokens (prefill), counting
    each request's consumed prompt over the steps; a request of unknown prompt length counts a
    step of more than one token as prefill."""
    consumed: dict[str, int] = {}
    out = []
    for step in steps:
        prefill = {}
        for rid, n in step.tokens.items():
            done = consumed.get(rid, 0)
            length = prompts.get(rid)
            part = min(n, max(length - done, 0)) if length is not None else (n if n > 1 else 0)
            if part:
                prefill[rid] = part
            consumed[rid] = done + n
        out.append(prefill)
    return out


def shared_gaps(steps: list[Step], prefill: list[dict[str, int]], rid: str, decodes: list[int]) -> dict[str, list[int]]:
    """Per decode gap of ``rid`` (``decodes``: its decode steps' places in ``steps``): what
    its step held besides ``rid``."""
    return {"gap_requests": [sum(1 for r in steps[i].tokens if r != rid) for i in decodes],
            "gap_prefill_tokens": [sum(n for r, n in prefill[i].items() if r != rid) for i in decodes],
            "gap_encoder_inputs": [sum(n for r, n in steps[i].encoder_inputs.items() if r != rid) for i in decodes]}


def client_fields(record: dict[str, Any], level_start_ms: float) -> dict[str, Any]:
    """The client's columns, bench serve's definitions: TTFT to the first chunk, one ITL per
    later chunk, TPOT = (E2E - TTFT) / (N - 1) with N the server's token count."""
    chunks, sent = record["chunks"], record["sent_ms"]
    n = record["tokens"][-1] if record["tokens"] else 0
    ttft = chunks[0] - sent if chunks else None
    e2e = chunks[-1] - sent if chunks else None
    return {"request_id": record["request_id"], "sent_ms": sent - level_start_ms,
            "send_lag_ms": max(sent - record["planned_ms"] - record["slot_ms"], 0.0), "slot_wait_ms": record["slot_ms"],
            "client_ttft_ms": ttft, "client_e2e_ms": e2e,
            "client_tpot_ms": (e2e - ttft) / (n - 1) if ttft is not None and e2e is not None and n >= 2 else None,
            "client_itl_ms": [b - a for a, b in zip(chunks, chunks[1:])], "client_tokens": n}


def request_measurement(record: dict[str, Any], records: ServerRecords, offset_ms: float,
                        prefill: list[dict[str, int]]) -> tuple[Measurement, dict[str, Any]]:
    """The server's measurement of one client request and its engine columns."""
    rid, front = find_request(records, record["request_id"])
    sent = record["sent_ms"] + offset_ms  # on the server's clock
    where = records.places(rid)
    if not where:
        raise JoinError(f"request {record['request_id']}: the server's probe recorded no step of it")
    own = [records.steps[i] for i in where]
    prompt = int(front["prompt_tokens"]) if front else sum(prefill[i].get(rid, 0) for i in where)
    n = int(front["output_tokens"]) if front else record["tokens"][-1]
    m = derive(request_events(own, rid, sent, prompt), prompt_tokens=prompt, output_tokens=[n], timer="perf-counter")
    decodes = [i for i in where if rid not in prefill[i]]
    extra: dict[str, Any] = {"clock_offset_ms": offset_ms, **shared_gaps(records.steps, prefill, rid, decodes)}
    if front is not None:
        first_step = own[0].start_ms
        extra.update(input_ms=max(front["queued_ms"] - sent, 0.0), queue_ms=max(first_step - front["queued_ms"], 0.0),
                     preemptions=front["preemptions"], engine_ttft_ms=front["first_token_latency_ms"],
                     engine_prefill_ms=front["first_token_ms"] - front["scheduled_ms"],
                     engine_tpot_ms=(front["last_token_ms"] - front["first_token_ms"]) / (n - 1) if n >= 2 else None)
    return m, extra
