"""One measured ``generate()`` call: its state, its recorders, and the Measurement at the end.

This module owns the recording of a call. The model's hooks (:mod:`phasetime.core.hooks`)
call :func:`run_timed_call` when a probed ``generate()`` starts; every boundary the hooks,
the vision targets (:mod:`phasetime.core.targets`) and the draft hooks
(:mod:`phasetime.core.drafts`) see becomes a mark of each :class:`Recorder` of the call,
through one clock per recorder; at the end the marks become events and
:func:`phasetime.core.phases.derive` turns them into a
:class:`~phasetime.core.record.Measurement`. Nothing here patches a model.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from . import clock as _clock
from .errors import UnsupportedGeneration
from .generation import StopRecorder, check_mode, compiled_graphs, count_output_tokens, decoding, eos_token_ids
from .generation import audio_inputs, media_tokens_without_pixels, pixel_inputs, prompt_length, returns_prompt
from .generation import sequences_tensor
from .phases import Event, derive
from .record import Measurement
from .sensors import Boundary, Phases

if TYPE_CHECKING:
    from .hooks import ModelHooks
    from .probe import Probe

class CallState:
    """One generate() call in one thread: who records it and what generate() decided."""

    def __init__(self, recorders: list["Recorder"], pixels: dict[str, torch.Tensor]) -> None:
        self.recorders = recorders
        self.pixels = pixels
        self.stops = StopRecorder()
        self.hook_ns = 0
        self.inner: dict[str, Any] | None = None  # the inner generate()'s arguments and result
        self.discovery: list[Any] = []  # global hook handles while looking for the vision encoder
        self.compiles = 0  # graphs torch.compile compiled during the call
        self.decoding = "greedy"  # how the call decodes (generation.decoding)
        self.handles: list[Any] = []  # hooks on other modules for this call only (a draft model's)
        self.connector_watch = False  # looking for connectors after the vision modules (targets)
        self.vision_outputs: set[int] = set()  # ids of the tensors vision modules returned

    def release(self) -> None:
        """Remove this call's own hooks (a draft model's)."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()


class Recorder:
    """One probe's record of one call: its marks, vision depth and NVTX ranges."""

    def __init__(self, probe: Probe, prompt_tokens: int) -> None:
        self.probe = probe
        # the devices of the model now, not when the probe was built (.to() may have moved it)
        self.clock = probe.clock or _clock.clock_for_call(_clock.model_devices(probe.target))
        self.marks: list[tuple[str, Any, int | None]] = []
        self.depth = 0
        self.phases = Phases(prompt_tokens)  # each boundary's phase, decided once for sensors and NVTX
        self.decode_step = 0
        self.nvtx = probe.nvtx

    @property
    def prompt_tokens(self) -> int:
        return self.phases.counter.prompt_tokens

    def mark(self, kind: str, tokens: int | None = None, output: Any = None) -> None:
        if self.nvtx is not None and kind.endswith("_end"):
            self.nvtx.pop()
        self.marks.append((kind, self.clock.mark(), tokens))
        boundary = None if kind.startswith("draft") else self.phases.observe(kind, tokens)
        if boundary is not None:  # sensors sample the target's boundaries
            for sensor in self.probe.sensors:
                sensor.sample(boundary, output)
        if self.nvtx is not None and kind.endswith("_start"):
            self.nvtx.push(self._range_name(kind, boundary))

    def _range_name(self, kind: str, boundary: Boundary | None) -> str:
        if kind == "call_start":
            return "phasetime.generate"
        if kind == "vision_start":
            return "vision"
        if boundary is None:
            return "draft" if kind == "draft_start" else "draft forward"
        if boundary.forward == "prefill":
            return "prefill"
        self.decode_step += 1
        return f"decode step {self.decode_step}"

    def vision_enter(self, key: Hashable) -> None:
        if key in self.probe.vision_keys:
            self.depth += 1
            if self.depth == 1:
                self.mark("vision_start")

    def vision_exit(self, key: Hashable) -> None:
        if key in self.probe.vision_keys:
            self.depth -= 1
            if self.depth == 0:
                self.mark("vision_end")


