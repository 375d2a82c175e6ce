"""What a load's rows say (``backend: vllm-server``), per rate level: throughput, latency percentiles, goodput, where TTFT goes.

A level is a model's cell at one ``rate`` (its other parameters fixed); its repeats are passes
of the same plan, pooled. Definitions are the field's (vLLM's ``bench serve``):

* the level's duration is each pass's first send to its last token, summed over passes;
* throughput: answered requests / duration, and the output tokens they streamed / duration;
* percentiles (p50, p90, p99) of the client's TTFT, TPOT, ITL (every streamed gap) and E2E,
  each with a distribution-free 95% interval from the order statistics (scipy's
  ``quantile_test``); an interval the requests cannot give (p99 of 50 requests) is null, not
  invented;
* goodput: requests meeting every SLO given (``ttft_ms``, ``tpot_ms``, ``e2e_ms``, the
  client's figures) per second of the duration;
* where TTFT goes: the means over requests of the server's input, queue, vision, prefill, and
  what is left of the client's TTFT (the first token's way back, streaming);
* the send: the client's lag behind its plan (median, p99). A lag every request shares shifts
  the whole plan and changes nothing; a lag that varies changes the gaps between arrivals. A
  level whose lag spreads (p90 - p10) over more than a tenth of the mean gap between arrivals
  was not held at its rate, and says so (the client's timer spreads sends over ~1 ms: rates up
  to ~100/s hold, docs/benchmarks.md, "Serving").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from ..results.schema import AXES

PERCENTILES = (50, 90, 99)
LATENCIES = ("client_ttft_ms", "client_tpot_ms", "client_itl_ms", "client_e2e_ms")
TTFT_PARTS = ("input_ms", "queue_ms", "vision_ms", "prefill_ms")
# what a level's figures read (its configuration is every swept parameter: the results' AXES)
READ = ("repeat", "sent_ms", "client_tokens", "send_lag_ms", "preemptions", *LATENCIES, *TTFT_PARTS)


@dataclass(frozen=True)
class Quantile:
    q: int
    value: float
    low: float | None
    high: float | None


@dataclass
class Level:
    params: dict[str, Any]
    rows: list[int]  # the level's rows in the table it was read from
    requests: int
    duration_s: float
    throughput_rps: float
    tokens_per_s: float
    goodput_rps: float | None
    good: int | None
    quantiles: dict[str, list[Quantile]] = field(default_factory=dict)
    ttft_parts: dict[str, float] = field(default_factory=dict)
    lag_p50_ms: float = 0.0
    lag_p99_ms: float = 0.0
    lag_spread_ms: float = 0.0  # p90 - p10
    held: bool = True
    preempted: int = 0
    # the parameters other than model and rate that tell this level from others ("" if none)
    label: str = ""


def quantiles(values: np.ndarray, level: float = 0.95) -> list[Quantile]:
    """p50, p90, p99 with their distribution-free intervals (null where n is too small)."""
    out = []
    for q in PERCENTILES:
        value = float(np.percentile(values, q))
        low = high = None
        if len(values) >= 2:
            ci = stats.quantile_test(values, q=value, p=q / 100).confidence_interval(level)
            low = float(ci.low) if np.isfinite(ci.low) else None
            high = float(ci.high) if np.isfinite(ci.high) else None
        out.append(Quantile(q, value, low, high))
    return out


def _column(rows: dict[str, list[Any]], name: str) -> np.ndarray:
    values = rows.get(name) or []
    if name.endswith("itl_ms"):
        values = [v for row in values for v in (row or [])]
    return np.array([v for v in values if v is not None], dtype=float)


def levels(table: Any, slo: dict[str, float] | None = None) -> list[Level]:
    """One :class:`Level` per configuration of a load's rows: every swept parameter (the
    results' axes: model, rate, output length, dtype, resolution, ...) the same."""
    if "rate" not in table.column_names:
        return []
    keys = [k for k in AXES if k in table.column_names]
    data = table.select(keys + [c for c in READ if c in table.column_names and c not in keys]).to_pydict()
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, rate in enumerate(data["rate"]):
        if rate is not None:
            groups.setdefault(tuple(data[k][i] for k in keys), []).append(i)
    out = [_level({k: v for k, v in zip(keys, key) if v is not None}, idx,
                  {c: [data[c][i] for i in idx] for c in data}, slo or {})
           for key, idx in groups.items()]
    differ = [k for k in keys if k not in ("model", "rate") and len({repr(lv.params.get(k)) for lv in out}) > 1]
    for lv in out:
        lv.label = ", ".join(f"{k}={lv.params.get(k)}" for k in differ)
    return sorted(out, key=lambda lv: (str(lv.params.get("model")), lv.label, lv.params["rate"]))


