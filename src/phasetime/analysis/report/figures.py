"""The latency figures of a run's report: breakdown, phases against each swept parameter, a 2-D sweep, inter-token latency and one call's timeline.

Each function takes the run's summary (one :class:`~phasetime.analysis.summary.CellSummary`
per cell, medians and quartiles already computed) and returns a Plotly figure as a dict, or
None when the run has nothing to show. Nothing here touches the million rows of a large run
except :func:`itl_cdf`, which reduces each cell to 101 quantiles.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa

from ..summary import CellSummary, cell_keys, group_indices, list_values, strings
from .labels import facets, name, series_keys, split
from .plots import PHASE_COLORS, axis_for, band, color, figure, grid, translucent

Figure = dict[str, Any]
PARTS = ("vision", "prefill", "decode", "other")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def breakdown(summary: list[CellSummary], labels: list[str], unstable: set[Any],
              whole: Sequence[str] | None = None) -> Figure:
    """Median vision / audio (where a call had audio) / prefill / decode / other per cell, stacked;
    a negative other to the left of zero. One bar per cell: ``labels`` must be unique (the
    report's are); ``whole`` (a cell's every parameter) is shown in the hover."""
    if len(set(labels)) != len(labels):
        raise ValueError("cell labels must be unique: two cells with one label are drawn as one bar")
    names = [("⚠ " if c.cell in unstable else "") + label for c, label in zip(summary, labels)]
    audio = any((c.median("audio_ms") or 0.0) > 0 for c in summary)
    parts = ("vision", "audio", *PARTS[1:]) if audio else PARTS
    medians = {p: [c.median(f"{p}_ms") or 0.0 for c in summary] for p in parts}
    totals = [c.median("total_ms") for c in summary]
    whole = list(whole) if whole is not None else list(labels)
    custom = [[*(medians[p][i] for p in parts), totals[i] or 0.0, whole[i]] for i in range(len(summary))]
    hover = (f"%{{y}}: %{{customdata[{len(parts) + 1}]}}<br>medians: "
             + " + ".join(f"{p} %{{customdata[{k}]:.2f}}" for k, p in enumerate(parts))
             + f"<br>median total %{{customdata[{len(parts)}]:.2f}} ms<extra></extra>")
    data = [{"type": "bar", "orientation": "h", "name": p, "y": names, "x": medians[p], "marker": {"color": PHASE_COLORS[p]},
             "customdata": custom, "hovertemplate": hover} for p in parts]
    data.append({"type": "scatter", "mode": "markers", "name": "median total", "y": names, "x": totals,
                 "marker": {"symbol": "line-ns-open", "size": 14, "color": "#222"}, "customdata": custom,
                 "hovertemplate": hover})
    return figure(data, {"barmode": "relative", "xaxis": {"title": {"text": "median ms per call"}, "zeroline": True},
                         "yaxis": {"autorange": "reversed", "automargin": True, "tickfont": {"size": 11}}},
                  height=min(140 + 24 * len(summary), 1400))


def vs_parameter(summary: list[CellSummary], axis: str, also: tuple[str, ...] = ()) -> Figure | None:
    """Median vision, prefill, TTFT, TPOT and total against one swept parameter (a panel each),
    one line per configuration, with interquartile bands. When the output length is swept too
    (and is not the axis), the lines are drawn at the longest output length."""
    cells = [c for c in summary if c.get(axis) is not None]
    if len({c.get(axis) for c in cells}) < 2:
        return None
    if axis != "max_new_tokens" and len({c.get("max_new_tokens") for c in cells}) > 1:
        longest = max(c.get("max_new_tokens") for c in cells)
        cells = [c for c in cells if c.get("max_new_tokens") == longest]
    keys = facets(cells) + series_keys(cells, [axis, "max_new_tokens", *also])
    phases = [p for p in ("vision_ms", "prefill_ms", "ttft_ms", "tpot_ms", "total_ms")
              if any(c.phases[p].median for c in cells)]
    axes, layout, rows = grid([p.removesuffix("_ms") for p in phases])
    data: list[dict[str, Any]] = []
    groups = split(cells, keys)
    for p_index, (phase, ax) in enumerate(zip(phases, axes)):
        for i, (key, group) in enumerate(groups.items()):
            group = sorted(group, key=lambda c: c.get(axis))
            x = [c.get(axis) for c in group]
            label = name(keys, key)
            data += band(x, [c.phases[phase].q1 for c in group], [c.phases[phase].q3 for c in group],
                         translucent(color(i)), label, ax, label)
            data.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": [c.median(phase) for c in group],
                         "xaxis": ax[0], "yaxis": ax[1], "name": label, "legendgroup": label, "showlegend": p_index == 0,
                         "line": {"color": color(i)},
                         "hovertemplate": f"{axis}=%{{x}}<br>{phase} median %{{y:.2f}} ms<extra>{label}</extra>"})
        layout[f"xaxis{ax[0][1:]}"].update(axis_for([c.get(axis) for c in cells], axis.replace("_", " ")))
        layout[f"yaxis{ax[1][1:]}"].update({"title": {"text": "median ms"}, "rangemode": "tozero"})
    return figure(data, layout, height=300 * rows + 90)


def dominant(summary: list[CellSummary], a: str, b: str) -> Figure | None:
    """A 2-D sweep: total latency against ``a``, a line per value of ``b``; and a heatmap of the
    phase that takes the largest share of the call in each (a, b) cell."""
    cells = [c for c in summary if c.get(a) is not None and c.get(b) is not None]
    xs, ys = sorted({c.get(a) for c in cells}), sorted({c.get(b) for c in cells})
    if len(xs) < 2 or len(ys) < 2:
        return None
    axes, layout, _ = grid([f"median total against {a}", f"dominant phase (share of the call)"], columns=2)
    data: list[dict[str, Any]] = []
    by_b = split(cells, [b])
    for i, (key, group) in enumerate(by_b.items()):
        group = sorted(group, key=lambda c: c.get(a))
        data.append({"type": "scatter", "mode": "lines+markers", "x": [c.get(a) for c in group], "name": f"{b}={key[0]}",
                     "y": [c.median("total_ms") for c in group], "xaxis": axes[0][0], "yaxis": axes[0][1],
                     "line": {"color": color(i)}})
    z, text = [], []
    for yv in ys:
        row_z, row_t = [], []
        for xv in xs:
            match = [c for c in cells if c.get(a) == xv and c.get(b) == yv]
            shares = {p: float(np.median([c.median(f"{p}_ms") or 0.0 for c in match])) for p in PARTS} if match else {}
            total = sum(max(v, 0.0) for v in shares.values())
            top = max(shares, key=lambda p: shares[p]) if shares else None
            row_z.append(shares[top] / total if top and total else None)
            row_t.append(f"{top} {100 * shares[top] / total:.0f}%" if top and total else "")
        z.append(row_z)
        text.append(row_t)
    data.append({"type": "heatmap", "x": [str(v) for v in xs], "y": [str(v) for v in ys], "z": z, "text": text,
                 "texttemplate": "%{text}", "xaxis": axes[1][0], "yaxis": axes[1][1], "colorscale": [[0, "#f7fbff"], [1, "#4e79a7"]],
                 "zmin": 0, "zmax": 1, "showscale": False, "hovertemplate": f"{a}=%{{x}}, {b}=%{{y}}<br>%{{text}}<extra></extra>"})
    layout["xaxis"].update(axis_for(xs, a.replace("_", " ")))
    layout["yaxis"].update({"title": {"text": "median total ms"}, "rangemode": "tozero"})
    layout["xaxis2"].update({"title": {"text": a.replace("_", " ")}, "type": "category"})
    layout["yaxis2"].update({"title": {"text": b.replace("_", " ")}, "type": "category"})
    return figure(data, layout, height=420)


ITL_ROWS = 2000  # rows per cell the inter-token CDF is drawn from (all of them in a smaller cell)


def take_rows(column: pa.ChunkedArray, rows: np.ndarray) -> pa.Array:
    """``column[rows]`` taken chunk by chunk: a take across the chunks of a big column (or
    joining them first) copies it whole, tens of millions of gaps for a big run's ``itl_ms``."""
    order = np.argsort(rows, kind="stable")
    ascending = rows[order]
    bounds = np.cumsum([0, *[len(c) for c in column.chunks]])
    pieces = []
    for chunk, lo, hi in zip(column.chunks, bounds[:-1], bounds[1:]):
        a, b = np.searchsorted(ascending, [lo, hi])
        if b > a:
            pieces.append(chunk.take(pa.array(ascending[a:b] - lo)))
    taken = pa.concat_arrays(pieces) if pieces else pa.array([], column.type)
    return taken.take(pa.array(np.argsort(order, kind="stable")))  # back in the order asked


