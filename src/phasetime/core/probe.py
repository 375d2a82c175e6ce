"""The probe: timestamped events of every ``generate()`` call of a model, and nothing else.

:class:`Probe` attaches to a model and, for every ``model.generate(...)`` call made while
it is attached, records through one :class:`~phasetime.core.clock.Clock`:

* the call's start and end (the only two device synchronisations of the call),
* the start and end of every forward of the language model, with the positions fed,
* the start and end of every outermost vision-encoder call,

and hands them to :func:`phasetime.core.phases.derive`, the one place phases are defined.
The hooks themselves belong to the model (:mod:`phasetime.core.hooks`), shared by all
probes attached to it. Sensors (:mod:`phasetime.core.sensors`) sample at the same
boundaries when a probe is given some.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any, Callable, Hashable, Sequence

import torch

from . import clock as _clock
from .errors import UnsupportedGeneration, UsageError
from .generation import check_generative, check_mode, compiled_graphs, count_output_tokens, eos_token_ids, prompt_length
from .generation import audio_inputs, media_tokens_without_pixels, pixel_inputs, returns_prompt, sequences_tensor
from .hooks import CallState, ModelHooks, unwrap
from .phases import Event, PromptCounter, derive
from .record import Measurement
from .nvtx import Nvtx as _Nvtx
from .vision import resolve_path, vision_methods, vision_modules

SCOPES = ("all", "thread")


class Probe:
    """Times every ``generate()`` call of ``model`` while attached (a context manager).

    ``vision`` overrides the automatic vision-encoder lookup with module paths (e.g.
    ``["model.vision_tower", "model.multi_modal_projector"]``) or method paths
    (``"model.get_image_features"``); ``vision=[]`` says the model has no vision to time
    (no lookup, and no error when a call carries pixels). ``clock`` defaults, at each call, to
    CUDA events on the model's first GPU (every GPU it spans synced at the call's bounds) and
    ``perf_counter_ns`` on a CPU model. ``nvtx=True`` also wraps the
    call, every vision call, the prefill and every decode step in NVTX ranges (named
    ``phasetime.generate``, ``vision``, ``prefill``, ``decode step k``). ``sensors``
    sample resources at the phase boundaries (see :mod:`phasetime.core.sensors`).
    ``scope="thread"`` records only calls made in the thread that attached the probe
    (``measure`` uses it); the default records calls from every thread. A measurement's
    ``output_ids`` holds the generated sequences, on the host; ``keep_output=True`` keeps
    generate()'s whole return instead (scores, KV cache: device memory held for as long as
    the measurement is).

    Every call appends a :class:`~phasetime.Measurement` to :attr:`measurements`. Any
    number of probes may be attached to one model, and detached in any order.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vision: Sequence[str] | None = None,
        *,
        clock: _clock.Clock | None = None,
        nvtx: bool = False,
        sensors: Sequence[Any] = (),
        scope: str = "all",
        keep_output: bool = False,
    ) -> None:
        if scope not in SCOPES:
            raise UsageError(f"scope must be one of {SCOPES}, got {scope!r}")
        if isinstance(vision, str):
            raise UsageError("vision takes a list of module paths, not a string")
        check_generative(model)
        self.model = model
        self.target = unwrap(model)
        self.nvtx = _Nvtx() if nvtx else None
        self.clock = clock  # None: the clock of each call's devices (clock_for_call)
        if clock is None:
            _clock.clock_for_call(_clock.model_devices(self.target))  # refuses an unsupported device now
        self.sensors = list(sensors)
        self.scope = scope
        self.keep_output = keep_output
        self.thread: int | None = None
        self.measurements: list[Measurement] = []
        self.vision_paths = list(vision) if vision is not None else None
        self.automatic_vision = vision is None
        self.vision_keys: list[Hashable] = []
        self._hooks: ModelHooks | None = None

    # -- attaching ---------------------------------------------------------------------
    def __enter__(self) -> "Probe":
        self.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def attach(self) -> None:
        """Start recording (idempotent)."""
        if self._hooks is not None:
            return
        hooks = ModelHooks.for_model(self.target)
        try:
            targets = self._vision_targets(hooks)
            self.vision_keys = list(targets)
            self.thread = threading.get_ident() if self.scope == "thread" else None
            hooks.add(self, targets)
        except BaseException:
            hooks.discard_if_unused()  # a failed attach leaves nothing on the model
            raise
        self._hooks = hooks

    def detach(self) -> None:
        """Stop recording; the model is restored once no probe is attached (idempotent)."""
        if self._hooks is not None:
            self._hooks.remove(self, self.vision_keys)
        self._hooks = None

    def _vision_targets(self, hooks: ModelHooks) -> dict[Hashable, Callable[[], Callable[[], None]]]:
        """key -> installer of every vision target of this probe."""
        model = self.target
        targets: dict[Hashable, Callable[[], Callable[[], None]]] = {}

        def add_module(module: Any, path: str) -> None:
            if not isinstance(module, torch.nn.Module):
                raise UsageError(f"vision path {path!r} resolves to a {type(module).__name__}, not a module or method")
            key = ("module", id(module))
            targets[key] = lambda: hooks.targets.module_target(module, key)

        def add_method(owner: Any, name: str) -> None:
            key = ("method", id(owner), name)
            targets[key] = lambda: hooks.targets.method_target(owner, name, key)

        if self.vision_paths is not None:
            for path in self.vision_paths:
                obj = resolve_path(model, path)
                if callable(obj) and not isinstance(obj, torch.nn.Module):
                    parent, _, name = path.rpartition(".")
                    add_method(resolve_path(model, parent) if parent else model, name)
                else:
                    add_module(obj, path)
            return targets
        if hooks.own_generate:
            return targets  # vision is the span before the inner generate(): see run_inner_call
        methods = vision_methods(model)
        if methods is not None:
            owner, names = methods
            for name in names:
                add_method(owner, name)
        elif hooks.targets.discovered is not None:
            key = ("discovered", id(hooks.targets.discovered))
            found = hooks.targets.discovered
            targets[key] = lambda: hooks.targets.module_target(found, key)
        else:
            for path, module in vision_modules(model):
                add_module(module, path)
        return targets

    def describe_vision(self) -> list[str]:
        """What this probe times as vision, in words (for ``phasetime inspect``)."""
        hooks = self._hooks or ModelHooks.existing(self.target) or ModelHooks(self.target)  # adds nothing
        if self.vision_paths is not None:
            return list(self.vision_paths) or ["nothing (vision=[])"]
        if hooks.own_generate:
            return ["everything before the inner language model's generate() (own generate())"]
        names = {id(m): n for n, m in self.target.named_modules()}
        methods = vision_methods(self.target)
        if methods is not None:
            owner, found = methods
            prefix = names.get(id(owner), type(owner).__name__)
            return [f"{prefix + '.' if prefix else ''}{name}()" for name in found]
        if hooks.targets.discovered is not None:
            return [f"{names.get(id(hooks.targets.discovered), '?')} (found through the pixel tensor)"]
        return [path for path, _ in vision_modules(self.target)] or ["nothing found yet"]


