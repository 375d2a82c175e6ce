"""The probe: timestamped events of every ``generate()`` call of a model, and nothing else.

:class:`Probe` attaches to a model and, for every ``model.generate(...)`` call made while
it is attached, records through one :class:`~phasetime.core.clock.Clock`:

* the call's start and end (the only two device synchronisations of the call),
* the start and end of every forward of the language model, with the positions fed,
* the start and end of every outermost call of a media encoder (vision, audio), found by
  following the data of the model's first call with that kind of media (:mod:`.media`), or
  named by the user,
* in assisted and prompt-lookup decoding, every round's candidate search and the draft
  model's forwards,

and hands them to :func:`phasetime.core.phases.derive`, the one place phases are defined.
The hooks themselves belong to the model (:mod:`.hooks`), shared by all probes attached to
it; one call's recording is :mod:`.call`'s. Sensors (:mod:`phasetime.sensors`) sample at the
same boundaries when a probe is given some.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

import torch

from ..core import clock as _clock
from ..core.errors import UsageError
from ..core.nvtx import Nvtx as _Nvtx
from ..core.record import Measurement
from . import media as _media
from .call import Recorder
from .generation import MEDIA, check_generative, medium_of
from .hooks import ModelHooks, TargetKey
from .names import resolve_path
from .structure import unwrap

SCOPES = ("all", "thread")


class Probe:
    """Times every ``generate()`` call of ``model`` while attached (a context manager).

    The media encoders are found by following the data of the first call that carries each
    kind of media (one short, untimed discovery call before it; docs/metrics.md, "Media").
    ``vision`` and ``audio`` override that with module paths (e.g. ``["model.vision_tower",
    "model.multi_modal_projector"]``) or method paths (``"model.get_image_features"``);
    ``vision=[]`` says the model has no vision to time (no discovery, and no error when a
    call carries pixels), ``audio=[]`` the same for audio. ``clock`` defaults, at each call,
    to CUDA events on the model's first GPU (every GPU it spans synced at the call's bounds)
    and ``perf_counter_ns`` on a CPU model. ``nvtx=True`` also wraps the call, every media
    encoder call, the prefill and every decode step in NVTX ranges (named
    ``phasetime.generate``, ``vision``, ``audio``, ``prefill``, ``decode step k``).
    ``sensors`` sample resources at the phase boundaries (see :mod:`phasetime.sensors`).
    ``scope="thread"`` records only calls made in the thread that attached the probe
    (``measure`` uses it); the default records calls from every thread. A measurement's
    ``output_ids`` holds the generated sequences, on the host; ``keep_output=True`` keeps
    generate()'s whole return instead (scores, KV cache: device memory held for as long as
    the measurement is). ``profile=True`` runs every call under ``torch.profiler`` and puts its
    operators (and CUDA kernels) in the call's phases: the measurement's ``profile``
    (:class:`~phasetime.core.operators.CallProfile`; the profiler slows the call, so a profiled
    call's times describe that call only; docs/metrics.md, "Operators per phase").

    Every call appends a :class:`~phasetime.Measurement` to :attr:`measurements`. Any
    number of probes may be attached to one model, and detached in any order.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vision: Sequence[str] | None = None,
        *,
        audio: Sequence[str] | None = None,
        clock: _clock.Clock | None = None,
        nvtx: bool = False,
        sensors: Sequence[Any] = (),
        scope: str = "all",
        keep_output: bool = False,
        profile: bool = False,
    ) -> None:
        if scope not in SCOPES:
            raise UsageError(f"scope must be one of {SCOPES}, got {scope!r}")
        for name, value in (("vision", vision), ("audio", audio)):
            if isinstance(value, str):
                raise UsageError(f"{name} takes a list of module or method paths, not a string")
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
        self.profile = profile
        self.thread: int | None = None
        self.measurements: list[Measurement] = []
        self.named: dict[str, list[str] | None] = {"vision": None if vision is None else list(vision),
                                                   "audio": None if audio is None else list(audio)}
        self.named_keys: dict[str, list[TargetKey]] = {m: self._keys(m, paths or []) for m, paths in self.named.items()}
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
            self.thread = threading.get_ident() if self.scope == "thread" else None
            hooks.add(self, [key for keys in self.named_keys.values() for key in keys])
        except BaseException:
            hooks.discard_if_unused()  # a failed attach leaves nothing on the model
            raise
        self._hooks = hooks

    def detach(self) -> None:
        """Stop recording; the model is restored once no probe is attached (idempotent)."""
        if self._hooks is not None:
            self._hooks.remove(self)
        self._hooks = None

    def _keys(self, medium: str, paths: list[str]) -> list[TargetKey]:
        """The hook targets of the paths the user named (each resolved now: a typo is an error here)."""
        keys: list[TargetKey] = []
        for path in paths:
            obj = resolve_path(self.target, path, medium)
            if isinstance(obj, torch.nn.Module):
                keys.append(("module", self._module_path(obj, path)))
            elif callable(obj):
                keys.append(("method", path))
            else:
                raise UsageError(f"{medium} path {path!r} resolves to a {type(obj).__name__}, not a module or method")
        return keys

    def _module_path(self, module: torch.nn.Module, path: str) -> str:
        for name, candidate in self.target.named_modules():
            if candidate is module:
                return name
        raise UsageError(f"{path!r} is not a module of {type(self.target).__name__}")

    # -- what the hooks ask (hooks.Subscriber) -------------------------------------------------
    def needs_map(self, media: dict[str, torch.Tensor]) -> bool:
        return any(self.named[medium_of(key)] is None for key in media)

    def excludes(self, medium: str) -> bool:
        return self.named[medium] == []

    def recorder(self, prompt_tokens: int, media: dict[str, torch.Tensor], found: _media.MediaMap | None) -> Recorder:
        """This probe's recorder of a call that carries ``media``, timed as ``found`` says
        where the user named nothing."""
        keys: dict[Any, str] = {key: medium for medium in MEDIA for key in self.named_keys[medium]}
        expected: dict[str, str | None] = {}
        for medium in sorted({medium_of(key) for key in media}):
            named = self.named[medium]
            if named is not None:
                expected[medium] = ", ".join(named) or None
                continue
            timed = [f for f in (found.found if found else ()) if f.phase == medium]
            keys.update({("module", f.path): medium for f in timed})
            expected[medium] = ", ".join(f.path for f in timed) + (f" ({found.source}: {found.reason})" if found and
                                                                  found.reason else "")
        clock = self.clock or _clock.clock_for_call(_clock.model_devices(self.target))
        return Recorder(clock, prompt_tokens, keys, expected=expected, sensors=self.sensors, nvtx=self.nvtx,
                        keep_output=self.keep_output, deliver=self.measurements.append, profile=self.profile)

    def describe_media(self) -> list[tuple[str, str, str, str]]:
        """What this probe times as media: (medium, module or method path, how it was found, why),
        for ``phasetime inspect``: the paths the user named, and the media maps made so far."""
        rows = [(medium, path, "named", "given by the user") for medium, paths in self.named.items()
                for path in paths or []]
        rows += [(medium, "nothing", "named", f"{medium}=[]") for medium, paths in self.named.items() if paths == []]
        for found in _media.maps(self.target):
            for item in sorted(found.found, key=lambda f: (f.role != "encoder", f.path)):
                if self.named[item.phase] is None:
                    how = f"{item.role}, by {item.how}" + (" (names: " + found.reason + ")" if found.reason else "")
                    rows.append((item.phase, item.path, how, item.why))
        return rows

    def language_model(self) -> list[str]:
        """The language model the media maps found: what runs at every decode step."""
        return sorted({path for found in _media.maps(self.target) for path in found.language})
