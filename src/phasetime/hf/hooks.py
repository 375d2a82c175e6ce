"""The hooks one model carries while any probe is attached to it, shared by every probe.

A model gets one :class:`ModelHooks`, installed when the first probe attaches and removed
when the last one detaches, in whatever order they detach: only this object changes the model
(through :class:`~.patches.Patches`), so no probe can capture another's patch and restore the
wrong method. It changes:

* ``generate`` (the call's start and end), and for a model that brings its own generate()
  (BLIP-2 and the like) the inner language model's ``generate`` too;
* ``_get_stopping_criteria`` of the language model, so each row's end is recorded as
  generate() decides it (:class:`~.outputs.StopRecorder`);
* ``_get_candidate_generator`` of the language model, so the rounds of assisted and
  prompt-lookup decoding are marked (:mod:`.drafts`);
* forward pre- and post-hooks on the module whose forward generate() runs;
* the media targets the probes time: modules found by following the data (:mod:`.media`),
  or named by the user, and methods named by the user.

A probed call itself is :func:`.timed.run_call`'s (before the first call that carries a kind
of media, the media discovery call, :func:`.media.discover`, not timed). The state of a call
lives in a :class:`~.call.CallState` kept per thread: two threads can run measured calls on one model at once, and a hook only ever
writes into the call of the thread it runs in. Hooks are wrapped in ``torch.compiler.disable``
so that a compiled forward calls them eagerly; each measures its own host time
(``CallState.hook_ns``).
"""

from __future__ import annotations

import threading
from time import perf_counter_ns
from typing import Any, Callable, Hashable

import torch

from ..core.errors import UnsupportedGeneration
from .call import CallState
from .drafts import instrument
from .generation import check_mode, decoding, positions_fed, prompt_length
from .names import resolve_path
from .patches import Patches
from .structure import brings_own_generate, forget_compiled, hands_over_to_itself, inner_language_model
from .timed import Subscriber, TargetKey, run_call

