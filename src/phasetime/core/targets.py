"""Vision targets of the shared model hooks: modules and methods timed as vision, and the
discovery of an unknown encoder through the pixel tensor it receives.

Owned by a :class:`phasetime.core.hooks.ModelHooks` (``hooks.targets``).
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Hashable

import torch

from .vision import language_modules, receives

# model -> the vision encoder discovery found in it (weak: forgets models that are gone)
_DISCOVERED: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()
# model -> the connectors found between its vision modules and its language model (searched once)
_CONNECTORS: "weakref.WeakKeyDictionary[torch.nn.Module, list[torch.nn.Module]]" = weakref.WeakKeyDictionary()


def _tensor_ids(value: Any) -> set[int]:
    """ids of the tensors in a module's output (a tensor, a tuple, a ModelOutput, a dict)."""
    if isinstance(value, torch.Tensor):
        return {id(value)}
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return {id(v) for v in items if isinstance(v, torch.Tensor)}


def connectors_searched(model: torch.nn.Module) -> bool:
    """Whether ``model``'s connectors were searched for (cheap: asked at every call with pixels)."""
    return model in _CONNECTORS


def connectors_of(model: torch.nn.Module) -> list[torch.nn.Module] | None:
    """The connectors found in ``model`` (None: not searched yet), those still part of it."""
    found = _CONNECTORS.get(model)
    if found is None:
        return None
    present = {id(m) for m in model.modules()}
    return [m for m in found if id(m) in present]

if TYPE_CHECKING:
    from .hooks import CallState, ModelHooks


class VisionTargets:
    """The vision targets of one model's hooks (see the module docstring)."""

    def __init__(self, hooks: "ModelHooks") -> None:
        self.hooks = hooks
        # an encoder found (by the pixel tensor itself) in an earlier call outlives the hooks that
        # found it, as long as it is still part of the model
        found = _DISCOVERED.get(hooks.model)
        if found is not None and not any(m is found for m in hooks.model.modules()):
            found = None
            _DISCOVERED.pop(hooks.model, None)
        self.discovered: torch.nn.Module | None = found
        self.not_vision: set[int] | None = None

    def module_target(self, module: torch.nn.Module, key: Hashable) -> Callable[[], None]:
        """Install pre/post hooks on ``module`` that report vision for ``key``; returns the undo."""
        hooks = self.hooks

        @torch.compiler.disable
        def pre(mod: Any, args: Any) -> None:
            hooks.vision_enter(key)

        @torch.compiler.disable
        def post(mod: Any, args: Any, output: Any) -> None:
            hooks.vision_exit(key)
            state = hooks.call
            if state is not None and state.connector_watch:
                state.vision_outputs |= _tensor_ids(output)  # what a connector would receive

        handles = [module.register_forward_pre_hook(pre, prepend=True), module.register_forward_hook(post)]

        def undo() -> None:
            for handle in handles:
                handle.remove()

        return undo

    def method_target(self, owner: Any, name: str, key: Hashable) -> Callable[[], None]:
        """Wrap ``owner.name`` so that its calls report vision for ``key``; returns the undo."""
        hooks = self.hooks

        # The marks, not the method, are kept out of a compiled graph: the encoder itself runs
        # as compiled as it was, and dynamo does not trace the clock.
        enter = torch.compiler.disable(lambda: hooks.vision_enter(key))
        leave = torch.compiler.disable(lambda: hooks.vision_exit(key))

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            def timed_vision(*args: Any, **kwargs: Any) -> Any:
                enter()
                try:
                    return original(*args, **kwargs)
                finally:
                    leave()

            return timed_vision

        return self.hooks.patch(owner, name, make)

    def language(self) -> set[int]:
        """ids of the language model's embedding holders and their ancestors (never vision),
        looked up once per hooks."""
        if self.not_vision is None:
            self.not_vision = language_modules(self.hooks.lm if self.hooks.inner is None else self.hooks.model)
        return self.not_vision

    # -- discovery: the module that receives the pixels -------------------------------------------
    def start_discovery(self, state: CallState) -> None:
        """Watch the calls of every module outside the language model, during this call, until
        one receives the pixels: that module is the vision encoder."""
        root = self.hooks.model
        not_vision = self.language()
        hooks = self.hooks

        @torch.compiler.disable
        def pre(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if hooks.call is not state or not state.discovery:
                return
            how = receives(state.pixels.values(), args, kwargs)
            if how is not None:
                self.stop_discovery(state)
                self.found_encoder(module, remember=how == "identity")
                if not connectors_searched(root):  # and what it feeds, in this very call
                    self.start_connector_watch(state, [module])

        for _, module in root.named_modules():
            if id(module) not in not_vision:
                # first among the module's pre-hooks, as the probe's own are
                state.discovery.append(module.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))

    def stop_discovery(self, state: CallState) -> None:
        for handle in state.discovery:
            handle.remove()
        state.discovery.clear()

    def found_encoder(self, module: torch.nn.Module, remember: bool = True) -> None:
        """Time ``module`` as the vision encoder of every automatic probe, from now on; found by
        the pixel tensor itself (``remember``), also for the model's later probes (found by a
        tensor of the pixels' shape only, for these hooks' lifetime: a guess is not kept)."""
        hooks = self.hooks
        with hooks.lock:
            self.discovered = module
            if remember:
                _DISCOVERED[hooks.model] = module
            key = ("discovered", id(module))
            for probe in hooks.probes:
                if probe.automatic_vision and not probe.vision_keys:
                    probe.vision_keys.append(key)
                    hooks.acquire(key, lambda: self.module_target(module, key))
        hooks.vision_enter(key)  # this call is already inside the module: its pre-hook did not run

    # -- connectors: modules fed what the vision modules produced -------------------------------
    def start_connector_watch(self, state: CallState, vision: list[torch.nn.Module]) -> None:
        """During this call, watch every module outside the language model and the vision
        modules: one that receives a tensor a vision module returned (or a connector, in a
        chain) is a connector between them, timed as vision from now on (the search is made
        once per model; what it found is remembered while the modules are part of it)."""
        root = self.hooks.model
        not_vision = self.language()
        inside = {id(m) for v in vision for m in v.modules()}
        # the language model: the shallowest module holding the input embeddings and no vision
        # module; nothing inside it is a connector (its layers receive what it was given)
        holders = [m for m in root.modules() if id(m) in not_vision and not inside & {id(x) for x in m.modules()}]
        inside |= {id(x) for m in holders for x in m.modules()}
        hooks = self.hooks
        _CONNECTORS[root] = []
        state.connector_watch = True

        @torch.compiler.disable
        def pre(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            if hooks.call is not state or not state.vision_outputs:
                return
            fed = {id(v) for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)}
            if fed & state.vision_outputs and not any(r.depth for r in state.recorders):
                self.found_connector(module)

        for _, module in root.named_modules():
            if id(module) not in not_vision and id(module) not in inside:
                state.discovery.append(module.register_forward_pre_hook(pre, with_kwargs=True, prepend=True))

    def found_connector(self, module: torch.nn.Module) -> None:
        """Time ``module`` as vision for every automatic probe, from now on (and in this call)."""
        hooks = self.hooks
        key = ("connector", id(module))
        with hooks.lock:
            _CONNECTORS.setdefault(hooks.model, []).append(module)
            for probe in hooks.probes:
                if probe.automatic_vision and key not in probe.vision_keys:
                    probe.vision_keys.append(key)
                    hooks.acquire(key, lambda: self.module_target(module, key))
        hooks.vision_enter(key)  # its pre-hook did not run in this call: the exit will