def run_timed_call(hooks: ModelHooks, probes: list[Probe], original: Callable[..., Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """One measured generate() call: checks, marks, the call, then one Measurement per probe."""
    if hooks.call is not None:  # a generate() nested in a timed one (an assistant, say)
        raise UnsupportedGeneration("nested generate() calls on one model in one thread")
    if hooks.own_generate and hooks.inner is None:
        raise UnsupportedGeneration(
            f"{type(hooks.model).__name__} brings its own generate() and does not hand over to a standard "
            "language model's generate(); phasetime cannot tell its phases apart")
    mode = check_mode(hooks.lm, kwargs)
    if (mismatch := media_tokens_without_pixels(hooks.model, kwargs)) and any(p.vision_paths != [] for p in probes):
        raise UnsupportedGeneration(mismatch)
    if audio := audio_inputs(kwargs):
        raise UnsupportedGeneration(f"the call carries audio inputs ({', '.join(audio)}): phasetime times no audio "
                                    "encoder yet, and its time would be billed to prefill")
    prompt, cached = (0, 0) if hooks.own_generate else prompt_length(args, kwargs)
    state = CallState([Recorder(p, prompt - cached) for p in probes], pixel_inputs(kwargs))
    state.decoding = decoding(mode, kwargs)
    if state.pixels and any(p.automatic_vision and not p.vision_keys for p in probes) and not hooks.own_generate:
        hooks.targets.start_discovery(state)
    elif state.pixels and (modules := [m for p in probes for m in p.connector_search()]):
        hooks.targets.start_connector_watch(state, modules)
    hooks.local.call = state
    try:
        for r in state.recorders:
            r.clock.sync()
            for sensor in r.probe.sensors:
                sensor.start(r.prompt_tokens)
        compiled = compiled_graphs()
        for r in state.recorders:
            r.mark("call_start")
        if hooks.own_generate:
            for r in state.recorders:
                if r.probe.vision_paths is None:
                    r.mark("vision_start")
        output = original(*args, **kwargs)
        for r in state.recorders:
            r.mark("call_end")
        for r in state.recorders:
            r.clock.sync()
        state.compiles = compiled_graphs() - compiled  # a call that compiled is not a latency
    finally:
        hooks.local.call = None
        state.release()
        hooks.targets.stop_discovery(state)
        state.connector_watch, state.vision_outputs = False, set()
        for r in state.recorders:
            if r.nvtx is not None:
                r.nvtx.close_all()
    if hooks.own_generate:
        inner = state.inner or {}
        if "output" not in inner:
            raise UnsupportedGeneration(f"{type(hooks.model).__name__}.generate() never called its language model's generate()")
        prompt, cached, generated_args, generated = inner["prompt"], inner["cached"], inner["args"], inner["output"]
    else:
        generated_args, generated = (args, kwargs), output
    lengths, appended = _output_lengths(hooks, state, generated_args, generated, prompt)
    beams = int(kwargs.get("num_beams") or getattr(getattr(hooks.lm, "generation_config", None), "num_beams", 1) or 1)
    errors = []
    for r in state.recorders:
        try:
            r.probe.measurements.append(_finish(r, state, prompt - cached, lengths, output, appended, beams))
        except UnsupportedGeneration as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return output


def run_inner_call(hooks: ModelHooks, state: CallState, original: Callable[..., Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The inner generate() of a model that brings its own: vision ends where it starts."""
    state.decoding = decoding(check_mode(hooks.lm, kwargs), kwargs)
    prompt, cached = prompt_length(args, kwargs)
    state.inner = {"prompt": prompt, "cached": cached, "args": (args, kwargs)}
    for r in state.recorders:
        r.phases = Phases(prompt - cached)
        if r.probe.vision_paths is None:
            r.mark("vision_end")
    output = original(*args, **kwargs)
    state.inner["output"] = output
    return output


def _output_lengths(hooks: ModelHooks, state: CallState, call: tuple[tuple[Any, ...], dict[str, Any]],
                    output: Any, prompt: int) -> tuple[list[int], int]:
    """(output tokens of every returned row, tokens the call appended)."""
    args, kwargs = call
    sequences = sequences_tensor(output)
    generated = sequences[:, prompt:] if returns_prompt(args, kwargs) else sequences
    # Assisted rounds consult the criteria on candidates too, and a beam search on beams, not rows.
    one_per_step = state.decoding in ("greedy", "sample")
    recorded = state.stops.lengths(generated.shape[0], generated.shape[1]) if one_per_step else None
    lengths = recorded if recorded is not None else count_output_tokens(generated, eos_token_ids(hooks.lm, kwargs))
    return lengths, int(generated.shape[1])


def _finish(r: Recorder, state: CallState, prompt_tokens: int, lengths: list[int], output: Any,
            appended: int, beams: int) -> Measurement:
    times = r.clock.resolve_ms([m for _, m, _ in r.marks])
    events = [Event(kind, t, tokens) for (kind, _, tokens), t in zip(r.marks, times)]
    vision_ran = any(kind == "vision_start" for kind, _, _ in r.marks)
    if state.pixels and not vision_ran and r.probe.vision_paths != []:
        keys = ", ".join(state.pixels)
        compiled = (" If the encoder runs inside a torch.compile'd module, its hooks may not fire there: attach the "
                    "probe before compiling, or name a method (vision=['model.get_image_features']).") \
            if compiled_graphs() else ""
        raise UnsupportedGeneration(
            f"the call carries pixel inputs ({keys}) but no vision encoder ran under the probe, so vision time "
            f"would land in prefill; looked for: {', '.join(r.probe.describe_vision())}. Name the encoder with "
            "vision=['path.to.encoder', ...] (module or method paths; phasetime inspect MODEL lists the modules), "
            "or pass vision=[] to time the call without vision." + compiled)
    resources: dict[str, Any] = {}
    for sensor in r.probe.sensors:
        resources.update(sensor.finish(prompt_tokens))
    kept = output if r.probe.keep_output else sequences_tensor(output).detach().to("cpu")
    m = derive(events, prompt_tokens=prompt_tokens, output_tokens=lengths, timer=r.clock.name, output_ids=kept,
               probe_ms=state.hook_ns / 1e6, resources=resources, decoding=state.decoding, generated_tokens=appended,
               num_beams=beams)
    return dataclasses.replace(m, compiles=state.compiles) if state.compiles else m
