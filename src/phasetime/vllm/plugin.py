"""phasetime's probe inside a vLLM server, loaded as a vLLM plugin (``vllm.general_plugins``).

vLLM calls :func:`register` in each of its processes (the API server, the engine core, every
worker). It does nothing unless ``PHASETIME_PROBE_DIR`` names a folder: phasetime sets it when
it starts a server (``backend: vllm-server``), and a user sets it on a server phasetime
attaches to (``load.server: URL``, ``load.probe_dir``). With it set:

* in a worker, the model runner's steps are recorded by :mod:`.worker_probe`, each written as
  it ends;
* in the API server, each finished request's own figures (vLLM's ``RequestStateStats``:
  queued, scheduled, first and last token, preemptions) are written with its internal and
  external ids.

Every process writes JSON lines to ``<folder>/<host>-<pid>.jsonl``, opening with a ``process``
record (its host and pid: on the client's host the clocks are one), flushed line by line
so that a crash loses at most the line being written. Nothing in vLLM's files is changed:
two methods of vLLM's classes are wrapped in memory, in the processes of this server only.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
from pathlib import Path
from typing import Any, Callable

from . import worker_probe

ENV = "PHASETIME_PROBE_DIR"
_MARK = "__phasetime_probe__"


class Sink:
    """One process's record file: JSON lines, appended and flushed one at a time."""

    def __init__(self, folder: str | Path) -> None:
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / f"{socket.gethostname()}-{os.getpid()}.jsonl"
        self.lock = threading.Lock()
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 -- open for the process's life
        self.write({"kind": "process", "host": socket.gethostname(), "pid": os.getpid()})

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self.lock:
            self.file.write(line)
            self.file.flush()

    def step(self, step: dict[str, Any]) -> None:
        self.write({"kind": "step", **step})


_sink: Sink | None = None


def register() -> None:
    """vLLM's plugin entry point: install the probe when ``PHASETIME_PROBE_DIR`` is set."""
    global _sink
    folder = os.environ.get(ENV)
    if not folder or _sink is not None:
        return
    _sink = Sink(folder)
    for patch in (_patch_worker, _patch_frontend):
        try:
            patch(_sink)
        except Exception as exc:  # noqa: BLE001 -- a vLLM without these classes: said in the records
            _sink.write({"kind": "error", "where": patch.__name__, "error": f"{type(exc).__name__}: {exc}"})


def _wrap(owner: Any, name: str, after: Callable[..., None]) -> None:
    original = getattr(owner, name)
    if getattr(original, _MARK, False):
        return

    @functools.wraps(original)
    def wrapped(self: Any, *args: Any, **kwargs: Any) -> Any:
        result = original(self, *args, **kwargs)
        after(self, *args, **kwargs)
        return result
    setattr(wrapped, _MARK, True)
    setattr(owner, name, wrapped)


def _patch_worker(sink: Sink) -> None:
    from vllm.v1.worker.worker_base import WorkerWrapperBase

    def installed(wrapper: Any, *args: Any, **kwargs: Any) -> None:
        runner = worker_probe.install(wrapper.worker, sink.step)
        sink.write({"kind": "probe", "runner": runner})
    _wrap(WorkerWrapperBase, "init_device", installed)


def _patch_frontend(sink: Sink) -> None:
    from vllm.v1.engine.output_processor import OutputProcessor

    def finished(processor: Any, state: Any, finish_reason: Any, iteration_stats: Any, *args: Any, **kwargs: Any) -> None:
        stats = getattr(state, "stats", None)
        if stats is None:
            return
        sink.write({"kind": "request", "id": str(state.request_id), "external_id": str(state.external_req_id),
                    "prompt_tokens": int(state.prompt_len or 0), "output_tokens": int(stats.num_generation_tokens),
                    "preemptions": int(stats.num_preemptions),
                    "queued_ms": stats.queued_ts * 1e3, "scheduled_ms": stats.scheduled_ts * 1e3,
                    "first_token_ms": stats.first_token_ts * 1e3, "last_token_ms": stats.last_token_ts * 1e3,
                    "first_token_latency_ms": stats.first_token_latency * 1e3})
    _wrap(OutputProcessor, "_update_stats_from_finished", finished)
