"""The vLLM backend: a cell's calls as requests to vLLM's offline engine (``vllm.LLM``).

vLLM is imported here only, when a cell asks for it; it lives in its own environment
(``bash scripts/setup-vllm.sh`` builds ``.venv-vllm``). The engine runs in this process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless set otherwise), with prefix caching off, its
per-request statistics and encoder timing on, and the processor and encoder caches emptied
before every call, so that each call processes and encodes its images as ``generate()``
does. The probe (:mod:`.vllm_probe`) records every engine step; each request's steps become
the core's events (:func:`phasetime.core.steps.request_events`) and the core's ``derive``
makes its measurement. Each request is a row with its own call id; the ``batch_size``
prompts of a call are submitted together (requests in flight at once: their shared steps
are split by scheduled tokens, docs/metrics.md, "vLLM"). vLLM's own figures of the request
go beside ours (``engine_*`` columns).
"""

from __future__ import annotations

import gc
import os
import time
from typing import Any, Callable


from ....core.errors import PhasetimeError
from ....core.phases import derive
from ....core.steps import Step, request_events
from ....results.rows import measurement_rows, rows_to_table
from ...data.batch import CellError, add_prediction, image_token_ids, prompt_texts, sample_fields
from ...models import is_vision_language
from ...models.export import checkpoint_dir
from ...plan.grid import CellTask
from . import Steps, row_params, vllm_probe
from .hf import _images

SETUP = "bash scripts/setup-vllm.sh builds .venv-vllm; run phasetime from there (.venv-vllm/bin/phasetime run ...)"


class VllmUnavailable(PhasetimeError):
    """vLLM is not installed in this environment."""


class VllmBackend:
    """Keeps one engine (the last model's) between cells."""

    name = "vllm"

    def __init__(self) -> None:
        self._engine: tuple[tuple[Any, ...], Any, Any, str] | None = None  # (load key, LLM, processor, device)

    def release(self) -> None:
        if self._engine is None:
            return
        llm = self._engine[1]
        self._engine = None
        try:
            llm.llm_engine.collective_rpc(vllm_probe.uninstall)
        except Exception:  # noqa: BLE001 -- an engine that died has nothing left to restore
            pass
        del llm
        gc.collect()

    def load(self, task: CellTask, on_load: Callable[[str], None] | None = None) -> str:
        cell = task.cell
        if self._engine is not None and self._engine[0] == cell.load_key:
            return self._engine[3]
        self.release()
        if on_load is not None:
            on_load(cell.model.name)
        llm, processor, device = start_engine(cell.model.name, cell.params["dtype"], task.experiment.seed,
                                              cell.model.device, cell.model.trust_remote_code,
                                              task.experiment.engine_args)
        self._engine = (cell.load_key, llm, processor, device)
        return device

    def measure(self, task: CellTask, place: dict[str, Any], tick: Callable[[bool], None]) -> Steps:
        assert self._engine is not None, "load() first"
        _, llm, processor, _ = self._engine
        cell, experiment = task.cell, task.experiment
        if cell.params["max_pixels"] is not None or cell.params["max_visual_tokens"] is not None:
            raise CellError("backend vllm: max_pixels / max_visual_tokens are not passed to vLLM's processor yet")
        sampling = sampling_params(cell.generate_kwargs, experiment.seed)
        prepared, failed = _images(task, is_vision_language(processor))
        import torch

        params = row_params(task, place, "vllm", torch.get_num_threads())
        image_ids = image_token_ids(processor, None)
        for _ in range(experiment.warmup):
            kept, images = prepared[0]
            engine_call(llm, prompts(processor, kept, images, experiment), sampling)
            tick(True)
        yield
        rows: list[dict[str, Any]] = []
        call_id = task.first_call_id
        for repeat in range(experiment.repeats):
            for kept, images in prepared:
                submit, outputs, steps, encoder = engine_call(llm, prompts(processor, kept, images, experiment), sampling)
                for sample, imgs, output in zip(kept, images, outputs):
                    m, extra = request_measurement(output, steps, encoder, submit, image_ids)
                    extra.update(sample_fields(sample, imgs))
                    add_prediction(extra, sample, output.outputs[0].text, experiment.metric)
                    rows.extend(measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=[extra]))
                    call_id += 1
                tick(False)
            yield
        return rows_to_table(rows), call_id - task.first_call_id, failed


