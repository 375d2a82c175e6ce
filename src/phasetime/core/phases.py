"""Turning the probe's timestamped events into phases: one pure function, no I/O.

The probe (``probe.py``) emits, for one ``generate()`` call, a flat list of
:class:`Event`\\ s with times in milliseconds since the call started:

``call_start``, ``vision_start``/``vision_end`` and ``audio_start``/``audio_end`` (outermost
calls of a media encoder), ``forward_start``/``forward_end`` (top-level model forwards;
``forward_start`` carries the number of token positions fed), the rounds' ``draft_*`` events
and ``call_end``.

:func:`derive` classifies forwards as prefill or decode by counting fed positions
against the prompt length (so a 1-token prompt or a chunked prefill cannot confuse
it), derives ``ready[k]`` for every output token, and builds a :class:`Measurement`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from .errors import UnsupportedGeneration
from .record import Measurement, Round, SequenceTiming
from .rounds import assisted_rounds, beam_ready, ready_from_rounds

MEDIA_PHASES = ("vision", "audio")
EVENT_KINDS = ("call_start", "call_end", "forward_start", "forward_end", "vision_start", "vision_end",
               "audio_start", "audio_end", "draft_start", "draft_end", "draft_forward_start", "draft_forward_end")
Span = tuple[float, float]
ROUND_DECODINGS = ("assisted", "prompt_lookup")
BEAM_DECODINGS = ("beam_search", "beam_sample")


@dataclass(frozen=True, slots=True)
class Event:
    """One boundary seen by the probe. ``tokens``: the positions fed on ``forward_start``, the
    sequence's length on ``draft_start``, the candidates proposed on ``draft_end``."""

    kind: str
    t_ms: float
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class _Forward:
    start_ms: float
    end_ms: float
    tokens: int


def _pair_up(events: Sequence[Event], start: str, end: str) -> list[tuple[float, float, int | None, int | None]]:
    """(start, end, the start's tokens, the end's tokens) of every start/end pair, in order;
    rejects unbalanced lists."""
    spans: list[tuple[float, float, int | None, int | None]] = []
    open_event: Event | None = None
    for ev in events:
        if ev.kind == start:
            if open_event is not None:
                raise ValueError(f"nested {start} events: the probe should only report the outermost call")
            open_event = ev
        elif ev.kind == end:
            if open_event is None:
                raise ValueError(f"{end} without {start}")
            spans.append((open_event.t_ms, ev.t_ms, open_event.tokens, ev.tokens))
            open_event = None
    if open_event is not None:
        raise ValueError(f"{start} without {end}")
    return spans


def _call_bounds(events: Sequence[Event]) -> tuple[float, float]:
    starts = [e.t_ms for e in events if e.kind == "call_start"]
    ends = [e.t_ms for e in events if e.kind == "call_end"]
    if len(starts) != 1 or len(ends) != 1:
        raise ValueError("expected exactly one call_start and one call_end event")
    return starts[0], ends[0]


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


