"""The Ray executor on a local cluster the test starts: the same cells as the local executor,
a killed worker's cell run again, and --resume across executors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.grid import expand
from phasetime.experiments.running.ray_cluster import RayExecutor
from phasetime.experiments.plan.spec import Experiment, load_experiment, parse_experiment
from phasetime.results import read, verify

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'phasetime[ray]')")
pytestmark = [pytest.mark.ray, pytest.mark.anyversion]
EXAMPLES = Path(__file__).parent.parent / "examples"
SMALL = parse_experiment({"name": "r", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
                          "sweep": {"max_new_tokens": [4, 8, 12, 16, 20, 24]}, "repeats": 3, "warmup": 0})


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_worker_niceness"] = "0"  # as the executor does when it starts a cluster itself
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def on(experiment: Experiment, kind: str, **options) -> Experiment:
    return experiment.model_copy(update={"executor": experiment.executor.model_copy(update={"kind": kind, **options})})


class KeptRayExecutor(RayExecutor):
    """The Ray executor whose workers outlive a run, so that the tests share them (each
    worker imports torch and builds its model once, not once per test)."""

    def close(self) -> None:
        pass

    def shut(self) -> None:
        RayExecutor.close(self)


@pytest.fixture(scope="module")
def workers(cluster) -> KeptRayExecutor:
    executor = KeptRayExecutor(on(SMALL, "ray").executor)
    yield executor
    executor.shut()


def cells_and_rows(out: Path) -> dict[int, int]:
    counts: dict[int, int] = {}
    for cell in read(out).column("cell").to_pylist():
        counts[cell] = counts.get(cell, 0) + 1
    return counts


def expected_rows(exp: Experiment) -> dict[int, int]:
    """Rows per cell by hand: repeats x batch size (synthetic input: one prompt per row)."""
    return {c.index: exp.repeats * c.params["batch_size"] for c in expand(exp)}


def test_latency_example_gives_the_same_cells_as_the_local_executor(tmp_path: Path, workers) -> None:
    # test_runner checks the local executor against the same hand count
    exp = load_experiment(EXAMPLES / "latency.yaml")
    distributed = run_experiment(on(exp, "ray"), tmp_path / "ray", executor=workers)
    assert (distributed.done, distributed.failed) == (len(expand(exp)), 0)
    assert cells_and_rows(tmp_path / "ray") == expected_rows(exp)
    table = read(tmp_path / "ray")
    assert set(table.column("worker").to_pylist()) <= {"ray-0", "ray-1"} and None not in table.column("host").to_pylist()
    info = verify(tmp_path / "ray").run or {}
    assert info["executor"]["executor"] == "ray" and info["executor"]["workers"] == 2 and info["executor"]["nodes"]


def test_a_killed_worker_s_cell_runs_again_on_another(tmp_path: Path, workers) -> None:
    executor = workers
    killed: list[int] = []

    def progress(event: str, info: dict) -> None:
        if event == "cell" and not killed:  # the first cell is stored: kill every worker, mid-run
            killed.extend(executor.worker_pids())
            for pid in killed:
                os.kill(pid, signal.SIGKILL)

    result = run_experiment(on(SMALL, "ray"), tmp_path / "run", executor=executor, progress=progress)
    assert killed and result.failed == 0 and result.done == 6
    assert any("died" in note and "again on another worker" in note for note in result.notes)
    assert cells_and_rows(tmp_path / "run") == {i: SMALL.repeats for i in range(6)}  # every cell exactly once


def test_a_cell_whose_worker_dies_beyond_its_retries_is_recorded_failed(tmp_path: Path, workers) -> None:
    exp = on(SMALL, "ray", retries=0)
    executor = workers
    executor.spec = exp.executor
    killed: list[int] = []

    def progress(event: str, info: dict) -> None:
        if event == "cell" and not killed:
            killed.extend(executor.worker_pids())
            os.kill(killed[0], signal.SIGKILL)

    try:
        result = run_experiment(exp, tmp_path / "run", executor=executor, progress=progress)
    finally:
        executor.spec = on(SMALL, "ray").executor
    assert result.failed == 1 and result.done == 5
    assert all("worker died (1 of 1 tries)" in error for error in result.errors.values())
    inv = verify(tmp_path / "run")
    assert not inv.problems and {m["status"] for m in inv.markers.values()} == {"done", "failed"}


class Killed(BaseException):
    pass


def test_resume_across_executors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers) -> None:
    import phasetime.experiments.running.run as driver

    out = tmp_path / "run"
    real, written = driver.write_cell, []

    def write_then_die(*args, **kwargs):
        real(*args, **kwargs)
        written.append(1)
        if len(written) == 2:
            raise Killed

    monkeypatch.setattr(driver, "write_cell", write_then_die)
    with pytest.raises(Killed):
        run_experiment(SMALL, out)  # local, killed after two cells
    monkeypatch.setattr(driver, "write_cell", real)
    result = run_experiment(on(SMALL, "ray"), out, resume=True, executor=workers)
    assert result.skipped == 2 and result.done == 4
    assert cells_and_rows(out) == {i: SMALL.repeats for i in range(6)}
