"""The conditions a run was measured under, saved in ``run.json``, and the threads it uses.

A reader judging the numbers needs more than versions: how many threads torch used, what
else the machine was doing (load average before and after), whether the CPU frequency
governor or the GPU's clocks were pinned, what else ran on the GPU. Every field is named
for what it is; a value that cannot be read is ``null``, never a guess. See
``docs/metrics.md`` ("Conditions") for the list.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
GPU_FIELDS = ("name", "driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem",
              "power.limit", "power.draw", "temperature.gpu", "persistence_mode", "pstate")


def resolve_threads(threads: int | str, device_type: str) -> int | None:
    """Threads a run uses: ``"auto"`` is 1 on CPU (and MPS), torch's default (None) on CUDA."""
    if threads == "auto":
        return None if device_type == "cuda" else 1
    return int(threads)


_PINNED: set[int] = set()  # thread counts torch refused in this process (an engine pinned its threads)


def apply_threads(threads: int | None) -> None:
    """Set torch's intra-op threads and the OpenMP/MKL variables (for libraries loaded later).

    An engine running in this process may pin torch's threads and refuse the change (vLLM's CPU
    worker replaces ``torch.set_num_threads`` with a warning). phasetime then asks once, says so
    once, and leaves the threads as the engine set them (each row records the count it ran with)."""
    if threads is None:
        return
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    if "torch" in sys.modules and threads not in _PINNED:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
            if torch.get_num_threads() != threads:
                _PINNED.add(threads)
                logging.getLogger("phasetime").warning(
                    "torch's threads are pinned in this process (%d, by the engine); --threads %d is not applied, "
                    "and phasetime will not ask again", torch.get_num_threads(), threads)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def physical_cpus() -> int | None:
    """Physical cores (distinct core id per package in /proc/cpuinfo); None when unreadable."""
    text = _read("/proc/cpuinfo")
    if not text:
        return None
    cores, package = set(), "0"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "physical id":
            package = value
        elif key == "core id":
            cores.add((package, value))
    return len(cores) or None


def _cpu_model() -> str:
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def cpu_conditions() -> dict[str, Any]:
    """The CPU side: cores, affinity, governor, threads and their variables."""
    try:
        affinity: int | None = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    facts: dict[str, Any] = {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cpus": physical_cpus(),
        "usable_cpus": affinity,
        "cpu_governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "thread_variables": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }
    if "torch" in sys.modules:
        import torch

        facts["torch_threads"] = torch.get_num_threads()
        facts["torch_interop_threads"] = torch.get_num_interop_threads()
    return facts


def _nvidia_smi(args: list[str]) -> str | None:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        return subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_conditions(index: int) -> dict[str, Any]:
    """Clocks, power limit, temperature and the other processes on torch's GPU ``index``
    (nvidia-smi, which is told the GPU's UUID: its own numbering ignores CUDA_VISIBLE_DEVICES)."""
    from ...sensors.gpu_id import physical_id

    ident = physical_id(index)
    out = _nvidia_smi([f"--id={ident}", f"--query-gpu={','.join(GPU_FIELDS)}", "--format=csv,noheader,nounits"])
    facts: dict[str, Any] = {}
    if out:
        values = [v.strip() for v in out.split(",")]
        if len(values) == len(GPU_FIELDS):
            facts = dict(zip(GPU_FIELDS, values))
    apps = _nvidia_smi([f"--id={ident}", "--query-compute-apps=pid,process_name,used_memory", "--format=csv,noheader"])
    if apps is not None:
        others = [line.strip() for line in apps.splitlines() if line.strip() and not line.startswith(f"{os.getpid()},")]
        facts["other_processes"] = others
    return facts


def cpu_seconds() -> dict[str, float] | None:
    """CPU time the whole machine and this process (with its children) have used so far, and a
    monotonic clock: two of these give the CPUs other work used in between."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait is busy
    values = [int(v) for v in fields]
    busy = sum(values) - values[3] - (values[4] if len(values) > 4 else 0)
    own = os.times()
    return {"machine_busy_s": busy / ticks, "process_s": own.user + own.system + own.children_user + own.children_system,
            "monotonic_s": time.monotonic()}


def snapshot(device: Any) -> dict[str, Any]:
    """What changes during a run: time, load average, CPU time used, and on CUDA the GPU's state."""
    snap: dict[str, Any] = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                            "load_average": load_average(), "cpu_seconds": cpu_seconds()}
    if getattr(device, "type", None) == "cuda":
        import torch

        index = device.index if device.index is not None else torch.cuda.current_device()
        snap["gpu"] = gpu_conditions(index)
    return snap


def environment(device: Any) -> dict[str, Any]:
    """Versions, host, CPU facts and (on CUDA) the GPU's name; see the module docstring."""
    import torch
    import transformers

    from ...core.version import VERSION

    env: dict[str, Any] = {
        "phasetime": VERSION,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": "cpu",
        **cpu_conditions(),
    }
    if getattr(device, "type", None) == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        env["device_name"] = torch.cuda.get_device_name(index)
    return env
