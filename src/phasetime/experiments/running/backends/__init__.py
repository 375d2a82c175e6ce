"""The backend seam: which engine runs a cell's calls.

A backend loads what a cell needs (keeping it for the next cell with the same load key),
measures the cell's calls and returns rows of the one results schema; the
:class:`~phasetime.experiments.running.worker.Worker` around it turns failures into outcomes
and never knows which engine ran. Three exist: ``hf`` (Hugging Face ``generate()``,
:mod:`.hf`), ``vllm`` (vLLM's offline engine, :mod:`.vllm`; imported only when a cell asks for
it, so the core never imports vLLM) and ``vllm-server`` (a load sent to vLLM's OpenAI server,
:mod:`.server`; vLLM runs in the server's own environment). A third engine is one module with the same three methods,
named in :data:`BACKENDS`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Generator, Protocol

import pyarrow as pa

from ...plan.grid import CellTask

CallFn = Callable[[dict[str, Any]], None]
StopFn = Callable[[], bool]
# a cell's rows, its calls, its failed samples (and, from a cell that profiled calls, its side tables)
Result = tuple[pa.Table, int, list[dict[str, str]]] | tuple[pa.Table, int, list[dict[str, str]], dict[str, pa.Table]]
Steps = Generator[None, None, Result]  # pauses after the warm-up and after each repeat

# backend name -> "module:class" (imported on first use)
BACKENDS = {"hf": "phasetime.experiments.running.backends.hf:HFBackend",
            "vllm": "phasetime.experiments.running.backends.vllm:VllmBackend",
            "vllm-server": "phasetime.experiments.running.backends.server:ServerBackend"}


class Interrupted(Exception):
    """The driver asked to stop between two calls (the cell is not stored)."""


class Backend(Protocol):
    name: str

    def load(self, task: CellTask, on_load: Callable[[str], None] | None = None) -> str:
        """Have the cell's model ready (kept between cells of one load key); returns the device."""
        ...

    def measure(self, task: CellTask, place: dict[str, Any], tick: Callable[[bool], None]) -> Steps:
        """Warm-up (not stored), then every batch x repeat, as a generator that pauses after the
        warm-up and after each repeat (so that a worker can interleave the repeats of several
        cells) and returns (rows, calls, failed samples). ``tick(warmup)`` after every call (it
        raises :class:`Interrupted` to stop; ``tick(warmup, counted=False)`` only asks, for a
        backend waiting on calls it does not run itself); the worker drives it
        (:meth:`~phasetime.experiments.running.worker.Worker.run_block`)."""
        ...

    def release(self) -> None:
        """Free the loaded model and what it holds."""
        ...


def row_params(task: CellTask, place: dict[str, Any], backend: str, threads: int) -> dict[str, Any]:
    """What every row of a cell carries beside its measurement: the cell's parameters, the
    engine, the metric, the threads and where it ran."""
    cell = task.cell
    return {**cell.params, "backend": backend, "cell": cell.index, "metric": task.experiment.metric, "threads": threads,
            "host": place["host"], "device": place["device"], "worker": place["worker"]}


def profiled_side(task: CellTask, first_id: int, call: Callable[[int], Any],
                  tick: Callable[..., None]) -> dict[str, pa.Table]:
    """The side tables of a cell's ``--profile`` calls: ``call(k)`` makes the k-th, measured and
    profiled, after the cell's timed calls; their ids run on from ``first_id`` (the timed calls'
    end), so none is a timed row."""
    from ....results.profiles import profile_tables, to_tables

    side: dict[str, list[dict[str, Any]]] = {"profiles": [], "operators": []}
    for k in range(task.options.profile):
        tables = profile_tables(call(k), cell=task.cell.index, call_id=first_id + k, model=task.cell.model.name)
        for name, more in tables.items():
            side[name] += more
        tick(True, counted=False)
    return to_tables(side)


def backend_of(task: CellTask) -> str:
    return str(task.cell.params.get("backend") or "hf")


def make_backend(name: str) -> Backend:
    module, _, cls = BACKENDS[name].partition(":")
    backend: Backend = getattr(importlib.import_module(module), cls)()
    return backend
