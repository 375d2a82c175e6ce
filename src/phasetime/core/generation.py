"""What a ``generate()`` call will do, read from its arguments and the model, before it runs.

Pure helpers of the probe: the generation mode, the prompt length, the EOS ids, whether
the call carries pixels, and the output length of each row from the tokens when nothing
better was recorded. No timing here.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import torch

from .errors import UnsupportedGeneration, UsageError

SUPPORTED_MODES = ("greedy_search", "sample", "assisted_generate", "beam_search", "beam_sample")
_MODEL_INPUT_KEYS = ("input_ids", "inputs_embeds")
_CACHE_KEYS = ("past_key_values", "cache")
# Keys processors use for image and video pixels. Any other key with "pixel" in its name
# counts too (see pixel_inputs).
PIXEL_KEYS = ("pixel_values", "pixel_values_videos", "pixel_values_images", "input_image_embeds", "image_pixel_values")


def generation_mode(model: Any, kwargs: dict[str, Any]) -> str:
    """The transformers generation mode a ``generate(**kwargs)`` call will run, e.g. ``"greedy_search"``.

    Mirrors ``GenerationConfig.get_generation_mode`` (names are ``GenerationMode``
    values) without copying the config, which costs ~40 us per call. Values of the wrong
    type raise :class:`UnsupportedGeneration` naming the option.
    """
    if getattr(getattr(model, "config", None), "is_encoder_decoder", False):
        return "encoder_decoder"
    if kwargs.get("custom_generate") is not None:
        return "custom_generate"
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)

    def get(key: str) -> Any:
        return kwargs[key] if key in kwargs else getattr(config, key, None)

    def number(key: str, default: float) -> float:
        value = get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UnsupportedGeneration(f"generation option {key}={value!r} is not a number")
        return value

    if get("assistant_model") is not None or get("prompt_lookup_num_tokens") or get("assistant_early_exit"):
        return "assisted_generate"
    if get("constraints") is not None or get("force_words_ids") is not None:
        return "constrained_beam_search"
    do_sample = get("do_sample") is True
    if number("num_beams", 1) > 1:
        if number("num_beam_groups", 1) > 1:
            return "group_beam_search"
        return "beam_sample" if do_sample else "beam_search"
    if not do_sample and number("top_k", 0) > 1 and number("penalty_alpha", 0) > 0:
        return "contrastive_search"
    if get("dola_layers") is not None:
        return "dola_generation"
    return "sample" if do_sample else "greedy_search"


def check_mode(model: Any, kwargs: dict[str, Any]) -> str:
    """The generation mode of a call, or :class:`UnsupportedGeneration` when it cannot be timed."""
    own_mode = kwargs.get("generation_mode")
    if isinstance(own_mode, str) and own_mode != "text":  # Janus: generation_mode="image" runs its own loop
        raise UnsupportedGeneration(f"generation_mode={own_mode!r} of {type(model).__name__} (the model's own decoding "
                                    "loop) is not supported; its text mode is")
    mode = generation_mode(model, kwargs)
    if mode == "encoder_decoder":  # not a mode anyone chose: the model's architecture
        raise UnsupportedGeneration(f"encoder-decoder models ({type(model).__name__}) are not supported: phasetime "
                                    "times decoder-only generate() calls")
    if mode not in SUPPORTED_MODES:
        raise UnsupportedGeneration(f"generation mode {mode!r} is not supported (supported: {', '.join(SUPPORTED_MODES)})")
    if mode == "assisted_generate":
        _check_assisted(model, kwargs)
    return mode


def _check_assisted(model: Any, kwargs: dict[str, Any]) -> None:
    """The assisted modes phasetime cannot split into draft and verify, refused by name."""
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    draft = kwargs.get("assistant_model", getattr(config, "assistant_model", None))
    if kwargs.get("assistant_early_exit", getattr(config, "assistant_early_exit", None)):
        raise UnsupportedGeneration("self-speculative decoding (assistant_early_exit) is not supported: its draft is the "
                                    "target's own first layers and shares the target's cache, so draft and verify "
                                    "forwards cannot be told apart")
    if kwargs.get("assistant_tokenizer") is not None:
        raise UnsupportedGeneration("assisted decoding across tokenizers (assistant_tokenizer) is not supported yet: "
                                    "its rounds re-tokenize the draft's text; use a draft with the target's tokenizer")
    if draft is not None and model is not None and (draft is model or getattr(draft, "_orig_mod", None) is model):
        raise UnsupportedGeneration("the target model as its own draft (assistant_model=model) is not supported: its "
                                    "draft generate() would run inside the timed one, on the same hooks")


def decoding(mode: str, kwargs: dict[str, Any]) -> str:
    """phasetime's name for how a call decodes: greedy, sample, assisted (a draft model),
    prompt_lookup, beam_search or beam_sample."""
    if mode == "assisted_generate":
        return "assisted" if kwargs.get("assistant_model") is not None else "prompt_lookup"
    return {"greedy_search": "greedy"}.get(mode, mode)


def positions_fed(args: Sequence[Any], kwargs: dict[str, Any]) -> int | None:
    """Token positions a forward (or generate) call is fed; None when it has no token input."""
    for key in _MODEL_INPUT_KEYS:
        value = kwargs.get(key)
        if value is not None and hasattr(value, "shape"):
            return int(value.shape[1])
    if args and hasattr(args[0], "shape") and len(args[0].shape) >= 2:
        return int(args[0].shape[1])
    return None


def prompt_length(args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[int, int]:
    """(prompt positions, positions already in a user-supplied cache) of a generate() call."""
    fed = positions_fed(args, kwargs)
    if fed is None:
        raise UnsupportedGeneration("generate() was called without input_ids or inputs_embeds")
    cached = 0
    for key in _CACHE_KEYS:
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            cached = int(cache.get_seq_length())
    return fed, cached


def returns_prompt(args: Sequence[Any], kwargs: dict[str, Any]) -> bool:
    """Whether generate() returns prompt + new tokens (it returns only the new ones when
    given inputs_embeds without input_ids)."""
    return kwargs.get("input_ids") is not None or bool(args and hasattr(args[0], "shape"))


def pixel_inputs(kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The floating-point pixel tensors among a call's arguments, by key."""
    out = {}
    for key, value in kwargs.items():
        if (key in PIXEL_KEYS or "pixel" in key) and isinstance(value, torch.Tensor) and value.is_floating_point():
            out[key] = value
    return out


