"""phasetime: direct, phase-by-phase latency of Hugging Face ``generate()`` calls.

Public API::

    import phasetime
    m = phasetime.measure(model, inputs, max_new_tokens=32)
    m.vision_ms, m.prefill_ms, m.ttft_ms, m.decode_ms, m.tpot_ms

    with phasetime.Probe(model) as probe:
        model.generate(**inputs, max_new_tokens=64)
    probe.measurements[-1]

See ``docs/metrics.md`` for the exact definition of every field.
"""

from ._measure import measure
from ._probe import Probe
from ._record import Measurement, SequenceTiming, UnsupportedGeneration

__version__ = "0.1.0"

__all__ = ["Measurement", "Probe", "SequenceTiming", "UnsupportedGeneration", "measure", "__version__"]
