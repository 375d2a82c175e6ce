"""Each boundary of a call and the phase it opens, decided once while the call runs.

The recorder of a call (the ``generate()`` adapter's, :mod:`phasetime.hf.call`) hands every
mark to one :class:`Phases`, which says what the interval after it belongs to, the way
:func:`~phasetime.core.phases.derive` decides it afterwards: forwards are prefill until the
prompt is consumed, decode after; a media encoder wins inside a forward. Sensors and NVTX
ranges read the :class:`Boundary` it returns, so nothing classifies for itself. Pure, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from .phases import PromptCounter


_MEDIA_MARKS = {"vision_start": ("vision", 1), "vision_end": ("vision", -1),
                "audio_start": ("audio", 1), "audio_end": ("audio", -1)}


@dataclass(frozen=True, slots=True)
class Boundary:
    """One boundary of a call, as every sensor sees it: ``kind`` (``call_start``,
    ``vision_end``, ``forward_start``, ...), ``after`` (the phase of the interval it opens:
    vision, audio, prefill, decode or other), ``forward`` (on a forward's start and end: prefill or
    decode) and ``ends_prefill`` (the end of the forward that consumed the prompt's last
    positions)."""

    kind: str
    after: str
    forward: str | None = None
    ends_prefill: bool = False


class Phases:
    """Decides each boundary's phase once, for one call (the recorder keeps one): vision or
    audio inside a span of that medium's encoder, prefill or decode inside a forward (by
    counting the prompt's positions, :class:`PromptCounter`), else other."""

    def __init__(self, prompt_tokens: int) -> None:
        self.counter = PromptCounter(prompt_tokens)
        self.forward: str | None = None
        self.media: dict[str, int] = {"vision": 0, "audio": 0}  # open spans of each medium
        self.inside: str | None = None  # the medium whose span is open
        self.ending = False

    def observe(self, kind: str, tokens: int | None = None) -> Boundary:
        forward, ends = None, False
        if kind == "forward_start":
            self.forward = forward = "prefill" if self.counter.feed(tokens or 0) else "decode"
            self.ending = forward == "prefill" and self.counter.consumed >= self.counter.prompt_tokens
        elif kind == "forward_end":
            forward, ends, self.forward, self.ending = self.forward, self.ending, None, False
        elif kind in _MEDIA_MARKS:
            medium, change = _MEDIA_MARKS[kind]
            self.media[medium] += change
            self.inside = next((m for m, open_spans in self.media.items() if open_spans > 0), None)
        return Boundary(kind, self.inside or self.forward or "other", forward, ends)