def itl_cdf(table: pa.Table, summary: list[CellSummary], labels: list[str],
            fetch: Callable[[], pa.ChunkedArray] | None = None) -> Figure | None:
    """Empirical CDF of inter-token latencies per cell (direct method), through 101 quantiles
    of the gaps of at most :data:`ITL_ROWS` rows per cell (a seeded sample). A table read
    without ``itl_ms`` gets the column, row for row, from ``fetch()``."""
    if "itl_ms" not in table.column_names and fetch is None:
        return None
    keys = cell_keys(table)
    by_key = {tuple(c.get(k) for k in keys): (c, label) for c, label in zip(summary, labels)}
    rng = np.random.default_rng(0)
    direct = strings(table, "method") == "direct" if "method" in table.column_names else np.ones(table.num_rows, bool)
    levels = np.linspace(0, 1, 101)
    data: list[dict[str, Any]] = []
    colours: dict[str, int] = {}
    many = len(summary) > 10  # then one colour per model, each cell named on hover
    groups: dict[tuple, np.ndarray] = {}
    for key, idx in group_indices(table, keys).items():
        rows = idx[direct[idx]]
        if rows.size > ITL_ROWS:  # a CDF of 101 quantiles needs no more: a seeded sample of the rows
            rows = np.sort(rng.choice(rows, ITL_ROWS, replace=False))
        groups[key] = rows
    # the sampled rows' gaps in one take (the whole column of a big run is tens of millions)
    order = np.concatenate(list(groups.values())) if groups else np.empty(0, dtype=np.int64)
    column = table.column("itl_ms") if "itl_ms" in table.column_names else fetch()  # type: ignore[misc]
    sampled = pa.table({"itl_ms": take_rows(column, order.astype(np.int64))})
    gaps, owner = list_values(sampled, "itl_ms")  # owner: each gap's position in ``order``
    bounds = np.cumsum([0, *[r.size for r in groups.values()]])
    for (key, rows), lo, hi in zip(groups.items(), bounds[:-1], bounds[1:]):
        values = gaps[np.searchsorted(owner, lo):np.searchsorted(owner, hi)]
        values = values[np.isfinite(values)]
        if values.size == 0 or key not in by_key:
            continue
        cell, label = by_key[key]
        group = str(cell.get("model")) if many else label
        first = group not in colours
        i = colours.setdefault(group, len(colours))
        data.append({"type": "scatter", "mode": "lines", "line": {"shape": "hv", "color": color(i), "width": 1.5},
                     "x": np.quantile(values, levels).round(4).tolist(), "y": levels.round(3).tolist(),
                     "name": group, "legendgroup": group, "showlegend": first,
                     "hovertemplate": f"{label}<br>%{{x:.3f}} ms: %{{y:.0%}} of gaps<extra></extra>"})
    if not data:
        return None
    return figure(data, {"xaxis": {"title": {"text": "inter-token latency, ms"}},
                         "yaxis": {"title": {"text": "fraction of gaps"}, "range": [0, 1]}})


