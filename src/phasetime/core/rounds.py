"""Rounds of assisted and prompt-lookup decoding, from the probe's events: pure, no I/O.

transformers decodes an assisted call (a draft model) or a prompt-lookup call (an n-gram
search of the prompt) in rounds. Each round the candidate generator proposes tokens
(``draft_start`` / ``draft_end`` events around ``get_candidates``, the draft model's
forwards inside as ``draft_forward_start`` / ``draft_forward_end``), then one forward of
the target verifies them. Round 1's verify forward also consumes the prompt: it is the
prefill. The tokens a round adds (the accepted candidates and the target's own next token)
exist together once the round is decided: they are ready when the next round starts (its
``draft_start``), and the last round's when generate() returns, the same rule as one
token per forward (a token is ready when the next forward begins).

:func:`phasetime.core.phases.derive` calls :func:`assisted_rounds` for these calls, so the
phases keep one definition.
"""

from __future__ import annotations

from typing import Sequence

from .errors import UnsupportedGeneration
from .record import Round

Span = tuple[float, float]


def _draft_spans(events: Sequence[tuple[str, float, int | None]]) -> list[tuple[float, float, int, int]]:
    """(start, end, sequence length at the start, candidates proposed) of every round's search."""
    out = []
    opened: tuple[float, int] | None = None
    for kind, t, tokens in events:
        if kind == "draft_start":
            if opened is not None:
                raise ValueError("nested draft_start events")
            opened = (t, int(tokens or 0))
        elif kind == "draft_end":
            if opened is None:
                raise ValueError("draft_end without draft_start")
            out.append((opened[0], t, opened[1], int(tokens or 0)))
            opened = None
    if opened is not None:
        raise ValueError("draft_start without draft_end")
    return out


def _draft_forwards(events: Sequence[tuple[str, float, int | None]]) -> list[Span]:
    spans, opened = [], None
    for kind, t, _ in events:
        if kind == "draft_forward_start":
            opened = t if opened is None else opened  # the outermost forward only
        elif kind == "draft_forward_end" and opened is not None:
            spans.append((opened, t))
            opened = None
    return spans


def assisted_rounds(events: Sequence[tuple[str, float, int | None]], forwards: Sequence[Span],
                    verify_ms: Sequence[float], generated: int, t_end: float, t_start: float) -> list[Round]:
    """Every round of the call, in order.

    ``forwards`` are the target's forwards (prefill first), ``verify_ms`` their durations
    without vision nested in them, ``generated`` the tokens the call appended (the
    sequence's length minus the prompt), times in ms on the events' timeline.
    """
    drafts = _draft_spans(events)
    if len(drafts) != len(forwards):
        raise UnsupportedGeneration(f"saw {len(forwards)} target forwards for {len(drafts)} candidate rounds; this "
                                    "assisted decoding does not verify once per round")
    if not drafts:
        return []
    lengths = [length for _, _, length, _ in drafts] + [drafts[0][2] + generated]
    draft_forwards = _draft_forwards(events)
    rounds = []
    for r, (start, end, _, proposed) in enumerate(drafts):
        tokens = lengths[r + 1] - lengths[r]
        if tokens < 1:
            raise UnsupportedGeneration(f"round {r + 1} added {tokens} tokens; phasetime expects at least one per round")
        inside = [(a, b) for a, b in draft_forwards if start <= a and b <= end]
        ready = drafts[r + 1][0] if r + 1 < len(drafts) else t_end
        rounds.append(Round(draft_ms=end - start, verify_ms=verify_ms[r], proposed=proposed,
                            accepted=min(tokens - 1, proposed), tokens=tokens, ready_ms=ready - t_start,
                            draft_forwards=len(inside), draft_forward_ms=sum(b - a for a, b in inside)))
    return rounds


def ready_from_rounds(rounds: Sequence[Round]) -> list[float]:
    """ready[1..G]: every token of a round ready at the round's ready time."""
    return [r.ready_ms for r in rounds for _ in range(r.tokens)]


def early_drafts(events: Sequence[tuple[str, float, int | None]], before: float) -> list[Span]:
    """The candidate searches that ended before ``before`` (round 1's, before the prefill forward)."""
    return [(a, b) for a, b, _, _ in _draft_spans(events) if b <= before]


def draft_spans(events: Sequence[tuple[str, float, int | None]]) -> list[Span]:
    return [(a, b) for a, b, _, _ in _draft_spans(events)]


def beam_ready(decode_starts: Sequence[float], n_max: int, t_end: float, t_start: float) -> list[float]:
    """ready[1..S] of a beam search of S steps: step k's tokens (one per beam) exist when
    forward k + 1 starts, the last step's when generate() returns. No beam is final
    before the search ends; these say when each step was taken."""
    steps = len(decode_starts) + 1
    if n_max > steps:
        raise UnsupportedGeneration(f"a returned beam holds {n_max} tokens but the search took {steps} steps")
    return [s - t_start for s in decode_starts] + [t_end - t_start]
