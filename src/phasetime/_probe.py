"""The probe: hooks on a Hugging Face model that emit timestamped events.

:class:`Probe` attaches to a model and, for every ``model.generate(...)`` call made while
it is attached, records (through one :class:`~phasetime._clock.Clock`):

* the call's start and end (the only two device synchronisations of the call),
* the start and end of every top-level ``model.forward`` with the number of positions fed,
* the start and end of every outermost vision-encoder call.

It does nothing else: :func:`phasetime._phases.derive` turns the events into phases.
The hooks are wrapped in ``torch.compiler.disable`` so that a compiled forward (as
``generate()`` uses with a static cache) calls them eagerly instead of tracing them.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Sequence

import torch

from ._clock import Clock, clock_for, model_device
from ._phases import Event, PromptCounter, derive
from ._record import Measurement, UnsupportedGeneration

SUPPORTED_MODES = ("greedy_search", "sample")
VISION_METHODS = ("get_image_features", "get_video_features")
VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model")
# Keyword arguments that carry pixels; a text-only call has none of them.
_MODEL_INPUT_KEYS = ("input_ids", "inputs_embeds")
_CACHE_KEYS = ("past_key_values", "cache")


def resolve_path(model: torch.nn.Module, path: str) -> Any:
    """``model.a.b`` for ``path="a.b"`` (a leading ``"model."`` naming the root is allowed)."""
    obj: Any = model
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            if i == 0 and part == "model" and len(parts) > 1 and not hasattr(model, "model"):
                continue
            raise ValueError(f"vision path {path!r}: {type(obj).__name__} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def find_vision_encoder(model: torch.nn.Module) -> tuple[Any, list[str]] | list[torch.nn.Module]:
    """Locate the vision encoder of a VLM.

    Returns ``(owner, method_names)`` when the model exposes ``get_image_features`` /
    ``get_video_features`` (they cover the tower *and* the projector), on the object that
    ``generate()`` calls them on (the base model) so each image is counted once; else the
    shallowest ``vision_tower`` / ``visual`` / ``vision_model`` submodules; else ``[]``.
    """
    for owner in (getattr(model, "base_model", None), model):
        if owner is None:
            continue
        names = [n for n in VISION_METHODS if callable(getattr(owner, n, None))]
        if names:
            return owner, names
    found: list[tuple[int, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in VISION_MODULE_NAMES:
            found.append((name.count("."), module))
    if not found:
        return []
    depth = min(d for d, _ in found)
    return [m for d, m in found if d == depth]


def generation_mode(model: Any, kwargs: dict[str, Any]) -> str:
    """The transformers generation mode a ``generate(**kwargs)`` call will run, e.g. ``"greedy_search"``.

    Mirrors ``GenerationConfig.get_generation_mode`` (names are ``GenerationMode``
    values) without copying the config, which costs ~40 us per call.
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "encoder_decoder"
    if kwargs.get("custom_generate") is not None:
        return "custom_generate"
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def get(key: str) -> Any:
        return kwargs[key] if key in kwargs else getattr(config, key, None)

    if get("assistant_model") is not None or get("prompt_lookup_num_tokens") or get("assistant_early_exit"):
        return "assisted_generate"
    if get("constraints") is not None or get("force_words_ids") is not None:
        return "constrained_beam_search"
    do_sample = get("do_sample") is True
    if (get("num_beams") or 1) > 1:
        if (get("num_beam_groups") or 1) > 1:
            return "group_beam_search"
        return "beam_sample" if do_sample else "beam_search"
    if not do_sample and (get("top_k") or 0) > 1 and (get("penalty_alpha") or 0) > 0:
        return "contrastive_search"
    if get("dola_layers") is not None:
        return "dola_generation"
    return "sample" if do_sample else "greedy_search"