def _duration_s(rows: dict[str, list[Any]]) -> float:
    spans: dict[Any, list[float]] = {}
    for repeat, sent, e2e in zip(rows["repeat"], rows["sent_ms"], rows["client_e2e_ms"]):
        span = spans.setdefault(repeat, [np.inf, -np.inf])
        span[0], span[1] = min(span[0], sent), max(span[1], sent + (e2e or 0.0))
    return sum(b - a for a, b in spans.values()) / 1e3


def _level(params: dict[str, Any], indices: list[int], rows: dict[str, list[Any]], slo: dict[str, float]) -> Level:
    n = len(rows["rate"])
    duration = max(_duration_s(rows), 1e-9)
    tokens = sum(t or 0 for t in rows["client_tokens"])
    good = None
    if slo:
        limits = {"ttft_ms": "client_ttft_ms", "tpot_ms": "client_tpot_ms", "e2e_ms": "client_e2e_ms"}
        good = sum(all((rows[limits[k]][i] or 0.0) <= v for k, v in slo.items() if v is not None) for i in range(n))
    lag = _column(rows, "send_lag_ms")
    mean_gap_ms = 1e3 / float(params["rate"])
    p10, p50, p90, p99 = np.percentile(lag, [10, 50, 90, 99]) if len(lag) else (0.0, 0.0, 0.0, 0.0)
    level = Level(params=params, rows=indices, requests=n, duration_s=duration, throughput_rps=n / duration,
                  tokens_per_s=tokens / duration, goodput_rps=None if good is None else good / duration, good=good,
                  lag_p50_ms=float(p50), lag_p99_ms=float(p99), lag_spread_ms=float(p90 - p10),
                  preempted=sum(1 for p in rows.get("preemptions", []) if p))
    level.held = level.lag_spread_ms <= 0.1 * mean_gap_ms
    for name in LATENCIES:
        values = _column(rows, name)
        if len(values):
            level.quantiles[name] = quantiles(values)
    parts = {p: float(np.mean(_column(rows, p))) for p in TTFT_PARTS if len(_column(rows, p))}
    client = _column(rows, "client_ttft_ms")
    if parts and len(client):
        parts["rest_ms"] = max(float(np.mean(client)) - sum(parts.values()), 0.0)
    level.ttft_parts = parts
    return level


def load_warnings(table: Any) -> list[str]:
    """A level's rate the client did not hold, and requests vLLM preempted, one line each."""
    lines = []
    for lv in levels(table):
        where = f"{lv.params.get('model')}{f' ({lv.label})' if lv.label else ''} at {lv.params['rate']:g}/s"
        if not lv.held:
            lines.append(f"{where}: the client did not hold the rate (its send lag spread over {lv.lag_spread_ms:.1f} "
                         f"ms from p10 to p90, p99 {lv.lag_p99_ms:.1f} ms, against {1e3 / lv.params['rate']:.1f} ms "
                         "between arrivals): use a lower rate, or more load.clients if the lag grows")
        if lv.preempted:
            lines.append(f"{where}: vLLM preempted {lv.preempted} of {lv.requests} requests (their KV cache was "
                         "recomputed; their phases include it)")
    return lines
