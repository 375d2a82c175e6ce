"""The measuring core: clock, probe, phases, record, measure and the legacy baseline.

The bottom floor of phasetime: it imports nothing from the floors above it and needs only
torch (and numpy, for :mod:`.stats`). Nothing here does I/O. ``measure`` and ``Probe`` are
loaded on first use, so that importing the torch-free parts (the record, the errors, the
statistics) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import PhasetimeError, UnsupportedGeneration, UsageError
from .record import Measurement, SequenceTiming

if TYPE_CHECKING:
    from .measure import measure
    from .probe import Probe

__all__ = ["Measurement", "PhasetimeError", "Probe", "SequenceTiming", "UnsupportedGeneration", "UsageError", "measure"]


def __getattr__(name: str) -> Any:
    if name == "measure":
        from .measure import measure

        return measure
    if name == "Probe":
        from .probe import Probe

        return Probe
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
