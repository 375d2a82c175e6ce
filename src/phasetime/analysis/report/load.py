"""A load's figures and table (runs made with ``backend: vllm-server``): per rate level, the
latency-throughput curves, where TTFT goes, a window of requests on one time axis, and what
shared the steps of the slow gaps (:mod:`phasetime.analysis.load` computes the levels)."""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pyarrow as pa

from ..load import Level, levels
from .page import fmt, table
from .plots import PHASE_COLORS, color, figure, grid

PARTS = (("input_ms", "input", "#9c755f"), ("queue_ms", "queue", "#bab0ac"), ("vision_ms", "vision", PHASE_COLORS["vision"]),
         ("prefill_ms", "prefill", PHASE_COLORS["prefill"]), ("rest_ms", "rest (to the client)", "#d4d4d4"))
CURVES = (("client_ttft_ms", "TTFT"), ("client_tpot_ms", "TPOT"), ("client_e2e_ms", "E2E"))
# what a decode step held besides the request, in the order a cause is named
SHARED = ("an image encode", "a prefill chunk", "other decodes only", "nothing else")


def _model(lv: Level) -> str:
    """The model, and what else tells the level from the others."""
    return str(lv.params.get("model")) + (f" ({lv.label})" if lv.label else "")


def _label(lv: Level) -> str:
    return f"{_model(lv)}<br>{lv.params['rate']:g}/s"


def curves(found: list[Level]) -> dict[str, Any] | None:
    """p50 / p90 / p99 of TTFT, TPOT and E2E (client) against the achieved throughput, a line
    per model and percentile, with the percentiles' 95% intervals as error bars."""
    if not found:
        return None
    axes, layout, _ = grid([t for _, t in CURVES], columns=3)
    data = []
    for m, model in enumerate(dict.fromkeys(_model(lv) for lv in found)):
        mine = [lv for lv in found if _model(lv) == model]
        for k, (column, _) in enumerate(CURVES):
            for j, q in enumerate((50, 90, 99)):
                points = [(lv, lv.quantiles[column][j]) for lv in mine if column in lv.quantiles]
                if not points:
                    continue
                data.append({"type": "scatter", "mode": "lines+markers", "name": f"{model} p{q}",
                             "legendgroup": f"{model} p{q}", "showlegend": k == 0,
                             "x": [lv.throughput_rps for lv, _ in points], "y": [p.value for _, p in points],
                             "error_y": {"type": "data", "symmetric": False,
                                         "array": [(p.high - p.value) if p.high is not None else 0 for _, p in points],
                                         "arrayminus": [(p.value - p.low) if p.low is not None else 0 for _, p in points]},
                             "line": {"color": color(m), "dash": ("solid", "dash", "dot")[j]},
                             "text": [f"rate {lv.params['rate']:g}/s planned" for lv, _ in points],
                             "xaxis": axes[k][0], "yaxis": axes[k][1]})
    for k, (x, y) in enumerate(axes):
        suffix = "" if k == 0 else str(k + 1)
        layout[f"xaxis{suffix}"]["title"] = {"text": "answered requests / s"}
        layout[f"yaxis{suffix}"]["title"] = {"text": "ms"}
    return figure(data, layout, height=420)


def ttft_parts(found: list[Level]) -> dict[str, Any] | None:
    """Mean TTFT split into the server's input, queue, vision and prefill and the rest, stacked per level."""
    shown = [lv for lv in found if lv.ttft_parts]
    if not shown:
        return None
    x = [_label(lv) for lv in shown]
    data = [{"type": "bar", "name": name, "x": x, "y": [lv.ttft_parts.get(key, 0.0) for lv in shown],
             "marker": {"color": colour}} for key, name, colour in PARTS]
    return figure(data, {"barmode": "stack", "yaxis": {"title": {"text": "mean ms of the client's TTFT"}}})


