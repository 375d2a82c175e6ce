"""The figures beyond latency: accuracy against latency, the roofline, memory per phase, and
run B against run A."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from ..compare import PhaseComparison
from ..summary import CellSummary, floats
from .plots import PHASE_COLORS, color, figure, grid

Figure = dict[str, Any]
PHASES = ("vision", "prefill", "decode")


def pareto(points: list[tuple[float, float, int]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and accuracy (higher)."""
    front, best = [], -np.inf
    for x, y, i in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append(i)
            best = y
    return front


def accuracy(summary: list[CellSummary], table: pa.Table, labels: list[str]) -> Figure | None:
    """Accuracy (Wilson 95% interval) against median TTFT and total latency (interquartile range),
    the Pareto front marked; and every sample's total latency by correct / incorrect answer."""
    scored = [(c, label) for c, label in zip(summary, labels) if c.accuracy is not None]
    if not scored:
        return None
    axes, layout, _ = grid(["accuracy against TTFT", "accuracy against total latency", "latency by answer"], columns=3)
    data: list[dict[str, Any]] = []
    for panel, phase in enumerate(("ttft_ms", "total_ms")):
        ax = axes[panel]
        points = [(float(c.median(phase) or 0.0), float(c.accuracy or 0.0), i) for i, (c, _) in enumerate(scored)
                  if c.median(phase) is not None]
        front = set(pareto(points))
        for i, (c, label) in enumerate(scored):
            stats = c.phases[phase]
            if stats.median is None or c.accuracy is None:
                continue
            ci = c.accuracy_ci or (c.accuracy, c.accuracy)
            q1 = stats.q1 if stats.q1 is not None else stats.median
            q3 = stats.q3 if stats.q3 is not None else stats.median
            data.append({"type": "scatter", "mode": "markers", "x": [stats.median], "y": [c.accuracy], "xaxis": ax[0],
                         "yaxis": ax[1], "name": label, "legendgroup": label, "showlegend": panel == 0,
                         "marker": {"color": color(i), "size": 11, "symbol": "circle"},
                         "error_y": {"type": "data", "symmetric": False, "array": [ci[1] - c.accuracy],
                                     "arrayminus": [c.accuracy - ci[0]], "color": color(i)},
                         "error_x": {"type": "data", "symmetric": False, "array": [q3 - stats.median],
                                     "arrayminus": [stats.median - q1], "color": color(i)},
                         "hovertemplate": (f"{label}<br>{phase} median %{{x:.2f}} ms<br>accuracy %{{y:.3f}} "
                                           f"[{ci[0]:.3f}, {ci[1]:.3f}] (n={c.scored})<extra></extra>")})
        ordered = sorted((p for p in points if p[2] in front), key=lambda p: p[0])
        # the front: a dotted step line through rings around its cells (a marker no cell uses)
        data.append({"type": "scatter", "mode": "lines+markers", "x": [p[0] for p in ordered],
                     "y": [p[1] for p in ordered], "xaxis": ax[0], "yaxis": ax[1], "name": "Pareto front",
                     "legendgroup": "front", "showlegend": panel == 0,
                     "marker": {"symbol": "circle-open", "size": 20, "color": "#222", "line": {"width": 2}},
                     "line": {"shape": "hv", "dash": "dot", "color": "#222"}, "hoverinfo": "skip"})
        layout[f"xaxis{ax[0][1:]}"].update({"title": {"text": f"median {phase.removesuffix('_ms')} ms"}})
        layout[f"yaxis{ax[1][1:]}"].update({"title": {"text": "accuracy"}, "range": [-0.02, 1.02]})
    score, total = floats(table, "score"), floats(table, "total_ms")
    ok = np.isfinite(score) & np.isfinite(total)
    for k, (name, mask) in enumerate((("correct (score >= 0.5)", score >= 0.5), ("incorrect", score < 0.5))):
        values = total[ok & mask]
        if values.size:
            data.append({"type": "box", "y": values.round(3).tolist(), "name": name, "xaxis": axes[2][0],
                         "yaxis": axes[2][1], "marker": {"color": ("#59a14f", "#e15759")[k]}, "boxpoints": False,
                         "showlegend": False})
    layout["yaxis3"].update({"title": {"text": "total ms per call"}})
    return figure(data, layout, height=430)


