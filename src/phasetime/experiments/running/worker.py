"""Executing one cell: a :class:`~phasetime.experiments.plan.grid.CellTask` in, a
:class:`CellOutcome` out, no shared state.

A :class:`Worker` lives where the model runs (this process, or a Ray actor) and hands each
cell to its backend (:mod:`.backends`: Hugging Face ``generate()`` or vLLM), which keeps the
last model it loaded, so that the cells of one model load it once. It never writes
results: the driver persists outcomes. A cell that fails (out of memory, a model error, a
generation phasetime cannot time) comes back as an outcome with its error and traceback;
errors in phasetime's own configuration (a bad value the checks before the run missed)
are raised, since they would fail every cell alike.
"""

from __future__ import annotations

import os
import random
import socket
import time
import traceback
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import pyarrow as pa
import torch

from ...core.errors import PhasetimeError, UnsupportedGeneration
from ..data.batch import CellError
from ..data.datasets import BadSample
from ..plan.grid import CellTask
from .backends import Backend, CallFn, Interrupted, Steps, StopFn, backend_of, make_backend
from .conditions import apply_threads


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
    side: dict[str, pa.Table] | None = None  # the profiled calls' tables (--profile)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.interrupted


def describe(exc: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Worker:
    """Runs cell tasks where the model lives, each through its backend (one of each kind, kept)."""

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.host = socket.gethostname()
        self._backends: dict[str, Backend] = {}
        # (backend, load key) -> why its model could not load: its other cells fail at once, with
        # the same one line, instead of loading it again (a vLLM engine takes ~25 s to fail)
        self._unloadable: dict[tuple[str, Any], str] = {}

    def placement(self, device: str) -> dict[str, Any]:
        return {"host": self.host, "device": device, "worker": self.name, "pid": os.getpid()}

    def release(self) -> None:
        """Free every backend's loaded model (and the device memory it held)."""
        for backend in self._backends.values():
            backend.release()

    def backend(self, name: str) -> Backend:
        if name not in self._backends:
            for other in self._backends.values():  # one engine's model in memory at a time
                other.release()
            self._backends[name] = make_backend(name)
        return self._backends[name]

    def run(self, task: CellTask, *, on_call: CallFn | None = None, should_stop: StopFn | None = None,
            on_load: Callable[[str], None] | None = None) -> CellOutcome:
        """Measure one cell; see the module docstring."""
        return self.run_block([task], on_call=on_call, should_stop=should_stop, on_load=on_load)[0]

    def run_block(self, tasks: list[CellTask], *, on_call: CallFn | None = None, should_stop: StopFn | None = None,
                  on_load: Callable[[str], None] | None = None, seed: int = 0) -> list[CellOutcome]:
        """Measure a block of cells with their repeats interleaved: every cell's warm-up, then
        round r runs the r-th repeat of every cell, in an order shuffled anew each round
        (``seed``). One task is a cell run back to back. An outcome per cell, in the order the
        cells finished; when the driver asks to stop, the cells finished so far and one
        interrupted outcome (the block's other cells are not stored)."""
        apply_threads(tasks[0].options.threads)
        done: list[CellOutcome] = []
        running: list[_Running] = []
        for task in tasks:
            started = self._start(task, on_call, should_stop, on_load)
            if isinstance(started, CellOutcome):
                done.append(started)
            else:
                running.append(started)
        rng = random.Random(seed)
        try:
            while running:  # the warm-ups in the block's own order, then each round shuffled anew
                for cell in list(running):
                    outcome = cell.advance()
                    if outcome is not None:
                        done.append(outcome)
                        running.remove(cell)
                rng.shuffle(running)
        except Interrupted:
            stopped = next(c for c in running if c.interrupted)
            for cell in running:
                cell.steps.close()
            return done + [CellOutcome(**stopped.base, interrupted=True, placement=stopped.place,
                                       seconds=stopped.seconds)]
        return done

    def _start(self, task: CellTask, on_call: CallFn | None, should_stop: StopFn | None,
               on_load: Callable[[str], None] | None) -> "_Running | CellOutcome":
        cell = task.cell
        base: dict[str, Any] = {"cell": cell.index, "key": cell.key, "params": cell.params}
        start = time.monotonic()
        load = (backend_of(task), cell.load_key)
        failed = self._unloadable.get(load)
        if failed is not None:
            return CellOutcome(**base, error=failed, placement={"host": self.host, "worker": self.name})
        try:
            backend = self.backend(backend_of(task))
            device = backend.load(task, on_load)
        except PhasetimeError as exc:
            self._unloadable[load] = f"loading the model failed: {exc}"
            return CellOutcome(**base, error=self._unloadable[load], placement={"host": self.host, "worker": self.name})
        except Exception as exc:  # a broken checkpoint, out of memory, ...
            return CellOutcome(**base, error=f"loading the model failed: {describe(exc)}",
                               detail=traceback.format_exc(), placement={"host": self.host, "worker": self.name})
        place = self.placement(device)

        def tick(warmup: bool, counted: bool = True) -> None:
            if on_call is not None and counted:
                on_call({"cell": cell.index, "warmup": warmup})
            if should_stop is not None and should_stop():
                raise Interrupted

        running = _Running(base, place, device, backend.measure(task, place, tick))
        running.seconds = time.monotonic() - start
        return running


class _Running:
    """A cell whose measurement is under way: its generator of steps and the time it took."""

    def __init__(self, base: dict[str, Any], place: dict[str, Any], device: str, steps: Steps) -> None:
        self.base, self.place, self.device, self.steps = base, place, device, steps
        self.seconds = 0.0
        self.interrupted = False

    def advance(self) -> CellOutcome | None:
        """One step (the warm-up, or one repeat); the cell's outcome once it is over, else None.
        Raises :class:`Interrupted` (marking this cell) when the driver asks to stop."""
        start = time.monotonic()
        try:
            outcome = self._step()
        finally:
            self.seconds += time.monotonic() - start
        return None if outcome is None else replace(outcome, seconds=self.seconds)

    def _step(self) -> CellOutcome | None:
        base, place = self.base, self.place
        try:
            next(self.steps)
            return None
        except StopIteration as finished:
            table, calls, failed, *side = finished.value  # (a backend that profiles adds its side tables)
            return CellOutcome(**base, rows=table, calls=calls, failed_samples=failed, placement=place,
                               side=side[0] if side else None)
        except Interrupted:
            self.interrupted = True
            raise
        except (UnsupportedGeneration, CellError, BadSample) as exc:
            return CellOutcome(**base, error=describe(exc), placement=place)
        except PhasetimeError:
            raise
        except Exception as exc:  # out of memory, a model error: recorded with its traceback, the run goes on
            if self.device.startswith("cuda"):
                torch.cuda.empty_cache()
            return CellOutcome(**base, error=describe(exc), detail=traceback.format_exc(), placement=place)
