"""Three verdicts for every claim phasetime makes about a run: pass, fail or inconclusive.

A claim states an effect (the length effect of a method's per-token latency, say) with a
confidence interval, and a tolerance: how large an effect may be and still count as none.

- **pass**: the whole interval lies within the tolerance, ``-tol < lo`` and ``hi < tol``. An
  equivalence a paper can print: "the effect is at most 5%, at 95% confidence".
- **fail**: the interval excludes 0 (the effect is significant) and the estimate lies beyond
  the tolerance.
- **inconclusive**: neither. The data cannot tell an effect within the tolerance from one
  beyond it, and the verdict says what would settle it. A test that cannot reach its level with
  the data it has (too few cells for an interval) is inconclusive, never pass.

Under no effect a claim fails at most as often as its interval misses 0 (its level); an
effect beyond the tolerance passes at most as often as the interval misses it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
MAX_REPEATS = 1000  # beyond this many repeats per cell, advice to repeat is no advice


def decide(estimate: float | None, ci: tuple[float, float] | None, tolerance: float) -> str:
    """pass, fail or inconclusive for an effect ``estimate`` with interval ``ci`` (both on the
    scale of the tolerance: relative effects against a relative tolerance)."""
    if estimate is None or ci is None or not all(math.isfinite(v) for v in (estimate, *ci)):
        return INCONCLUSIVE
    lo, hi = ci
    if -tolerance < lo and hi < tolerance:
        return PASS
    if (lo > 0 or hi < 0) and abs(estimate) > tolerance:
        return FAIL
    return INCONCLUSIVE


@dataclass(frozen=True)
class Settle:
    """What would settle an inconclusive claim, from the noise the run shows."""

    cells: int | None = None  # cells (output lengths) the observed noise needs; None: more than the search tried
    repeats: int | None = None  # repeats per cell that would do instead (None: repeats cannot, the noise is between cells)
    interleave: bool = False  # the run did not interleave its cells: drift between cells counts as noise

    def describe(self, cells_now: int, repeats_now: int | None) -> str:
        parts = [f"about {self.cells} output lengths at this noise" if self.cells is not None
                 else "far more output lengths than the run has (the noise is large against the tolerance)"]
        if self.repeats is not None and self.repeats > MAX_REPEATS:
            parts.append(f"more repeats would hardly help (over {MAX_REPEATS:,} per cell)")
        elif self.repeats is not None and repeats_now is not None and self.repeats > repeats_now:
            parts.append(f"or about {self.repeats} repeats per cell")
        elif self.repeats is None:
            parts.append("more repeats would not help: the noise is between cells, the machine's moments")
        if self.interleave:
            parts.append("run with order: interleaved so that drift spreads over every cell")
        return f"{cells_now} cells judged; would settle with " + "; ".join(parts)


@dataclass(frozen=True)
class CheckResult:
    check: str
    scope: str
    value: Any
    threshold: str
    verdict: str  # pass, fail, inconclusive, warn, skip, info
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["CheckResult", "FAIL", "INCONCLUSIVE", "PASS", "Settle", "decide"]
