"""The driver of a run: the one writer of its results directory.

Every experiment (a quick ``phasetime run --model`` included) goes through
:func:`run_experiment`:

1. check everything that can be checked before writing (:mod:`.validate`) and decide what
   to do with the directory (:func:`phasetime.results.directory.plan`);
2. take the directory's lock, then start it, replace phasetime's files in it, or resume it:
   a resumed directory is verified, damaged cells are set aside and measured again;
3. plan the cells left to do (:mod:`.plan`) and hand them to an executor
   (:mod:`.executors`); persist each outcome as it arrives (rows first, then the marker),
   with its stability warnings; Ctrl-C stops after the current call;
4. merge the parts into ``measurements.parquet`` and complete ``run.json`` (conditions
   after the run, warnings, failed samples).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from ...results import directory
from ...results.content import plan_digest, plan_intact
from ...results.files import RUN_FILE, StoreError, read_json, write_json
from ...results.schema import SCHEMA_VERSION
from ...analysis.stability import machine_warnings, table_warnings
from ...results.store import consolidate, repair, set_aside, write_cell
from .conditions import apply_threads, environment, snapshot
from .worker import CellOutcome
from .executors import Events, Executor, LocalExecutor
from ..plan.grid import Cell, RunOptions, calls_per_cell, batches, tasks
from ..plan.parts import ExecutorSpec
from ..plan.spec import Experiment, parse_experiment
from ..plan.checks import Prepared, RunError, prepare

ProgressFn = Callable[[str, dict[str, Any]], None]


@dataclass
class RunResult:
    """What a run did; ``interrupted`` when Ctrl-C stopped it (resume with ``resume=True``)."""

    out_dir: Path
    cells: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    rows: int = 0
    calls: int = 0
    failed_samples: list[str] = field(default_factory=list)
    interrupted: bool = False
    errors: dict[int, str] = field(default_factory=dict)
    repaired: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    profiled: int = 0  # profiled calls stored (--profile), apart from the timed ones


class StopFlag:
    """Set by Ctrl-C (SIGINT): the run stops after the current call; a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.set = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.set:
                raise KeyboardInterrupt
            self.set = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


def make_executor(spec: ExecutorSpec) -> Executor:
    """The executor an experiment asks for (Ray is imported only here, only when asked for)."""
    if spec.kind == "ray":
        from .ray_cluster import RayExecutor

        return RayExecutor(spec)
    return LocalExecutor()


def _git_revision(folder: Path | None) -> dict[str, Any] | None:
    if folder is None:
        return None
    try:
        rev = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(folder), "status", "--porcelain"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"revision": rev, "dirty": bool(dirty)}


def comparable(experiment: dict[str, Any]) -> dict[str, Any]:
    """An experiment as resuming compares it: where cells run (the executor) may change."""
    return {k: v for k, v in experiment.items() if k != "executor"}


def _run_info(experiment: Experiment, source: Path | None, prepared: Prepared) -> dict[str, Any]:
    dumped = experiment.model_dump(mode="json")
    keys, params = [c.key for c in prepared.cells], [c.params for c in prepared.cells]
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    before = snapshot(prepared.device)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": created,
        "experiment": dumped,
        "experiment_file": str(source) if source is not None else None,
        "git": _git_revision(source.parent if source is not None else None),
        "environment": environment(prepared.device),
        "threads": prepared.threads,
        "conditions_before": before,
        # one entry per session (the first run, then each --resume), with its own conditions
        "sessions": [{"started": created, "conditions_before": before}],
        "cells": len(prepared.cells),
        "cell_keys": keys,
        "cell_params": params,
        "plan_digest": plan_digest(dumped, keys, params),
        "failed_samples": [{"sample_id": s, "error": reason} for s, reason in prepared.bad],
    }


def _open(plan: directory.Plan, experiment: Experiment, prepared: Prepared, source: Path | None,
          result: RunResult) -> set[int]:
    """Start, replace or resume the directory (holding its lock); the cells already done."""
    path = plan.path
    if plan.action == "replace":
        kept = directory.clear_ours(path)
        if kept:
            result.notes.append(f"kept {len(kept)} file(s) in {path} that are not phasetime's: "
                                f"{', '.join(kept[:5])}")
    if plan.action in ("create", "replace"):
        directory.create(path)
        write_json(path / RUN_FILE, _run_info(experiment, source, prepared))
        return set()
    return _resume(path, experiment, prepared, source, result)


