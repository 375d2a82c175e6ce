"""Measurements to rows, rows to an Arrow table with the declared schema."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from ..core.record import Measurement
from .schema import BY_NAME, COLUMNS, arrow_schema


def _measured(m: Measurement) -> dict[str, Any]:
    """The call-level fields every row of ``m`` shares."""
    return {
        "method": m.method,
        "timer": m.timer,
        "call_sequences": m.batch_size,
        "prompt_tokens": m.prompt_tokens,
        "total_ms": m.total_ms,
        "vision_ms": m.vision_ms,
        "audio_ms": m.audio_ms,
        "prefill_ms": m.prefill_ms,
        "ttft_ms": m.ttft_ms,
        "call_decode_ms": m.decode_ms,
        "other_ms": m.other_ms,
        "setup_ms": m.setup_ms if m.method == "direct" else None,
        "handoff_ms": m.handoff_ms if m.method == "direct" else None,
        "first_token_ms": m.first_token_ms if m.method == "direct" else None,
        "decode_steps": m.decode_steps,
        "ready_ms": list(m.ready_ms),
        "decode_forward_ms": list(m.decode_forward_ms),
        "spans": [{"name": n, "start_ms": a, "end_ms": b} for n, a, b in m.spans],
        "prefill_forwards": m.prefill_forwards,
        "vision_calls": m.vision_calls,
        "decode_vision_ms": m.decode_vision_ms,
        "audio_calls": m.audio_calls,
        "decode_audio_ms": m.decode_audio_ms,
        "probe_ms": m.probe_ms,
        "compiles": m.compiles,
        "decoding": m.decoding,
        "num_beams": m.num_beams,
        **_round_fields(m),
        **dict(m.resources),
    }


def _round_fields(m: Measurement) -> dict[str, Any]:
    """The round columns: null for a call without rounds."""
    if not m.rounds:
        return {}
    rounds = m.rounds
    return {
        "draft_ms": m.draft_ms, "verify_ms": m.verify_ms, "first_draft_ms": m.first_draft_ms, "rounds": len(rounds),
        "proposed_tokens": m.proposed_tokens, "accepted_tokens": m.accepted_tokens,
        "acceptance_rate": m.acceptance_rate, "tokens_per_round": m.tokens_per_round,
        "round_tokens": [r.tokens for r in rounds], "round_proposed": [r.proposed for r in rounds],
        "round_draft_ms": [r.draft_ms for r in rounds], "round_verify_ms": [r.verify_ms for r in rounds],
        "round_draft_forwards": [r.draft_forwards for r in rounds], "round_gap_ms": list(m.round_gaps_ms),
    }


def measurement_rows(
    m: Measurement,
    *,
    call_id: int,
    repeat: int,
    params: dict[str, Any],
    extras: list[dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per sequence of ``m``; ``decode_ms``/``tpot_ms``/``itl_ms`` are the sequence's own.

    ``params`` (the cell's parameters) go on every row, ``extras[i]`` (per-sample fields)
    on row i. Every key must be a declared column, and neither may change a measured value.
    """
    shared = _measured(m)
    rows = []
    for seq in m.sequences:
        row = {
            "call_id": call_id,
            "repeat": repeat,
            "sequence": seq.index,
            "output_tokens": seq.output_tokens,
            "decode_ms": seq.decode_ms,
            "tpot_ms": seq.tpot_ms,
            "itl_ms": list(seq.itl_ms),
            **shared,
        }
        for added in (params, extras[seq.index] if extras else {}):
            unknown = sorted(set(added) - set(BY_NAME))
            if unknown:
                raise ValueError(f"not a results column: {unknown}")
            clash = sorted(k for k in set(added) & set(row) if added[k] != row[k])
            if clash:
                raise ValueError(f"parameters may not change measured columns: {clash}")
            row.update(added)
        unknown = sorted(set(row) - set(BY_NAME))
        if unknown:
            raise ValueError(f"not a results column: {unknown}")
        rows.append(row)
    return rows


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a table of the declared schema (columns a row lacks are null)."""
    schema = arrow_schema()
    columns = [pa.array([r.get(c.name) for r in rows], type=c.type) for c in COLUMNS]
    return pa.Table.from_arrays(columns, schema=schema)