def start_engine(name: str, dtype: str, seed: int, device: str = "auto", trust_remote_code: bool = False,
                 engine_args: dict[str, Any] | None = None) -> tuple[Any, Any, str]:
    """(vllm.LLM, the model's processor, the device) for a built-in name, a directory or a hub
    id; ``engine_args``: the experiment's further arguments of vllm.LLM."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process: one clock, one probe
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB; else vLLM wants most of the RAM free
    try:
        import vllm
        from vllm.platforms import current_platform
    except ImportError as exc:
        raise VllmUnavailable(f"backend vllm needs vLLM, which this environment lacks ({exc}); {SETUP}") from None
    platform = str(getattr(current_platform, "device_type", "cpu") or "cpu")
    if device not in ("auto", platform) and not device.startswith(platform):
        raise CellError(f"backend vllm: this vLLM runs on {platform!r}, not on {device!r}")
    if dtype == "auto":  # vLLM would run a float32 checkpoint in bfloat16 on a CPU: say it
        dtype = "float32" if platform == "cpu" else "bfloat16"
    from transformers import AutoProcessor

    path = checkpoint_dir(name, seed)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = dict(
        model=path, dtype=dtype, seed=seed, trust_remote_code=trust_remote_code, enforce_eager=platform == "cpu",
        enable_prefix_caching=False, disable_log_stats=False, async_scheduling=False,
    )
    if is_vision_language(processor):
        kwargs.update(enable_mm_processor_stats=True, mm_processor_cache_gb=0)
    kwargs.update(engine_args or {})
    llm = vllm.LLM(**kwargs)
    llm.llm_engine.collective_rpc(vllm_probe.install)
    return llm, processor, "cpu" if platform == "cpu" else f"{platform}:0"


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


def prompts(processor: Any, samples: list[Any], images: list[list[Any]], experiment: Any) -> list[dict[str, Any]]:
    """One request per sample: its chat prompt (the template the hf backend applies) and images."""
    out = []
    for text, imgs in zip(prompt_texts(samples, images, processor, experiment), images):
        request: dict[str, Any] = {"prompt": text}
        if imgs:
            request["multi_modal_data"] = {"image": imgs if len(imgs) > 1 else imgs[0]}
        out.append(request)
    return out


def engine_call(llm: Any, requests: list[dict[str, Any]], sampling: Any) -> tuple[float, list[Any], list[Step], dict[str, Any]]:
    """Submit the requests at once: (submit time in ms, outputs, the engine's steps, vLLM's
    encoder timing per request)."""
    engine = llm.llm_engine
    llm.reset_mm_cache()  # every call processes its images ...
    engine.reset_encoder_cache()  # ... and encodes them, as generate() does
    engine.collective_rpc(vllm_probe.collect)  # steps of anything before this call are not its own
    engine.collective_rpc("get_encoder_timing_stats")
    submit = time.perf_counter() * 1e3
    outputs = llm.generate(requests, sampling, use_tqdm=False)
    steps = [Step(start_ms=s["start_ms"], end_ms=s["end_ms"], forward=s["forward"], tokens=s["tokens"],
                  encoder=tuple(s["encoder"]), encoder_inputs=s["encoder_inputs"])
             for s in engine.collective_rpc(vllm_probe.collect)[0]]
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
        raise CellError(f"backend vllm: request {output_id!r} matches {len(found)} of the engine's requests")
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