class PromptCounter:
    """Tells prefill forwards from decode forwards by counting the positions fed.

    A forward is prefill while fewer than ``prompt_tokens`` positions have been consumed
    before it. Without a KV cache every forward re-feeds the whole sequence: the first
    consumes the prompt and every later one is a decode forward, as it should be.
    """

    def __init__(self, prompt_tokens: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.consumed = 0

    def feed(self, tokens: int) -> bool:
        """Record a forward fed ``tokens`` positions; True when it is a prefill forward."""
        is_prefill = self.consumed < self.prompt_tokens
        self.consumed += tokens
        return is_prefill


def split_prefill(forwards: Sequence[_Forward], prompt_tokens: int) -> tuple[list[_Forward], list[_Forward]]:
    """Split forwards into (prefill, decode); see :class:`PromptCounter`."""
    counter = PromptCounter(prompt_tokens)
    prefill: list[_Forward] = []
    decode: list[_Forward] = []
    for fwd in forwards:
        (prefill if counter.feed(fwd.tokens) else decode).append(fwd)
    return prefill, decode


def _ready_times(decode: list[_Forward], n_max: int, t_start: float, t_end: float) -> list[float]:
    """``ready[1..N]``: token 1 is ready when the first decode forward starts, token k + 1
    when decode forward k + 1 starts, and the last token when generate() returns.

    A deferred stop check (transformers on MPS) runs one extra, discarded forward, so
    ``len(decode)`` may equal ``n_max``; any other count means a mode we cannot time.
    """
    if n_max > 0 and len(decode) not in (n_max - 1, n_max):
        raise UnsupportedGeneration(
            f"saw {len(decode)} decode forwards for {n_max} output tokens; "
            "this generation mode does not produce one token per forward"
        )
    ready = [f.start_ms - t_start for f in decode[: max(n_max - 1, 0)]]
    if n_max > 0:
        ready.append(decode[n_max - 1].start_ms - t_start if len(decode) == n_max else t_end - t_start)
    return ready


class _Nested:
    """Media encoders that ran inside forwards (a model re-encoding its images every step, a
    resampler re-run at every decode step): their time is the medium's, so it is taken out of the
    prefill or decode time it fell into."""

    def __init__(self, media: dict[str, list[Span]], forwards: list[_Forward], t_start: float) -> None:
        self.spans = {phase: [(a - t_start, b - t_start) for a, b in spans
                              if any(_overlap(a, b, f.start_ms, f.end_ms) > 0 for f in forwards)]
                      for phase, spans in media.items()}

    def between(self, a: float, b: float, phase: str | None = None) -> float:
        """Media time between ``a`` and ``b`` (ms from the call start): of ``phase``, or of all."""
        phases = [phase] if phase is not None else list(self.spans)
        return sum(_overlap(s, e, a, b) for p in phases for s, e in self.spans[p])


def _inside(spans: list[Span], forward: _Forward) -> float:
    """The time of ``spans`` inside one forward."""
    return sum(_overlap(a, b, forward.start_ms, forward.end_ms) for a, b in spans)


def _sequences(ready: list[float], output_tokens: Sequence[int], nested: _Nested) -> tuple[SequenceTiming, ...]:
    """Per-sequence decode values: each sequence ends at the ready time of its own last token."""
    out = []
    for i, n in enumerate(output_tokens):
        own = ready[:n]
        itl = tuple(b - a - nested.between(a, b) for a, b in zip(own, own[1:]))
        decode = own[-1] - own[0] - nested.between(own[0], own[-1]) if n >= 2 else 0.0
        out.append(SequenceTiming(index=i, output_tokens=n, decode_ms=decode,
                                  tpot_ms=decode / (n - 1) if n >= 2 else None, itl_ms=itl))
    return tuple(out)


def _spans(media: dict[str, list[Span]], prefill: list[_Forward], decode: list[_Forward],
           t_start: float, drafts: Sequence[Span] = ()) -> tuple[tuple[str, float, float], ...]:
    """Every timed interval as (name, start, end) from the call start, in time order."""
    spans = ([(phase, a - t_start, b - t_start) for phase, found in media.items() for a, b in found]
             + [("draft", ds - t_start, de - t_start) for ds, de in drafts]
             + [("prefill", f.start_ms - t_start, f.end_ms - t_start) for f in prefill]
             + [("decode", f.start_ms - t_start, f.end_ms - t_start) for f in decode])
    return tuple(sorted(spans, key=lambda span: span[1]))


def other_parts(media: list[Span], prefill: list["_Forward"], ready: list[float],
                t_start: float, t_end: float, drafts: Sequence[Span] = ()) -> tuple[float, float, float]:
    """generate()'s own work around the phases, named: (set-up, hand-off, first token), ms.

    * set-up: from entering generate() to the first media-encoder call, candidate search
      (round 1 of assisted decoding) or prefill forward (input preparation, the cache, the
      logits processors);
    * hand-off: from there to the prefill forward, what the media encoders and round 1's
      candidate search do not cover (images encoded before the first forward, transformers
      >= 5.18), and the gaps between the forwards of a chunked prefill;
    * first token: from the end of the last prefill forward to token 1 being ready (sampling
      it, the stop check, preparing the first decode step; for N = 1, to the return).
    The tail after the last forward is part of decode: the last token is ready when
    generate() returns. What these do not cover stays in ``other_ms`` beside them.
    """
    if not prefill:
        return 0.0, 0.0, 0.0
    start = prefill[0].start_ms
    early = [(a, b) for a, b in [*media, *drafts] if b <= start]
    first = min([start, *[a for a, _ in early]])
    setup = first - t_start
    handoff = start - first - sum(b - a for a, b in early)
    handoff += sum(b.start_ms - a.end_ms for a, b in zip(prefill, prefill[1:]))
    token_ready = (ready[0] + t_start) if ready else t_end
    first_token = max(token_ready - prefill[-1].end_ms, 0.0)
    return max(setup, 0.0), max(handoff, 0.0), first_token


def _ready(events: Sequence[Event], drafts: list[tuple[float, float, int, int]], decoding: str,
           forwards: list[_Forward], decode: list[_Forward], media: list[Span], n_max: int,
           generated_tokens: int | None, t_start: float, t_end: float) -> tuple[list[float], list[_Forward], list[Round]]:
    """(ready[1..], the decode forwards timed, the rounds): one token per forward, a round's
    tokens at once (assisted, prompt lookup), or a beam search's steps."""
    if decoding in ROUND_DECODINGS:
        verify = [f.end_ms - f.start_ms - _inside(media, f) for f in forwards]
        generated = n_max if generated_tokens is None else generated_tokens
        draft_forwards = [(s, e) for s, e, _, _ in _pair_up(events, "draft_forward_start", "draft_forward_end")]
        rounds = assisted_rounds(drafts, draft_forwards, [(f.start_ms, f.end_ms) for f in forwards], verify, generated,
                                 t_end, t_start)
        return ready_from_rounds(rounds)[:n_max], decode, rounds
    if decoding in BEAM_DECODINGS:
        return (beam_ready([f.start_ms for f in decode], n_max, t_end, t_start) if n_max > 0 else []), decode, []
    # without a deferred stop's discarded forward
    return _ready_times(decode, n_max, t_start, t_end), decode[: max(n_max - 1, 0)], []


@dataclass(frozen=True)
class _Call:
    """One call's events, paired up: its bounds, forwards, media spans and candidate rounds."""

    t_start: float
    t_end: float
    forwards: list[_Forward]
    media: dict[str, list[Span]]
    drafts: list[tuple[float, float, int, int]]  # (start, end, sequence length, candidates proposed)

    @classmethod
    def of(cls, events: Sequence[Event]) -> "_Call":
        t_start, t_end = _call_bounds(events)
        forwards = [_Forward(s, e, tok or 0) for s, e, tok, _ in _pair_up(events, "forward_start", "forward_end")]
        media = {p: [(s, e) for s, e, _, _ in _pair_up(events, f"{p}_start", f"{p}_end")] for p in MEDIA_PHASES}
        drafts = [(s, e, a or 0, b or 0) for s, e, a, b in _pair_up(events, "draft_start", "draft_end")]
        return cls(t_start, t_end, forwards, media, drafts)

    @property
    def all_media(self) -> list[Span]:
        return [span for spans in self.media.values() for span in spans]


def derive(
    events: Sequence[Event],
    *,
    prompt_tokens: int,
    output_tokens: Sequence[int],
    timer: str,
    output_ids: Any = None,
    probe_ms: float | None = None,
    resources: dict[str, Any] | None = None,
    decoding: str = "greedy",
    generated_tokens: int | None = None,
    num_beams: int = 1,
) -> Measurement:
    """Build the :class:`Measurement` of one call from its events.

    ``prompt_tokens`` is the number of prompt positions the model still has to consume
    (prompt length minus any positions already in a user-supplied cache);
    ``output_tokens`` holds the output length of every sequence (see
    :class:`phasetime.hf.outputs.StopRecorder`); ``probe_ms`` and ``resources`` are
    passed through to the record. ``decoding`` names how the call decoded
    (:data:`~phasetime.core.record.DECODINGS`): assisted and prompt-lookup calls are
    read round by round (:mod:`phasetime.core.rounds`; ``generated_tokens``: the tokens the
    call appended), beam searches step by step.
    """
    if not output_tokens:
        raise ValueError("output_tokens needs one entry per sequence")
    # 1. Call bounds and raw spans.
    call = _Call.of(events)
    n_max = max(output_tokens)
    # 2. Prefill: the forwards that consume the prompt, without the media encoders nested in
    #    them (transformers <= 5.17 encodes images inside the first forward).
    prefill, decode = split_prefill(call.forwards, prompt_tokens)
    if n_max > 0 and not prefill:
        raise UnsupportedGeneration("no forward consumed the prompt; this generation mode is not supported")
    prefill_ms = sum(f.end_ms - f.start_ms - _inside(call.all_media, f) for f in prefill)
    # 3. Ready times (one token per forward, a round's tokens at once, or a beam search's
    #    steps), and each sequence's own decode.
    ready, timed_decode, rounds = _ready(events, call.drafts, decoding, call.forwards, decode, call.all_media, n_max,
                                         generated_tokens, call.t_start, call.t_end)
    nested = _Nested(call.media, decode, call.t_start)
    sequences = _sequences(ready, output_tokens, nested)
    # 4. Call-level phases and the raw spans (for timelines and traces).
    steps = len(timed_decode) if decoding in (*ROUND_DECODINGS, *BEAM_DECODINGS) else max(n_max - 1, 0)
    return _measurement(call, prefill, prefill_ms, ready, timed_decode, rounds, nested, sequences, steps,
                        prompt_tokens=prompt_tokens, timer=timer, output_ids=output_ids, probe_ms=probe_ms,
                        resources=dict(resources or {}), decoding=decoding, num_beams=num_beams)


def _measurement(call: _Call, prefill: list[_Forward], prefill_ms: float, ready: list[float],
                 timed_decode: list[_Forward], rounds: list[Round], nested: _Nested,
                 sequences: tuple[SequenceTiming, ...], steps: int, **fields: Any) -> Measurement:
    """The call-level phases: each medium's time, decode without the media nested in it, the
    named parts of ``other_ms``, and the rounds' sums."""
    total_ms = call.t_end - call.t_start
    media_ms = {p: sum(b - a for a, b in spans) for p, spans in call.media.items()}
    inside = {p: nested.between(ready[0], ready[-1], p) if ready else 0.0 for p in MEDIA_PHASES}
    decode_ms = ready[-1] - ready[0] - sum(inside.values()) if ready else 0.0
    early = [(a, b) for a, b, _, _ in call.drafts if prefill and b <= prefill[0].start_ms]  # round 1's, before prefill
    setup, handoff, first_token = other_parts(call.all_media, prefill, ready, call.t_start, call.t_end, early)
    return Measurement(
        method="direct", total_ms=total_ms, vision_ms=media_ms["vision"], audio_ms=media_ms["audio"],
        prefill_ms=prefill_ms, ttft_ms=ready[0] if ready else None, decode_ms=decode_ms,
        other_ms=total_ms - sum(media_ms.values()) - prefill_ms - decode_ms,
        decode_steps=steps, sequences=sequences, prefill_forwards=len(prefill),
        vision_calls=len(call.media["vision"]), audio_calls=len(call.media["audio"]), ready_ms=tuple(ready),
        decode_forward_ms=tuple(f.end_ms - f.start_ms for f in timed_decode),
        spans=_spans(call.media, prefill, timed_decode, call.t_start, [(a, b) for a, b, _, _ in call.drafts]),
        decode_vision_ms=inside["vision"], decode_audio_ms=inside["audio"],
        setup_ms=setup, handoff_ms=handoff, first_token_ms=first_token, rounds=tuple(rounds),
        draft_ms=sum(r.draft_ms for r in rounds[1:]), verify_ms=sum(r.verify_ms for r in rounds[1:]),
        first_draft_ms=sum(b - a for a, b in early), **fields,
    )
