"""What a ``generate()`` call will do, read from its arguments and the model, before it runs.

Pure helpers of the adapter: the one reader of generation options (:func:`option`: the
call's keyword, else the ``generation_config`` it was given, else the model's, as generate()
itself decides), the generation mode, the prompt length, the EOS ids, and which of the call's
tensors are media. No timing here.

**Media inputs** (docs/metrics.md, "Media"): a call's floating-point tensors that are not
text, whatever their key (``pixel_values``, ``image_patches``, ``pixel_values_videos``,
``input_features``, ...). Text means token ids, masks, positions, the cache and embeddings
of ids (``inputs_embeds``). A medium is audio when its key says so (``input_features``,
``input_values``, or a key naming audio or speech), vision (images and video) otherwise.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..core.errors import UnsupportedGeneration, UsageError

SUPPORTED_MODES = ("greedy_search", "sample", "assisted_generate", "beam_search", "beam_sample")
MEDIA = ("vision", "audio")
_MODEL_INPUT_KEYS = ("input_ids", "inputs_embeds")
_CACHE_KEYS = ("past_key_values", "cache")
# text: ids, masks, positions, the cache, embeddings of ids (and the same of a second text input:
# qformer_input_ids, decoder_attention_mask, ...)
TEXT_KEYS = (*_MODEL_INPUT_KEYS, *_CACHE_KEYS, "attention_mask", "position_ids", "token_type_ids", "cache_position")
_TEXT_SUFFIXES = ("input_ids", "token_type_ids", "position_ids")
# a mask of a medium (pixel_attention_mask, feature_attention_mask, ...) is not text
_MEDIA_MASK_HINTS = ("pixel", "image", "video", "patch", "vision", "audio", "speech", "feature")
_AUDIO_HINTS = ("audio", "speech", "input_features", "input_values")


def option(model: Any, kwargs: dict[str, Any], key: str, default: Any = None) -> Any:
    """A generation option as generate() will use it: the call's keyword, else the
    ``generation_config`` the call was given, else the model's own (None values fall through
    to ``default``)."""
    if key in kwargs and kwargs[key] is not None:
        return kwargs[key]
    config = kwargs.get("generation_config") or getattr(model, "generation_config", None)
    value = getattr(config, key, None)
    return default if value is None else value


def _number(model: Any, kwargs: dict[str, Any], key: str, default: float) -> float:
    value = option(model, kwargs, key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsupportedGeneration(f"generation option {key}={value!r} is not a number")
    return value


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
    get = lambda key: option(model, kwargs, key)  # noqa: E731
    if get("assistant_model") is not None or get("prompt_lookup_num_tokens") or get("assistant_early_exit"):
        return "assisted_generate"
    if get("constraints") is not None or get("force_words_ids") is not None:
        return "constrained_beam_search"
    do_sample = get("do_sample") is True
    if _number(model, kwargs, "num_beams", 1) > 1:
        if _number(model, kwargs, "num_beam_groups", 1) > 1:
            return "group_beam_search"
        return "beam_sample" if do_sample else "beam_search"
    if not do_sample and _number(model, kwargs, "top_k", 0) > 1 and _number(model, kwargs, "penalty_alpha", 0) > 0:
        return "contrastive_search"
    if get("dola_layers") is not None:
        return "dola_generation"
    return "sample" if do_sample else "greedy_search"


def num_beams(model: Any, kwargs: dict[str, Any]) -> int:
    """The beams of a call (1 unless it runs a beam search), wherever the option was given."""
    return int(_number(model, kwargs, "num_beams", 1))


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
    draft = option(model, kwargs, "assistant_model")
    if option(model, kwargs, "assistant_early_exit"):
        raise UnsupportedGeneration("self-speculative decoding (assistant_early_exit) is not supported: its draft is the "
                                    "target's own first layers and shares the target's cache, so draft and verify "
                                    "forwards cannot be told apart")
    if kwargs.get("assistant_tokenizer") is not None:
        raise UnsupportedGeneration("assisted decoding across tokenizers (assistant_tokenizer) is not supported yet: "
                                    "its rounds re-tokenize the draft's text; use a draft with the target's tokenizer")
    if draft is not None and model is not None and (draft is model or getattr(draft, "_orig_mod", None) is model):
        raise UnsupportedGeneration("the target model as its own draft (assistant_model=model) is not supported: its "
                                    "draft generate() would run inside the timed one, on the same hooks")
    if draft is not None and model is not None:
        mismatch = vocabulary_mismatch(text_vocabulary(model), text_vocabulary(draft))
        if mismatch:
            raise UnsupportedGeneration(mismatch)
    if draft is None and media_inputs(kwargs):
        raise UnsupportedGeneration(f"prompt lookup with media inputs ({', '.join(media_inputs(kwargs))}) is not supported: "
                                    "its candidates copy the prompt's image placeholder tokens, which the model then "
                                    "cannot match to image features; use a draft model, or a text prompt")


def text_vocabulary(model: Any) -> int | None:
    """The vocabulary size of a model's text config (what transformers compares for a draft)."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    size = getattr(text, "vocab_size", None)
    return size if isinstance(size, int) else None


