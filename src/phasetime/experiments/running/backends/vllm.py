"""The vLLM backend: a cell's calls as requests to vLLM's offline engine (:mod:`phasetime.vllm.engine`).

vLLM is imported only when a cell asks for it; it lives in its own environment
(``bash scripts/setup-vllm.sh`` builds ``.venv-vllm``). Each request is a row with its own call
id; the ``batch_size`` prompts of a call are submitted together (requests in flight at once:
their shared steps are split by scheduled tokens, docs/metrics.md, "vLLM"). vLLM's own figures
of the request go beside ours (``engine_*`` columns).
"""

from __future__ import annotations

import dataclasses
import gc
from typing import Any, Callable

from ....results.rows import measurement_rows, rows_to_table
from ...data.batch import CellError, add_prediction, image_token_ids, prompt_texts, sample_fields
from ...models import is_vision_language
from ...models.export import checkpoint_dir
from ...plan.grid import CellTask
from ....vllm import engine
from ....vllm.engine import engine_call, request_measurement, sampling_params
from . import Steps, profiled_side, row_params
from .hf import _images


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
        engine.stop(llm)
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

    def measure(self, task: CellTask, place: dict[str, Any], tick: Callable[..., None]) -> Steps:
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
                # The requests submitted together are one call (they share the engine's steps):
                # one call id, a sequence per request, as a batch's rows in the hf backend.
                for index, (sample, imgs, output) in enumerate(zip(kept, images, outputs)):
                    try:
                        m, extra = request_measurement(output, steps, encoder, submit, image_ids)
                    except engine.EngineError as exc:
                        raise CellError(str(exc)) from None
                    extra.update(sample_fields(sample, imgs))
                    add_prediction(extra, sample, output.outputs[0].text, experiment.metric)
                    for row in measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=[extra]):
                        rows.append({**row, "sequence": index})
                call_id += 1
                tick(False)
            yield
        calls = call_id - task.first_call_id
        if not task.options.profile:
            return rows_to_table(rows), calls, failed
        device = self._engine[3]

        def profiled(k: int) -> Any:
            kept, images = prepared[k % len(prepared)]
            return profiled_call(llm, prompts(processor, kept, images, experiment), sampling, device, image_ids)

        return rows_to_table(rows), calls, failed, profiled_side(task, call_id, profiled, tick)


def profiled_call(llm: Any, requests: list[dict[str, Any]], sampling: Any, device: str, image_ids: set[int]) -> Any:
    """One call under torch.profiler: the measurement of its first request, with its profile. The
    engine runs in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the profiler sees its
    operators; the request's windows are its engine steps' (shared with the call's other
    requests, whose own windows are the same steps)."""
    import os

    import torch

    from ....hf.profiling import CallProfiler

    if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0") != "0":
        raise CellError("--profile with backend vllm needs the engine in this process; "
                        "VLLM_ENABLE_V1_MULTIPROCESSING is set to run it in another")
    profiler = CallProfiler([torch.device(device)])
    profiler.start()
    try:
        submit, outputs, steps, encoder = engine_call(llm, requests, sampling)
    finally:
        profiler.stop()
    m, _ = request_measurement(outputs[0], steps, encoder, submit, image_ids)
    return dataclasses.replace(m, profile=profiler.profile(m, m, round(submit * 1e6)))


def start_engine(name: str, dtype: str, seed: int, device: str = "auto", trust_remote_code: bool = False,
                 engine_args: dict[str, Any] | None = None) -> tuple[Any, Any, str]:
    """(vllm.LLM, the model's processor, the device) for a built-in name, a directory or a hub
    id (exported to a checkpoint directory); ``engine_args``: further arguments of vllm.LLM."""
    from transformers import AutoProcessor

    path = checkpoint_dir(name, seed)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    llm, where = engine.start(path, dtype, seed, device, trust_remote_code, engine_args,
                              multimodal=is_vision_language(processor))
    return llm, processor, where


def prompts(processor: Any, samples: list[Any], images: list[list[Any]], experiment: Any) -> list[dict[str, Any]]:
    """One request per sample: its chat prompt (the template the hf backend applies) and images."""
    out = []
    for text, imgs in zip(prompt_texts(samples, images, processor, experiment), images):
        request: dict[str, Any] = {"prompt": text}
        if imgs:
            request["multi_modal_data"] = {"image": imgs if len(imgs) > 1 else imgs[0]}
        out.append(request)
    return out
