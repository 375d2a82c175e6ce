"""The environment a run was measured in, saved beside every result (``run.json``)."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
from typing import Any

import torch


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi(device_index: int) -> dict[str, str]:
    """Driver and clocks as nvidia-smi reports them; empty when it is not there."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return {}
    fields = ["driver_version", "clocks.sm", "clocks.max.sm", "clocks.mem", "persistence_mode"]
    try:
        out = subprocess.run(
            [exe, f"--id={device_index}", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.split(",")]
    return dict(zip(fields, values)) if len(values) == len(fields) else {}


def environment(device: torch.device) -> dict[str, Any]:
    """Versions, CPU, and (on CUDA) GPU name, driver and clocks where readable."""
    import transformers

    from . import __version__

    env: dict[str, Any] = {
        "phasetime": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu": _cpu_model(),
        "cpu_count": torch.get_num_threads(),
        "device": str(device),
        "device_name": "cpu",
        "cuda": torch.version.cuda,
    }
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        env["device_name"] = torch.cuda.get_device_name(index)
        env["gpu"] = _nvidia_smi(index)
    return env
