"""phasetime: direct, phase-by-phase latency of Hugging Face ``generate()`` calls.

Public API::

    import phasetime
    m = phasetime.measure(model, inputs, max_new_tokens=32)
    m.vision_ms, m.prefill_ms, m.ttft_ms, m.decode_ms, m.tpot_ms

    with phasetime.Probe(model) as probe:
        model.generate(**inputs, max_new_tokens=64)
    probe.measurements[-1]

    table = phasetime.results.read("results/my-run")        # a results directory
    phasetime.analysis.summarize(table)

The package has four floors: :mod:`phasetime.core` (measuring; torch only),
:mod:`phasetime.results` (the schema and the results directory),
:mod:`phasetime.experiments` and :mod:`phasetime.analysis` above them, and the command
line on top. Everything is imported on first use, so ``import phasetime`` is cheap. See
``docs/metrics.md`` for the exact definition of every field.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .core.errors import PhasetimeError, UnsupportedGeneration, UsageError
from .core.record import Measurement, SequenceTiming
from .core.version import VERSION

if TYPE_CHECKING:
    from . import analysis, experiments, results
    from .hf.measure import measure
    from .hf.probe import Probe
    from .experiments import models

__version__ = VERSION

__all__ = [
    "Measurement", "PhasetimeError", "Probe", "SequenceTiming", "UnsupportedGeneration", "UsageError", "__version__",
    "analysis", "experiments", "measure", "models", "results",
]

_LAZY = {
    "measure": ("phasetime.hf.measure", "measure"),
    "Probe": ("phasetime.hf.probe", "Probe"),
    "models": ("phasetime.experiments.models", None),
    "analysis": ("phasetime.analysis", None),
    "experiments": ("phasetime.experiments", None),
    "results": ("phasetime.results", None),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module_name, attribute = _LAZY[name]
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value
    return value
