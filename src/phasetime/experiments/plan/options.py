"""Checking values before anything runs: generate() options, devices, attention implementations.

Every function here raises ``ValueError`` with a message fit for the experiment file's
problem list (pydantic adds the key's path), never a ``TypeError`` from deep inside.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Sequence

from ...core.errors import UnsupportedGeneration
from ...hf.generation import check_mode

DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d{1,3})?)$")
RESERVED = {"max_new_tokens", "min_new_tokens"}
_BOOL = {"do_sample", "use_cache", "renormalize_logits", "remove_invalid_values", "output_attentions",
         "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate", "token_healing",
         "low_memory", "disable_compile", "use_mtp"}
_INT = {"max_length", "min_length", "num_beams", "num_beam_groups", "top_k", "no_repeat_ngram_size",
        "encoder_no_repeat_ngram_size", "num_return_sequences", "pad_token_id", "bos_token_id", "forced_bos_token_id",
        "decoder_start_token_id", "prompt_lookup_num_tokens", "max_matching_ngram_size", "num_assistant_tokens",
        "prefill_chunk_size", "max_cache_len", "assistant_lookbehind", "target_lookbehind", "assistant_early_exit"}
_FLOAT = {"max_time", "temperature", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
          "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "guidance_scale",
          "assistant_confidence_threshold", "penalty_alpha", "diversity_penalty"}
_STR = {"cache_implementation", "num_assistant_tokens_schedule"}
_INT_OR_INTS = {"eos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens"}
_STR_OR_STRS = {"stop_strings"}
_FORBIDDEN = {"transformers_version", "is_assistant", "generation_kwargs"}
# Options that do nothing without another: (the options, what they need, its test on the options)
_DEPENDENT = (
    (("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold",
      "assistant_lookbehind", "target_lookbehind"), "a draft model (draft: MODEL, --draft)",
     lambda o: o.get("draft") is not None),
    (("max_matching_ngram_size",), "prompt lookup (prompt_lookup_num_tokens, --prompt-lookup)",
     lambda o: bool(o.get("prompt_lookup_num_tokens"))),
    (("num_beam_groups", "length_penalty", "early_stopping", "diversity_penalty"), "a beam search (num_beams > 1)",
     lambda o: (o.get("num_beams") or 1) > 1),
    (("temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff"),
     "sampling (do_sample: true)", lambda o: o.get("do_sample") is True),
)
# Values above these are surely typos (and would allocate or loop for ever).
_INT_LIMIT = 1_000_000
# Ranges transformers checks only when generate() runs (a failed cell, not an error up front).
_RANGES = {
    "temperature": (0.0, None, False), "top_p": (0.0, 1.0, False), "min_p": (0.0, 1.0, True),
    "typical_p": (0.0, 1.0, False), "top_k": (0, None, True), "repetition_penalty": (0.0, None, False),
    "num_return_sequences": (1, 256, True), "num_beams": (1, None, True), "max_time": (0.0, None, False),
    "no_repeat_ngram_size": (0, None, True), "epsilon_cutoff": (0.0, 1.0, True), "eta_cutoff": (0.0, 1.0, True),
}


def _range_problem(key: str, value: Any) -> str | None:
    if key not in _RANGES or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    low, high, inclusive = _RANGES[key]
    if value < low or (value == low and not inclusive):
        return f"must be {'>=' if inclusive else '>'} {low}"
    if high is not None and value > high:
        return f"must be <= {high}"
    return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_problem(key: str, value: Any) -> str | None:
    if key in _BOOL and not isinstance(value, bool):
        return "must be true or false"
    if key in _INT and not _is_int(value):
        return "must be an integer"
    if key in _FLOAT and not (_is_int(value) or (isinstance(value, float) and math.isfinite(value))):
        return "must be a finite number"
    if key in _STR and not isinstance(value, str):
        return "must be a string"
    if key in _INT_OR_INTS and not (_is_int(value) or (isinstance(value, list) and all(_is_int(v) for v in value))):
        return "must be an integer or a list of integers"
    if key in _STR_OR_STRS and not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))):
        return "must be a string or a list of strings"
    if _is_int(value) and abs(value) > _INT_LIMIT and key not in ("pad_token_id", "bos_token_id", "eos_token_id"):
        return f"must be at most {_INT_LIMIT}"
    return None


def _known_options() -> set[str]:
    from transformers import GenerationConfig

    return {k for k in vars(GenerationConfig()) if not k.startswith("_")}


def check_generation(options: dict[str, Any]) -> dict[str, Any]:
    """A ``sweep.generation`` entry: known generate() options of the right types, JSON-storable,
    a mode phasetime can time, and accepted by transformers' GenerationConfig. ``draft`` (a
    model name, phasetime's own key) runs assisted decoding with that draft model."""
    try:
        json.dumps(options, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError):
        raise ValueError("values must be numbers, strings, booleans, null or lists and mappings of them") from None
    reserved = RESERVED & set(options)
    if reserved:
        raise ValueError(f"{sorted(reserved)} cannot be set here (max/min_new_tokens have their own keys)")
    draft = options.get("draft")
    if "draft" in options and not (isinstance(draft, str) and draft.strip()):
        raise ValueError(f"draft={draft!r} must be a model: a built-in name, hub id or local directory")
    if draft is not None and (options.get("num_beams") or 1) > 1:
        raise ValueError("a draft model decodes greedily or by sampling, not with beams (num_beams)")
    known = _known_options()
    generate = {k: v for k, v in options.items() if k != "draft"}
    for key, value in generate.items():
        if key == "assistant_model":
            raise ValueError("name the draft model with draft: MODEL (phasetime loads it beside the target)")
        if key in _FORBIDDEN or key not in known:
            raise ValueError(f"{key!r} is not a generate() option phasetime can set")
        problem = _type_problem(key, value) or _range_problem(key, value)
        if problem:
            raise ValueError(f"{key}={value!r} {problem}")
    for keys, needs, present in _DEPENDENT:
        idle = [k for k in keys if k in options]
        if idle and not present(options):
            raise ValueError(f"{idle[0]}={options[idle[0]]!r} does nothing without {needs}")
    try:
        check_mode(None, {**generate, "assistant_model": draft} if draft is not None else generate)
    except UnsupportedGeneration as exc:
        raise ValueError(f"{options}: {exc}") from None
    _check_with_transformers(generate)
    return options


