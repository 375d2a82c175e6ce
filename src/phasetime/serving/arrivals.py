"""When each request of a rate level is sent: open-loop arrivals, planned before the first send.

The field's definitions (vLLM's ``bench serve``, GuideLLM): requests arrive at ``rate`` per
second, their gaps exponential (``poisson``), gamma-distributed with shape ``burstiness`` and
mean 1 / rate (``gamma``: below 1 burstier than Poisson, above 1 more regular), or all equal
(``constant``). The plan is a list of offsets in seconds from the level's start, drawn from the
experiment's seed, so a rerun sends at the same moments.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Arrival = Literal["poisson", "gamma", "constant"]


def gaps(rate: float, count: int, arrival: Arrival, burstiness: float, rng: np.random.Generator) -> np.ndarray:
    """``count`` gaps between consecutive arrivals, in seconds."""
    if rate <= 0 or not np.isfinite(rate):
        raise ValueError(f"a request rate must be positive and finite, not {rate}")
    if arrival == "constant":
        return np.full(count, 1.0 / rate)
    if arrival == "poisson":
        return rng.exponential(1.0 / rate, count)
    if burstiness <= 0:
        raise ValueError(f"burstiness must be positive, not {burstiness}")
    return rng.gamma(burstiness, 1.0 / (rate * burstiness), count)


def plan(rate: float, arrival: Arrival, burstiness: float, seed: int, *, requests: int | None = None,
         duration_s: float | None = None) -> list[float]:
    """The send offsets (seconds, the first at 0) of ``requests`` arrivals, or of every arrival
    within ``duration_s``."""
    if (requests is None) == (duration_s is None):
        raise ValueError("give either requests or duration_s")
    rng = np.random.default_rng(seed)
    if requests is not None:
        times = np.concatenate([[0.0], np.cumsum(gaps(rate, requests - 1, arrival, burstiness, rng))])
        return [float(t) for t in times]
    assert duration_s is not None
    out, t = [0.0], 0.0
    while True:
        t += float(gaps(rate, 1, arrival, burstiness, rng)[0])
        if t >= duration_s:
            return out
        out.append(t)
