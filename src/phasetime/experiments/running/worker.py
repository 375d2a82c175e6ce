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
import socket
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import pyarrow as pa
import torch

from ...core.errors import PhasetimeError, UnsupportedGeneration
from ..data.batch import CellError
from ..data.datasets import BadSample
from ..plan.grid import CellTask
from .backends import Backend, CallFn, Interrupted, StopFn, backend_of, make_backend
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
        cell = task.cell
        start = time.monotonic()
        base: dict[str, Any] = {"cell": cell.index, "key": cell.key, "params": cell.params}
        apply_threads(task.options.threads)
        try:
            backend = self.backend(backend_of(task))
            device = backend.load(task, on_load)
        except PhasetimeError as exc:
            return CellOutcome(**base, error=f"loading the model failed: {exc}", placement={"host": self.host,
                               "worker": self.name})
        except Exception as exc:  # a broken checkpoint, out of memory, ...
            return CellOutcome(**base, error=f"loading the model failed: {describe(exc)}",
                               detail=traceback.format_exc(), placement={"host": self.host, "worker": self.name})
        place = self.placement(device)

        def tick(warmup: bool) -> None:
            if on_call is not None:
                on_call({"cell": cell.index, "warmup": warmup})
            if should_stop is not None and should_stop():
                raise Interrupted

        try:
            table, calls, failed = backend.measure(task, place, tick)
        except Interrupted:
            return CellOutcome(**base, interrupted=True, placement=place, seconds=time.monotonic() - start)
        except (UnsupportedGeneration, CellError, BadSample) as exc:
            return CellOutcome(**base, error=describe(exc), placement=place, seconds=time.monotonic() - start)
        except PhasetimeError:
            raise
        except Exception as exc:  # out of memory, a model error: recorded with its traceback, the run goes on
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
            return CellOutcome(**base, error=describe(exc), detail=traceback.format_exc(), placement=place,
                               seconds=time.monotonic() - start)
        return CellOutcome(**base, rows=table, calls=calls, failed_samples=failed, placement=place,
                           seconds=time.monotonic() - start)
