"""A serving engine's steps turned into the probe's events, one request at a time: pure, no I/O.

An engine such as vLLM does not run one ``generate()`` per request: its scheduler runs
*steps*, each one forward over the tokens of every request in flight (a prefill chunk of one
request beside a decode token of another), with the multimodal encoder run first for the
images the step needs. The engine probe (:mod:`phasetime.vllm.worker_probe`)
records each step as a :class:`Step`; :func:`request_events` turns the steps one request took
part in into the same :class:`~phasetime.core.phases.Event` list the Hugging Face probe emits
for a ``generate()`` call, and :func:`~phasetime.core.phases.derive` makes the measurement. So
both engines share one definition of the phases (docs/metrics.md, "vLLM"): the steps that
consume the prompt are prefill forwards (input preparation and the language model's
forward), their encoder runs are vision, and a token is ready when the step that sampled it
ends.

A step shared by several requests is split between them, documented as such: the model time
by the tokens each request had scheduled in it (a 40-token prefill chunk and a 1-token decode
share 40 : 1), the encoder by the encoder inputs (images) each request had scheduled. With one
request in flight nothing is split and the phases are exact. Times are milliseconds on one
monotonic clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

from ..core.phases import Event

__all__ = ["Step", "request_events", "share"]


@dataclass(frozen=True)
class Step:
    """One engine step: ``start_ms`` (the runner's execute call) to ``end_ms`` (its tokens
    sampled); ``forward``: the language model's forward (start, end); ``encoder``: the
    multimodal encoder's runs in this step; ``tokens``: tokens scheduled per request;
    ``encoder_inputs``: encoder inputs (images) scheduled per request."""

    start_ms: float
    end_ms: float
    forward: tuple[float, float] | None
    tokens: Mapping[str, int]
    encoder: tuple[tuple[float, float], ...] = ()
    encoder_inputs: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"a step ends ({self.end_ms}) before it starts ({self.start_ms})")
        if any(n < 0 for n in self.tokens.values()):
            raise ValueError("scheduled tokens must not be negative")


def share(counts: Mapping[str, int], request: str) -> float:
    """The part of a shared step that is ``request``'s: its count over all requests' counts."""
    total = sum(counts.values())
    return counts.get(request, 0) / total if total > 0 else 0.0


def request_events(steps: Sequence[Step], request: str, submit_ms: float, prompt_tokens: int) -> list[Event]:
    """The probe's events of one request: the call starts when it was submitted
    (``submit_ms``) and ends when the step that sampled its last token ended.

    A step that consumes the request's prompt (``prompt_tokens`` of them, in one step or in
    chunks) is a prefill forward fed its scheduled tokens, from the step's start (the runner's
    input preparation, then the model) to the language model's end, with the request's images
    encoded in it as vision nested inside (``derive`` takes nested vision out of prefill). A
    later step is a decode forward from the end of the request's previous step (its token
    sampled: the token is ready then) to the model's end. So ``ready[k]`` is when token k was
    sampled, and decode / (N - 1) covers N - 1 whole engine cycles, as vLLM's own
    (last - first token) / (N - 1) does.

    A shared step is split: the request gets its share of the step's model time by scheduled
    tokens and its share of the encoder by encoder inputs, laid out from the step's start
    (vision first); ready times stay wall-clock."""
    own = sorted((s for s in steps if s.tokens.get(request, 0) > 0), key=lambda s: s.start_ms)
    if not own:
        raise ValueError(f"request {request!r} took part in no step")
    events = [Event("call_start", submit_ms)]
    consumed, previous_end = 0, submit_ms
    for step in own:
        if step.forward is None:
            raise ValueError(f"a step of request {request!r} has no language-model forward")
        encoder = sum(end - start for start, end in step.encoder)
        tokens_part, encoder_part = share(step.tokens, request), share(step.encoder_inputs, request)
        model = max(step.forward[1] - step.start_ms - encoder, 0.0) * tokens_part
        vision = encoder * encoder_part if step.encoder else 0.0
        prefill, consumed = consumed < prompt_tokens, consumed + step.tokens[request]
        events.append(Event("forward_start", step.start_ms if prefill else previous_end, step.tokens[request]))
        previous_end = step.end_ms
        if tokens_part == 1.0 and encoder_part in (0.0, 1.0):
            # nothing to split: the spans as they ran
            events += [e for a, b in (step.encoder if vision > 0 else ()) for e in (Event("vision_start", a), Event("vision_end", b))]
            events.append(Event("forward_end", step.forward[1]))
            continue
        if vision > 0:
            events += [Event("vision_start", step.start_ms), Event("vision_end", step.start_ms + vision)]
        events.append(Event("forward_end", step.start_ms + vision + model))  # (a decode forward starts earlier)
    events.append(Event("call_end", own[-1].end_ms))
    return events