def timeline(data: dict[str, list[Any]], found: list[Level], window: int = 16) -> dict[str, Any] | None:
    """``window`` requests of the busiest level, those sent closest together, on one time axis: each request's input,
    queue, prefill (vision first) and decode, its tokens as ticks, and every engine step's end (a
    token of some request) as a grey tick along the bottom."""
    if not found or "itl_ms" not in data:
        return None
    busiest = max(found, key=lambda lv: lv.throughput_rps)
    ordered = sorted(busiest.rows, key=lambda i: (data["repeat"][i], data["sent_ms"][i]))
    rows = _densest(data, ordered, window)
    traces: list[dict[str, Any]] = []
    steps: set[float] = set()
    for y, i in enumerate(rows):
        sent = data["sent_ms"][i]
        start = sent
        for key, name, colour in (("input_ms", "input", "#9c755f"), ("queue_ms", "queue", "#bab0ac"),
                                  ("vision_ms", "vision", PHASE_COLORS["vision"])):
            width = data[key][i] or 0.0
            traces.append(_segment(start, width, y, name, colour, y == 0))
            start += width
        first = sent + (data["ttft_ms"][i] or 0.0)
        traces.append(_segment(start, first - start, y, "prefill", PHASE_COLORS["prefill"], y == 0))
        ready = [first + float(t) for t in np.cumsum([0.0] + list(data["itl_ms"][i] or []))]
        traces.append(_segment(first, ready[-1] - first, y, "decode", PHASE_COLORS["decode"], y == 0))
        traces.append({"type": "scatter", "mode": "markers", "x": ready, "y": [y] * len(ready), "showlegend": False,
                       "marker": {"symbol": "line-ns-open", "size": 9, "color": "#c0392b"}, "hoverinfo": "x",
                       "name": data["request_id"][i]})
        steps.update(round(t, 3) for t in ready)
    traces.append({"type": "scatter", "mode": "markers", "x": sorted(steps), "y": [-1] * len(steps), "name": "engine steps",
                   "marker": {"symbol": "line-ns-open", "size": 12, "color": "#555"}, "hoverinfo": "x"})
    layout = {"barmode": "overlay", "xaxis": {"title": {"text": f"ms from the level's start ({_model(busiest)} at "
                                                            f"{busiest.params['rate']:g}/s)"}},
              "yaxis": {"title": {"text": "request"}, "autorange": "reversed"}}
    return figure(traces, layout, height=max(320, 22 * len(rows) + 160))


def _densest(data: dict[str, list[Any]], ordered: list[int], window: int) -> list[int]:
    """The ``window`` consecutive requests (of one pass) sent closest together: where they overlap most."""
    if len(ordered) <= window:
        return ordered
    spans = [(data["sent_ms"][ordered[k + window - 1]] - data["sent_ms"][ordered[k]], k)
             for k in range(len(ordered) - window + 1)
             if data["repeat"][ordered[k]] == data["repeat"][ordered[k + window - 1]]]
    start = min(spans)[1] if spans else 0
    return ordered[start:start + window]


def _segment(start: float, width: float, y: int, name: str, colour: str, legend: bool) -> dict[str, Any]:
    return {"type": "bar", "orientation": "h", "base": [start], "x": [max(width, 0.0)], "y": [y], "name": name,
            "legendgroup": name, "showlegend": legend, "marker": {"color": colour}, "width": 0.7,
            "hovertemplate": f"{name}: %{{x:.2f}} ms<extra></extra>"}


def shared_gaps(data: dict[str, list[Any]], found: list[Level]) -> dict[str, Any] | None:
    """Per level, the gaps between tokens (server side) by what their step held besides the
    request, named by the heaviest cause: median gap per cause (left), and which cause the
    slowest tenth of the level's gaps had (right)."""
    if "gap_prefill_tokens" not in data or "itl_ms" not in data:
        return None
    axes, layout, _ = grid(["median gap by what shared its step", "share of the slowest 10% of gaps"], columns=2)
    traces = []
    x = []
    by_level: list[dict[str, list[float]]] = []
    for lv in found:
        groups: dict[str, list[float]] = {c: [] for c in SHARED}
        for i in lv.rows:
            gaps = data["itl_ms"][i] or []
            for k, gap in enumerate(gaps):
                groups[_cause(data, i, k)].append(gap)
        if any(groups.values()):
            x.append(_label(lv))
            by_level.append(groups)
    if not by_level:
        return None
    for n, cause in enumerate(SHARED):
        colour = color(n)
        medians = [float(np.median(g[cause])) if g[cause] else None for g in by_level]
        shares = []
        for g in by_level:
            every = np.concatenate([np.array(v, dtype=float) for v in g.values() if v])
            cut = np.percentile(every, 90)
            slow = sum(int(np.sum(np.array(v) >= cut)) for v in g.values() if v)
            shares.append(int(np.sum(np.array(g[cause]) >= cut)) / slow if g[cause] and slow else 0.0)
        common: dict[str, Any] = {"type": "bar", "name": cause, "legendgroup": cause, "x": x, "marker": {"color": colour}}
        traces.append({**common, "y": medians, "xaxis": axes[0][0], "yaxis": axes[0][1]})
        traces.append({**common, "y": shares, "showlegend": False, "xaxis": axes[1][0], "yaxis": axes[1][1]})
    layout["yaxis"]["title"] = {"text": "ms"}
    layout["yaxis2"].update(title={"text": "share"}, range=[0, 1])
    layout["barmode"] = "group"
    return figure(traces, layout, height=440)


