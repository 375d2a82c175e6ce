"""Plot building blocks: Plotly figures as plain dictionaries (no Python plotting library at
report time), panels laid out in a grid, integer and log axes, consistent colours."""

from __future__ import annotations

import math
from typing import Any, Sequence

PHASE_COLORS = {"vision": "#4e79a7", "audio": "#edc948", "prefill": "#f28e2b", "decode": "#59a14f", "other": "#bab0ac", "draft": "#b07aa1",
                "ttft": "#e15759", "tpot": "#59a14f", "total": "#76b7b2"}
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02")
FONT = {"family": "system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif", "size": 12}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def figure(data: list[dict[str, Any]], layout: dict[str, Any], height: int = 380) -> dict[str, Any]:
    """A figure with phasetime's defaults: legend below the plot (never over the data)."""
    # the legend sits a fixed distance below the plot area, whatever the figure's height
    below = -75 / max(height - 100, 100)
    base = {"height": height, "font": FONT, "margin": {"l": 70, "r": 20, "t": 40, "b": 60},
            "legend": {"orientation": "h", "yanchor": "top", "y": below, "x": 0, "font": {"size": 11}},
            "hovermode": "closest", "plot_bgcolor": "#fafafa"}
    base.update(layout)
    return {"data": data, "layout": base}


def grid(titles: Sequence[str], columns: int = 3, gap: float = 0.07, vgap: float = 0.24) -> tuple[list[tuple[str, str]], dict[str, Any], int]:
    """Axes for ``len(titles)`` panels, ``columns`` per row: (x, y) axis names per panel, the
    layout entries (domains and titles) and the rows."""
    n = max(len(titles), 1)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    width = (1 - gap * (cols - 1)) / cols
    height = (1 - vgap * (rows - 1)) / rows
    axes: list[tuple[str, str]] = []
    layout: dict[str, Any] = {}
    notes: list[dict[str, Any]] = []
    for i, title in enumerate(titles):
        r, c = divmod(i, cols)
        suffix = "" if i == 0 else str(i + 1)
        x0, y1 = c * (width + gap), 1 - r * (height + vgap)
        layout[f"xaxis{suffix}"] = {"domain": [x0, x0 + width], "anchor": f"y{suffix}"}
        layout[f"yaxis{suffix}"] = {"domain": [y1 - height, y1], "anchor": f"x{suffix}"}
        axes.append((f"x{suffix}", f"y{suffix}"))
        notes.append({"text": f"<b>{title}</b>", "x": x0 + width / 2, "y": y1, "xref": "paper", "yref": "paper",
                      "xanchor": "center", "yanchor": "bottom", "showarrow": False, "font": {"size": 12}})
    if len(titles) > 1 or (titles and titles[0]):
        layout["annotations"] = notes
    return axes, layout, rows


def axis_for(values: Sequence[Any], title: str) -> dict[str, Any]:
    """An axis for a swept parameter: ticks at the values themselves when they are integers
    (never 1.2 for a batch size), base-2 log when they are powers of two spanning 8x or more."""
    numbers = sorted({v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)})
    axis: dict[str, Any] = {"title": {"text": title}}
    if numbers and all(float(v).is_integer() for v in numbers):
        axis.update(tickmode="array", tickvals=numbers, ticktext=[str(int(v)) for v in numbers])
        if len(numbers) >= 3 and numbers[0] > 0 and numbers[-1] / numbers[0] >= 8:
            axis.update(type="log", tickvals=numbers)
    return axis


def band(x: Sequence[Any], low: Sequence[float | None], high: Sequence[float | None], fill: str, name: str,
         axes: tuple[str, str], group: str) -> list[dict[str, Any]]:
    """An interquartile band (two traces: the upper edge, then the lower filled up to it)."""
    xs = [a for a, lo, hi in zip(x, low, high) if lo is not None and hi is not None]
    lo = [v for v in low if v is not None]
    hi = [v for v in high if v is not None]
    if len(xs) < 2:
        return []
    common = {"x": xs, "xaxis": axes[0], "yaxis": axes[1], "mode": "lines", "line": {"width": 0},
              "legendgroup": group, "showlegend": False, "hoverinfo": "skip"}
    return [{**common, "y": hi, "name": f"{name} q3"},
            {**common, "y": lo, "name": f"{name} q1", "fill": "tonexty", "fillcolor": fill}]


def translucent(hex_color: str, alpha: float = 0.18) -> str:
    r, g, b = (int(hex_color[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"
