"""The probe inside vLLM's worker: every engine step recorded as a :class:`~phasetime.vllm.steps.Step`.

Installed with ``llm.llm_engine.collective_rpc(install)`` (so it reaches the worker in vLLM's
in-process and multiprocess modes alike), it wraps four methods of the worker's model runner
instance:

* ``execute_model(scheduler_output)``: a step starts; the tokens it schedules per request
  and the encoder inputs (images) per request are read off the scheduler's output;
* ``_execute_mm_encoder``: the multimodal encoder's run (timed only when the step scheduled
  encoder inputs: it is called, and returns at once, in every step);
* ``_model_forward``: the language model's forward;
* ``sample_tokens``: the step ends when its tokens are sampled.

Times are ``time.perf_counter()`` in ms, vLLM's own monotonic clock on Linux (its
``queued_ts``, ``first_token_ts`` ... are comparable). On an accelerator every boundary first
waits for the device (``torch.accelerator.synchronize()``), as vLLM's own encoder timing does.
Nothing here imports vLLM: it touches only the runner object it is handed.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

HOOKED = ("execute_model", "_execute_mm_encoder", "_model_forward", "sample_tokens")
_ATTR = "_phasetime_probe"


def _runner(worker: Any) -> Any:
    for owner in (worker, getattr(worker, "worker", None)):
        runner = getattr(owner, "model_runner", None)
        if runner is not None:
            return runner
    raise RuntimeError(f"vLLM's worker ({type(worker).__name__}) has no model runner phasetime can hook")


class _Probe:
    def __init__(self, runner: Any) -> None:
        self.steps: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        device = getattr(runner, "device", None)
        self.sync: Callable[[], None] = (lambda: None) if getattr(device, "type", "cpu") == "cpu" else _synchronize
        self.originals = {name: getattr(runner, name) for name in HOOKED}

    def now(self) -> float:
        self.sync()
        return time.perf_counter() * 1e3

    def close_step(self) -> None:
        """End the open step now (no clock read, and so no device wait, when none is open)."""
        if self.current is not None:
            self.current["end_ms"] = self.now()
            self.steps.append(self.current)
            self.current = None


def _synchronize() -> None:
    import torch

    torch.accelerator.synchronize()


def _wrap_execute(probe: _Probe, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def execute_model(scheduler_output: Any, *args: Any, **kwargs: Any) -> Any:
        tokens = {str(r): int(n) for r, n in dict(getattr(scheduler_output, "num_scheduled_tokens", {}) or {}).items()}
        encoder = {str(r): len(v) for r, v in dict(getattr(scheduler_output, "scheduled_encoder_inputs", {}) or {}).items()}
        probe.close_step()  # a step whose sampling never came (none scheduled) ends here
        probe.current = {"start_ms": probe.now(), "tokens": tokens, "encoder_inputs": encoder, "forward": None,
                         "encoder": []} if sum(tokens.values()) > 0 else None
        output = original(scheduler_output, *args, **kwargs)
        if output is not None:  # this step's output came without a separate sampling call
            probe.close_step()
        return output
    return execute_model


def _wrap_span(probe: _Probe, original: Callable[..., Any], key: str) -> Callable[..., Any]:
    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        step = probe.current
        if step is None or (key == "encoder" and not step["encoder_inputs"]):
            return original(*args, **kwargs)
        start = probe.now()
        try:
            return original(*args, **kwargs)
        finally:
            span = (start, probe.now())
            if key == "encoder":
                step["encoder"].append(span)
            else:
                step["forward"] = span if step["forward"] is None else (step["forward"][0], span[1])
    return timed


def _wrap_sample(probe: _Probe, original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def sample_tokens(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        probe.close_step()
        return output
    return sample_tokens


def install(worker: Any) -> str:
    """Hook the worker's model runner (once); returns the runner's class name."""
    runner = _runner(worker)
    if getattr(runner, _ATTR, None) is not None:
        return type(runner).__name__
    missing = [name for name in HOOKED if not callable(getattr(runner, name, None))]
    if missing:
        raise RuntimeError(f"this vLLM's model runner ({type(runner).__name__}) has no {', '.join(missing)}: "
                           "phasetime cannot time its steps")
    probe = _Probe(runner)
    runner.execute_model = _wrap_execute(probe, probe.originals["execute_model"])
    runner._execute_mm_encoder = _wrap_span(probe, probe.originals["_execute_mm_encoder"], "encoder")
    runner._model_forward = _wrap_span(probe, probe.originals["_model_forward"], "forward")
    runner.sample_tokens = _wrap_sample(probe, probe.originals["sample_tokens"])
    setattr(runner, _ATTR, probe)
    return type(runner).__name__


def collect(worker: Any) -> list[dict[str, Any]]:
    """The steps recorded since the last collect (and forget them)."""
    probe: _Probe | None = getattr(_runner(worker), _ATTR, None)
    if probe is None:
        raise RuntimeError("the phasetime probe is not installed in this vLLM worker")
    probe.close_step()
    steps, probe.steps = probe.steps, []
    return steps


def uninstall(worker: Any) -> None:
    """Restore the runner's own methods."""
    runner = _runner(worker)
    probe: _Probe | None = getattr(runner, _ATTR, None)
    if probe is None:
        return
    for name in HOOKED:
        try:
            delattr(runner, name)  # the instance attribute; the class's method shows again
        except AttributeError:
            setattr(runner, name, probe.originals[name])
    setattr(runner, _ATTR, None)
