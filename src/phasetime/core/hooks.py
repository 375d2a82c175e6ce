"""The hooks one model carries while any probe is attached to it, shared by every probe.

A model gets one :class:`ModelHooks`, installed when the first :class:`~phasetime.Probe`
attaches and removed when the last one detaches, in whatever order they detach: only this
object patches the model, so no probe can capture another's patch and restore the wrong
method. Patched methods and hooks are:

* ``generate`` (the call's start and end), and for a model that brings its own generate()
  (BLIP-2 and the like) the inner language model's ``generate`` too;
* ``_get_stopping_criteria`` of the language model, so each row's end is recorded as
  generate() decides it (see :class:`~phasetime.core.generation.StopRecorder`);
* ``_get_candidate_generator`` of the language model, so the rounds of assisted and
  prompt-lookup decoding are marked (see :mod:`phasetime.core.drafts`);
* forward pre- and post-hooks on the module whose forward generate() runs;
* the vision targets the probes asked for, reference-counted.

The state of a call lives in a :class:`~phasetime.core.call.CallState` kept per thread: two threads can run
measured calls on one model at once, and a hook only ever writes into the call of the
thread it runs in. The hooks are wrapped in ``torch.compiler.disable`` so that a compiled
forward calls them eagerly; each measures its own host time (``CallState.hook_ns``); what a call records is :mod:`phasetime.core.call`'s.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from .call import CallState, Recorder, run_inner_call, run_timed_call
from .drafts import wrap_candidate_generator
from .errors import UnsupportedGeneration
from .generation import positions_fed
from .targets import VisionTargets

if TYPE_CHECKING:
    from .probe import Probe

_ATTR = "_phasetime_hooks"
_CREATE_LOCK = threading.Lock()
INNER_LM_NAMES = ("language_model", "text_model", "text_decoder")


def unwrap(model: Any) -> Any:
    """The module under a ``torch.compile(model)`` wrapper (its hooks are the ones that run)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def brings_own_generate(model: Any) -> bool:
    """Whether the model's class overrides GenerationMixin's generate()."""
    generate = getattr(type(model), "generate", None)
    return generate is not None and getattr(generate, "__qualname__", "") != "GenerationMixin.generate"


def hands_over_to_itself(model: Any) -> bool:
    """Whether a model's own generate() hands over to the standard one on the same model
    (``super().generate(...)``, as Janus does in text mode): such a call is timed as a standard
    one, its forwards being the model's own."""
    cls: Any = type(model)  # hashable, as lru_cache needs (mypy types a class as unhashable)
    return _calls_super_generate(cls)


@functools.lru_cache(maxsize=None)
def _calls_super_generate(cls: Any) -> bool:
    """Read once per class: a new ModelHooks is made at every measure() call."""
    import inspect

    try:
        source = inspect.getsource(cls.generate)
    except (OSError, TypeError):
        return False
    return "super().generate(" in source


def inner_language_model(model: Any) -> Any | None:
    """The language model a model with its own generate() hands over to, if it is a standard one."""
    for name in INNER_LM_NAMES:
        inner = getattr(model, name, None)
        if isinstance(inner, torch.nn.Module) and hasattr(inner, "generate") and not brings_own_generate(inner):
            return inner
    return None


