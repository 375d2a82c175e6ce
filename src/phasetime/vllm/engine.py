"""vLLM's offline engine (``vllm.LLM``) with phasetime's step probe, in this process.

:func:`start` starts the engine on a checkpoint directory with the probe
(:mod:`.worker_probe`) installed on its worker through ``collective_rpc``; :func:`engine_call`
submits a call's requests together and returns the engine's steps; :func:`request_measurement`
turns one request's steps into the core's events (:func:`.steps.request_events`) and the
core's ``derive`` makes its measurement, with vLLM's own figures of the same request beside it.
The engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise),
with prefix caching off, its per-request statistics and encoder timing on, and the processor
and encoder caches emptied before every call, so that each call processes and encodes its
images as ``generate()`` does. vLLM is imported inside :func:`start` and :func:`sampling_params`
only.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from typing import Any

from ..core.errors import PhasetimeError, first_line
from ..core.phases import derive
from . import worker_probe
from .steps import Step, request_events

SETUP = "bash scripts/setup-vllm.sh builds .venv-vllm; run phasetime from there (.venv-vllm/bin/phasetime run ...)"


class EngineError(PhasetimeError):
    """vLLM cannot run what was asked of it (a device, a model, a request it lost track of)."""


class VllmUnavailable(EngineError):
    """vLLM is not installed in this environment."""


def unavailable() -> str | None:
    """Why vLLM cannot be used here (None: it is installed), without importing it."""
    if importlib.util.find_spec("vllm") is None:
        return f"backend vllm needs vLLM, which this environment lacks; {SETUP}"
    return None


def start(path: str, dtype: str, seed: int, device: str = "auto", trust_remote_code: bool = False,
          engine_args: dict[str, Any] | None = None, multimodal: bool = False) -> tuple[Any, str]:
    """(vllm.LLM with the probe installed, the device) for the checkpoint directory ``path``;
    ``multimodal``: the model takes images (vLLM's encoder statistics on, its processor cache
    off); ``engine_args``: the experiment's further arguments of vllm.LLM. A model vLLM cannot
    load is one line (vLLM's own message can list every weight)."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: one clock, one probe
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM wants most of the RAM free
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise VllmUnavailable(f"backend vllm needs vLLM, which this environment lacks ({exc}); {SETUP}") from None
    platform = str(getattr(current_platform, "device_type", "cpu") or "cpu")
    if device not in ("auto", platform) and not device.startswith(platform):
        raise EngineError(f"backend vllm: this vLLM runs on {platform!r}, not on {device!r}")
    if dtype == "auto":  # vLLM would run a float32 checkpoint in bfloat16 on a CPU: say it
        dtype = "float32" if platform == "cpu" else "bfloat16"
    kwargs: dict[str, Any] = dict(
        model=path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, enforce_eager=platform == "cpu",
        enable_prefix_caching=False, disable_log_stats=False, async_scheduling=False,
    )
    if multimodal:
        kwargs.update(enable_mm_processor_stats=True, mm_processor_cache_gb=0)
    kwargs.update(engine_args or {})
    say_once(logging.getLogger("vllm.v1.worker.cpu_worker"), PINNED_THREADS)
    try:
        llm = vllm.LLM(**kwargs)
    except Exception as exc:  # noqa: BLE001 -- vLLM raises whatever its loaders raise
        raise EngineError(f"vLLM cannot load this model: {first_line(exc, 240)}") from None
    llm.llm_engine.collective_rpc(worker_probe.install)
    return llm, "cpu" if platform == "cpu" else f"{platform}:0"


# vLLM's CPU worker, in this process, replaces torch.set_num_threads with this warning; its own
# renderer then sets and restores the threads around every request's processing: two warnings a
# request (142 of the 231 lines of the offline example's log), none from phasetime.
PINNED_THREADS = "doesn't allow to use `torch.set_num_threads`"


class _Once(logging.Filter):
    """Lets the first record containing ``text`` through, with a note that repeats are dropped."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, 0

    def filter(self, record: logging.LogRecord) -> bool:
        if self.text not in record.getMessage():
            return True
        self.seen += 1
        if self.seen == 1:
            record.msg = f"{record.getMessage()} (said once: phasetime drops its repeats)"
            record.args = ()
            return True
        return False


def say_once(logger: logging.Logger, text: str) -> None:
    """Have ``logger`` say a message containing ``text`` once per process."""
    if not any(isinstance(f, _Once) and f.text == text for f in logger.filters):
        logger.addFilter(_Once(text))


def stop(llm: Any) -> None:
    """Take the probe off the engine's worker (an engine that died has nothing left to restore)."""
    try:
        llm.llm_engine.collective_rpc(worker_probe.uninstall)
    except Exception:  # noqa: BLE001
        pass


def sampling_params(generate_kwargs: dict[str, Any], seed: int) -> Any:
    """generate()'s options as vLLM's SamplingParams (greedy unless ``do_sample``)."""
    from vllm import SamplingParams

    options = dict(generate_kwargs)
    sample = bool(options.get("do_sample"))
    kwargs: dict[str, Any] = dict(max_tokens=options["max_new_tokens"], min_tokens=options["min_new_tokens"],
                                  temperature=float(options.get("temperature", 1.0)) if sample else 0.0, seed=seed)
    if sample and options.get("top_p") is not None:
        kwargs["top_p"] = float(options["top_p"])
    if sample and options.get("top_k") is not None:
        kwargs["top_k"] = int(options["top_k"])
    return SamplingParams(**kwargs)


def engine_call(llm: Any, requests: list[dict[str, Any]], sampling: Any) -> tuple[float, list[Any], list[Step], dict[str, Any]]:
    """Submit the requests at once: (submit time in ms, outputs, the engine's steps, vLLM's
    encoder timing per request)."""
    engine = llm.llm_engine
    llm.reset_mm_cache()  # every call processes its images ...
    engine.reset_encoder_cache()  # ... and encodes them, as generate() does
    engine.collective_rpc(worker_probe.collect)  # steps of anything before this call are not its own
    engine.collective_rpc("get_encoder_timing_stats")
    submit = time.perf_counter() * 1e3
    outputs = llm.generate(requests, sampling, use_tqdm=False)
    steps = [Step(start_ms=s["start_ms"], end_ms=s["end_ms"], forward=s["forward"], tokens=s["tokens"],
                  encoder=tuple(s["encoder"]), encoder_inputs=s["encoder_inputs"])
             for s in engine.collective_rpc(worker_probe.collect)[0]]
    encoder: dict[str, Any] = {}
    for stats in engine.collective_rpc("get_encoder_timing_stats"):
        encoder.update(stats or {})
    return submit, outputs, steps, encoder


def engine_id(output_id: str, steps: list[Step]) -> str:
    """The engine's id of a request (vLLM appends a random suffix to the id it returns)."""
    ids = {r for s in steps for r in s.tokens}
    if output_id in ids:
        return output_id
    found = sorted(r for r in ids if r.rpartition("-")[0] == output_id)
    if len(found) != 1:
        raise EngineError(f"backend vllm: request {output_id!r} matches {len(found)} of the engine's requests")
    return found[0]


def request_measurement(output: Any, steps: list[Step], encoder: dict[str, Any], submit: float,
                        image_ids: set[int]) -> tuple[Any, dict[str, Any]]:
    """The measurement of one request and its row's engine fields (ours and vLLM's own)."""
    rid = engine_id(str(output.request_id), steps)
    prompt = list(output.prompt_token_ids or [])
    n = len(output.outputs[0].token_ids)
    m = derive(request_events(steps, rid, submit, len(prompt)), prompt_tokens=len(prompt), output_tokens=[n], timer="perf-counter")
    first_step = min(s.start_ms for s in steps if s.tokens.get(rid, 0) > 0)
    stats = getattr(output, "metrics", None)
    extra: dict[str, Any] = {"visual_tokens": sum(1 for t in prompt if t in image_ids), "preprocess_ms": None}
    if stats is not None and getattr(stats, "queued_ts", None):
        queued = stats.queued_ts * 1e3
        extra.update(input_ms=max(queued - submit, 0.0), queue_ms=max(first_step - queued, 0.0),
                     engine_ttft_ms=stats.first_token_latency * 1e3,
                     engine_prefill_ms=(stats.first_token_ts - stats.scheduled_ts) * 1e3,
                     engine_tpot_ms=(stats.last_token_ts - stats.first_token_ts) * 1e3 / (n - 1) if n >= 2 else None)
    timing = encoder.get(rid)
    extra["engine_encoder_ms"] = timing["encoder_forward_secs"] * 1e3 if timing else None
    return m, extra
