"""NVTX ranges around the phases, for Nsight Systems (``--nvtx``): through torch, which has
them only in CUDA builds."""

from __future__ import annotations

import torch

from .errors import UsageError


class Nvtx:
    """NVTX ranges through torch; refuses a torch build without them."""

    def __init__(self) -> None:
        try:
            torch.cuda.nvtx.range_push("phasetime.check")
            torch.cuda.nvtx.range_pop()
        except (RuntimeError, AttributeError) as exc:
            raise UsageError(f"NVTX ranges need a CUDA build of torch: {exc}") from None
        self.depth = 0

    def push(self, name: str) -> None:
        torch.cuda.nvtx.range_push(name)
        self.depth += 1

    def pop(self) -> None:
        torch.cuda.nvtx.range_pop()
        self.depth -= 1

    def close_all(self) -> None:
        """Pop what a call that raised left open."""
        while self.depth > 0:
            self.pop()


__all__ = ["Nvtx"]
