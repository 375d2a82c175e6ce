"""One probed ``generate()`` call, from its checks to a measurement per probe.

:func:`run_call` is what the model's hooks (:mod:`.hooks`) run in place of ``generate()``
while probes are attached: it refuses what cannot be timed before anything runs, gets the
call's media map (known, or found now by the untimed discovery call, :mod:`.media`), opens a
recorder per probe (:mod:`.call`), runs the call between its two synchronisations, and hands
each probe its measurement. It knows the hooks only as a :class:`Site` and the probes as
:class:`Subscriber` s.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Protocol

import torch

from ..core import clock as _clock
from ..core.errors import UnsupportedGeneration
from ..core.record import Measurement
from . import media as _media
from .calibrate import unseen_ns
from .call import CallState, Recorder, finish
from .generation import (check_mode, compiled_graphs, decoding, ends_only_at_eos, eos_token_ids, media_inputs,
                         media_tokens_without_media, num_beams, prompt_length, returns_prompt, text_tensors)
from .outputs import count_output_tokens, sequences_tensor
from .profiling import CallProfiler
from .structure import may_run_compiled

TargetKey = tuple[str, str]  # ("module" or "method", path in the model)


class Subscriber(Protocol):
    """What the hooks ask of a probe attached to them."""

    thread: int | None

    def needs_map(self, media: dict[str, torch.Tensor]) -> bool:
        """Whether a medium of the call is left to the discovery (not named by the user)."""
        ...

    def excludes(self, medium: str) -> bool:
        """Whether the user said the model has no ``medium`` to time (``vision=[]``)."""
        ...

    def recorder(self, prompt_tokens: int, media: dict[str, torch.Tensor], found: _media.MediaMap | None) -> Recorder:
        """This probe's recorder of a call."""
        ...


class Site(Protocol):
    """What a call needs of the model's hooks."""

    model: torch.nn.Module
    lm: torch.nn.Module
    inner: Any
    own_generate: bool
    local: threading.local

    def ensure(self, targets: Any, in_forward: bool = True) -> None:
        """Hook these media targets (once; ``in_forward``: they may run inside a compiled forward)."""
        ...

    def forward_hooks(self, guarded: bool) -> None:
        """Keep the forward hooks out of compiled graphs (``guarded``), or not (cheaper)."""
        ...

    @property
    def guarded(self) -> bool:
        """Whether the forward hooks are kept out of compiled graphs now."""
        ...


def run_call(site: Site, probes: list[Subscriber], original: Callable[..., Any], args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    """One measured generate() call: checks, the media map, marks, the call, then one
    measurement per probe."""
    mode = _check(site, probes, kwargs)
    media = media_inputs(kwargs)
    found = _media_map(site, probes, original, args, kwargs, media) if media else None
    prompt, cached = (0, 0) if site.own_generate else prompt_length(args, kwargs)
    recorders = [p.recorder(prompt - cached, media, found) for p in probes]
    profiler, host = _profiling(site, recorders, prompt - cached) if any(r.profile for r in recorders) else (None, None)
    site.ensure([key for r in recorders for key in r.media],
                in_forward=found is None or found.source != "dataflow" or any(f.in_forward for f in found.found))
    site.forward_hooks(guarded=may_run_compiled(site.model, kwargs))
    state = CallState(recorders, media)
    state.profiler, state.host = profiler, host
    state.decoding, state.beams = decoding(mode, kwargs, site.lm), num_beams(site.lm, kwargs)
    state.record_stops = not ends_only_at_eos(site.lm, kwargs)
    output = _timed(site, state, original, args, kwargs)
    _measure(site, state, args, kwargs, output, prompt - cached)
    return output


def _profiling(site: Site, recorders: list[Recorder], prompt_tokens: int) -> tuple[CallProfiler, Recorder]:
    """The call's profiler, and the recorder on the host's clock that places its operators: a
    recorder of the call already on it (a CPU model), else one more, delivered to nobody."""
    host = next((r for r in recorders if isinstance(r.clock, _clock.PerfCounterClock)), None)
    if host is None:
        first = next(r for r in recorders if r.profile)
        host = Recorder(_clock.PerfCounterClock(), prompt_tokens, dict(first.media), expected=dict(first.expected),
                        deliver=None)
        recorders.append(host)
    return CallProfiler(_clock.model_devices(site.model)), host


def _check(site: Site, probes: list[Subscriber], kwargs: dict[str, Any]) -> str:
    """The call's generation mode, or UnsupportedGeneration before anything runs."""
    if getattr(site.local, "call", None) is not None:  # a generate() nested in a timed one (an assistant, say)
        raise UnsupportedGeneration("nested generate() calls on one model in one thread")
    if site.own_generate and site.inner is None:
        raise UnsupportedGeneration(
            f"{type(site.model).__name__} brings its own generate() and does not hand over to a standard "
            "language model's generate(); phasetime cannot tell its phases apart")
    mode = check_mode(site.lm, kwargs)
    mismatch = media_tokens_without_media(site.model, kwargs)
    if mismatch and not all(p.excludes("vision") for p in probes):
        raise UnsupportedGeneration(mismatch)
    return mode


def _media_map(site: Site, probes: list[Subscriber], original: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any], media: dict[str, torch.Tensor]) -> _media.MediaMap | None:
    """What this kind of call's media are timed as: known, or found now by the discovery call."""
    if not any(p.needs_map(media) for p in probes):
        return None
    kind = frozenset(media)
    found = _media.known(site.model, kind)
    if found is None:
        found = _media.discover(site.model, site.lm, lambda: original(*args, **_media.discovery_kwargs(kwargs)),
                                media, text_tensors(args, kwargs))
        _media.remember(site.model, found)
    return found


