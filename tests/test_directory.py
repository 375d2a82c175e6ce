"""phasetime only ever deletes what it wrote, and one run writes a directory at a time."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import run_cli
from phasetime.experiments.running.run import run_experiment
from phasetime.experiments.plan.spec import parse_experiment
from phasetime.results import StoreError, read
from phasetime.results.directory import DirectoryLock

# Does not depend on the transformers version: run once, on the newest (scripts/test.sh).
pytestmark = pytest.mark.anyversion

EXP = parse_experiment({"name": "d", "models": ["tiny-llama"], "inputs": {"kind": "synthetic", "prompt": "hi"},
                        "sweep": {"max_new_tokens": [1, 2]}, "repeats": 1, "warmup": 0})
QUICK = ["--model", "tiny-llama", "--max-new-tokens", "1", "--repeats", "1", "--warmup", "0", "--quiet"]


def user_folder(path: Path) -> dict[str, bytes]:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.tex").write_text("\\chapter{Results}")
    (path / "notes").mkdir()
    (path / "notes" / "todo.txt").write_text("measure decode")
    return snapshot(path)


def snapshot(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_user_folder_survives_every_mode(tmp_path: Path, flag: list[str]) -> None:
    folder = tmp_path / "mine"
    before = user_folder(folder)
    result = run_cli("run", *QUICK, "--out", folder, *flag)
    assert result.exit_code == 2 and "not a phasetime results directory" in result.output and "thesis.tex" in result.output
    assert snapshot(folder) == before


@pytest.mark.parametrize("flag", [["--overwrite"], ["--resume"], []])
def test_the_current_directory_and_an_empty_out_are_safe(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         flag: list[str]) -> None:
    before = user_folder(tmp_path / "cwd")
    monkeypatch.chdir(tmp_path / "cwd")
    empty = run_cli("run", *QUICK, "--out", "", *flag)
    assert empty.exit_code == 2 and "--out must not be empty" in empty.output
    dot = run_cli("run", *QUICK, "--out", ".", *flag)
    assert dot.exit_code == 2 and "not a phasetime results directory" in dot.output
    assert snapshot(tmp_path / "cwd") == before


def test_overwrite_removes_only_phasetimes_files(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(EXP, out)
    (out / "my-notes.txt").write_text("keep me")
    result = run_experiment(EXP, out, overwrite=True)
    assert any("my-notes.txt" in note for note in result.notes)
    assert (out / "my-notes.txt").read_text() == "keep me" and read(out).num_rows == 2


@pytest.mark.parametrize("kind", ["link", "dangling"])
def test_a_symbolic_link_is_refused(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "link":
        target.mkdir()
    (tmp_path / "out").symlink_to(target)
    result = run_cli("run", *QUICK, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "is a symbolic link" in result.output
    assert not target.exists() or list(target.iterdir()) == []


@pytest.mark.parametrize("out", ["/proc/phasetime-x", "/dev/null", "bad\0name"])
def test_impossible_places_are_one_line(out: str) -> None:
    result = run_cli("run", *QUICK, "--out", out)
    assert result.exit_code == 2 and result.output.startswith("error:") and "Traceback" not in result.output, result


def test_a_second_run_on_a_locked_directory_fails_at_once(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    with DirectoryLock(out):
        with pytest.raises(StoreError, match=f"in use by another phasetime run \\(process {os.getpid()}"):
            run_experiment(EXP, out)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # nothing else was written
    run_experiment(EXP, out)  # the lock is free again


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").write_text(json.dumps({"pid": 999999, "host": "gone", "since": "2026-01-01T00:00:00+00:00"}))
    result = run_experiment(EXP, out)
    assert any("process 999999" in note and "no longer running" in note for note in result.notes)


HOLD_AFTER_FIRST_CELL = """
import sys, time
from pathlib import Path
import phasetime.experiments.running.run as driver
real, release = driver.write_cell, Path(sys.argv[1])
def write_and_wait(*args, **kwargs):
    real(*args, **kwargs)
    print("holding", flush=True)
    while not release.exists():  # the test lets go once the second run has tried
        time.sleep(0.05)
driver.write_cell = write_and_wait
from phasetime.cli import main
main(sys.argv[2:])
"""


def test_two_concurrent_runs_one_runs_the_other_refuses(tmp_path: Path) -> None:
    out, release = tmp_path / "run", tmp_path / "release"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    args = ["run", *QUICK[:-1], "--max-new-tokens", "1,2,3", "--repeats", "2", "--quiet", "--out", str(out)]
    first = subprocess.Popen([sys.executable, "-c", HOLD_AFTER_FIRST_CELL, str(release), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert first.stdout is not None and first.stdout.readline().strip() == "holding"  # mid-run, lock held
        second = run_cli(*args, "--resume")
        assert second.exit_code == 2 and "in use by another phasetime run" in second.output, second
        assert f"process {first.pid}" in second.output
    finally:
        release.touch()
        first.wait(timeout=300)
    assert first.returncode == 0, first.stderr.read() if first.stderr else ""
    assert read(out).num_rows == 3 * 2  # every cell exactly once


def test_check_reads_a_read_only_directory_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_experiment(EXP, out)
    before = snapshot(out)
    for p in [out, *out.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        result = run_cli("check", out)
        assert result.exit_code in (0, 1) and " checks, " in result.output, result
        assert run_cli("verify", out).exit_code == 0
    finally:
        for p in [out, *out.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    assert snapshot(out) == before


@pytest.mark.parametrize("flags, message", [
    (["--precision", "0"], "--precision must be greater than 0"),
    (["--length-tolerance", "nan"], "--length-tolerance must be a finite number"),
    (["--cv-fail", "0.05"], "--cv-fail must not be below --cv-warn"),
])
def test_bad_check_thresholds_are_errors(tmp_path: Path, flags: list[str], message: str) -> None:
    out = tmp_path / "run"
    run_experiment(EXP, out)
    result = run_cli("check", out, *flags)
    assert result.exit_code == 2 and message in result.output, result


CTRL_C_WHILE_IMPORTING_TORCH = """
import builtins, os, signal, sys
# Ctrl-C as in a terminal: a process started as a shell's background job (a CI runner's, say)
# inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
real_import = builtins.__import__
def importing(name, *args, **kwargs):
    if name == "torch" and "torch" not in sys.modules:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C in the middle of start-up
    return real_import(name, *args, **kwargs)
builtins.__import__ = importing
from phasetime.cli import main

main(sys.argv[1:])
"""


def test_ctrl_c_during_start_up_exits_130_quietly(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", CTRL_C_WHILE_IMPORTING_TORCH, "run", *QUICK, "--out",
                           str(tmp_path / "o")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 130 and len(proc.stderr.strip().splitlines()) <= 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
