"""Results tables of known truth, to calibrate the length verdicts (``benchmarks/length_truth.py``,
docs/benchmarks.md) and to test them.

A synthetic run has one configuration, a cell per output length N, ``repeats`` calls per cell,
and per call its N - 1 inter-token gaps:

    gap(cell, call, k) = base x profile(k) x cell scale x call scale x gap noise (+ artifact)

- the cell scale (lognormal, ``cell_noise``) is the machine's moment a cell ran in, shared by
  its calls: the noise a claim over cells must carry;
- the call scale (``call_noise``) and the gap noise (``gap_noise``) are a call's and a step's own;
- the **shape** says what else depends on the position or the length, of size ``effect``:

  ========== ========= =========================================================================
  shape      kind      what
  ========== ========= =========================================================================
  flat       physical  nothing (``effect`` unused)
  warmup     physical  the first gaps slower: profile 1 + e' exp(-(k - 1) / 2), e' such that
                       the N_min calls' TPOT reads ``effect`` above the longest's
  growth     physical  attention over a growing context: profile 1 + e' (k - 1), the longest
                       calls' TPOT ``effect`` above the shortest's
  call-scale physical  every call at its own speed: call scale lognormal with sd ``effect``
  last-gap   artifact  end-of-call work billed to the last step: a fixed extra time on every
                       call's last gap, ``effect`` of the N_min calls' TPOT
  decode/N   artifact  the legacy method: no gaps, a per-token value ``true x (1 - effect x w)``,
                       w = (N_min - 1) / (N - 1); ``effect`` 0.5 at N_min = 2 is decode / N
  ========== ========= =========================================================================
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pyarrow as pa

SHAPES = ("flat", "warmup", "growth", "call-scale", "last-gap", "decode/N")
PHYSICAL = ("flat", "warmup", "growth", "call-scale")
ARTIFACTS = ("last-gap", "decode/N")
STRIDE = 1_000_000


def _profile(shape: str, effect: float, lengths: Sequence[int]) -> np.ndarray:
    """The shared per-position profile (positions 1 .. N_max - 1)."""
    k = np.arange(1, max(lengths), dtype=float)
    n_min, n_max = min(lengths), max(lengths)
    if shape == "warmup" and effect:
        bump = np.exp(-(k - 1) / 2)
        # e' such that mean(profile[:n_min-1]) / mean(profile[:n_max-1]) = 1 + effect
        a, b = bump[:n_min - 1].mean(), bump[:n_max - 1].mean()
        e = effect / (a - (1 + effect) * b)
        return 1 + e * bump
    if shape == "growth" and effect:
        # e' such that mean over the longest calls' positions / over the shortest's = 1 + effect
        a, b = (k[:n_max - 1] - 1).mean(), (k[:n_min - 1] - 1).mean()
        e = effect / (a - (1 + effect) * b)
        return 1 + e * (k - 1)
    return np.ones_like(k)


def synthetic_run(rng: np.random.Generator, lengths: Sequence[int], shape: str = "flat", effect: float = 0.0,
                  cell_noise: float = 0.01, repeats: int = 4, call_noise: float = 0.01, gap_noise: float = 0.02,
                  base_ms: float = 1.0) -> pa.Table:
    """One synthetic run's rows (one sequence per call): see the module's text."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    profile = _profile(shape, effect, lengths)
    n_min = min(lengths)
    extra = effect * (n_min - 1) * base_ms * float(profile[:n_min - 1].mean()) if shape == "last-gap" else 0.0
    scale_sd = effect if shape == "call-scale" else call_noise
    rows: dict[str, list] = {k: [] for k in ("cell", "call_id", "sequence", "repeat", "method", "max_new_tokens",
                                             "output_tokens", "decode_ms", "tpot_ms", "total_ms", "itl_ms")}
    for cell, n in enumerate(lengths):
        cell_scale = math.exp(rng.normal(0.0, cell_noise))
        for call in range(repeats):
            scale = cell_scale * math.exp(rng.normal(0.0, scale_sd))
            gaps = base_ms * profile[:n - 1] * scale * np.exp(rng.normal(0.0, gap_noise, n - 1))
            if n >= 2:
                gaps[-1] += extra * scale
            decode = float(gaps.sum())
            tpot = decode / (n - 1) if n >= 2 else math.nan
            legacy = shape == "decode/N"
            if legacy:
                tpot *= 1 - effect * (n_min - 1) / (n - 1)
            for key, value in (("cell", cell), ("call_id", cell * STRIDE + call), ("sequence", 0), ("repeat", call),
                               ("method", "subtract" if legacy else "direct"), ("max_new_tokens", n),
                               ("output_tokens", n), ("decode_ms", decode), ("tpot_ms", tpot),
                               ("total_ms", decode + 5.0), ("itl_ms", None if legacy else gaps.tolist())):
                rows[key].append(value)
    return pa.table({**rows, "itl_ms": pa.array(rows["itl_ms"], pa.list_(pa.float64()))})


__all__ = ["ARTIFACTS", "PHYSICAL", "SHAPES", "synthetic_run"]