def vocabulary_mismatch(a: int | None, b: int | None) -> str | None:
    """Why a draft of vocabulary ``b`` cannot draft for a target of vocabulary ``a`` with its own
    tokenizer (None: it can, or a size is not known)."""
    if a is None or b is None or a == b:
        return None
    return (f"the draft's tokenizer does not match the target's (vocabularies of {b} and {a} tokens): phasetime times "
            "a draft with the target's tokenizer")


def decoding(mode: str, kwargs: dict[str, Any], model: Any = None) -> str:
    """phasetime's name for how a call decodes: greedy, sample, assisted (a draft model),
    prompt_lookup, beam_search or beam_sample."""
    if mode == "assisted_generate":
        return "assisted" if option(model, kwargs, "assistant_model") is not None else "prompt_lookup"
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


def is_text_key(key: str) -> bool:
    """Whether a call's argument holds text: ids, masks, positions, the cache, embeddings of ids."""
    if key.endswith("attention_mask"):
        return not any(hint in key for hint in _MEDIA_MASK_HINTS)
    return key in TEXT_KEYS or key.endswith(_TEXT_SUFFIXES)


def medium_of(key: str) -> str:
    """The medium of a media input: ``audio`` when its key says so, else ``vision``."""
    lowered = key.lower()
    return "audio" if any(hint in lowered for hint in _AUDIO_HINTS) else "vision"


def media_inputs(kwargs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The call's media inputs by key: floating-point tensors that are not text (nor a mask)."""
    return {key: value for key, value in kwargs.items()
            if isinstance(value, torch.Tensor) and value.is_floating_point() and not is_text_key(key)
            and "mask" not in key}


def text_tensors(args: Sequence[Any], kwargs: dict[str, Any]) -> list[torch.Tensor]:
    """The call's text tensors (see :func:`is_text_key`), positional input ids included."""
    found = [value for key, value in kwargs.items() if isinstance(value, torch.Tensor) and is_text_key(key)]
    return found + [a for a in args if isinstance(a, torch.Tensor)]


_MEDIA_TOKEN_ATTRS = ("image_token_id", "image_token_index", "video_token_id", "video_token_index",
                      "audio_token_id", "audio_token_index")


def media_tokens_without_media(model: Any, kwargs: dict[str, Any]) -> str | None:
    """Why a call is not what it looks like: its prompt holds image, video or audio placeholder
    tokens but it carries no media input (the model would run them as text and the encoder
    would read 0 ms)."""
    ids = kwargs.get("input_ids")
    if not isinstance(ids, torch.Tensor) or media_inputs(kwargs) or kwargs.get("inputs_embeds") is not None:
        return None
    config = getattr(model, "config", None)
    for attr in _MEDIA_TOKEN_ATTRS:
        token = getattr(config, attr, None)
        if isinstance(token, int) and not isinstance(token, bool) and 0 <= token:
            found = int((ids == token).sum())
            if found:
                return (f"the prompt holds {found} {attr.split('_')[0]} placeholder token(s) (id {token}) but the call "
                        "carries no media input: pass the processor's whole output (its pixel or audio values included)")
    return None


def ends_only_at_eos(model: Any, kwargs: dict[str, Any]) -> bool:
    """Whether every row of a call ends at its first EOS or at the length asked for (no stop
    strings, custom stopping criteria or time limit): its output lengths can then be read from
    the tokens, and its stopping criteria need not be watched at every step."""
    return (not kwargs.get("stopping_criteria") and not option(model, kwargs, "stop_strings")
            and option(model, kwargs, "max_time") is None)


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
    eos = option(model, kwargs, "eos_token_id")
    if eos is None:
        return set()
    if isinstance(eos, torch.Tensor):
        return {int(x) for x in eos.flatten().tolist()}
    if isinstance(eos, int):
        return {eos}
    return {int(x) for x in eos}
