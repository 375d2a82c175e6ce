"""Executing one cell: a :class:`~phasetime.experiments.plan.grid.CellTask` in, a
:class:`CellOutcome` out, no shared state.

A :class:`Worker` lives where the model runs (this process, or a Ray actor) and keeps the
last model it loaded, so that the cells of one model load it once. It never writes
results: the driver persists outcomes. A cell that fails (out of memory, a model error, a
generation phasetime cannot time) comes back as an outcome with its error and traceback;
errors in phasetime's own configuration (a bad value the checks before the run missed)
are raised, since they would fail every cell alike.
"""

from __future__ import annotations

import gc
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import torch

from ...core.errors import PhasetimeError, UnsupportedGeneration
from ...core.measure import measure
from ...results.rows import measurement_rows, rows_to_table
from .. import models
from ..data.batch import CellError, add_predictions, prepare_batch, resize
from .conditions import apply_threads
from ..data.datasets import BadSample
from ..plan.grid import CellTask
from .sensors import CellResources

CallFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]


@dataclass(frozen=True)
class CellOutcome:
    """What one cell produced: its rows (an Arrow table), or its error."""

    cell: int
    key: str
    params: dict[str, Any]
    rows: pa.Table | None = None
    calls: int = 0
    failed_samples: list[dict[str, str]] = field(default_factory=list)
    error: str | None = None
    detail: str | None = None  # the traceback of a failed cell
    interrupted: bool = False
    placement: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and not self.interrupted


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class _Interrupted(Exception):
    pass


class Worker:
    """Runs cell tasks where the model lives; keeps one loaded model between cells."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.host = socket.gethostname()
        self._loaded: tuple[tuple[Any, ...], Any, Any] | None = None
        self._draft: tuple[tuple[Any, ...], Any, Any] | None = None  # (key, draft, its first draft length)

    def placement(self, device: torch.device) -> dict[str, Any]:
        return {"host": self.host, "device": str(device), "worker": self.name, "pid": os.getpid()}

    def release(self) -> None:
        """Free the loaded model (and the device memory it held)."""
        if self._loaded is None:
            return
        device = next(self._loaded[1].parameters()).device
        self._loaded = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()

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

    def run(self, task: CellTask, *, on_call: CallFn | None = None, should_stop: StopFn | None = None,
            on_load: Callable[[str], None] | None = None) -> CellOutcome:
        """Measure one cell; see the module docstring."""
        cell = task.cell
        start = time.monotonic()
        base: dict[str, Any] = {"cell": cell.index, "key": cell.key, "params": cell.params}
        apply_threads(task.options.threads)
        try:
            model, processor = self.model_for(task, on_load)
        except PhasetimeError as exc:
            return CellOutcome(**base, error=f"loading the model failed: {exc}", placement={"host": self.host,
                               "worker": self.name})
        except Exception as exc:  # a broken checkpoint, out of memory, ...
            return CellOutcome(**base, error=f"loading the model failed: {describe(exc)}",
                               detail=traceback.format_exc(), placement={"host": self.host, "worker": self.name})
        device = next(model.parameters()).device
        place = self.placement(device)
        try:
            draft = self.draft_for(task, device)
        except Exception as exc:  # noqa: BLE001 -- a draft that does not load fails its cells only
            return CellOutcome(**base, error=f"loading the draft model failed: {describe(exc)}", placement=place)
        try:
            table, calls, failed = _measure_cell(task, model, processor, device, place, on_call, should_stop, draft)
        except _Interrupted:
            return CellOutcome(**base, interrupted=True, placement=place, seconds=time.monotonic() - start)
        except (UnsupportedGeneration, CellError, BadSample) as exc:
            return CellOutcome(**base, error=describe(exc), placement=place, seconds=time.monotonic() - start)
        except PhasetimeError:
            raise
        except Exception as exc:  # out of memory, a model error: recorded with its traceback, the run goes on
            if device.type == "cuda":
                torch.cuda.empty_cache()
            return CellOutcome(**base, error=describe(exc), detail=traceback.format_exc(), placement=place,
                               seconds=time.monotonic() - start)
        return CellOutcome(**base, rows=table, calls=calls, failed_samples=failed, placement=place,
                           seconds=time.monotonic() - start)


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


def _measure_cell(task: CellTask, model: Any, processor: Any, device: torch.device, place: dict[str, Any],
                  on_call: CallFn | None, should_stop: StopFn | None,
                  draft: tuple[Any, Any] | None = None) -> tuple[pa.Table, int, list[dict[str, str]]]:
    """Warm-up (not stored), then every batch x repeat. Returns (rows, calls, failed samples).
    ``draft``: (the draft model, its own starting draft length) for assisted decoding."""
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
    threads = torch.get_num_threads()
    params = {**cell.params, "cell": cell.index, "metric": experiment.metric, "threads": threads,
              "host": place["host"], "device": place["device"], "worker": place["worker"]}

    def timed(inputs: dict[str, Any]) -> Any:
        if draft is not None:
            # transformers' "heuristic" schedule carries the draft length from one call to the
            # next (in the draft's generation config): every call starts from the draft's own
            draft[0].generation_config.num_assistant_tokens = draft[1]
        return measure(model, inputs, method=method, vision=vision, nvtx=nvtx, sensors=sensors, **kwargs)

    def tick(warmup: bool) -> None:
        if on_call is not None:
            on_call({"cell": cell.index, "warmup": warmup})
        if should_stop is not None and should_stop():
            raise _Interrupted

    torch.manual_seed(experiment.seed)
    for _ in range(experiment.warmup):
        kept, images = prepared[0]
        timed(prepare_batch(kept, images, processor, model, experiment, cell, device).inputs)
        tick(True)
    rows: list[dict[str, Any]] = []
    call_id = task.first_call_id  # unique in the directory, and the same when a cell is re-run
    for repeat in range(experiment.repeats):
        for kept, images in prepared:
            batch = prepare_batch(kept, images, processor, model, experiment, cell, device)
            m = timed(batch.inputs)
            m = resources.add_cost(m, model, batch.inputs, kwargs, vision)
            add_predictions(batch, m.output_ids, tokenizer, experiment.metric)
            rows.extend(measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=batch.extras))
            call_id += 1
            tick(False)
    return rows_to_table(rows), call_id - task.first_call_id, failed