def roofline(summary: list[CellSummary], labels: list[str]) -> Figure | None:
    """Achieved FLOP/s against arithmetic intensity, one point per cell and phase, under the
    device's roof: the bandwidth slope and the compute ceiling."""
    points = [(c, label, p, c.throughput[p]) for c, label in zip(summary, labels) for p in PHASES
              if p in c.throughput and c.throughput[p].intensity and c.throughput[p].flops_per_s]
    if not points:
        return None
    peak = summary[0].resources.get("roof_flops_per_s")
    bandwidth = summary[0].resources.get("roof_bytes_per_s")
    data: list[dict[str, Any]] = []
    # colour: the cell; symbol: the phase (a cell's vision, prefill and decode side by side)
    symbols = {"vision": "square", "prefill": "diamond", "decode": "circle"}
    cells = list(dict.fromkeys(label for _, label, _, _ in points))
    for i, label in enumerate(cells):
        mine = [(p, t) for _, lab, p, t in points if lab == label]
        data.append({"type": "scatter", "mode": "markers", "name": label, "legendgroup": label,
                     "marker": {"color": color(i), "size": 10, "symbol": [symbols.get(p, "circle") for p, _ in mine],
                                "line": {"color": "#222", "width": 0.5}},
                     "x": [t.intensity for _, t in mine], "y": [t.flops_per_s for _, t in mine],
                     "text": [f"{label}, {p}<br>{100 * (t.mfu or 0):.2f}% of peak FLOP/s, {100 * (t.mbu or 0):.2f}% of "
                              "peak bandwidth" for p, t in mine],
                     "hovertemplate": "%{text}<br>%{x:.2f} FLOP/byte, %{y:.3s}FLOP/s<extra></extra>"})
    for phase, symbol in symbols.items():  # a legend of the symbols
        data.append({"type": "scatter", "mode": "markers", "x": [None], "y": [None], "name": f"{phase} (symbol)",
                     "marker": {"symbol": symbol, "color": "#888", "size": 10}, "hoverinfo": "skip"})
    if peak and bandwidth:
        xs = [float(t.intensity or 0.0) for _, _, _, t in points]
        x = np.geomspace(min(min(xs) / 4, peak / bandwidth / 4), max(max(xs) * 4, peak / bandwidth * 4), 60)
        data.append({"type": "scatter", "mode": "lines", "name": "roof", "x": x.tolist(),
                     "y": np.minimum(peak, bandwidth * x).tolist(), "line": {"color": "#222"}, "hoverinfo": "skip"})
    # one tick per decade, written 10^k (Plotly's default names 1e9 "1B", which reads as bytes)
    decades = {"type": "log", "dtick": 1, "exponentformat": "power"}
    return figure(data, {"xaxis": {**decades, "title": {"text": "arithmetic intensity, FLOP per byte moved"}},
                         "yaxis": {**decades, "title": {"text": "achieved FLOP/s"}}}, height=420)


def memory(summary: list[CellSummary], labels: list[str]) -> Figure | None:
    """Peak memory per phase and cell (CUDA: allocated; CPU: the process's resident memory)."""
    if not any(c.resources.get("mem_prefill_peak_bytes") for c in summary):
        return None
    data = [{"type": "bar", "name": p, "x": labels, "marker": {"color": PHASE_COLORS[p]},
             "y": [(c.resources.get(f"mem_{p}_peak_bytes") or 0) / 2**20 for c in summary],
             "hovertemplate": "%{x}<br>" + p + " peak %{y:.1f} MiB<extra></extra>"} for p in PHASES]
    kv = [(c.resources.get("kv_end_bytes") or 0) / 2**20 for c in summary]
    data.append({"type": "scatter", "mode": "markers", "name": "KV cache at the end", "x": labels, "y": kv,
                 "marker": {"symbol": "diamond", "color": "#222"}, "hovertemplate": "%{x}<br>KV %{y:.2f} MiB<extra></extra>"})
    return figure(data, {"barmode": "group", "yaxis": {"title": {"text": "MiB"}},
                         "xaxis": {"automargin": True, "tickangle": -30 if len(labels) > 6 else 0}})


VERDICT_COLORS = {"faster": "#1a7f37", "slower": "#cf222e", "not significant": "#8c959f", "-": "#8c959f"}


def _ratio_ticks(rows: list[PhaseComparison]) -> dict[str, Any]:
    """Ticks at powers of two spanning the ratios and their intervals (Plotly's own log ticks
    label 20 and 50 as "2" and "5")."""
    values = [v for r in rows for v in (r.ratio, *(r.ci or ())) if v is not None and v > 0] or [1.0]
    low, high = math.floor(math.log2(min(values))), math.ceil(math.log2(max(values)))
    step = max(1, math.ceil((high - low) / 8))
    ticks = [2.0 ** e for e in range(low, high + 1, step)]
    return {"tickvals": ticks, "ticktext": [f"{t:g}" for t in ticks]}


