"""The measurement record: what one ``generate()`` call cost, phase by phase.

Records are frozen dataclasses, validated when built, holding raw values (every ready
time, every decode forward) from which aggregates are derived. All durations are in
milliseconds. The definitions are in ``docs/metrics.md``; in short, for a sequence with
N output tokens and ``ready[k]`` the moment token k exists:

* ``ttft_ms = ready[1] - call start``
* ``decode_ms = ready[N] - ready[1]`` and ``tpot_ms = decode_ms / (N - 1)`` (None when N < 2)
* ``itl_ms`` = the N - 1 gaps between consecutive ready times
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import UnsupportedGeneration

__all__ = ["METHODS", "TIMERS", "Measurement", "Round", "SequenceTiming", "UnsupportedGeneration"]

METHODS = ("direct", "subtract")
TIMERS = ("perf-counter", "cuda-event", "virtual")
# How a call decodes (phasetime.hf.generation.decoding names them from transformers' modes).
DECODINGS = ("greedy", "sample", "assisted", "prompt_lookup", "beam_search", "beam_sample")  # virtual: a clock the caller drives (tests)

# Phases may come out a hair below zero from float rounding of event timestamps; anything
# beyond this is a defect of the probe, not noise.
NEGATIVE_TOLERANCE_MS = 1e-3


def _check_duration(name: str, value: float | None, *, optional: bool = False) -> None:
    if value is None:
        if optional:
            return
        raise ValueError(f"{name} is required")
    if not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < -NEGATIVE_TOLERANCE_MS:
        raise ValueError(f"{name} must not be negative, got {value}")


@dataclass(frozen=True, slots=True)
class SequenceTiming:
    """Decode timing of one sequence of a batch.

    ``output_tokens`` counts generated tokens up to and including the first EOS; padding
    after EOS is not an output token. ``tpot_ms`` divides by the decode steps (N - 1) for
    the direct method; for the legacy ``subtract`` method it is ``decode_ms / N``.
    """

    index: int
    output_tokens: int
    decode_ms: float
    tpot_ms: float | None
    itl_ms: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.output_tokens < 0:
            raise ValueError(f"output_tokens must be >= 0, got {self.output_tokens}")
        _check_duration("decode_ms", self.decode_ms)
        _check_duration("tpot_ms", self.tpot_ms, optional=True)
        for gap in self.itl_ms:
            _check_duration("itl_ms", gap)


@dataclass(frozen=True, slots=True)
class Round:
    """One round of assisted or prompt-lookup decoding: candidates proposed, then verified.

    ``draft_ms`` is the candidate search (the draft model's own generate(), or the n-gram
    search of prompt lookup on the host), ``draft_forwards`` and ``draft_forward_ms`` the
    draft model's forwards inside it; ``verify_ms`` the target's one forward over the
    candidates (in round 1 that forward is the prefill). Of ``proposed`` candidates the
    target ``accepted`` some; the round adds ``tokens`` = accepted + 1 (the target's own
    token after the last accepted one), all ready at ``ready_ms`` from the call start.
    """

    draft_ms: float
    verify_ms: float
    proposed: int
    accepted: int
    tokens: int
    ready_ms: float
    draft_forwards: int = 0
    draft_forward_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("draft_ms", "verify_ms", "ready_ms", "draft_forward_ms"):
            _check_duration(name, getattr(self, name))
        if not 0 <= self.accepted <= self.proposed or self.tokens < 1:
            raise ValueError(f"a round accepts 0..proposed candidates and adds >= 1 token, got {self}")


@dataclass(frozen=True, slots=True)
class Measurement:
    """Timing of one ``generate()`` call (or, for ``method="subtract"``, of the legacy trio of calls).

    Call-level ``decode_ms`` ends at the last token of the longest sequence; per-sequence
    values are in :attr:`sequences`. ``ready_ms`` holds ``ready[1..N_max]`` relative to the
    call start, ``decode_forward_ms`` the duration of every decode forward and ``spans``
    every timed interval as ``(name, start_ms, end_ms)`` from the call start (name:
    ``"vision"``, ``"audio"``, ``"draft"``, ``"prefill"`` or ``"decode"``), so every aggregate can be re-derived
    from the raw values and a call can be drawn as a timeline.

    ``decode_vision_ms`` is vision time that ran inside decode forwards (a model that
    re-encodes its images every step: transformers <= 5.17 with ``use_cache=False``, or a
    resampler re-run at every step); it is part of ``vision_ms`` and already taken out of
    ``decode_ms``. ``audio_ms``, ``audio_calls`` and ``decode_audio_ms`` are the same for an
    audio encoder. ``other_ms`` is ``total - vision - audio - prefill - decode``. ``probe_ms`` is the
    host time the probe itself spent in its hooks during the call (its own cost, inside
    ``total_ms``). ``resources`` holds what the probe's sensors recorded (memory, energy,
    ...), by column name; empty without sensors. ``compiles`` counts the graphs
    ``torch.compile`` compiled during the call (process-wide): a call that compiled measured
    the compiler, not the model, and the ``no_compilation`` check fails its rows.
    ``setup_ms``, ``handoff_ms`` and ``first_token_ms`` name the parts of ``other_ms``
    (:func:`phasetime.core.phases.other_parts`); the legacy method leaves them 0.

    ``decoding`` says how the call decoded (:data:`DECODINGS`). Assisted and prompt-lookup
    calls keep their :attr:`rounds`; ``draft_ms`` and ``verify_ms`` sum the rounds after
    the first token (inside ``decode_ms``), ``first_draft_ms`` is round 1's candidate search
    (before the prefill forward, inside TTFT: a named part of ``other_ms``). Beam search
    records ``num_beams``; its ``ready_ms`` are the search's steps (docs/metrics.md).

    ``profile`` is the call's :class:`~phasetime.core.operators.CallProfile` when it ran under
    torch.profiler (``profile=True``), else None. A profiled call is slower than a plain one:
    its times describe the profiled call only.
    """

    method: str
    timer: str
    total_ms: float
    vision_ms: float
    prefill_ms: float
    ttft_ms: float | None
    decode_ms: float
    other_ms: float
    decode_steps: int
    prompt_tokens: int
    sequences: tuple[SequenceTiming, ...]
    prefill_forwards: int = 1
    vision_calls: int = 0
    ready_ms: tuple[float, ...] = ()
    decode_forward_ms: tuple[float, ...] = ()
    spans: tuple[tuple[str, float, float], ...] = ()
    decode_vision_ms: float = 0.0
    audio_ms: float = 0.0
    audio_calls: int = 0
    decode_audio_ms: float = 0.0
    probe_ms: float | None = None
    resources: Mapping[str, Any] = field(default_factory=dict)
    output_ids: Any = field(default=None, repr=False, compare=False)
    compiles: int = 0
    setup_ms: float = 0.0
    handoff_ms: float = 0.0
    first_token_ms: float = 0.0
    decoding: str = "greedy"
    num_beams: int = 1
    rounds: tuple[Round, ...] = ()
    draft_ms: float = 0.0
    verify_ms: float = 0.0
    first_draft_ms: float = 0.0
    profile: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ValueError(f"decoding must be one of {DECODINGS}, got {self.decoding!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.timer not in TIMERS:
            raise ValueError(f"timer must be one of {TIMERS}, got {self.timer!r}")
        for name in ("total_ms", "vision_ms", "prefill_ms", "decode_ms", "decode_vision_ms", "audio_ms", "decode_audio_ms"):
            _check_duration(name, getattr(self, name))
        _check_duration("ttft_ms", self.ttft_ms, optional=True)
        _check_duration("probe_ms", self.probe_ms, optional=True)
        if not self.sequences:
            raise ValueError("a measurement needs at least one sequence")
        if self.decode_steps < 0 or self.prompt_tokens < 0:
            raise ValueError("decode_steps and prompt_tokens must be >= 0")
        if self.method == "direct":
            # The direct method derives other_ms from phases that nest inside the call, so
            # it can only be negative through a probe defect.
            _check_duration("other_ms", self.other_ms)
            for seq in self.sequences:
                if (seq.tpot_ms is None) != (seq.output_tokens < 2):
                    raise ValueError(f"sequence {seq.index}: tpot_ms must be None exactly when output_tokens < 2")
                if len(seq.itl_ms) != max(seq.output_tokens - 1, 0):
                    raise ValueError(f"sequence {seq.index}: expected {seq.output_tokens - 1} ITL gaps")

    @property
    def proposed_tokens(self) -> int:
        """Candidates proposed over all rounds (0 without rounds)."""
        return sum(r.proposed for r in self.rounds)

    @property
    def accepted_tokens(self) -> int:
        """Candidates the target accepted over all rounds."""
        return sum(r.accepted for r in self.rounds)

    @property
    def acceptance_rate(self) -> float | None:
        """accepted / proposed over all rounds; None when nothing was proposed."""
        proposed = self.proposed_tokens
        return self.accepted_tokens / proposed if proposed else None

    @property
    def round_gaps_ms(self) -> tuple[float, ...]:
        """The gaps between consecutive rounds' ready times (the ITL gaps that are not zero)."""
        return tuple(b.ready_ms - a.ready_ms for a, b in zip(self.rounds, self.rounds[1:]))

    @property
    def tokens_per_round(self) -> float | None:
        """Tokens the rounds added, per round; None without rounds."""
        return sum(r.tokens for r in self.rounds) / len(self.rounds) if self.rounds else None

    @property
    def batch_size(self) -> int:
        return len(self.sequences)

    def _single(self) -> SequenceTiming:
        if len(self.sequences) != 1:
            raise ValueError(
                f"this call generated {len(self.sequences)} sequences; use m.sequences[i] for per-sequence values"
            )
        return self.sequences[0]

    @property
    def output_tokens(self) -> int:
        """Output tokens of the single sequence (batch size 1 only)."""
        return self._single().output_tokens

    @property
    def tpot_ms(self) -> float | None:
        """Time per output token of the single sequence (batch size 1 only)."""
        return self._single().tpot_ms

    @property
    def itl_ms(self) -> tuple[float, ...]:
        """Inter-token latencies of the single sequence (batch size 1 only)."""
        return self._single().itl_ms
