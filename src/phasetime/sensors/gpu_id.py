"""Which physical GPU a torch CUDA device is, for NVML and nvidia-smi.

torch numbers the GPUs it can see from 0; NVML and nvidia-smi number every GPU of the
machine. Under ``CUDA_VISIBLE_DEVICES`` (every Ray GPU worker, a shared node's scheduler) the
two disagree: torch's ``cuda:0`` may be physical GPU 3, and asking NVML for index 0 reads
another GPU's energy, clocks and power. So a device is named by its UUID (``GPU-...``, from
torch's device properties), which every tool agrees on; where torch gives none, by the
entry of ``CUDA_VISIBLE_DEVICES`` at torch's index (a number or a UUID); only without either
by torch's index itself.
"""

from __future__ import annotations

import os
from typing import Any

from ..core.errors import UsageError


def cuda_uuid(index: int) -> str | None:
    """The UUID of torch's CUDA device ``index`` as NVML writes it (``GPU-...``), if torch knows it."""
    import torch

    try:
        raw = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    except (RuntimeError, AssertionError, AttributeError):
        return None
    if raw is None:
        return None
    text = str(raw)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def physical_id(index: int) -> str:
    """What NVML and ``nvidia-smi --id`` call torch's CUDA device ``index``: its UUID, else the
    ``CUDA_VISIBLE_DEVICES`` entry at that index, else the index."""
    uuid = cuda_uuid(index)
    if uuid is not None:
        return uuid
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if index >= len(entries):
            raise UsageError(f"cuda:{index} is not among CUDA_VISIBLE_DEVICES={visible!r}")
        return entries[index]
    return str(index)


def nvml_handle(nvml: Any, index: int) -> Any:
    """The NVML handle of torch's CUDA device ``index`` (``nvml``: the pynvml module, or a fake)."""
    ident = physical_id(index)
    if ident.startswith(("GPU-", "MIG-")):
        return nvml.nvmlDeviceGetHandleByUUID(ident)
    if ident.isdigit():
        return nvml.nvmlDeviceGetHandleByIndex(int(ident))
    raise UsageError(f"cannot tell which GPU cuda:{index} is for NVML (CUDA_VISIBLE_DEVICES entry {ident!r})")


__all__ = ["cuda_uuid", "nvml_handle", "physical_id"]
