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
``queued_ts``, ``first_token_ts`` ... are comparable). On an accelerator every boundary records
a device event instead of waiting, and the step waits for the device once, when it ends: each
boundary is then placed on the host clock by its event's distance from the step's last event
(:class:`_Events`). So the probe adds one wait per step where it used to add four, and vLLM's
stock loop already waits once per step for its sampled tokens.

A ``sink`` (:func:`install`'s argument) receives every step as it ends: the server plugin
(:mod:`phasetime.vllm.plugin`) writes them to a file, the offline engine collects them.
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


class _Events:
    """Device events for one step's boundaries, put on the host clock with one wait.

    ``mark()`` records an event and returns a placeholder; ``settle(values)`` records the
    step's last event, waits for the device once, reads the host clock T and replaces every
    placeholder by T minus its event's distance to the last event (device-side time, on the
    host clock). ``event`` makes an event (``torch.Event(..., enable_timing=True)`` on an
    accelerator; a test hands in its own), ``synchronize`` waits for the device."""

    def __init__(self, event: Callable[[], Any], synchronize: Callable[[], None],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.event, self.synchronize, self.clock = event, synchronize, clock
        self.pending: list[Any] = []
        self.waits = 0

    def mark(self) -> int:
        e = self.event()
        e.record()
        self.pending.append(e)
        return -len(self.pending)  # a placeholder: the index of its event, negative

    def settle(self, step: dict[str, Any]) -> float:
        last = self.event()
        last.record()
        self.synchronize()
        self.waits += 1
        end = self.clock() * 1e3
        times = [end - e.elapsed_time(last) for e in self.pending]

        def place(value: float) -> float:
            return times[-int(value) - 1] if value < 0 else value
        step["start_ms"] = place(step["start_ms"])
        step["forward"] = None if step["forward"] is None else tuple(place(v) for v in step["forward"])
        step["encoder"] = [tuple(place(v) for v in span) for span in step["encoder"]]
        self.pending = []
        return end


class _Probe:
    def __init__(self, runner: Any, sink: Callable[[dict[str, Any]], None] | None = None,
                 events: _Events | None = None) -> None:
        self.steps: list[dict[str, Any]] = []
        self.current: dict[str, Any] | None = None
        self.sink = sink
        kind = str(getattr(getattr(runner, "device", None), "type", "cpu"))
        if events is None and kind != "cpu":
            events = _device_events(kind)
        self.events = events
        self.originals = {name: getattr(runner, name) for name in HOOKED}

    def now(self) -> float:
        """The host clock on a CPU; a device event's placeholder on an accelerator."""
        if self.events is not None:
            return self.events.mark()
        return time.perf_counter() * 1e3

    def close_step(self) -> None:
        """End the open step now (no clock read, and so no device wait, when none is open)."""
        if self.current is not None:
            step, self.current = self.current, None
            step["end_ms"] = self.events.settle(step) if self.events is not None else self.now()
            if self.sink is not None:
                self.sink(step)
            else:
                self.steps.append(step)


def _device_events(device_type: str) -> _Events:
    import torch

    return _Events(lambda: torch.Event(torch.device(device_type), enable_timing=True), torch.accelerator.synchronize)


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


def install(worker: Any, sink: Callable[[dict[str, Any]], None] | None = None) -> str:
    """Hook the worker's model runner (once); returns the runner's class name. ``sink``
    receives each step as it ends (default: kept until :func:`collect`)."""
    runner = _runner(worker)
    if getattr(runner, _ATTR, None) is not None:
        return type(runner).__name__
    missing = [name for name in HOOKED if not callable(getattr(runner, name, None))]
    if missing:
        raise RuntimeError(f"this vLLM's model runner ({type(runner).__name__}) has no {', '.join(missing)}: "
                           "phasetime cannot time its steps")
    probe = _Probe(runner, sink)
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
