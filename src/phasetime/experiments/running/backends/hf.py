"""The Hugging Face backend: a cell's calls through ``generate()``, timed by the core's probe
(:func:`phasetime.hf.measure.measure`)."""

from __future__ import annotations

import contextlib
import gc
from typing import Any, Callable, Iterator

import torch

from ....hf.measure import measure
from ....results.rows import measurement_rows, rows_to_table
from ... import models
from ...data.batch import CellError, add_predictions, prepare_batch, resize
from ...data.datasets import BadSample
from ...plan.grid import CellTask
from ..sensors import CellResources
from . import Steps, profiled_side, row_params


class HFBackend:
    """Keeps the last model (and draft) it loaded, so that the cells of one model load it once."""

    name = "hf"

    def __init__(self) -> None:
        self._loaded: tuple[tuple[Any, ...], Any, Any] | None = None
        self._draft: tuple[tuple[Any, ...], Any, Any] | None = None  # (key, draft, its first draft length)

    def release(self) -> None:
        """Free the loaded model (and the device memory it held)."""
        if self._loaded is None:
            return
        device = next(self._loaded[1].parameters()).device
        self._loaded = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

    def load(self, task: CellTask, on_load: Callable[[str], None] | None = None) -> str:
        model, _ = self.model_for(task, on_load)
        return str(next(model.parameters()).device)

    def model_for(self, task: CellTask, on_load: Callable[[str], None] | None = None) -> tuple[Any, Any]:
        cell = task.cell
        if self._loaded is not None and self._loaded[0] == cell.load_key:
            return self._loaded[1], self._loaded[2]
        self.release()
        if on_load is not None:
            on_load(cell.model.name)
        model, processor = models.load(
            cell.model.name, device=cell.model.device, dtype=cell.params["dtype"],
            trust_remote_code=cell.model.trust_remote_code, attn_implementation=cell.params["attn_implementation"],
            seed=task.experiment.seed,
        )
        self._loaded = (cell.load_key, model, processor)
        return model, processor

    def draft_for(self, task: CellTask, device: torch.device) -> tuple[Any, Any] | None:
        """The cell's draft model (assisted decoding), on the target's device and dtype, with its
        own starting draft length; None without one."""
        name = task.cell.params.get("draft")
        if name is None:
            return None
        key = (name, str(device), task.cell.params["dtype"])
        if self._draft is None or self._draft[0] != key:
            self._draft = None
            draft, _ = models.load(name, device=str(device), dtype=task.cell.params["dtype"], seed=task.experiment.seed)
            self._draft = (key, draft, draft.generation_config.num_assistant_tokens)
        return self._draft[1], self._draft[2]

    def measure(self, task: CellTask, place: dict[str, Any], tick: Callable[..., None]) -> Steps:
        model, processor = self.model_for(task)
        device = next(model.parameters()).device
        try:
            draft = self.draft_for(task, device)
        except Exception as exc:  # noqa: BLE001 -- a draft that does not load fails its cells only
            raise CellError(f"loading the draft model failed: {type(exc).__name__}: {exc}") from exc
        return (yield from _measure_cell(task, model, processor, device, place, tick, draft))


def _images(task: CellTask, vlm: bool) -> tuple[list[tuple[list[Any], list[list[Any]]]], list[dict[str, str]]]:
    """Each batch's usable samples with their (resized) images; samples whose images fail."""
    failed: list[dict[str, str]] = []
    prepared = []
    size = task.cell.params["image_size"]
    for batch in task.batches:
        kept, images = [], []
        for sample in batch:
            try:
                loaded = [resize(img, size) for img in sample.load_images()] if vlm else []
            except BadSample as exc:
                if not task.options.skip_bad_samples:
                    raise
                failed.append({"sample_id": sample.id, "error": str(exc)})
                continue
            kept.append(sample)
            images.append(loaded)
        if kept:
            prepared.append((kept, images))
    if not prepared:
        raise CellError("no usable sample in this cell")
    return prepared, failed


class _OwnRandom:
    """A cell's own stream of torch's global random numbers (sampling draws from it): kept
    aside while other cells' repeats run in between, so that a cell samples the same tokens
    whether its repeats run back to back or interleaved with other cells'."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        torch.manual_seed(seed)
        self.state = self._get()

    def _get(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return torch.get_rng_state(), (torch.cuda.get_rng_state_all() if self.cuda else [])

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        torch.set_rng_state(self.state[0])
        if self.cuda:
            torch.cuda.set_rng_state_all(self.state[1])
        try:
            yield
        finally:
            self.state = self._get()


def _measure_cell(task: CellTask, model: Any, processor: Any, device: torch.device, place: dict[str, Any],
                  tick: Callable[..., None], draft: tuple[Any, Any] | None = None) -> Steps:
    """Warm-up (not stored), then every batch x repeat, pausing after the warm-up and after
    each repeat. Returns (rows, calls, failed samples). ``draft``: (the draft model, its own
    starting draft length) for assisted decoding."""
    cell, experiment, options = task.cell, task.experiment, task.options
    kwargs = cell.generate_kwargs
    if draft is not None:
        kwargs["assistant_model"] = draft[0]
    method = cell.params["method"]
    vision = cell.model.vision if method == "direct" else None
    nvtx = options.nvtx and method == "direct"  # the legacy method's three calls are not phases
    prepared, failed = _images(task, models.is_vision_language(processor))
    resources = CellResources(experiment.resources, model)
    sensors = resources.sensors_for(method)
    tokenizer = models.tokenizer_of(processor)
    params = row_params(task, place, "hf", torch.get_num_threads())

    def timed(inputs: dict[str, Any], profile: bool = False) -> Any:
        if draft is not None:
            # transformers' "heuristic" schedule carries the draft length from one call to the
            # next (in the draft's generation config): every call starts from the draft's own
            draft[0].generation_config.num_assistant_tokens = draft[1]
        return measure(model, inputs, method=method, vision=vision, nvtx=nvtx, sensors=() if profile else sensors,
                       profile=profile, **kwargs)

    random = _OwnRandom(experiment.seed, device)
    with random.active():
        for _ in range(experiment.warmup):
            kept, images = prepared[0]
            timed(prepare_batch(kept, images, processor, model, experiment, cell, device).inputs)
            tick(True)
    yield
    rows: list[dict[str, Any]] = []
    call_id = task.first_call_id  # unique in the directory, and the same when a cell is re-run
    for repeat in range(experiment.repeats):
        with random.active():
            for kept, images in prepared:
                batch = prepare_batch(kept, images, processor, model, experiment, cell, device)
                m = timed(batch.inputs)
                m = resources.add_cost(m, model, batch.inputs, kwargs, vision)
                add_predictions(batch, m.output_ids, tokenizer, experiment.metric)
                rows.extend(measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=batch.extras))
                call_id += 1
                tick(False)
        yield
    calls = call_id - task.first_call_id
    if not options.profile or method != "direct":
        return rows_to_table(rows), calls, failed

    def profiled(k: int) -> Any:
        with random.active():
            kept, images = prepared[k % len(prepared)]
            return timed(prepare_batch(kept, images, processor, model, experiment, cell, device).inputs, profile=True)

    return rows_to_table(rows), calls, failed, profiled_side(task, call_id, profiled, tick)