def timeline(row: dict[str, Any]) -> Figure:
    """One call: vision, prefill, every decode step (and a round's candidate search) on a time
    axis, with when each token was ready."""
    names = {s["name"] for s in row.get("spans") or []}
    lanes = {"vision": 4, **({"draft": 3} if "draft" in names else {}), "prefill": 2, "decode": 1, "tokens": 0}
    data = []
    for lane in lanes:
        spans = [s for s in row.get("spans") or [] if s["name"] == lane]
        if spans:
            data.append({"type": "bar", "orientation": "h", "name": lane, "y": [lane] * len(spans),
                         "base": [s["start_ms"] for s in spans], "x": [s["end_ms"] - s["start_ms"] for s in spans],
                         "marker": {"color": PHASE_COLORS[lane], "line": {"color": "white", "width": 0.5}},
                         "hovertemplate": lane + " %{base:.2f} to %{x:.2f} ms later<extra></extra>"})
    ready = row.get("ready_ms") or []
    # the tokens on a lane of their own: on the decode lane the ticks hid under its blocks
    data.append({"type": "scatter", "mode": "markers", "name": "token ready", "x": ready, "y": ["tokens"] * len(ready),
                 "marker": {"symbol": "line-ns-open", "size": 18, "color": "#c00000"},
                 "hovertemplate": "token ready at %{x:.2f} ms<extra></extra>"})
    return figure(data, {"barmode": "overlay", "shapes": [{"type": "line", "x0": row["total_ms"], "x1": row["total_ms"],
                                                          "y0": 0, "y1": 1, "yref": "paper",
                                                          "line": {"dash": "dash", "color": "#222"}}],
                         "xaxis": {"title": {"text": f"ms since generate() was entered (call {row['call_id']}); "
                                                     "dashed: return"}},
                         "yaxis": {"categoryorder": "array", "categoryarray": list(lanes)[::-1]}}, height=260)
