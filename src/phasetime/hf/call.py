"""One measured ``generate()`` call: its state, its recorders, and a Measurement per recorder.

The model's hooks (:mod:`.hooks`) open a :class:`CallState` when a probed ``generate()``
starts, with one :class:`Recorder` per probe recording it (the probe makes its recorder: this
module knows no probe). Every boundary the hooks see becomes a mark of each recorder, through
the recorder's clock; at the end :func:`finish` turns one recorder's marks into events and
:func:`phasetime.core.phases.derive` makes the :class:`~phasetime.core.record.Measurement`.
Nothing here patches a model.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Hashable, Sequence

import torch

from ..core.boundaries import Boundary, Phases
from ..core.clock import Clock
from ..core.errors import UnsupportedGeneration
from ..core.phases import Event, derive
from ..core.record import Measurement
from .generation import medium_of
from .outputs import StopRecorder, sequences_tensor


class Recorder:
    """One probe's record of one call: its marks, the media it times, its NVTX ranges and
    sensors. ``media`` maps the keys of the hooked media targets this recorder times to their
    phase (vision or audio); ``expected`` says, per medium the call carries, what it looked for
    (None: the user said there is nothing to time); ``deliver`` receives the measurement."""

    def __init__(self, clock: Clock, prompt_tokens: int, media: dict[Hashable, str], *,
                 expected: dict[str, str | None], sensors: Sequence[Any] = (), nvtx: Any = None,
                 keep_output: bool = False, deliver: Callable[[Measurement], None] | None,
                 profile: bool = False) -> None:
        self.clock = clock
        self.now = clock.mark  # looked up once: the hooks call it at every step
        self.media = media
        self.expected = expected
        self.sensors = list(sensors)
        self.nvtx = nvtx
        self.keep_output = keep_output
        self.deliver = deliver  # None: a recorder of the host's clock for a profiled call only
        self.profile = profile
        self.marks: list[tuple[str, Any, int | None]] = []
        self.depth = {"vision": 0, "audio": 0}
        self.phases = Phases(prompt_tokens)  # each boundary's phase, decided once for sensors and NVTX
        self.observed = bool(self.sensors) or nvtx is not None  # only they need each boundary's phase
        self.decode_step = 0

    @property
    def prompt_tokens(self) -> int:
        return self.phases.counter.prompt_tokens

    def restart(self, prompt_tokens: int) -> None:
        """The prompt is known only now (a model with its own generate() hands over to its
        language model's): count prefill positions from here."""
        self.phases = Phases(prompt_tokens)

    def mark(self, kind: str, tokens: int | None = None, output: Any = None) -> None:
        nvtx = self.nvtx
        if nvtx is not None and kind.endswith("_end"):
            nvtx.pop()
        self.marks.append((kind, self.now(), tokens))
        if not self.observed:
            return
        boundary = None if kind.startswith("draft") else self.phases.observe(kind, tokens)
        if boundary is not None:  # sensors sample the target's boundaries
            for sensor in self.sensors:
                sensor.sample(boundary, output)
        if nvtx is not None and kind.endswith("_start"):
            nvtx.push(self._range_name(kind, boundary))

    def _range_name(self, kind: str, boundary: Boundary | None) -> str:
        if kind == "call_start":
            return "phasetime.generate"
        if kind in ("vision_start", "audio_start"):
            return kind[:-6]
        if boundary is None:
            return "draft" if kind == "draft_start" else "draft forward"
        if boundary.forward == "prefill":
            return "prefill"
        self.decode_step += 1
        return f"decode step {self.decode_step}"

    def media_enter(self, key: Hashable) -> None:
        phase = self.media.get(key)
        if phase is not None:
            self.depth[phase] += 1
            if self.depth[phase] == 1:
                self.mark(f"{phase}_start")

    def media_exit(self, key: Hashable) -> None:
        phase = self.media.get(key)
        if phase is not None:
            self.depth[phase] -= 1
            if self.depth[phase] == 0:
                self.mark(f"{phase}_end")


class CallState:
    """One generate() call in one thread: who records it and what generate() decided."""

    def __init__(self, recorders: list[Recorder], media: dict[str, torch.Tensor]) -> None:
        self.recorders = recorders
        self.media = media  # the call's media inputs, by key
        self.stops = StopRecorder()
        self.record_stops = False  # record each row's end as the criteria decide it (else: its first EOS)
        self.hook_ns = 0  # the probe's own time its hooks measured
        # (append a mark, read the clock) of each recorder, when none has anything else to do at a
        # boundary (no sensor, no NVTX): the forward hooks then only stamp, at every step
        self.quick = None if any(r.observed for r in recorders) else [(r.marks.append, r.now) for r in recorders]
        self.inner: dict[str, Any] | None = None  # the inner generate()'s arguments and result
        self.compiles = 0  # graphs torch.compile compiled during the call
        self.decoding = "greedy"  # how the call decodes (generation.decoding)
        self.beams = 1
        self.handles: list[Any] = []  # hooks on other modules for this call only (a draft model's)
        self.profiler: Any = None  # a CallProfiler when a recorder profiles the call
        self.host: Recorder | None = None  # the recorder on the host's clock that places its operators

    def release(self) -> None:
        """Remove this call's own hooks (a draft model's)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def mark(self, kind: str, tokens: int | None = None, output: Any = None) -> None:
        """Mark a boundary for every recorder, counting the time as the probe's own."""
        start = time.perf_counter_ns()
        for recorder in self.recorders:
            recorder.mark(kind, tokens, output)
        self.hook_ns += time.perf_counter_ns() - start

    def probe_ms(self, unseen: tuple[float, float]) -> float:
        """The probe's own time in this call: what its hooks timed, and what they could not
        (``unseen``: ns per forward hook call, ns per stopping-criteria call; :mod:`.calibrate`)."""
        per_hook, per_step = unseen
        forward_hooks = sum(1 for kind, _, _ in self.recorders[0].marks if kind in ("forward_start", "forward_end")) \
            if self.recorders else 0
        return (self.hook_ns + forward_hooks * per_hook + len(self.stops.steps) * per_step) / 1e6


def _missing_media(r: Recorder, state: CallState, compiled: bool) -> str | None:
    """Why a recorder cannot time this call: a medium it carries ran under no hook."""
    ran = {kind.removesuffix("_start") for kind, _, _ in r.marks if kind in ("vision_start", "audio_start")}
    for medium in sorted({medium_of(key) for key in state.media}):
        looked = r.expected.get(medium, "")
        if looked is None or medium in ran:
            continue
        keys = ", ".join(k for k in state.media if medium_of(k) == medium)
        hint = (" The model is compiled (torch.compile): hooks added after it compiled do not run inside its "
                "graphs; attach the probe before the first compiled call.") if compiled else ""
        return (f"the call carries {medium} inputs ({keys}) but no {medium} encoder ran under the probe, so its time "
                f"would land in prefill; looked for: {looked or 'nothing found'}. Name the encoder with "
                f"{medium}=['path.to.encoder', ...] (module or method paths; phasetime inspect MODEL lists what it "
                f"finds), or pass {medium}=[] to time the call without it." + hint)
    return None


def finish(r: Recorder, state: CallState, prompt_tokens: int, lengths: list[int], output: Any,
           appended: int, compiled: bool, probe_ms: float) -> Measurement:
    """The measurement of one recorder's call (``lengths``: each returned row's output tokens,
    ``appended``: tokens the call appended, ``probe_ms``: the probe's own time in it)."""
    problem = _missing_media(r, state, compiled)
    if problem:
        raise UnsupportedGeneration(problem)
    times = r.clock.resolve_ms([m for _, m, _ in r.marks])
    events = [Event(kind, t, tokens) for (kind, _, tokens), t in zip(r.marks, times)]
    resources: dict[str, Any] = {}
    for sensor in r.sensors:
        resources.update(sensor.finish(prompt_tokens))
    kept = output if r.keep_output else sequences_tensor(output).detach().to("cpu")
    m = derive(events, prompt_tokens=prompt_tokens, output_tokens=lengths, timer=r.clock.name, output_ids=kept,
               probe_ms=probe_ms, resources=resources, decoding=state.decoding, generated_tokens=appended,
               num_beams=state.beams)
    return dataclasses.replace(m, compiles=state.compiles) if state.compiles else m