class _Recorder:
    """One probe's record of one call: its marks, vision depth and NVTX ranges."""

    def __init__(self, probe: Probe, prompt_tokens: int) -> None:
        self.probe = probe
        # the devices of the model now, not when the probe was built (.to() may have moved it)
        self.clock = probe.clock or _clock.clock_for_call(_clock.model_devices(probe.target))
        self.marks: list[tuple[str, Any, int | None]] = []
        self.depth = 0
        self.counter = PromptCounter(prompt_tokens)
        self.decode_step = 0
        self.nvtx = probe.nvtx

    def mark(self, kind: str, tokens: int | None = None, output: Any = None) -> None:
        if self.nvtx is not None and kind.endswith("_end"):
            self.nvtx.pop()
        self.marks.append((kind, self.clock.mark(), tokens))
        for sensor in self.probe.sensors:
            sensor.sample(kind, tokens, output)
        if self.nvtx is not None and kind.endswith("_start"):
            self.nvtx.push(self._range_name(kind, tokens))

    def _range_name(self, kind: str, tokens: int | None) -> str:
        if kind == "call_start":
            return "phasetime.generate"
        if kind == "vision_start":
            return "vision"
        if self.counter.feed(tokens or 0):
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
    check_mode(hooks.lm, kwargs)
    if (mismatch := media_tokens_without_pixels(hooks.model, kwargs)) and any(p.vision_paths != [] for p in probes):
        raise UnsupportedGeneration(mismatch)
    if audio := audio_inputs(kwargs):
        raise UnsupportedGeneration(f"the call carries audio inputs ({', '.join(audio)}): phasetime times no audio "
                                    "encoder yet, and its time would be billed to prefill")
    prompt, cached = (0, 0) if hooks.own_generate else prompt_length(args, kwargs)
    state = CallState([_Recorder(p, prompt - cached) for p in probes], pixel_inputs(kwargs))
    if state.pixels and any(p.automatic_vision and not p.vision_keys for p in probes) and not hooks.own_generate:
        hooks.targets.start_discovery(state)
    hooks.local.call = state
    try:
        for r in state.recorders:
            r.clock.sync()
            for sensor in r.probe.sensors:
                sensor.start(r.counter.prompt_tokens)
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
        hooks.targets.stop_discovery(state)
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
    lengths = _output_lengths(hooks, state, generated_args, generated, prompt)
    errors = []
    for r in state.recorders:
        try:
            r.probe.measurements.append(_finish(r, state, prompt - cached, lengths, output))
        except UnsupportedGeneration as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
    return output


