"""What every sensor is: a class that samples at the phase boundaries of a call, and its columns.

The ``generate()`` adapter's recorder calls :meth:`Sensor.start` before the call,
:meth:`Sensor.sample` at every boundary it marks (call start and end, media start and end,
each forward's start and end, with the forward's output at its end) and :meth:`Sensor.finish`
after the call, which returns the sensor's column values. Each boundary comes as a
:class:`~phasetime.core.boundaries.Boundary` whose phase the recorder decided once; no sensor
classifies for itself. Importing this module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..core.boundaries import Boundary

PHASES = ("vision", "prefill", "decode")


@dataclass(frozen=True)
class SensorColumn:
    """A results column a sensor fills (``kind``: "float" or "int")."""

    name: str
    unit: str
    doc: str
    kind: str = "float"


class Sensor(Protocol):
    name: str
    columns: tuple[SensorColumn, ...]

    def start(self, prompt_tokens: int) -> None: ...

    def sample(self, boundary: Boundary, output: Any = None) -> None: ...

    def finish(self, prompt_tokens: int) -> dict[str, Any]: ...
