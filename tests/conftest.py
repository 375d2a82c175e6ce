"""Shared fixtures: built-in tiny models and ground-truth delay injection.

Ground truth: :func:`inject_delays` makes the vision tower, every prefill forward of the
language model and every decode forward busy-wait for known durations. A measured phase
must then lie between the injected time and the injected time plus a small slack (the
tiny model's real compute and the framework's own work).
"""

from __future__ import annotations

import os
import random
import time
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # steadier timings on a 2-core machine

from phasetime import models  # noqa: E402
from phasetime._inputs import build_inputs, synthetic_image  # noqa: E402

# Upper slack per phase: the tiny models compute a forward in ~1 ms on CPU.
SLACK_MS = 6.0


def spin(ms: float) -> None:
    """Busy-wait ``ms`` milliseconds (sleep overshoots by more than we tolerate)."""
    end = time.perf_counter_ns() + int(ms * 1e6)
    while time.perf_counter_ns() < end:
        pass


def _language_model(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.model
    return getattr(inner, "language_model", inner)


def _vision_tower(model: torch.nn.Module) -> torch.nn.Module | None:
    inner = model.model
    return getattr(inner, "vision_tower", None) or getattr(inner, "visual", None)


def _cache_length(kwargs: dict[str, Any]) -> int:
    for key in ("past_key_values", "cache"):
        cache = kwargs.get(key)
        if cache is not None and hasattr(cache, "get_seq_length"):
            return int(cache.get_seq_length())
    return 0


@contextmanager
def inject_delays(
    model: torch.nn.Module, vision_ms: float, prefill_ms: float, decode_ms: float, decode_jitter_ms: float = 0.0
) -> Iterator[None]:
    """Make vision, each prefill forward and each decode forward take at least the given times.

    A language-model forward is a prefill forward when the cache is empty or it is fed
    more than one position (chunked prefill), else a decode forward. ``decode_jitter_ms``
    adds a seeded uniform random extra to each decode step (independent of the output
    length by construction), like the noise of a real machine.
    """
    rng = random.Random(0)

    @torch.compiler.disable
    def lm_delay(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids")
        if x is None:
            x = args[0]
        if _cache_length(kwargs) == 0 or x.shape[1] > 1:
            spin(prefill_ms)
        else:
            spin(decode_ms + rng.uniform(0.0, decode_jitter_ms))

    @torch.compiler.disable
    def vision_delay(module: Any, args: tuple) -> None:
        spin(vision_ms)

    handles = [_language_model(model).register_forward_pre_hook(lm_delay, with_kwargs=True)]
    tower = _vision_tower(model)
    if tower is not None:
        handles.append(tower.register_forward_pre_hook(vision_delay))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def fastest_call(measure: Any, calls: int = 3) -> Any:
    """The call of ``measure()`` with the smallest total among ``calls``.

    A busy machine's stalls (preemption, a page fault) only ever add time, and injected
    delays are lower bounds, so the fastest call is the one least disturbed: a stall in
    one call cannot decide a test.
    """
    return min((measure() for _ in range(calls)), key=lambda m: m.total_ms)


_CACHE: dict[str, tuple[Any, Any]] = {}


def load_tiny(name: str) -> tuple[Any, Any]:
    """A built-in model on CPU, built once per test session."""
    if name not in _CACHE:
        _CACHE[name] = models.load(name, device="cpu", dtype="float32")
    return _CACHE[name]


def tiny_inputs(name: str, batch_size: int = 1, prompt: str = "Describe this image.") -> dict[str, Any]:
    _, processor = load_tiny(name)
    images = [synthetic_image(64)] if models.is_vision_language(processor) else []
    return build_inputs(processor, prompt, images, batch_size=batch_size)


@pytest.fixture(params=["tiny-llava", "tiny-qwen2-vl", "tiny-llama"])
def tiny_name(request: pytest.FixtureRequest) -> str:
    return request.param
