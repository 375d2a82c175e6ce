"""Shared fixtures: built-in tiny models, a virtual clock, and ground-truth delay injection.

Ground truth: :func:`inject_delays` makes the vision tower, every prefill forward of the
language model and every decode forward take known durations. With a :class:`VirtualClock`
those durations are the only thing that moves time, so a phase must come out *exactly* at
its injected value, whatever else the machine is doing: that is how phase attribution is
tested. On the real clock the injected time is busy-waited, and a measured phase can only
be longer than it (a stall only adds time): real-clock tests assert lower bounds.
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # steadier timings on a 2-core machine

from phasetime.experiments import models  # noqa: E402

# tests/vllm_engine times the real engine: it runs from the vLLM environment (scripts/setup-vllm.sh)
collect_ignore = [] if importlib.util.find_spec("vllm") else ["vllm_engine"]
from phasetime.experiments.data.inputs import build_inputs, synthetic_image  # noqa: E402


class VirtualClock:
    """A clock that moves only when :meth:`advance` is called (by :func:`inject_delays`)."""

    name = "virtual"

    def __init__(self) -> None:
        self.now_ns = 0
        self.syncs = 0
        self.marks = 0

    def advance(self, ms: float) -> None:
        self.now_ns += round(ms * 1_000_000)

    def sync(self) -> None:
        self.syncs += 1

    def mark(self) -> int:
        self.marks += 1
        return self.now_ns

    def resolve_ms(self, marks: Sequence[int]) -> list[float]:
        return [(m - marks[0]) / 1e6 for m in marks] if marks else []


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
    model: torch.nn.Module, vision_ms: float, prefill_ms: float, decode_ms: float, decode_jitter_ms: float = 0.0,
    clock: VirtualClock | None = None, vision_tower: torch.nn.Module | None = None,
    language_model: torch.nn.Module | None = None,
) -> Iterator[None]:
    """Make vision, each prefill forward and each decode forward take the given times.

    With ``clock`` the time passes on that virtual clock (exactly); without, it is
    busy-waited (at least). A language-model forward is a prefill forward when the cache
    is empty or it is fed more than one position (chunked prefill), else a decode forward.
    ``decode_jitter_ms`` adds a seeded uniform random extra to each decode step
    (independent of the output length by construction), like the noise of a real machine.
    """
    rng = random.Random(0)
    wait = clock.advance if clock is not None else spin

    @torch.compiler.disable
    def lm_delay(module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        x = kwargs.get("inputs_embeds")
        if x is None:
            x = kwargs.get("input_ids")
        if x is None:
            x = args[0]
        if _cache_length(kwargs) == 0 or x.shape[1] > 1:
            wait(prefill_ms)
        else:
            wait(decode_ms + rng.uniform(0.0, decode_jitter_ms))

    @torch.compiler.disable
    def vision_delay(module: Any, args: tuple) -> None:
        wait(vision_ms)

    lm = language_model if language_model is not None else _language_model(model)
    handles = [lm.register_forward_pre_hook(lm_delay, with_kwargs=True)]
    tower = vision_tower if vision_tower is not None else _vision_tower(model)
    if tower is not None:
        handles.append(tower.register_forward_pre_hook(vision_delay))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def discover(model: torch.nn.Module, inputs: dict[str, Any]) -> None:
    """Make the model's media map for this kind of input now: before the first call that
    carries it is timed, phasetime runs an untimed discovery call, whose forwards a stateful
    delay injector would count as the timed call's."""
    import phasetime

    phasetime.measure(model, inputs, max_new_tokens=1)


@pytest.fixture
def virtual_clock(monkeypatch: pytest.MonkeyPatch) -> VirtualClock:
    """A virtual clock that every probe and the legacy method pick by default in this test."""
    import phasetime.core.clock as clock_module

    clock = VirtualClock()
    monkeypatch.setattr(clock_module, "clock_for", lambda device=None: clock)
    return clock


_CACHE: dict[str, tuple[Any, Any]] = {}


def load_tiny(name: str) -> tuple[Any, Any]:
    """A built-in model on CPU, built once per test session."""
    if name not in _CACHE:
        _CACHE[name] = models.load(name, device="cpu", dtype="float32")
    return _CACHE[name]


def tiny_inputs(name: str, batch_size: int = 1, prompt: str = "Describe this image.", images: int = 1) -> dict[str, Any]:
    _, processor = load_tiny(name)
    pictures = [synthetic_image(64)] * images if models.is_vision_language(processor) else []
    return build_inputs(processor, prompt, pictures, batch_size=batch_size)


@pytest.fixture(params=["tiny-llava", "tiny-qwen2-vl", "tiny-llama"])
def tiny_name(request: pytest.FixtureRequest) -> str:
    return request.param


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str, output: str) -> None:
        self.exit_code, self.stdout, self.stderr, self.output = code, stdout, stderr, output

    def __repr__(self) -> str:
        return f"CliResult(exit_code={self.exit_code}, output={self.output[-2000:]!r})"


def run_cli(*args: str) -> CliResult:
    """``phasetime ARGS`` through the console script's own entry (its error handler included)."""
    from click.testing import CliRunner

    from phasetime.cli import main

    with CliRunner().isolation() as (out, err, both):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        streams = [s.getvalue().decode("utf-8", "replace") for s in (out, err, both)]
    return CliResult(code, *streams)


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")


@pytest.fixture(scope="session")
def example_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The three example experiments, run once per session: name -> (experiment, results directory)."""
    from pathlib import Path

    from phasetime.experiments.running.run import run_experiment
    from phasetime.experiments.plan.spec import load_experiment

    base = tmp_path_factory.mktemp("examples")
    out = {}
    for name in ("latency", "motivation", "accuracy"):
        file = Path(EXAMPLES) / f"{name}.yaml"
        experiment = load_experiment(file)
        result = run_experiment(experiment, base / name, source=file)
        out[name] = (experiment, base / name, result)
    return out
