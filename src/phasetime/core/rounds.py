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

:func:`phasetime.core.phases.derive` pairs the events and calls :func:`assisted_rounds`
for these calls, so the phases keep one definition.
"""

from __future__ import annotations

from typing import Sequence

from .errors import UnsupportedGeneration
from .record import Round

Span = tuple[float, float]


def assisted_rounds(drafts: Sequence[tuple[float, float, int, int]], draft_forwards: Sequence[Span],
                    forwards: Sequence[Span], verify_ms: Sequence[float], generated: int, t_end: float,
                    t_start: float) -> list[Round]:
    """Every round of the call, in order.

    ``drafts`` are the candidate searches (start, end, the sequence's length at the start,
    candidates proposed), ``draft_forwards`` the draft model's forwards, ``forwards`` the
    target's (prefill first), ``verify_ms`` their durations without vision nested in them,
    ``generated`` the tokens the call appended (the sequence's length minus the prompt),
    times in ms on the events' timeline.
    """
    if len(drafts) != len(forwards):
        raise UnsupportedGeneration(f"saw {len(forwards)} target forwards for {len(drafts)} candidate rounds; this "
                                    "assisted decoding does not verify once per round")
    if not drafts:
        return []
    lengths = [length for _, _, length, _ in drafts] + [drafts[0][2] + generated]
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


def beam_ready(decode_starts: Sequence[float], n_max: int, t_end: float, t_start: float) -> list[float]:
    """ready[1..S] of a beam search of S steps: step k's tokens (one per beam) exist when
    forward k + 1 starts, the last step's when generate() returns. No beam is final
    before the search ends; these say when each step was taken."""
    steps = len(decode_starts) + 1
    if n_max > steps:
        raise UnsupportedGeneration(f"a returned beam holds {n_max} tokens but the search took {steps} steps")
    return [s - t_start for s in decode_starts] + [t_end - t_start]
