"""The legacy *subtraction* method, kept only as a baseline to compare against.

This reproduces how phase latencies used to be obtained, flaws included:

1. vision: the vision encoder (``get_image_features``) timed in a call of its own;
2. LLM prefill: one model forward over the whole prompt, timed in a call of its own
   (on a VLM that forward encodes the images again: vision is computed three times);
3. total: a third, separate ``generate()``, after ``torch.cuda.empty_cache()``;
4. ``decode_ms = max(0, total - vision - prefill)`` and
   ``tpot_ms = decode_ms / output_tokens`` (0.0 when no token was generated).

The three calls run under different conditions and their errors add up; see
``docs/metrics.md``. ``ttft_ms`` is ``None`` (the legacy code never measured it) and
``other_ms`` keeps ``total - vision - prefill - decode``, which is negative exactly when
the clamp in step 4 hid a negative decode time.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from ..core import clock as _clock
from ..core.clock import Clock, time_call
from ..core.errors import UnsupportedGeneration
from .generation import check_mode, decoding, eos_token_ids, media_inputs, medium_of, prompt_length, returns_prompt
from .outputs import count_output_tokens, sequences_tensor
from .structure import unwrap
from ..core.record import Measurement, SequenceTiming
from .names import vision_methods


def _vision_call_ms(model: torch.nn.Module, inputs: dict[str, Any], clock: Any) -> float:
    pixels = {k: v for k, v in media_inputs(inputs).items() if medium_of(k) == "vision"}
    if not pixels:
        return 0.0
    located = vision_methods(model)
    if located is None:
        raise UnsupportedGeneration("the subtract method needs a model with get_image_features to time vision alone")
    owner, names = located
    total = 0.0
    for name in names:
        fn = getattr(owner, name)
        params = inspect.signature(fn).parameters
        kwargs = {k: v for k, v in inputs.items() if k in params}
        if not any(k in kwargs for k in pixels):
            continue
        with torch.no_grad():
            ms, _ = time_call(clock, fn, **kwargs)
        total += ms
    return total


def measure_subtract(model: torch.nn.Module, inputs: dict[str, Any], *, clock: Clock | None = None,
                     **generate_kwargs: Any) -> Measurement:
    """Time one input the legacy way (three separate calls); see the module docstring.

    Generation modes the direct method refuses are refused here too, before anything runs,
    and so are assisted, prompt-lookup and beam search: the legacy baseline is defined for
    one token per forward.
    """
    model = unwrap(model)
    mode = check_mode(model, {**inputs, **generate_kwargs})
    if mode not in ("greedy_search", "sample"):
        raise UnsupportedGeneration(f"the subtract method times greedy and sampled generate() calls only, not "
                                    f"{mode!r}: use the direct method")
    device = _clock.model_device(model)
    clock = clock if clock is not None else _clock.clock_for(device)
    vision_ms = _vision_call_ms(model, inputs, clock)
    with torch.no_grad():
        prefill_ms, _ = time_call(clock, model, **inputs)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    total_ms, output = time_call(clock, model.generate, **inputs, **generate_kwargs)

    prompt, cached = prompt_length((), inputs)
    sequences = sequences_tensor(output)
    generated = sequences[:, prompt:] if returns_prompt((), inputs) else sequences
    lengths = count_output_tokens(generated, eos_token_ids(model, generate_kwargs))
    decode_ms = max(0.0, total_ms - vision_ms - prefill_ms)
    seqs = tuple(
        SequenceTiming(index=i, output_tokens=n, decode_ms=decode_ms, tpot_ms=decode_ms / n if n > 0 else 0.0)
        for i, n in enumerate(lengths)
    )
    n_max = max(lengths)
    return Measurement(
        method="subtract",
        timer=clock.name,
        total_ms=total_ms,
        vision_ms=vision_ms,
        prefill_ms=prefill_ms,
        ttft_ms=None,
        decode_ms=decode_ms,
        other_ms=total_ms - vision_ms - prefill_ms - decode_ms,
        decode_steps=max(n_max - 1, 0),
        prompt_tokens=prompt - cached,
        sequences=seqs,
        vision_calls=0,
        output_ids=output,
        decoding=decoding(mode, generate_kwargs, model),
    )