def _resume(path: Path, experiment: Experiment, prepared: Prepared, source: Path | None, result: RunResult) -> set[int]:
    keys = {c.index: c.key for c in prepared.cells}
    run_file = path / RUN_FILE
    try:
        saved = read_json(run_file)
        if not plan_intact(saved):
            raise StoreError(f"{run_file} was edited after the run wrote it (its plan does not match its digest)")
        same = comparable(parse_experiment(saved.get("experiment"), str(run_file)).model_dump(mode="json"))
    except (StoreError, RunError, ValueError) as exc:
        saved, same = None, None
        reason = str(exc)
    if saved is not None and same != comparable(experiment.model_dump(mode="json")):
        raise RunError(f"the experiment differs from the one in {run_file}; use a new --out or --overwrite")
    if saved is None:
        # run.json lost or unreadable: resume only if every marker belongs to this experiment
        from ...results.integrity import verify

        foreign = [i for i, m in verify(path).markers.items() if keys.get(i) != m.get("key")]
        if foreign:
            raise RunError(f"{reason}; the cells in {path} do not match this experiment (cell {foreign[0]}), "
                           "so it cannot be resumed with it")
        result.repaired += set_aside(path, [run_file])
        info = _run_info(experiment, source, prepared)
        info["rebuilt"] = f"run.json rebuilt on resume ({reason})"
        write_json(run_file, info)
        result.notes.append(f"{RUN_FILE} was unusable ({reason}); rebuilt it from this experiment")
    else:
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        saved.setdefault("resumed", []).append(now)
        sessions = saved.setdefault("sessions", [{key: saved[key] for key in ("conditions_before", "conditions_after")
                                                  if key in saved}])
        sessions.append({"started": now, "conditions_before": snapshot(prepared.device)})
        write_json(run_file, saved)
    inv, lines = repair(path)
    result.repaired += lines
    left = [p for p in inv.problems if p.cell is None]
    if left:
        raise RunError(f"{path} cannot be resumed: {'; '.join(str(p) for p in left[:3])}")
    return inv.done


def _finish(path: Path, prepared: Prepared, result: RunResult, where: dict[str, Any]) -> None:
    run_file = path / RUN_FILE
    info = read_json(run_file)
    failed = {s["sample_id"]: s for s in info.get("failed_samples", []) if isinstance(s, dict)}
    for sample in result.failed_samples:
        failed.setdefault(sample, {"sample_id": sample, "error": "image could not be read during the run"})
    info["failed_samples"] = list(failed.values())
    after = snapshot(prepared.device)
    ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
    sessions = info.get("sessions") or []
    if sessions:  # this session's own conditions; a resume leaves the first session's alone
        sessions[-1].update({"conditions_after": after, "cells_measured": result.done,
                             "finished" if not result.interrupted else "interrupted": ended})
    if len(sessions) <= 1:
        info["conditions_after"] = after
    info["executor"] = where
    info["finished" if not result.interrupted else "interrupted"] = ended
    result.warnings = machine_warnings(info) + result.warnings
    info["warnings"] = sorted(set(info.get("warnings", [])) | set(result.warnings))
    write_json(run_file, info)