_MEDIA_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index")


# Keys processors use for audio: an audio encoder phasetime does not time yet would be billed to prefill.
AUDIO_KEYS = ("input_features", "input_values", "input_audio_features", "audio_values", "audio_input_features")


def audio_inputs(kwargs: dict[str, Any]) -> list[str]:
    """The floating-point audio tensors among a call's arguments, by key."""
    return [k for k, v in kwargs.items() if (k in AUDIO_KEYS or "audio" in k) and isinstance(v, torch.Tensor)
            and v.is_floating_point()]


def media_tokens_without_pixels(model: Any, kwargs: dict[str, Any]) -> str | None:
    """Why a call is not what it looks like: its prompt holds image or video placeholder tokens
    but it carries no pixels (the model would run them as text and vision would read 0 ms)."""
    ids = kwargs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or pixel_inputs(kwargs) or kwargs.get("inputs_embeds") is not None:
        return None
    config = getattr(model, "config", None)
    for attr in _MEDIA_TOKEN_ATTRS:
        token = getattr(config, attr, None)
        if isinstance(token, int) and not isinstance(token, bool) and 0 <= token:
            found = int((ids == token).sum())
            if found:
                return (f"the prompt holds {found} {attr.split('_')[0]} placeholder token(s) (id {token}) but the call "
                        "carries no pixel values: pass the processor's whole output (pixel_values included)")
    return None


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (0 when dynamo never loaded:
    importing it costs more than a call)."""
    import sys

    utils = sys.modules.get("torch._dynamo.utils")
    counters = getattr(utils, "counters", None)
    return int(counters["stats"]["unique_graphs"]) if counters is not None else 0


def check_generative(model: Any) -> None:
    """A one-line UsageError for what is not a model with ``generate()`` (a pipeline, a processor, ...)."""
    name = type(model).__name__
    if isinstance(model, torch.nn.Module) and callable(getattr(model, "generate", None)):
        return
    if hasattr(model, "model") and hasattr(model, "task") and callable(model):
        raise UsageError(f"got a pipeline ({name}): pass its model, pipeline.model, and the processor's inputs")
    if hasattr(model, "image_processor") or hasattr(model, "tokenizer") or hasattr(model, "decode"):
        raise UsageError(f"got a processor or tokenizer ({name}) where the model belongs: measure(model, inputs)")
    if isinstance(model, torch.nn.Module):
        raise UsageError(f"{name} has no generate(): phasetime times generate() calls of a generative model "
                         "(AutoModelForImageTextToText, AutoModelForCausalLM, ...)")
    raise UsageError(f"expected a transformers model with generate(), got {name}")


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
    """Output tokens per row of ``generated`` ([B, G], the new tokens only), read from the tokens.

    A row ends at its first EOS, which counts; what follows is padding. The probe prefers
    what generate()'s stopping criteria decided during the call (see ``StopRecorder``),
    which also knows stop strings and custom criteria; this is the fallback.
    """
    # generated: [B, G]
    eos = set(eos_ids)
    lengths = []
    for row in generated.tolist():
        n = len(row)
        for j, tok in enumerate(row):
            if tok in eos:
                n = j + 1
                break
        lengths.append(n)
    return lengths


def sequences_tensor(output: Any) -> torch.Tensor:
    """The token tensor of generate()'s return value (a tensor or a ModelOutput)."""
    return output.sequences if hasattr(output, "sequences") else output


class StopRecorder:
    """Wraps generate()'s stopping criteria to record, per step, which rows they declared done.

    generate() calls its criteria once per generated token (after appending it) and
    AND-accumulates the result into its unfinished-rows mask; the first step at which a
    row's criteria say "done" is therefore the row's output length, whatever stopped it
    (EOS, a stop string, a custom criterion, max length). The per-step results stay on
    the device until the call has ended, so recording adds no synchronisation.
    """

    def __init__(self) -> None:
        self.steps: list[Any] = []

    def wrap(self, criteria: Any) -> Any:
        recorder = self

        class RecordingCriteria(type(criteria)):  # type: ignore[misc]
            def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> Any:
                done = super().__call__(input_ids, scores, **kwargs)
                recorder.steps.append(done)
                return done

        wrapped = RecordingCriteria(criteria)
        for name, value in vars(criteria).items():
            setattr(wrapped, name, value)
        return wrapped

    def lengths(self, rows: int, generated: int) -> list[int] | None:
        """Output tokens per row (None when the criteria were never consulted)."""
        if not self.steps:
            return None
        # done: [steps, B]
        done = torch.stack([torch.as_tensor(s, device="cpu").reshape(-1).bool() for s in self.steps])
        if done.shape[1] != rows:
            return None
        lengths = []
        for row in range(rows):
            hits = torch.nonzero(done[:, row]).flatten()
            lengths.append(min(int(hits[0]) + 1, generated) if hits.numel() else generated)
        return lengths