def _cause(data: dict[str, list[Any]], i: int, k: int) -> str:
    def at(column: str) -> int:
        values = data[column][i] or []
        return int(values[k]) if k < len(values) and values[k] is not None else 0
    if at("gap_encoder_inputs"):
        return SHARED[0]
    if at("gap_prefill_tokens"):
        return SHARED[1]
    return SHARED[2] if at("gap_requests") else SHARED[3]


def _q(level: Level, column: str, j: int) -> str:
    found = level.quantiles.get(column)
    if not found:
        return "-"
    q = found[j]
    ci = f" <span class='q'>[{fmt(q.low)}, {fmt(q.high)}]</span>" if q.low is not None and q.high is not None else ""
    return fmt(q.value) + ci


def level_table(found: list[Level]) -> str:
    """Per level: requests, throughput, goodput, the client's percentiles with their intervals, the send."""
    headers = ["model", "rate /s", "requests", "req/s", "tok/s", "goodput /s", "TTFT p50", "TTFT p90", "TTFT p99",
               "TPOT p50", "TPOT p99", "ITL p99", "E2E p99", "send lag p50 / p99"]
    rows = []
    for lv in found:
        lag = f"{fmt(lv.lag_p50_ms)} / {fmt(lv.lag_p99_ms)}" + ("" if lv.held else " <span class='fail'>not held</span>")
        rows.append([html.escape(_model(lv)), f"{lv.params['rate']:g}", str(lv.requests), fmt(lv.throughput_rps),
                     fmt(lv.tokens_per_s), "-" if lv.goodput_rps is None else f"{fmt(lv.goodput_rps)} ({lv.good})",
                     _q(lv, "client_ttft_ms", 0), _q(lv, "client_ttft_ms", 1), _q(lv, "client_ttft_ms", 2),
                     _q(lv, "client_tpot_ms", 0), _q(lv, "client_tpot_ms", 2), _q(lv, "client_itl_ms", 2),
                     _q(lv, "client_e2e_ms", 2), lag])
    note = ("<p>Per rate level, what the client saw (vLLM bench serve's definitions), ms: percentiles with their "
            "distribution-free 95% intervals ('-' or no interval where the requests are too few to give one); "
            "goodput counts the requests meeting every SLO of the experiment (in brackets).</p>")
    return note + table(headers, rows, left=1)


def load_section(table_: pa.Table, slo: dict[str, float] | None) -> tuple[str, list[tuple[str, str, str, Any]]]:
    """(the level table's HTML, the load's figures) of a run; empty without a load."""
    found = levels(table_, slo)
    if not found:
        return "", []
    data = table_.select([c for c in ("repeat", "sent_ms", "input_ms", "queue_ms", "vision_ms", "ttft_ms",
                                      "itl_ms", "request_id", "gap_requests", "gap_prefill_tokens", "gap_encoder_inputs")
                          if c in table_.column_names]).to_pydict()
    figs = [
        ("fig-load-curves", "Latency against throughput", "Per model, the client's TTFT, TPOT and end-to-end latency "
         "(p50 solid, p90 dashed, p99 dotted, with their 95% intervals) against the requests answered per second, a "
         "point per planned rate.", curves(found)),
        ("fig-load-ttft", "Where TTFT goes as the load grows", "The mean of the client's TTFT per rate, split inside "
         "the server: input (HTTP, tokenising, image processing up to vLLM's queue), queue (to the first engine step), "
         "vision (the encoder), prefill (the steps consuming the prompt) and the rest (the first token's way back to "
         "the client).", ttft_parts(found)),
        ("fig-load-timeline", "Requests on one time axis", "The 16 requests of the busiest level sent closest together: each request's "
         "input, queue, vision, prefill and decode as the server's probe split them, red ticks its tokens, grey ticks "
         "along the bottom every engine step's end.", timeline(data, found)),
        ("fig-load-gaps", "What slowed the gaps", "Each gap between two tokens (server side) by what the engine step "
         "that made the token held besides the request: another request's image encode, another's prefill chunk, "
         "other decodes only, or nothing else. Left: the median gap per cause; right: the causes of the level's "
         "slowest tenth of gaps.", shared_gaps(data, found)),
    ]
    return level_table(found), [f for f in figs if f[3] is not None]
