"""Pure statistics helpers shared by every summary; no I/O, no pandas."""

from __future__ import annotations

import math
from typing import Iterable, Sequence


def _clean(values: Iterable[float | None]) -> list[float]:
    return sorted(float(v) for v in values if v is not None and not math.isnan(v))


def percentile(values: Iterable[float | None], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation (numpy's default); None if empty.

    Missing values (None, NaN) are ignored.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    xs = _clean(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float | None]) -> float | None:
    """The median, ignoring missing values; None if empty."""
    return percentile(values, 50)


def group_by(rows: Sequence[dict], keys: Sequence[str]) -> dict[tuple, list[dict]]:
    """Rows grouped by the values of ``keys``, groups in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(row.get(k) for k in keys), []).append(row)
    return groups
