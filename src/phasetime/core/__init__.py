"""The timing core: clock, events, ``derive``, rounds, boundaries and the record. It knows no model.

The bottom floor of phasetime: it imports nothing from the rooms above it (the engine
adapters :mod:`phasetime.hf` and :mod:`phasetime.vllm`, the sensors, results, experiments,
analysis) and needs only torch for its clock. Nothing here does I/O. An engine adapter turns
what it sees into timestamped :class:`~phasetime.core.phases.Event` s; :func:`~phasetime.core.phases.derive`
turns them into a :class:`Measurement`.
"""

from __future__ import annotations

from .errors import PhasetimeError, UnsupportedGeneration, UsageError
from .record import Measurement, SequenceTiming

__all__ = ["Measurement", "PhasetimeError", "SequenceTiming", "UnsupportedGeneration", "UsageError"]