def run_inner_call(hooks: ModelHooks, state: CallState, original: Callable[..., Any],
                   args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The inner generate() of a model that brings its own: vision ends where it starts."""
    check_mode(hooks.lm, kwargs)
    prompt, cached = prompt_length(args, kwargs)
    state.inner = {"prompt": prompt, "cached": cached, "args": (args, kwargs)}
    for r in state.recorders:
        r.counter = PromptCounter(prompt - cached)
        if r.probe.vision_paths is None:
            r.mark("vision_end")
    output = original(*args, **kwargs)
    state.inner["output"] = output
    return output


def _output_lengths(hooks: ModelHooks, state: CallState, call: tuple[tuple[Any, ...], dict[str, Any]],
                    output: Any, prompt: int) -> list[int]:
    args, kwargs = call
    sequences = sequences_tensor(output)
    generated = sequences[:, prompt:] if returns_prompt(args, kwargs) else sequences
    recorded = state.stops.lengths(generated.shape[0], generated.shape[1])
    return recorded if recorded is not None else count_output_tokens(generated, eos_token_ids(hooks.lm, kwargs))


def _finish(r: _Recorder, state: CallState, prompt_tokens: int, lengths: list[int], output: Any) -> Measurement:
    times = r.clock.resolve_ms([m for _, m, _ in r.marks])
    events = [Event(kind, t, tokens) for (kind, _, tokens), t in zip(r.marks, times)]
    vision_ran = any(kind == "vision_start" for kind, _, _ in r.marks)
    if state.pixels and not vision_ran and r.probe.vision_paths != []:
        keys = ", ".join(state.pixels)
        raise UnsupportedGeneration(
            f"the call carries pixel inputs ({keys}) but no vision encoder ran under the probe, so vision time "
            f"would land in prefill; looked for: {', '.join(r.probe.describe_vision())}. Name the encoder with "
            "vision=['path.to.encoder', ...] (module or method paths; phasetime inspect MODEL lists the modules), "
            "or pass vision=[] to time the call without vision")
    resources: dict[str, Any] = {}
    for sensor in r.probe.sensors:
        resources.update(sensor.finish(prompt_tokens))
    kept = output if r.probe.keep_output else sequences_tensor(output).detach().to("cpu")
    m = derive(events, prompt_tokens=prompt_tokens, output_tokens=lengths, timer=r.clock.name, output_ids=kept,
               probe_ms=state.hook_ns / 1e6, resources=resources)
    return dataclasses.replace(m, compiles=state.compiles) if state.compiles else m