class ModelHooks:
    """See the module docstring; get it with :meth:`for_model`, never build it directly."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        own = brings_own_generate(model)
        self.inner = inner_language_model(model) if own else None
        # an own generate() that calls the standard one on itself is timed as a standard call
        self.own_generate = own and not (self.inner is None and hands_over_to_itself(model))
        self.lm = self.inner if self.inner is not None else model
        self.lock = threading.RLock()
        self.local = threading.local()
        self.probes: list["Probe"] = []
        self.installed = False
        self._patches: list[tuple[Any, str, bool, Any, Any]] = []
        self._handles: list[Any] = []
        self._targets: dict[Hashable, list[Any]] = {}  # key -> [count, undo]
        self.targets = VisionTargets(self)

    @classmethod
    def existing(cls, model: torch.nn.Module) -> "ModelHooks | None":
        """The model's hooks if a probe made them (nothing is added to the model)."""
        found = vars(model).get(_ATTR)
        return found if isinstance(found, cls) else None

    def discard_if_unused(self) -> None:
        """Take this object off its model when no probe is attached (after a failed attach)."""
        with self.lock:
            if not self.probes and not self.installed:
                with _CREATE_LOCK:
                    if vars(self.model).get(_ATTR) is self:
                        delattr(self.model, _ATTR)

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> "ModelHooks":
        with _CREATE_LOCK:
            hooks = vars(model).get(_ATTR)
            if hooks is None:
                hooks = cls(model)
                object.__setattr__(model, _ATTR, hooks)
            return hooks

    # -- probes come and go ---------------------------------------------------------------
    def add(self, probe: "Probe", vision_keys: dict[Hashable, Callable[[], Callable[[], None]]]) -> None:
        with self.lock:
            if not self.installed:
                self._install()
            acquired: list[Hashable] = []
            try:
                for key, install in vision_keys.items():
                    self.acquire(key, install)
                    acquired.append(key)
            except BaseException:
                self._release_all(acquired)  # what this probe took, never another probe's hooks
                if not self.probes:
                    self._uninstall()
                raise
            self.probes.append(probe)

    def remove(self, probe: "Probe", vision_keys: list[Hashable]) -> None:
        with self.lock:
            if probe not in self.probes:
                return
            self.probes.remove(probe)
            self._release_all(vision_keys)
            if not self.probes:
                self._uninstall()

    def acquire(self, key: Hashable, install: Callable[[], Callable[[], None]]) -> None:
        entry = self._targets.get(key)
        if entry is None:
            self._targets[key] = [1, install()]
        else:
            entry[0] += 1

    def _release_all(self, keys: list[Hashable]) -> None:
        for key in keys:
            entry = self._targets.get(key)
            if entry is None:
                continue
            entry[0] -= 1
            if entry[0] == 0:
                del self._targets[key]
                entry[1]()

    # -- installing -------------------------------------------------------------------------
    def _install(self) -> None:
        self.installed = True
        try:
            self.patch(self.model, "generate", self._wrap_generate)
            if self.inner is not None:
                self.patch(self.inner, "generate", self._wrap_inner_generate)
            if callable(getattr(self.lm, "_get_stopping_criteria", None)):
                self.patch(self.lm, "_get_stopping_criteria", self._wrap_criteria)
            if callable(getattr(self.lm, "_get_candidate_generator", None)):
                self.patch(self.lm, "_get_candidate_generator", wrap_candidate_generator(self))
            # Our pre-hooks go first and post-hooks last, so the timed span covers any other hooks.
            self._handles.append(self.lm.register_forward_pre_hook(self._forward_pre, with_kwargs=True, prepend=True))
            self._handles.append(self.lm.register_forward_hook(self._forward_post))
        except BaseException:
            self._uninstall()
            raise

    def _uninstall(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name, had_own, previous, wrapper in reversed(self._patches):
            if vars(owner).get(name) is not wrapper:
                continue  # someone patched over us: our wrapper stays, inert, and calls through
            if had_own:
                setattr(owner, name, previous)
            else:
                delattr(owner, name)
        self._patches.clear()
        for _, undo in list(self._targets.values()):
            undo()
        self._targets.clear()
        self.installed = False
        with _CREATE_LOCK:
            if vars(self.model).get(_ATTR) is self:
                delattr(self.model, _ATTR)

    def patch(self, owner: Any, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[], None]:
        """Replace ``owner.name`` by a wrapper (signature kept: generate() inspects that of
        get_image_features); returns the undo function."""
        had_own = name in vars(owner)
        previous = vars(owner)[name] if had_own else None
        original = getattr(owner, name)
        wrapper = functools.wraps(original)(make_wrapper(original))
        setattr(owner, name, wrapper)
        entry = (owner, name, had_own, previous, wrapper)
        self._patches.append(entry)

        def undo() -> None:
            if entry in self._patches:
                self._patches.remove(entry)
                if vars(owner).get(name) is wrapper:
                    if had_own:
                        setattr(owner, name, previous)
                    else:
                        delattr(owner, name)

        return undo

    # -- the call -------------------------------------------------------------------------------
    @property
    def call(self) -> CallState | None:
        return getattr(self.local, "call", None)

    def recorders_here(self) -> list["Probe"]:
        ident = threading.get_ident()
        with self.lock:
            return [p for p in self.probes if p.thread is None or p.thread == ident]

    def _wrap_generate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        def timed_generate(*args: Any, **kwargs: Any) -> Any:
            if not hooks.installed:
                return original(*args, **kwargs)
            probes = hooks.recorders_here()
            if not probes:
                return original(*args, **kwargs)
            return run_timed_call(hooks, probes, original, args, kwargs)

        return timed_generate

    def _wrap_inner_generate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        def inner_generate(*args: Any, **kwargs: Any) -> Any:
            state = hooks.call if hooks.installed else None
            if state is None or state.inner is not None:
                return original(*args, **kwargs)
            return run_inner_call(hooks, state, original, args, kwargs)

        return inner_generate

    def _wrap_criteria(self, original: Callable[..., Any]) -> Callable[..., Any]:
        hooks = self

        def get_stopping_criteria(*args: Any, **kwargs: Any) -> Any:
            criteria = original(*args, **kwargs)
            state = hooks.call if hooks.installed else None
            return criteria if state is None else state.stops.wrap(criteria)

        return get_stopping_criteria

    def each(self, action: Callable[[Recorder], None]) -> None:
        """Run ``action`` on every recorder of this thread's call, counting the time as the probe's own."""
        state = self.call
        if state is None:
            return
        start = time.perf_counter_ns()
        for recorder in state.recorders:
            action(recorder)
        state.hook_ns += time.perf_counter_ns() - start

    @torch.compiler.disable
    def _forward_pre(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        state = self.call
        if state is None:
            return None
        tokens = positions_fed(args, kwargs)
        if tokens is None:
            raise UnsupportedGeneration("a forward received neither input_ids nor inputs_embeds")
        self.each(lambda r: r.mark("forward_start", tokens))
        return None

    @torch.compiler.disable
    def _forward_post(self, module: Any, args: Any, output: Any) -> None:
        self.each(lambda r: r.mark("forward_end", output=output))
        return None

    def vision_enter(self, key: Hashable) -> None:
        self.each(lambda r: r.vision_enter(key))

    def vision_exit(self, key: Hashable) -> None:
        self.each(lambda r: r.vision_exit(key))
