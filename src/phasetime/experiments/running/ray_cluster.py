"""The Ray executor: an experiment's cells spread over the workers of a Ray cluster.

One Ray actor per worker slot (one per GPU on a GPU cluster, else one per CPU slot), each a
:class:`~phasetime.experiments.running.worker.Worker` that keeps its loaded model between cells.
An idle worker takes the next cell of the model it holds, so weights load once per worker
and model; one cell runs on a GPU at a time, since phases must not share a device with
another measurement. The driver stays the only writer: outcomes (an Arrow table of rows)
come back to it, so the cluster needs no shared file system for results.

A worker that dies (killed, out of host memory, a node lost) is replaced, and the cell it
held runs again on another worker, ``retries`` times (default once); after that the cell
is recorded as failed with the reason. Ctrl-C stops handing out cells; the cells in flight
finish and are stored, then the run ends as interrupted (resume it with ``--resume``).

Ray is imported here only, when an experiment asks for ``executor: ray``.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any, Iterator

from ...core.errors import PhasetimeError
from .worker import CellOutcome
from .executors import Events
from ..plan.grid import CellTask
from ..plan.parts import ExecutorSpec


class RayUnavailable(PhasetimeError):
    """Ray is not installed or the cluster cannot be reached."""


class _RemoteWorker:
    """The body of each Ray actor."""

    def __init__(self, name: str) -> None:
        from .worker import Worker

        self.worker = Worker(name)

    def run(self, task: CellTask) -> CellOutcome:
        return self.worker.run(task)

    def where(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname()}


@dataclass
class _Slot:
    name: str
    actor: Any
    where: Any = None  # the reference of its where() answer, asked before any cell
    load_key: Any = None
    busy: bool = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayUnavailable("the Ray executor needs Ray: pip install 'phasetime[ray]'") from None
    return ray


class RayExecutor:
    """See the module docstring."""

    name = "ray"

    def __init__(self, spec: ExecutorSpec) -> None:
        self.spec = spec
        self.ray = _import_ray()
        self.started_here = False
        self.slots: list[_Slot] = []
        self._made = 0
        self._options: dict[str, Any] = {}
        self._actor_class: Any = None

    # -- the cluster -------------------------------------------------------------------------
    def _connect(self) -> None:
        ray = self.ray
        if not ray.is_initialized():
            # Ray starts its workers niced (15) by default: measured calls would then yield
            # the CPU to anything else on the machine. phasetime's workers run at normal priority.
            os.environ.setdefault("RAY_worker_niceness", "0")
            try:
                ray.init(address=self.spec.address, include_dashboard=False, log_to_driver=False,
                         logging_level="ERROR", ignore_reinit_error=True)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError...
                where = self.spec.address or "a new local cluster"
                raise RayUnavailable(f"cannot start or reach Ray ({where}): {str(exc).splitlines()[0]}") from None
            self.started_here = self.spec.address is None
        resources = ray.cluster_resources()
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 1))
        per_gpu = self.spec.gpus_per_worker if self.spec.gpus_per_worker is not None else (1.0 if gpus >= 1 else 0.0)
        per_cpu = self.spec.cpus_per_worker
        if self.spec.workers is not None:
            count = self.spec.workers
        elif per_gpu > 0:
            count = int(gpus // per_gpu)
        else:
            count = max(1, int(cpus // per_cpu)) if per_cpu > 0 else 1
        if count < 1:
            raise RayUnavailable(f"the cluster has {gpus:g} GPUs and {cpus:g} CPUs: no room for a worker "
                                 f"({per_gpu:g} GPUs, {per_cpu:g} CPUs each)")
        self._options = {"num_gpus": per_gpu, "num_cpus": per_cpu, "max_restarts": 0, "max_task_retries": 0}
        self.slots = [self._new_slot() for _ in range(count)]

    def _new_slot(self) -> _Slot:
        if self._actor_class is None:
            self._actor_class = self.ray.remote(_RemoteWorker)
        actor_class = self._actor_class
        name = f"ray-{self._made}"
        self._made += 1
        actor = actor_class.options(**self._options).remote(name)
        return _Slot(name, actor, where=actor.where.remote())

    def worker_pids(self) -> list[int]:
        """The process ids of the current workers (tests kill them to check retries)."""
        return [self.ray.get(slot.where)["pid"] for slot in self.slots]

    # -- the cells ---------------------------------------------------------------------------
    def run(self, tasks: list[CellTask], events: Events) -> Iterator[CellOutcome]:
        ray = self.ray
        if not self.slots:
            self._connect()
        pending = list(tasks)
        attempts: dict[int, int] = {}
        inflight: dict[Any, tuple[_Slot, CellTask]] = {}
        while pending or inflight:
            if not events.should_stop():
                for slot in [s for s in self.slots if not s.busy]:
                    if not pending:
                        break
                    task = next((t for t in pending if t.cell.load_key == slot.load_key), pending[0])
                    pending.remove(task)
                    slot.busy, slot.load_key = True, task.cell.load_key
                    inflight[slot.actor.run.remote(task)] = (slot, task)
            elif not inflight:
                return
            if not inflight:
                continue
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.5)
            for ref in ready:
                slot, task = inflight.pop(ref)
                slot.busy = False
                try:
                    yield ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.NodeDiedError) as exc:
                    self._replace(slot)
                    index = task.cell.index
                    attempts[index] = attempts.get(index, 0) + 1
                    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                    if attempts[index] <= self.spec.retries:
                        events.notes.append(f"cell {index}: worker {slot.name} died ({type(exc).__name__}); "
                                            "running the cell again on another worker")
                        pending.insert(0, task)
                    else:
                        yield CellOutcome(cell=index, key=task.cell.key, params=task.cell.params,
                                          error=f"its worker died ({attempts[index]} of {attempts[index]} tries): {reason}",
                                          placement={"worker": slot.name})

    def _replace(self, dead: _Slot) -> None:
        try:
            self.ray.kill(dead.actor)
        except Exception:  # already gone  # noqa: BLE001
            pass
        self.slots[self.slots.index(dead)] = self._new_slot()

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"executor": "ray", "address": self.spec.address, "workers": len(self.slots),
                                "worker_resources": self._options}
        if self.ray.is_initialized():
            info["nodes"] = [{"host": n.get("NodeManagerHostname"), "address": n.get("NodeManagerAddress"),
                              "alive": n.get("Alive"), "resources": n.get("Resources")} for n in self.ray.nodes()]
        return info

    def close(self) -> None:
        for slot in self.slots:
            try:
                self.ray.kill(slot.actor)
            except Exception:  # noqa: BLE001
                pass
        self.slots = []
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()
            self.started_here = False