def _timed(site: Site, state: CallState, original: Callable[..., Any], args: tuple[Any, ...],
           kwargs: dict[str, Any]) -> Any:
    """The call itself, between its two synchronisations."""
    site.local.call = state
    try:
        if state.profiler is not None:
            state.profiler.start()
        for r in state.recorders:
            r.clock.sync()
            for sensor in r.sensors:
                sensor.start(r.prompt_tokens)
        compiled = compiled_graphs()
        state.mark("call_start")
        output = original(*args, **kwargs)
        state.mark("call_end")
        for r in state.recorders:
            r.clock.sync()
        state.compiles = compiled_graphs() - compiled  # a call that compiled is not a latency
    finally:
        if state.profiler is not None:
            state.profiler.stop()
        site.local.call = None
        state.release()
        for r in state.recorders:
            if r.nvtx is not None:
                r.nvtx.close_all()
    return output


def _measure(site: Site, state: CallState, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any,
             prompt_tokens: int) -> None:
    """Each recorder's measurement, delivered (the first refusal raised after all)."""
    if site.own_generate:
        inner = state.inner or {}
        if "output" not in inner:
            raise UnsupportedGeneration(f"{type(site.model).__name__}.generate() never called its language "
                                        "model's generate()")
        prompt, prompt_tokens = inner["prompt"], inner["prompt"] - inner["cached"]
        (args, kwargs), generated = inner["args"], inner["output"]
    else:
        prompt, generated = prompt_length(args, kwargs)[0], output
    sequences = sequences_tensor(generated)
    new = sequences[:, prompt:] if returns_prompt(args, kwargs) else sequences
    # Assisted rounds consult the criteria on candidates too, and a beam search on beams, not rows.
    recorded = state.stops.lengths(new.shape[0], new.shape[1]) if state.decoding in ("greedy", "sample") else None
    lengths = recorded if recorded is not None else count_output_tokens(new, eos_token_ids(site.lm, kwargs))
    errors = []
    probe_ms = state.probe_ms(unseen_ns(site.guarded))
    made: dict[int, Measurement] = {}
    for r in state.recorders:
        try:
            made[id(r)] = finish(r, state, prompt_tokens, lengths, output, int(new.shape[1]), compiled_graphs() > 0,
                                 probe_ms)
        except UnsupportedGeneration as exc:
            errors.append(exc)
    host = state.host
    for r in state.recorders:
        m = made.get(id(r))
        if m is None or r.deliver is None:
            continue
        if r.profile and host is not None and id(host) in made:
            m = dataclasses.replace(m, profile=state.profiler.profile(m, made[id(host)], host.marks[0][1]))
        r.deliver(m)
    if errors:
        raise errors[0]
