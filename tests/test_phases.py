"""derive(): events -> phases, on hand-made event lists with fixed numbers."""

from __future__ import annotations

import pytest

from phasetime import UnsupportedGeneration
from phasetime.core.phases import Event, derive


def ev(kind: str, t: float, tokens: int | None = None) -> Event:
    return Event(kind, t, tokens)


def timeline(vision_inside: bool) -> list[Event]:
    """Prompt of 10 positions, 4 tokens: prefill 2..12 ms, decode forwards at 14, 17, 20."""
    events = [ev("call_start", 0.0)]
    if not vision_inside:  # transformers >= 5.18: vision before the first forward
        events += [ev("vision_start", 0.5), ev("vision_end", 1.5)]
    events.append(ev("forward_start", 2.0, 10))
    if vision_inside:  # transformers <= 5.17: vision nested in the prefill forward
        events += [ev("vision_start", 2.5), ev("vision_end", 3.5)]
    events.append(ev("forward_end", 12.0))
    for start in (14.0, 17.0, 20.0):
        events += [ev("forward_start", start, 1), ev("forward_end", start + 2.0)]
    events.append(ev("call_end", 23.5))
    return events


@pytest.mark.parametrize("vision_inside", [False, True])
def test_phases_from_a_known_timeline(vision_inside: bool) -> None:
    m = derive(timeline(vision_inside), prompt_tokens=10, output_tokens=[4], timer="perf-counter")
    assert m.total_ms == 23.5
    assert m.vision_ms == 1.0
    assert m.prefill_ms == (9.0 if vision_inside else 10.0)
    assert m.ready_ms == (14.0, 17.0, 20.0, 23.5)
    assert m.ttft_ms == 14.0
    assert m.decode_ms == 9.5 and m.decode_steps == 3
    assert m.itl_ms == (3.0, 3.0, 3.5)
    assert m.tpot_ms == pytest.approx(9.5 / 3)
    assert m.other_ms == pytest.approx(23.5 - 1.0 - m.prefill_ms - 9.5)
    assert m.decode_forward_ms == (2.0, 2.0, 2.0)
    assert m.vision_calls == 1 and m.prefill_forwards == 1
    vision = (2.5, 3.5) if vision_inside else (0.5, 1.5)
    assert m.spans[0 if not vision_inside else 1] == ("vision", *vision)
    assert [s[0] for s in m.spans].count("decode") == 3 and ("prefill", 2.0, 12.0) in m.spans


def test_sequences_end_at_their_own_last_token() -> None:
    m = derive(timeline(False), prompt_tokens=10, output_tokens=[4, 2, 1], timer="perf-counter")
    a, b, c = m.sequences
    assert (a.decode_ms, a.itl_ms) == (9.5, (3.0, 3.0, 3.5))
    assert (b.decode_ms, b.tpot_ms, b.itl_ms) == (3.0, 3.0, (3.0,))
    assert (c.decode_ms, c.tpot_ms, c.itl_ms) == (0.0, None, ())
    assert m.decode_ms == 9.5


def test_chunked_prefill_and_one_token_prompt() -> None:
    events = [ev("call_start", 0.0)]
    for start, tokens in ((1.0, 4), (3.0, 4), (5.0, 2), (8.0, 1)):
        events += [ev("forward_start", start, tokens), ev("forward_end", start + 1.0)]
    events.append(ev("call_end", 10.0))
    m = derive(events, prompt_tokens=10, output_tokens=[2], timer="perf-counter")
    assert m.prefill_forwards == 3 and m.prefill_ms == 3.0 and m.ttft_ms == 8.0
    # The same forwards with a 1-token prompt: only the first consumes the prompt.
    m1 = derive(events, prompt_tokens=1, output_tokens=[4], timer="perf-counter")
    assert m1.prefill_forwards == 1 and m1.ready_ms == (3.0, 5.0, 8.0, 10.0)


def test_a_forward_count_that_does_not_fit_the_tokens_is_refused() -> None:
    with pytest.raises(UnsupportedGeneration, match="decode forwards"):
        derive(timeline(False), prompt_tokens=10, output_tokens=[8], timer="perf-counter")


def test_unbalanced_events_are_rejected() -> None:
    events = [ev("call_start", 0.0), ev("forward_start", 1.0, 3), ev("call_end", 2.0)]
    with pytest.raises(ValueError, match="without forward_end"):
        derive(events, prompt_tokens=3, output_tokens=[1], timer="perf-counter")
    with pytest.raises(ValueError, match="unknown event kind"):
        Event("lunch", 1.0)