def check_decoding(generation: Sequence[dict[str, Any]], methods: Sequence[str], batch_sizes: Sequence[int],
                   per_phase_resources: bool) -> None:
    """Assisted, prompt-lookup and beam-search cells: what they cannot be combined with."""
    rounds = any(g.get("draft") or g.get("prompt_lookup_num_tokens") for g in generation)
    beams = any((g.get("num_beams") or 1) > 1 for g in generation)
    if (rounds or beams) and set(methods) & {"subtract", "both"}:
        raise ValueError("sweep.method: the subtract method times greedy and sampled calls only; assisted, "
                         "prompt-lookup and beam-search cells need method: [direct]")
    if rounds and max(batch_sizes) > 1:
        raise ValueError("sweep.batch_size: assisted and prompt-lookup decoding run one prompt per call "
                         "(transformers' limit); use batch_size: [1]")
    if (rounds or beams) and per_phase_resources:
        raise ValueError("resources: cost and energy per phase assume one token per forward; they cannot be "
                         "recorded with assisted, prompt-lookup or beam-search cells")


# generate() options the vLLM backend maps onto SamplingParams (the rest are refused by name)
VLLM_GENERATION = ("do_sample", "temperature", "top_p", "top_k")


def check_backend(backend: str, generation: Sequence[dict[str, Any]], methods: Sequence[str], resources: Sequence[str],
                  executor: str) -> None:
    """What the vLLM backends cannot time yet, refused by name before anything runs."""
    if backend not in ("vllm", "vllm-server"):
        return
    for options in generation:
        if options.get("draft") or options.get("prompt_lookup_num_tokens") or (options.get("num_beams") or 1) > 1:
            raise ValueError("backend vllm: speculative decoding, prompt lookup and beam search inside vLLM are not "
                             "timed yet (run them on backend hf)")
        unknown = sorted(set(options) - set(VLLM_GENERATION))
        if unknown:
            raise ValueError(f"backend vllm: generation option(s) {unknown} have no vLLM counterpart phasetime maps "
                             f"(it maps {', '.join(VLLM_GENERATION)})")
    if set(methods) & {"subtract", "both"}:
        raise ValueError("backend vllm: the legacy subtract method times generate() calls; use method: [direct]")
    if resources:
        raise ValueError(f"backend vllm: resources ({', '.join(resources)}) are recorded on backend hf only")
    if executor != "local":
        raise ValueError("backend vllm: runs on the local executor (vLLM places its own workers)")


# vllm.LLM arguments phasetime sets itself, for the reason docs/metrics.md ("vLLM") gives
ENGINE_ARGS_SET = ("model", "dtype", "seed", "trust_remote_code", "enable_prefix_caching", "disable_log_stats",
                   "async_scheduling", "enable_mm_processor_stats", "mm_processor_cache_gb")


def check_engine_args(backend: str, args: dict[str, Any]) -> None:
    """``engine_args``: for vLLM only, JSON values, none phasetime sets, nothing it cannot time."""
    if not args:
        return
    if backend not in ("vllm", "vllm-server"):
        raise ValueError("engine_args are vLLM's engine arguments: they need backend: vllm or vllm-server")
    ours = sorted(set(args) & set(ENGINE_ARGS_SET))
    if ours:
        raise ValueError(f"engine_args: phasetime sets {ours} itself (docs/metrics.md, \"vLLM\")")
    if args.get("speculative_config"):
        raise ValueError("engine_args: speculative decoding inside vLLM is not timed yet")
    if (args.get("pipeline_parallel_size") or 1) > 1:
        raise ValueError("engine_args: pipeline parallelism is not timed yet (its stages run a step in turns)")
    try:
        json.dumps(args)
    except (TypeError, ValueError):
        raise ValueError("engine_args: values must be plain YAML / JSON values") from None


def _check_with_transformers(options: dict[str, Any]) -> None:
    import warnings

    from transformers import GenerationConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            GenerationConfig(**options)
        except (ValueError, TypeError) as exc:
            text = str(exc).strip().splitlines()
            raise ValueError(f"transformers refuses {options}: {text[0] if text else type(exc).__name__}") from None


def check_device(value: str) -> str:
    if not isinstance(value, str) or not DEVICE.match(value):
        raise ValueError(f"unknown device {value!r} (use auto, cpu, mps, cuda or cuda:N)")
    return value


def attention_implementations() -> list[str]:
    """The attention implementations this transformers knows."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ["eager", *ALL_ATTENTION_FUNCTIONS.keys()]


def check_attention(value: str | None) -> str | None:
    if value is None:
        return None
    known = attention_implementations()
    if value not in known and not value.startswith("kernels-community/"):
        raise ValueError(f"unknown attention implementation {value!r} (this transformers knows {', '.join(known)})")
    return value


def check_text(value: str, what: str = "value") -> str:
    """A path or name: no NUL byte, at most 4096 characters."""
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL byte")
    if len(value) > 4096:
        raise ValueError(f"{what} is longer than 4096 characters")
    return value
