"""Planning a run, purely: the cells of the grid, their order, what is left to do, and the
task each cell becomes for an executor.

Nothing here loads a model, reads a results directory or writes anything: the driver
hands in what it found (the done cells), and gets back the :class:`CellTask` list.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import dataclass, field
from typing import Any

from ...results.content import CALL_ID_STRIDE
from ..data.datasets import Sample
from .parts import DatasetInputs, ModelSpec
from .spec import Experiment


@dataclass(frozen=True)
class Cell:
    """One combination of swept values for one model. ``params`` become result columns."""

    index: int
    model: ModelSpec
    params: dict[str, Any]
    context: str = ""  # digest of the experiment's settings that shape every cell's rows

    @property
    def key(self) -> str:
        """A stable digest of everything that shapes the cell's rows, to recognise it when resuming."""
        blob = json.dumps({"model": self.model.model_dump(), **self.params, "context": self.context}, sort_keys=True,
                          default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def load_key(self) -> tuple[Any, ...]:
        """Cells with the same load key share one loaded model."""
        return (self.model.name, self.params["dtype"], self.model.device, self.params["attn_implementation"],
                self.model.trust_remote_code)

    @property
    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = dict(json.loads(self.params["generation"]))
        kwargs.pop("draft", None)  # a model name: the worker passes the loaded draft as assistant_model
        kwargs["max_new_tokens"] = self.params["max_new_tokens"]
        kwargs["min_new_tokens"] = self.params["min_new_tokens"]
        return kwargs


def _methods(sweep_methods: list[str]) -> list[str]:
    methods: list[str] = []
    for method in sweep_methods:
        for m in (("direct", "subtract") if method == "both" else (method,)):
            if m not in methods:
                methods.append(m)
    return methods


# Settings that do not change what a cell measures: its name, where and in which order cells run.
# (backend is a cell parameter instead, absent on hf cells: the keys of 0.2 cells are kept)
_NOT_CONTEXT = {"name", "description", "executor", "order", "interleave_block", "models", "sweep", "backend"}


def context_digest(experiment: Experiment) -> str:
    """A digest of the experiment-wide settings every cell's rows depend on (inputs, repeats, seed, ...)."""
    data = {k: v for k, v in experiment.model_dump(mode="json").items() if k not in _NOT_CONTEXT}
    if not data["engine_args"]:
        del data["engine_args"]  # absent unless given: the digests of 0.2 experiments kept
    if data["load"] is None:
        del data["load"]  # absent but on a server: the digests of 0.3 experiments kept
    else:  # the rates are cells (a rate added keeps the others done); where the server listens shapes nothing
        data["load"] = {k: v for k, v in data["load"].items() if k not in ("rates", "port", "startup_timeout_s")}
    return hashlib.sha1(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def expand(experiment: Experiment) -> list[Cell]:
    """Every cell of the grid, models outermost (so each model loads once), output length innermost."""
    sweep = experiment.sweep
    context = context_digest(experiment)
    cells: list[Cell] = []
    none: list[Any] = [None]
    for model in experiment.models:
        axes = itertools.product(
            sweep.dtype or [model.dtype],
            sweep.attn_implementation or ([model.attn_implementation] if model.attn_implementation else none),
            _methods(list(sweep.method)),
            sweep.image_size or none,
            sweep.max_pixels or none,
            sweep.max_visual_tokens or none,
            sweep.batch_size,
            sweep.generation,
            sweep.max_new_tokens,
            experiment.load.rates if experiment.load is not None else none,
        )
        for dtype, attn, method, image_size, max_pixels, max_tokens, batch, generation, n, rate in axes:
            draft = generation.get("draft")
            params = {
                "model": model.name,
                **({"backend": experiment.backend} if experiment.backend != "hf" else {}),  # as draft: 0.2 keys kept
                **({"draft": draft} if draft is not None else {}),  # absent without one: keys of 0.2 cells kept
                "dtype": dtype,
                "attn_implementation": attn,
                "method": method,
                "image_size": image_size,
                "max_pixels": max_pixels,
                "max_visual_tokens": max_tokens,
                "batch_size": batch,
                "generation": json.dumps(generation, sort_keys=True),
                "max_new_tokens": n,
                "min_new_tokens": experiment.resolved_min_new_tokens(n),
                **({"rate": rate} if rate is not None else {}),  # a load's level (absent otherwise: keys kept)
            }
            cells.append(Cell(index=len(cells), model=model, params=params, context=context))
    return cells


def count_cells(experiment: Experiment) -> int:
    """How many cells :func:`expand` makes, without making them (a guard against huge sweeps)."""
    sweep = experiment.sweep
    per_model = (len(_methods(list(sweep.method))) * len(sweep.image_size or [None]) * len(sweep.max_pixels or [None])
                 * len(sweep.max_visual_tokens or [None]) * len(sweep.batch_size) * len(sweep.generation)
                 * len(sweep.max_new_tokens) * len(sweep.attn_implementation or [None])
                 * (len(experiment.load.rates) if experiment.load is not None else 1))
    return sum(per_model * len(sweep.dtype or [m.dtype]) for m in experiment.models)


def execution_order(cells: list[Cell], experiment: Experiment) -> list[Cell]:
    """Cells grouped by loaded model (grid order of models); within a model, shuffled with
    the experiment's seed unless ``order: grid`` (``interleaved``: shuffled, then
    :func:`blocks`)."""
    if experiment.order == "grid":
        return cells
    rng = random.Random(experiment.seed)
    out = []
    for load_key in dict.fromkeys(c.load_key for c in cells):
        group = [c for c in cells if c.load_key == load_key]
        rng.shuffle(group)
        out.extend(group)
    return out


def batches(samples: list[Sample], experiment: Experiment) -> dict[int, list[list[Sample]]]:
    """Samples grouped into batches, per batch size. Synthetic input repeats its one prompt."""
    out = {}
    for size in experiment.sweep.batch_size:
        if isinstance(experiment.inputs, DatasetInputs):
            out[size] = [samples[i:i + size] for i in range(0, len(samples), size)]
        else:
            out[size] = [samples * size]
    return out


def calls_per_cell(experiment: Experiment, grouped: dict[int, list[list[Sample]]]) -> dict[int, int]:
    """Calls (warm-up included) a cell of each batch size makes (a load level: its requests,
    or those its duration holds at the highest rate, a bound)."""
    load = experiment.load
    if load is not None:
        per_level = load.requests or max(1, round(max(load.rates) * (load.duration_s or 0)))
        return {size: experiment.warmup + experiment.repeats * per_level for size in grouped}
    return {size: experiment.warmup + experiment.repeats * len(b) for size, b in grouped.items()}


@dataclass(frozen=True)
class RunOptions:
    """How every cell runs, beyond the experiment itself."""

    skip_bad_samples: bool = False
    nvtx: bool = False
    threads: int | None = None  # torch intra-op threads; None: leave torch's default
    profile: int = 0  # profiled calls per cell after its timed ones (--profile), never timed rows


@dataclass(frozen=True)
class CellTask:
    """Everything a worker needs to measure one cell; picklable, no shared state."""

    cell: Cell
    experiment: Experiment
    batches: list[list[Sample]]
    options: RunOptions = field(default_factory=RunOptions)
    out_dir: str | None = None  # the results directory (a server's log and probe records go there)

    @property
    def first_call_id(self) -> int:
        return self.cell.index * CALL_ID_STRIDE


def tasks(cells: list[Cell], done: set[int], experiment: Experiment, samples: list[Sample],
          options: RunOptions, out_dir: str | None = None) -> list[CellTask]:
    """The tasks of the cells not done yet, in execution order."""
    grouped = batches(samples, experiment)
    todo = execution_order([c for c in cells if c.index not in done], experiment)
    return [CellTask(c, experiment, grouped[c.params["batch_size"]], options, out_dir) for c in todo]


def blocks(todo: list[CellTask]) -> list[list[CellTask]]:
    """The tasks a worker measures together, in execution order: one cell each, unless
    ``order: interleaved``: then consecutive cells of one loaded model (and draft) in blocks
    of at most ``interleave_block``, whose repeats a worker interleaves
    (:meth:`~phasetime.experiments.running.worker.Worker.run_block`)."""
    def key(task: CellTask) -> tuple[Any, ...]:
        return task.cell.load_key, task.cell.params.get("draft")

    out: list[list[CellTask]] = []
    for task in todo:
        last = out[-1] if out else None
        if (task.experiment.order == "interleaved" and last is not None and len(last) < task.experiment.interleave_block
                and key(last[0]) == key(task)):
            last.append(task)
        else:
            out.append([task])
    return out


def block_seed(block: list[CellTask]) -> int:
    """The seed of a block's round orders: the experiment's, and the block's first cell."""
    return block[0].experiment.seed * 1_000_003 + block[0].cell.index