_ATTR = "_phasetime_hooks"
_CREATE_LOCK = threading.Lock()


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
        self.probes: list[Subscriber] = []
        self.installed = False
        self.patches = Patches()
        self._forward: tuple[list[Any], bool] | None = None  # the forward hooks' handles, and whether guarded
        self._guarded = (torch.compiler.disable(self._forward_pre), torch.compiler.disable(self._forward_post))

    @classmethod
    def existing(cls, model: torch.nn.Module) -> "ModelHooks | None":
        """The model's hooks if a probe made them (nothing is added to the model)."""
        found = vars(model).get(_ATTR)
        return found if isinstance(found, cls) else None

    @classmethod
    def for_model(cls, model: torch.nn.Module) -> "ModelHooks":
        with _CREATE_LOCK:
            hooks = vars(model).get(_ATTR)
            if hooks is None:
                hooks = cls(model)
                object.__setattr__(model, _ATTR, hooks)
            return hooks

    def discard_if_unused(self) -> None:
        """Take this object off its model when no probe is attached (after a failed attach)."""
        with self.lock:
            if not self.probes and not self.installed:
                with _CREATE_LOCK:
                    if vars(self.model).get(_ATTR) is self:
                        delattr(self.model, _ATTR)

    # -- probes come and go ---------------------------------------------------------------
    def add(self, probe: Subscriber, targets: list[TargetKey]) -> None:
        with self.lock:
            if not self.installed:
                self._install()
            try:
                self.ensure(targets)
            except BaseException:
                if not self.probes:
                    self._uninstall()
                raise
            self.probes.append(probe)

    def remove(self, probe: Subscriber) -> None:
        with self.lock:
            if probe not in self.probes:
                return
            self.probes.remove(probe)
            if not self.probes:
                self._uninstall()

    def ensure(self, targets: Any, in_forward: bool = True) -> None:
        """Hook every media target in ``targets`` (once: a target stays until the last probe
        leaves); a compiled forward is traced again, with the new hooks, when they may run inside
        it (``in_forward``)."""
        with self.lock:
            new = [key for key in targets if not self.patches.has_target(key)]
            for key in new:
                self.patches.target(key, self._installer(key))
            if in_forward and any(kind == "module" for kind, _ in new):
                forget_compiled(self.model)

    # -- installing -------------------------------------------------------------------------
    def _install(self) -> None:
        self.installed = True
        try:
            self.patches.patch(self.model, "generate", self._wrap_generate)
            if self.inner is not None:
                self.patches.patch(self.inner, "generate", self._wrap_inner_generate)
            if callable(getattr(self.lm, "_get_stopping_criteria", None)):
                self.patches.patch(self.lm, "_get_stopping_criteria", self._wrap_criteria)
            if callable(getattr(self.lm, "_get_candidate_generator", None)):
                self.patches.patch(self.lm, "_get_candidate_generator", self._wrap_candidates)
            self.forward_hooks(guarded=True)
        except BaseException:
            self._uninstall()
            raise

    def forward_hooks(self, guarded: bool) -> None:
        """The hooks on the language model's forward, kept out of compiled graphs (``guarded``:
        wrapped in ``torch.compiler.disable``, which costs ~2 us a hook) only when a call may run
        compiled code around that forward. Our pre-hook goes first and our post-hook last, so the
        timed span covers any other hooks."""
        with self.lock:
            if self._forward is not None and self._forward[1] == guarded:
                return
            self._remove_forward_hooks()
            pre, post = self._guarded if guarded else (self._forward_pre, self._forward_post)
            self._forward = ([self.lm.register_forward_pre_hook(pre, with_kwargs=True, prepend=True),
                              self.lm.register_forward_hook(post)], guarded)

    @property
    def guarded(self) -> bool:
        """Whether the forward hooks are kept out of compiled graphs now."""
        return self._forward is not None and self._forward[1]

    def _remove_forward_hooks(self) -> None:
        for handle in self._forward[0] if self._forward is not None else []:
            handle.remove()
        self._forward = None

    def _uninstall(self) -> None:
        self._remove_forward_hooks()
        self.patches.undo_all()
        self.installed = False
        with _CREATE_LOCK:
            if vars(self.model).get(_ATTR) is self:
                delattr(self.model, _ATTR)

    def _installer(self, key: TargetKey) -> Callable[[], Callable[[], None]]:
        return lambda: self._install_target(key)

    def _install_target(self, key: TargetKey) -> Callable[[], None]:
        """Hook a media target: a module's pre and post hooks, or a method's wrapper."""
        kind, path = key
        if kind == "module":
            module = resolve_path(self.model, path) if path else self.model
            enter = torch.compiler.disable(lambda m, a: self.media_enter(key))
            leave = torch.compiler.disable(lambda m, a, o: self.media_exit(key))
            handles = [module.register_forward_pre_hook(enter, prepend=True), module.register_forward_hook(leave)]

            def undo() -> None:
                for handle in handles:
                    handle.remove()

            return undo
        parent, _, name = path.rpartition(".")
        owner = resolve_path(self.model, parent) if parent else self.model
        # The marks, not the method, are kept out of a compiled graph: the encoder itself runs
        # as compiled as it was, and dynamo does not trace the clock.
        enter_method = torch.compiler.disable(lambda: self.media_enter(key))
        leave_method = torch.compiler.disable(lambda: self.media_exit(key))

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def timed_media(*args: Any, **kwargs: Any) -> Any:
                enter_method()
                try:
                    return original(*args, **kwargs)
                finally:
                    leave_method()

            return timed_media

        return self.patches.patch(owner, name, make)

    # -- the call -------------------------------------------------------------------------------
    @property
    def call(self) -> CallState | None:
        return getattr(self.local, "call", None)

    def subscribers_here(self) -> list[Subscriber]:
        ident = threading.get_ident()
        with self.lock:
            return [p for p in self.probes if p.thread is None or p.thread == ident]

    def _wrap_generate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def timed_generate(*args: Any, **kwargs: Any) -> Any:
            probes = self.subscribers_here() if self.installed else []
            if not probes:
                return original(*args, **kwargs)
            return run_call(self, probes, original, args, kwargs)

        return timed_generate

    def _wrap_inner_generate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def inner_generate(*args: Any, **kwargs: Any) -> Any:
            state = self.call if self.installed else None
            if state is None or state.inner is not None:
                return original(*args, **kwargs)
            state.decoding = decoding(check_mode(self.lm, kwargs), kwargs, self.lm)
            prompt, cached = prompt_length(args, kwargs)
            state.inner = {"prompt": prompt, "cached": cached, "args": (args, kwargs)}
            for r in state.recorders:
                r.restart(prompt - cached)
            state.inner["output"] = output = original(*args, **kwargs)
            return output

        return inner_generate

    def _wrap_criteria(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def get_stopping_criteria(*args: Any, **kwargs: Any) -> Any:
            criteria = original(*args, **kwargs)
            state = self.call if self.installed else None
            return criteria if state is None or not state.record_stops else state.stops.wrap(criteria)

        return get_stopping_criteria

    def _wrap_candidates(self, original: Callable[..., Any]) -> Callable[..., Any]:
        def get_candidate_generator(*args: Any, **kwargs: Any) -> Any:
            generator = original(*args, **kwargs)
            state = self.call if self.installed else None
            if state is not None:
                instrument(state, generator)
            return generator

        return get_candidate_generator

    # The two hooks run at every step: each times its whole body as the probe's own (their
    # dispatch by torch is calibrated, .calibrate), and does nothing else it need not do.
    def _forward_pre(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        start = perf_counter_ns()
        state = getattr(self.local, "call", None)
        if state is None:
            return None
        ids = kwargs.get("input_ids")
        tokens = ids.shape[1] if ids is not None else positions_fed(args, kwargs)
        if tokens is None:
            raise UnsupportedGeneration("a forward received neither input_ids nor inputs_embeds")
        if state.quick is not None:  # recorders with nothing to do at a boundary but stamp it
            for append, now in state.quick:
                append(("forward_start", now(), tokens))
        else:
            for recorder in state.recorders:
                recorder.mark("forward_start", tokens)
        state.hook_ns += perf_counter_ns() - start
        return None

    def _forward_post(self, module: Any, args: Any, output: Any) -> None:
        start = perf_counter_ns()
        state = getattr(self.local, "call", None)
        if state is None:
            return None
        if state.quick is not None:
            for append, now in state.quick:
                append(("forward_end", now(), None))
        else:
            for recorder in state.recorders:
                recorder.mark("forward_end", None, output)
        state.hook_ns += perf_counter_ns() - start
        return None

    def media_enter(self, key: Hashable) -> None:
        state = self.call
        if state is not None:
            for r in state.recorders:
                r.media_enter(key)

    def media_exit(self, key: Hashable) -> None:
        state = self.call
        if state is not None:
            for r in state.recorders:
                r.media_exit(key)