def _positions_fed(args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    for key in _MODEL_INPUT_KEYS:
        value = kwargs.get(key)
        if value is not None and hasattr(value, "shape"):
            return int(value.shape[1])
    if args and hasattr(args[0], "shape"):
        return int(args[0].shape[1])
    return None


def prompt_length(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, int]:
    """(prompt positions, positions already in a user-supplied cache) of a generate() call."""
    fed = _positions_fed(args, kwargs)
    if fed is None:
        raise UnsupportedGeneration("generate() was called without input_ids or inputs_embeds")
    cached = 0
    for key in _CACHE_KEYS:
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            cached = int(cache.get_seq_length())
    return fed, cached


def eos_token_ids(model: Any, kwargs: dict[str, Any]) -> set[int]:
    """The EOS ids in force for a generate() call (call kwargs override the model's config)."""
    eos = kwargs.get("eos_token_id")
    if eos is None:
        config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return set()
    if isinstance(eos, torch.Tensor):
        return {int(x) for x in eos.flatten().tolist()}
    if isinstance(eos, int):
        return {eos}
    return {int(x) for x in eos}


def count_output_tokens(generated: torch.Tensor, eos_ids: Iterable[int]) -> list[int]:
    """Output tokens per row of ``generated`` ([B, G], the new tokens only).

    A row ends at its first EOS, which counts; what follows is padding.
    """
    # generated: [B, G]
    eos = list(eos_ids)
    lengths = []
    for row in generated.tolist():
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos:
                n = j + 1
                break
        lengths.append(n)
    return lengths


class _Nvtx:
    """NVTX ranges through torch; refuses a torch build without them."""

    def __init__(self) -> None:
        try:
            torch.cuda.nvtx.range_push("phasetime.check")
            torch.cuda.nvtx.range_pop()
        except (RuntimeError, AttributeError) as exc:
            raise ValueError(f"NVTX ranges need a CUDA build of torch: {exc}") from None
        self.depth = 0

    def push(self, name: str) -> None:
        torch.cuda.nvtx.range_push(name)
        self.depth += 1

    def pop(self) -> None:
        torch.cuda.nvtx.range_pop()
        self.depth -= 1

    def close_all(self) -> None:
        """Pop what a call that raised left open."""
        while self.depth > 0:
            self.pop()


def _sequences_tensor(output: Any) -> torch.Tensor:
    return output.sequences if hasattr(output, "sequences") else output


class Probe:
    """Times every ``generate()`` call of ``model`` while attached (a context manager).

    ``vision`` overrides the automatic vision-encoder lookup with module paths (e.g.
    ``["model.vision_tower", "model.multi_modal_projector"]``). ``clock`` defaults to CUDA
    events on a CUDA model and ``perf_counter_ns`` otherwise. ``nvtx=True`` also wraps the
    call, every vision call, the prefill and every decode step in NVTX ranges (named
    ``phasetime.generate``, ``vision``, ``prefill``, ``decode step k``) so that an Nsight
    Systems capture shows them. Every call appends a :class:`~phasetime.Measurement` to
    :attr:`measurements`.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        vision: Sequence[str] | None = None,
        *,
        clock: Clock | None = None,
        nvtx: bool = False,
    ) -> None:
        self.model = model
        self.nvtx = _Nvtx() if nvtx else None
        self._counter: PromptCounter | None = None
        self._decode_step = 0
        self.clock = clock if clock is not None else clock_for(model_device(model))
        self.measurements: list[Measurement] = []
        self._vision_paths = list(vision) if vision is not None else None
        self._handles: list[Any] = []
        self._patched: list[tuple[Any, str, bool, Any]] = []
        self._marks: list[tuple[str, Any, int | None]] | None = None
        self._vision_depth = 0
        self._attached = False

    # -- attaching ---------------------------------------------------------------------
    def __enter__(self) -> "Probe":
        self.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def attach(self) -> None:
        """Install the hooks (idempotent)."""
        if self._attached:
            return
        try:
            self._patch(self.model, "generate", self._wrap_generate)
            # Our pre-hooks go first and post-hooks last, so the timed span covers any other hooks.
            self._handles.append(self.model.register_forward_pre_hook(self._forward_pre, with_kwargs=True, prepend=True))
            self._handles.append(self.model.register_forward_hook(self._forward_post))
            self._attach_vision()
        except Exception:
            self.detach()
            raise
        self._attached = True

    def detach(self) -> None:
        """Remove every hook and restore patched methods (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, name, had_own, previous in reversed(self._patched):
            if had_own:
                setattr(owner, name, previous)
            else:
                try:
                    delattr(owner, name)
                except AttributeError:
                    pass
        self._patched.clear()
        self._marks = None
        self._vision_depth = 0
        self._attached = False

    def _patch(self, owner: Any, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        had_own = name in vars(owner)
        previous = vars(owner)[name] if had_own else None
        original = getattr(owner, name)
        # functools.wraps keeps the signature visible: generate() inspects that of
        # get_image_features to pick its arguments.
        setattr(owner, name, functools.wraps(original)(make_wrapper(original)))
        self._patched.append((owner, name, had_own, previous))

    def _attach_vision(self) -> None:
        if self._vision_paths is not None:
            targets: Any = [resolve_path(self.model, p) for p in self._vision_paths]
        else:
            targets = find_vision_encoder(self.model)
        if isinstance(targets, tuple):
            owner, names = targets
            for name in names:
                self._patch(owner, name, self._wrap_vision)
            return
        for target in targets:
            if isinstance(target, torch.nn.Module):
                self._handles.append(target.register_forward_pre_hook(self._vision_pre, prepend=True))
                self._handles.append(target.register_forward_hook(self._vision_post))
            elif callable(target):
                raise ValueError("vision paths must name modules, not methods")
            else:
                raise ValueError(f"vision path resolves to a {type(target).__name__}, not a module")

    # -- event recording ---------------------------------------------------------------
    def _mark(self, kind: str, tokens: int | None = None) -> None:
        if self._marks is None:
            return
        if self.nvtx is not None and kind.endswith("_end"):
            self.nvtx.pop()
        self._marks.append((kind, self.clock.mark(), tokens))
        if self.nvtx is not None and kind.endswith("_start"):
            self.nvtx.push(self._range_name(kind, tokens))

    def _range_name(self, kind: str, tokens: int | None) -> str:
        if kind == "call_start":
            return "phasetime.generate"
        if kind == "vision_start":
            return "vision"
        assert self._counter is not None and tokens is not None
        if self._counter.feed(tokens):
            return "prefill"
        self._decode_step += 1
        return f"decode step {self._decode_step}"

    @torch.compiler.disable
    def _forward_pre(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if self._marks is None:
            return None
        tokens = _positions_fed(args, kwargs)
        if tokens is None:
            raise UnsupportedGeneration("a forward received neither input_ids nor inputs_embeds")
        self._mark("forward_start", tokens)
        return None

    @torch.compiler.disable
    def _forward_post(self, module: Any, args: Any, output: Any) -> None:
        self._mark("forward_end")
        return None

    @torch.compiler.disable
    def _vision_pre(self, module: Any, args: Any) -> None:
        self._vision_enter()

    @torch.compiler.disable
    def _vision_post(self, module: Any, args: Any, output: Any) -> None:
        self._vision_exit()

    def _vision_enter(self) -> None:
        self._vision_depth += 1
        if self._vision_depth == 1:
            self._mark("vision_start")

    def _vision_exit(self) -> None:
        self._vision_depth -= 1
        if self._vision_depth == 0:
            self._mark("vision_end")

    def _wrap_vision(self, original: Callable[..., Any]) -> Callable[..., Any]:
        probe = self

        def timed_vision(*args: Any, **kwargs: Any) -> Any:
            probe._vision_enter()
            try:
                return original(*args, **kwargs)
            finally:
                probe._vision_exit()

        return timed_vision

    def _wrap_generate(self, original: Callable[..., Any]) -> Callable[..., Any]:
        probe = self

        def timed_generate(*args: Any, **kwargs: Any) -> Any:
            if probe._marks is not None:  # a generate() nested in a timed one (an assistant, say)
                raise UnsupportedGeneration("nested generate() calls")
            mode = generation_mode(probe.model, kwargs)
            if mode not in SUPPORTED_MODES:
                raise UnsupportedGeneration(f"generation mode {mode!r} is not supported (supported: greedy_search, sample)")
            prompt, cached = prompt_length(args, kwargs)
            eos = eos_token_ids(probe.model, kwargs)
            probe._marks = []
            probe._vision_depth = 0
            probe._counter = PromptCounter(prompt - cached)
            probe._decode_step = 0
            try:
                probe.clock.sync()
                probe._mark("call_start")
                output = original(*args, **kwargs)
                probe._mark("call_end")
                probe.clock.sync()
                marks = probe._marks
            finally:
                probe._marks = None
                if probe.nvtx is not None:
                    probe.nvtx.close_all()
            times = probe.clock.resolve_ms([m for _, m, _ in marks])
            events = [Event(kind, t, tokens) for (kind, _, tokens), t in zip(marks, times)]
            # generate() returns prompt + new tokens, or only the new ones when it got
            # inputs_embeds without input_ids.
            sequences = _sequences_tensor(output)
            has_ids = kwargs.get("input_ids") is not None or (args and hasattr(args[0], "shape"))
            generated = sequences[:, prompt:] if has_ids else sequences
            probe.measurements.append(
                derive(
                    events,
                    prompt_tokens=prompt - cached,
                    output_tokens=count_output_tokens(generated, eos),
                    timer=probe.clock.name,
                    output_ids=output,
                )
            )
            return output

        return timed_generate
