"""Operators and kernels put in the phases of one call: a pure function, no profiler, no I/O.

A profiled call (:mod:`phasetime.hf.profiling`) yields the call's
:class:`~phasetime.core.record.Measurement` and the profiler's events as :class:`Op` s, on
the call's own timeline (ms from its start). :func:`windows` cuts the call into contiguous
:class:`Window` s, each one phase:

* ``vision`` / ``audio``: every outermost call of a media encoder (they win over whatever
  holds them: transformers <= 5.17 encodes images inside the prefill forward);
* ``draft``: every candidate search of assisted and prompt-lookup decoding (round 1's, before
  the prefill, too: the measurement counts it in ``other_ms``, as ``first_draft_ms``);
* ``prefill``: every forward that consumes the prompt;
* ``decode``: decode step k runs from token k being ready to token k + 1 being ready (the
  same intervals ``decode_ms`` and the ITL add up: the forward, sampling, the stop check);
* ``other``: what is left (generate()'s set-up, the hand-off, the first token's sampling).

Windows of one phase are numbered by ``step`` in time order (decode step k has step k; the two
pieces of a window a media call cut in two keep its number); the windows tile the call and
sum, per phase, to the measurement's own phase times (with the draft caveat above).
:func:`attribute` puts every op in the window that holds its start, sums them per window
and name, and adds one ``uncovered`` row per window: the part of it no top-level operator
(or, for kernels, no kernel) covers, that is host work outside torch's operators (Python,
generate()'s bookkeeping) or, on a GPU, a device waiting for launches.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

from .record import Measurement

KINDS = ("operator", "kernel", "uncovered")
PHASES = ("vision", "audio", "draft", "prefill", "decode", "other")
UNCOVERED = {"operator": "(no operator)", "kernel": "(no kernel)"}


def on_device(kind: str, name: str) -> bool:
    """Whether a row of that kind and name is timed in the device's windows (kernels and the
    time no kernel covers) rather than the host's."""
    return kind == "kernel" or name == UNCOVERED["kernel"]


@dataclass(frozen=True, slots=True)
class Op:
    """One profiler event on the call's timeline: an operator (host) or a kernel (device).
    ``top``: not nested in another operator of its thread (its span counts toward coverage);
    ``self_ms``: its time less its children's (a kernel's is its duration)."""

    name: str
    kind: str
    device: str
    start_ms: float
    end_ms: float
    self_ms: float
    top: bool = True


@dataclass(frozen=True, slots=True)
class Window:
    phase: str
    step: int
    start_ms: float
    end_ms: float

    @property
    def ms(self) -> float:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class OpRow:
    """One name's share of one window: ``calls`` events, their ``self_ms`` and ``total_ms``;
    ``window_ms`` is the window's length. An ``uncovered`` row names the window's time that no
    operator (no kernel) covers, in ``self_ms``."""

    phase: str
    step: int
    start_ms: float
    window_ms: float
    name: str
    kind: str
    device: str
    calls: int
    self_ms: float
    total_ms: float


# painted in this order: a later layer wins where two overlap
_LAYERS = ("decode", "prefill", "draft", "audio", "vision")


def _paint(segments: list[list], a: float, b: float, label: str) -> None:
    """Give [a, b) the label ``label`` in a sorted tiling of [start, end) segments."""
    if b <= a:
        return
    starts = [s[0] for s in segments]
    i = max(bisect.bisect_right(starts, a) - 1, 0)
    out = segments[:i]
    for seg in segments[i:]:
        s, e, old = seg
        if e <= a or s >= b:
            out.append(seg)
            continue
        if s < a:
            out.append([s, a, old])
        out.append([max(s, a), min(e, b), label])
        if e > b:
            out.append([b, e, old])
    segments[:] = out


def _intervals(m: Measurement) -> dict[str, list[tuple[float, float]]]:
    spans: dict[str, list[tuple[float, float]]] = {p: [] for p in _LAYERS}
    for name, a, b in m.spans:
        if name in ("vision", "audio", "draft", "prefill"):
            spans[name].append((a, b))
    ready = sorted(set(m.ready_ms))  # a round's tokens share one ready time
    spans["decode"] = list(zip(ready, ready[1:]))
    return spans


def windows(m: Measurement) -> list[Window]:
    """The call cut into contiguous one-phase windows (see the module docstring)."""
    spans = _intervals(m)
    steps = [(max(a, 0.0), min(b, m.total_ms)) for a, b in spans["decode"]]
    # the decode steps tile [ready 1, ready N] without overlap: laid down at once, the rest painted
    segments: list[list] = [[a, b, f"decode:{k}"] for k, (a, b) in enumerate(steps) if b > a]
    first, last = (segments[0][0], segments[-1][1]) if segments else (m.total_ms, m.total_ms)
    segments = [[0.0, first, "other"], *segments, [last, m.total_ms, "other"]]
    for layer in _LAYERS[1:]:
        for k, (a, b) in enumerate(spans[layer]):
            _paint(segments, max(a, 0.0), min(b, m.total_ms), f"{layer}:{k}")
    merged: list[list] = []
    for seg in segments:
        if merged and merged[-1][2] == seg[2]:
            merged[-1][1] = seg[1]
        elif seg[1] > seg[0]:
            merged.append(list(seg))
    out: list[Window] = []
    counts: dict[str, int] = {}
    for s, e, label in merged:
        phase, _, k = label.partition(":")
        counts[phase] = counts.get(phase, 0) + 1
        # a window split by a media call inside it keeps its number (decode step k stays k)
        out.append(Window(phase, int(k) + 1 if k else counts[phase], s, e))
    return out


