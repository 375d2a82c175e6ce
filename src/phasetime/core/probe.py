"""The probe: timestamped events of every ``generate()`` call of a model, and nothing else.

:class:`Probe` attaches to a model and, for every ``model.generate(...)`` call made while
it is attached, records through one :class:`~phasetime.core.clock.Clock`:

* the call's start and end (the only two device synchronisations of the call),
* the start and end of every forward of the language model, with the positions fed,
* the start and end of every outermost vision-encoder call,
* in assisted and prompt-lookup decoding, every round's candidate search and the draft
  model's forwards,

and hands them to :func:`phasetime.core.phases.derive`, the one place phases are defined.
The hooks themselves belong to the model (:mod:`phasetime.core.hooks`), shared by all
probes attached to it; one call's recording is :mod:`phasetime.core.call`'s. Sensors (:mod:`phasetime.core.sensors`) sample at the same
boundaries when a probe is given some.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable, Sequence

import torch

from . import clock as _clock
from .errors import UsageError
from .generation import check_generative
from .hooks import ModelHooks, unwrap
from .nvtx import Nvtx as _Nvtx
from .record import Measurement
from .targets import connectors_of, connectors_searched
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
        for connector in connectors_of(model) or []:  # found between those modules and the language model
            ckey = ("connector", id(connector))
            targets[ckey] = (lambda c, k: lambda: hooks.targets.module_target(c, k))(connector, ckey)
        return targets

    def connector_search(self) -> list[torch.nn.Module]:
        """The vision modules to watch the outputs of for connectors in the next call (automatic
        module targets of a model not searched yet); empty otherwise."""
        if not self.automatic_vision or self._hooks is None or connectors_searched(self.target):
            return []
        if vision_methods(self.target) is not None:
            return []  # get_image_features covers tower, projector and any connector
        found = self._hooks.targets.discovered
        return [found] if found is not None else [m for _, m in vision_modules(self.target)]

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