def ratios(rows: list[PhaseComparison], short: dict[str, str]) -> Figure | None:
    """Run B against run A: the ratio of medians per cell and phase with its bootstrap 95% interval.
    Cells are named on the axis by their key in ``short`` (the full name is in the hover)."""
    cells = [r for r in rows if r.cell != "geometric mean" and r.ratio is not None]
    if not cells:
        return None
    phases = list(dict.fromkeys(r.phase for r in cells))
    order = list(dict.fromkeys(short[r.cell] for r in cells))
    axes, layout, rows_n = grid([p.removesuffix("_ms") for p in phases], columns=3)
    data: list[dict[str, Any]] = []
    shown: set[str] = set()
    for phase, ax in zip(phases, axes):
        for verdict in VERDICT_COLORS:
            mine = [r for r in cells if r.phase == phase and r.verdict == verdict]
            if not mine:
                continue
            data.append({"type": "scatter", "mode": "markers", "x": [short[r.cell] for r in mine], "y": [r.ratio for r in mine],
                         "customdata": [r.cell for r in mine],
                         "xaxis": ax[0], "yaxis": ax[1], "name": verdict, "legendgroup": verdict,
                         "showlegend": verdict not in shown, "marker": {"color": VERDICT_COLORS[verdict], "size": 9},
                         "error_y": {"type": "data", "symmetric": False,
                                     "array": [(r.ci[1] - r.ratio) if r.ci and r.ratio is not None else 0 for r in mine],
                                     "arrayminus": [(r.ratio - r.ci[0]) if r.ci and r.ratio is not None else 0
                                                    for r in mine]},
                         "hovertemplate": "%{x}: %{customdata}<br>B/A %{y:.3f}<extra>" + verdict + "</extra>"})
            shown.add(verdict)
        layout[f"yaxis{ax[1][1:]}"].update({"type": "log", "title": {"text": "B / A (median)"},
                                             **_ratio_ticks([r for r in cells if r.phase == phase])})
        layout[f"xaxis{ax[0][1:]}"].update({"type": "category", "categoryorder": "array", "categoryarray": order,
                                             "automargin": True, "tickfont": {"size": 10}})
        layout.setdefault("shapes", []).append({"type": "line", "xref": f"{ax[0]} domain", "yref": ax[1], "x0": 0, "x1": 1,
                                                "y0": 1, "y1": 1, "line": {"color": "#222", "dash": "dot"}})
    return figure(data, layout, height=330 * rows_n + 90)


def rounds(table: pa.Table, summary: list[CellSummary]) -> Figure | None:
    """Assisted and prompt-lookup calls: TPOT against the acceptance rate and against the
    candidates proposed per round (the draft length), a point per call, a colour per way of
    decoding (every output length of it together)."""
    needed = {"rounds", "acceptance_rate", "proposed_tokens", "tpot_ms", "sequence"}
    if not needed <= set(table.column_names):
        return None
    from ..summary import cell_keys, group_indices

    n_rounds = floats(table, "rounds")
    first = floats(table, "sequence") == 0  # a call's rows share its rounds: one point per call
    keys = cell_keys(table)
    others = [k for k in ("model", "draft", "generation") if k in table.column_names]
    axes, layout, _ = grid(["TPOT against acceptance", "TPOT against draft length"], columns=2)
    rate, proposed, tpot = floats(table, "acceptance_rate"), floats(table, "proposed_tokens"), floats(table, "tpot_ms")
    points: dict[str, list[np.ndarray]] = {}
    for key, idx in group_indices(table, keys).items():
        rows = idx[first[idx] & np.isfinite(n_rounds[idx]) & np.isfinite(tpot[idx])]
        if rows.size:
            row = table.select(["decoding", *others]).slice(int(rows[0]), 1).to_pylist()[0]
            points.setdefault(_decoding_label(row), []).append(rows)
    data: list[dict[str, Any]] = []
    for i, (label, parts) in enumerate(points.items()):
        rows = np.concatenate(parts)
        for panel, x in enumerate((rate[rows], proposed[rows] / n_rounds[rows])):
            xa, ya = axes[panel]
            data.append({"type": "scatter", "mode": "markers", "x": np.round(x, 4).tolist(),
                         "y": np.round(tpot[rows], 4).tolist(), "xaxis": xa, "yaxis": ya, "name": label,
                         "legendgroup": label, "showlegend": panel == 0, "marker": {"color": color(i), "size": 7},
                         "hovertemplate": f"{label}<br>%{{x:.2f}}: TPOT %{{y:.3f}} ms<extra></extra>"})
    if not data:
        return None
    layout["xaxis"].update({"title": {"text": "accepted / proposed candidates"}, "range": [-0.05, 1.05]})
    layout["xaxis2"].update({"title": {"text": "candidates proposed per round"}})
    for y in ("yaxis", "yaxis2"):
        layout[y].update({"title": {"text": "TPOT, ms (decode / (N - 1))"}, "rangemode": "tozero"})
    return figure(data, layout, height=380)


def _decoding_label(row: dict[str, Any]) -> str:
    """``prompt_lookup, prompt_lookup_num_tokens=3`` or ``assisted by tiny-llava-draft, num_assistant_tokens=2``
    (with the model's name in front when the run has several)."""
    import json

    options = {k: v for k, v in json.loads(row.get("generation") or "{}").items() if k != "draft"}
    label = str(row.get("decoding"))
    if row.get("draft"):
        label += f" by {row['draft']}"
    if options:
        label += ", " + ", ".join(f"{k}={v}" for k, v in options.items())
    return label