def _union(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _covered(wins: list[Window], spans: Sequence[tuple[float, float]]) -> list[float]:
    """Per window, the time the union of ``spans`` covers inside it."""
    starts = [w.start_ms for w in wins]
    covered = [0.0] * len(wins)
    for a, b in _union(spans):
        i = max(bisect.bisect_right(starts, a) - 1, 0)
        while i < len(wins) and wins[i].start_ms < b:
            covered[i] += max(0.0, min(b, wins[i].end_ms) - max(a, wins[i].start_ms))
            i += 1
    return covered


def attribute(host: list[Window], device: list[Window] | None, ops: Sequence[Op]) -> list[OpRow]:
    """Rows per window and op name: operators in the ``host`` windows, kernels in the ``device``
    windows (the host's when None: a CPU call), and each window's uncovered time."""
    rows: list[OpRow] = []
    for kind, wins in (("operator", host), ("kernel", device if device is not None else host)):
        mine = [op for op in ops if op.kind == kind]
        if kind == "kernel" and not mine:
            continue
        starts = [w.start_ms for w in wins]
        sums: dict[tuple[int, str, str], list[float]] = {}
        for op in mine:
            i = bisect.bisect_right(starts, op.start_ms) - 1
            if i < 0 or op.start_ms >= wins[i].end_ms:
                continue  # outside the call
            acc = sums.setdefault((i, op.name, op.device), [0, 0.0, 0.0])
            acc[0] += 1
            acc[1] += op.self_ms
            acc[2] += op.end_ms - op.start_ms
        for (i, name, dev), (calls, self_ms, total_ms) in sums.items():
            w = wins[i]
            rows.append(OpRow(w.phase, w.step, w.start_ms, w.ms, name, kind, dev, int(calls), self_ms, total_ms))
        devices = sorted({op.device for op in mine}) or ["cpu"]
        for dev in devices:
            covered = _covered(wins, [(op.start_ms, op.end_ms) for op in mine if op.top and op.device == dev])
            for w, c in zip(wins, covered):
                gap = max(w.ms - c, 0.0)
                rows.append(OpRow(w.phase, w.step, w.start_ms, w.ms, UNCOVERED[kind], "uncovered", dev, 0, gap, gap))
    rows.sort(key=lambda r: (r.start_ms, r.kind, -r.self_ms))
    return rows


@dataclass(frozen=True)
class CallProfile:
    """What one profiled call spent its phases on: its :class:`OpRow` s, its windows (host and,
    on a GPU, device), how much the profiler itself cost (``profiler_ms``: its start, stop and
    event processing, outside the call), its top-level events (``top_ops``, for a trace) and how
    far the anchors that place the profiler's clock on the host's, before the call and after it,
    disagree (``alignment_us``: the placement's error, about)."""

    rows: tuple[OpRow, ...]
    host: tuple[Window, ...]
    device: tuple[Window, ...] | None = None
    events: int = 0
    profiler_ms: float = 0.0
    top_ops: tuple[Op, ...] = ()
    alignment_us: float | None = None

    def phase_ms(self, phase: str, kind: str = "operator") -> float:
        """The phase's time in this call (its windows summed; the device's for kernels on a GPU)."""
        wins = self.device if kind == "kernel" and self.device is not None else self.host
        return sum(w.ms for w in wins if w.phase == phase)

    def self_ms(self, phase: str, kind: str = "operator") -> dict[str, float]:
        """Self time per name inside ``phase``, largest first (kind ``uncovered`` included
        under its own name when asked for with ``kind="uncovered"``)."""
        out: dict[str, float] = {}
        for r in self.rows:
            if r.phase == phase and r.kind == kind:
                out[r.name] = out.get(r.name, 0.0) + r.self_ms
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))

    def top(self, phase: str, n: int = 5, kind: str = "operator") -> list[tuple[str, float, float]]:
        """The ``n`` names with the most self time in ``phase``: (name, self ms, share of the phase)."""
        total = self.phase_ms(phase, kind) or 1.0
        return [(name, ms, ms / total) for name, ms in list(self.self_ms(phase, kind).items())[:n]]

    def uncovered_ms(self, phase: str, kind: str = "operator") -> float:
        """The part of ``phase`` that no operator (``kind="kernel"``: no kernel) covers."""
        return sum(r.self_ms for r in self.rows if r.phase == phase and r.kind == "uncovered"
                   and r.name == UNCOVERED[kind])