def _persist(path: Path, outcome: CellOutcome, result: RunResult, notify: ProgressFn) -> None:
    record: dict[str, Any] = {"key": outcome.key, "params": outcome.params, "placement": outcome.placement,
                              "seconds": round(outcome.seconds, 3)}
    if outcome.interrupted:
        result.interrupted = True
        return
    if outcome.error is not None:
        write_cell(path, outcome.cell, [], {**record, "status": "failed", "error": outcome.error,
                                            "traceback": outcome.detail})
        result.failed += 1
        result.errors[outcome.cell] = outcome.error
        notify("cell", {"cell": outcome.cell, "status": "failed", "error": outcome.error})
        return
    assert outcome.rows is not None
    if outcome.params.get("rate") is not None:  # a load level: spread is the load's doing, not noise
        from ...analysis.load import load_warnings

        warnings = load_warnings(outcome.rows)
    else:
        warnings = table_warnings(outcome.rows, label=f"cell {outcome.cell}")
    write_cell(path, outcome.cell, outcome.rows, {**record, "status": "done", "failed_samples": outcome.failed_samples,
                                                  "warnings": warnings}, side=outcome.side)
    result.done += 1
    result.rows += outcome.rows.num_rows
    result.calls += outcome.calls
    if outcome.side and "profiles" in outcome.side:
        result.profiled += len(set(outcome.side["profiles"].column("call_id").to_pylist()))
    result.warnings += warnings
    result.failed_samples += [s["sample_id"] for s in outcome.failed_samples if s["sample_id"] not in result.failed_samples]
    notify("cell", {"cell": outcome.cell, "status": "done", "warnings": warnings})


def run_experiment(
    experiment: Experiment,
    out: str | Path,
    *,
    source: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad_samples: bool = False,
    nvtx: bool = False,
    profile: int = 0,
    progress: ProgressFn | None = None,
    executor: Executor | None = None,
    yes: bool = False,
) -> RunResult:
    """Run every cell of ``experiment`` into the results directory ``out``; see the module docstring.
    ``yes`` confirms a run beyond the size limits of :func:`phasetime.experiments.plan.checks.check_size`;
    ``profile`` profiles that many extra calls per cell after its timed ones (:mod:`phasetime.results.profiles`)."""
    notify = progress or (lambda event, info: None)
    if overwrite and resume:
        raise RunError("--overwrite and --resume exclude each other")
    # 1. Everything that can be checked before anything is written.
    prepared = prepare(experiment, skip_bad_samples=skip_bad_samples, nvtx=nvtx, yes=yes, profile=profile)
    mode = "resume" if resume else "overwrite" if overwrite else "new"
    plan = directory.plan(out, mode)
    apply_threads(prepared.threads)
    result = RunResult(out_dir=plan.path, cells=len(prepared.cells), failed_samples=[s for s, _ in prepared.bad])
    try:
        plan.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create {plan.path}: {exc.strerror or exc}") from None
    # 2. The directory, under its lock.
    with directory.DirectoryLock(plan.path) as lock:
        if lock.took_over:
            result.notes.append(f"took over the lock left by process {lock.took_over.get('pid')} "
                                f"on {lock.took_over.get('host')}, which is no longer running")
        plan = directory.plan(plan.path, mode)
        done = _open(plan, experiment, prepared, source, result)
        if result.repaired:
            notify("repair", {"lines": result.repaired})
        # 3. The cells.
        options = RunOptions(skip_bad_samples=skip_bad_samples, nvtx=nvtx, threads=prepared.threads, profile=profile)
        todo = tasks(prepared.cells, done, experiment, prepared.samples, options, str(plan.path))
        result.skipped = len(prepared.cells) - len(todo)
        per_cell = calls_per_cell(experiment, batches(prepared.samples, experiment))
        notify("plan", {"cells": len(todo), "skipped": result.skipped, "calls_per_cell": per_cell,
                        "calls": sum(per_cell[t.cell.params["batch_size"]] for t in todo)})
        runner = executor or make_executor(experiment.executor)
        stop = StopFlag()
        events = Events(on_call=lambda info: notify("call", info), on_load=lambda m: notify("load", {"model": m}),
                        on_note=lambda text: notify("note", {"text": text}), should_stop=lambda: stop.set)
        with stop.installed():
            try:
                for outcome in runner.run(todo, events):
                    _persist(plan.path, outcome, result, notify)
            except KeyboardInterrupt:
                result.interrupted = True
            finally:
                where = runner.describe()
                runner.close()
        result.notes += events.notes
        if stop.set:
            result.interrupted = True
        # 4. The merge and run.json's last words.
        if not result.interrupted:
            consolidate(plan.path)
        _finish(plan.path, prepared, result, where)
    return result


__all__ = ["Cell", "RunError", "RunResult", "run_experiment"]
