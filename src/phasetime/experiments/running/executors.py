"""The executor seam: cell tasks in, outcomes out, in whatever order cells finish.

An executor never writes results and shares no state with the driver beyond the tasks it
is given and the outcomes it yields; the driver persists each outcome as it arrives. Two
executors exist: :class:`LocalExecutor` (this process, one cell at a time: phasetime
0.1's behaviour, or a block of cells with their repeats interleaved, ``order: interleaved``) and :class:`~phasetime.experiments.running.ray_cluster.RayExecutor` (a Ray
cluster, one worker per GPU or CPU slot), chosen by the experiment's ``executor``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from .worker import CellOutcome, Worker
from ..plan.grid import CellTask, block_seed, blocks


@dataclass
class Events:
    """What an executor may tell the driver, and ask it."""

    on_call: Callable[[dict[str, Any]], None] = lambda info: None
    on_load: Callable[[str], None] = lambda model: None
    on_note: Callable[[str], None] = lambda text: None
    should_stop: Callable[[], bool] = lambda: False
    notes: list[str] = field(default_factory=list)


class Executor(Protocol):
    name: str

    def run(self, tasks: list[CellTask], events: Events) -> Iterator[CellOutcome]:
        """Yield one outcome per task started (an interrupted one included), as cells finish."""
        ...

    def describe(self) -> dict[str, Any]:
        """Where cells run, for run.json."""
        ...

    def close(self) -> None: ...


class LocalExecutor:
    """Every cell in this process, one after another, with one loaded model at a time."""

    name = "local"

    def __init__(self) -> None:
        self.worker = Worker("local")

    def run(self, tasks: list[CellTask], events: Events) -> Iterator[CellOutcome]:
        try:
            for block in blocks(tasks):
                if events.should_stop():
                    return
                for outcome in self.worker.run_block(block, on_call=events.on_call, should_stop=events.should_stop,
                                                     on_load=events.on_load, seed=block_seed(block)):
                    yield outcome
                    if outcome.interrupted:
                        return
        finally:
            self.worker.release()

    def describe(self) -> dict[str, Any]:
        return {"executor": "local", "workers": 1}

    def close(self) -> None:
        self.worker.release()
