"""The report's operators per phase (runs made with ``--profile``): each model's phases split
into their top operators, the other operators together and the time no operator covers, as a
figure and a table (:mod:`phasetime.analysis.operators` computes them)."""

from __future__ import annotations

import html
from typing import Any

import pyarrow as pa

from ..operators import PhaseOps, phase_ops
from .page import fmt, table
from .plots import color, figure, grid

REST, GAP = "other operators", "no operator (host: Python, bookkeeping)"


def _figure(found: list[PhaseOps]) -> dict[str, Any]:
    """A panel per model: a bar per phase, its time (per profiled call) split into shares by
    operator; the phase's time is in its label."""
    models = list(dict.fromkeys(p.model for p in found))
    axes, layout, rows = grid(models, columns=2)
    names = list(dict.fromkeys(name for p in found for name, _ in p.top))
    palette = [color(i) for i in range(16) if color(i) != "#bab0ac"]  # grey is the other operators'
    colors = {name: palette[i % len(palette)] for i, name in enumerate(names)}
    data: list[dict[str, Any]] = []
    shown: set[str] = set()
    for k, model in enumerate(models):
        mine = [p for p in found if p.model == model]
        phases = [f"{p.phase} ({p.phase_ms:.2f} ms" + (f", {p.windows:.0f} steps)" if p.phase == "decode" else ")")
                  for p in mine]
        parts: dict[str, list[float]] = {name: [0.0] * len(mine) for name in names}
        parts[REST], parts[GAP] = [p.rest_ms for p in mine], [p.uncovered_ms for p in mine]
        for i, p in enumerate(mine):
            for name, ms in p.top:
                parts[name][i] = ms
        for name, values in parts.items():
            if not any(values):
                continue
            data.append({"type": "bar", "orientation": "h", "name": name, "legendgroup": name,
                         "showlegend": name not in shown, "y": phases,
                         "x": [100 * p.share(v) for p, v in zip(mine, values)], "customdata": values,
                         "marker": {"color": colors.get(name, "#bab0ac" if name == REST else "#eeeeee"),
                                    "line": {"color": "#999", "width": 0.5} if name == GAP else {"width": 0}},
                         "hovertemplate": "%{y}: %{x:.0f}% (%{customdata:.3f} ms per call)<extra>" + html.escape(name)
                                          + "</extra>",
                         "xaxis": axes[k][0], "yaxis": axes[k][1]})
            shown.add(name)
        suffix = "" if k == 0 else str(k + 1)
        layout[f"xaxis{suffix}"].update(title={"text": "% of the phase (its ms per profiled call in its label)"},
                                        range=[0, 100])
        layout[f"yaxis{suffix}"].update(autorange="reversed", automargin=True)
    layout["barmode"] = "stack"
    return figure(data, layout, height=260 + 220 * rows)


def _rows(found: list[PhaseOps]) -> list[list[str]]:
    out = []
    for p in found:
        tops = "; ".join(f"{html.escape(name)} {100 * p.share(ms):.0f}%" for name, ms in p.top)
        gpu = "-" if p.kernel_ms is None or not p.device_ms else f"{fmt(p.kernel_ms, 3)} / {fmt(p.device_ms, 3)}"
        out.append([html.escape(p.model), html.escape(p.phase), fmt(p.calls), fmt(p.windows, 1), fmt(p.phase_ms, 3),
                    tops, f"{100 * p.share(p.operators_ms):.0f}%", f"{100 * p.share(p.uncovered_ms):.0f}%", gpu])
    return out


def operators_section(profiles: pa.Table | None) -> tuple[str, list[tuple[str, str, str, Any]]]:
    """(the table's HTML, the figures) of a run's profiled calls; nothing without them."""
    if profiles is None or profiles.num_rows == 0:
        return "", []
    found = phase_ops(profiles)
    caption = ("Each phase of a profiled call (run with --profile; extra calls after each cell's timed ones, never "
               "among the timed rows) split into its five operators with the most self time, the other operators "
               "together, and the time no operator covers: host work outside torch's operators (Python, generate()'s "
               "bookkeeping; on a GPU, launch latency). Per model, shares of each phase; its ms per profiled call are "
               "in its label, hover for each part's. A profiled call runs slower than a timed one: read shares, not "
               "times.")
    figs = [("fig-operators", "What each phase spends its time on", caption, _figure(found))]
    body = table(["model", "phase", "calls", "windows per call", "ms per call", "top operators (self time, share)",
                  "operators", "no operator", "GPU kernels busy / wall ms"], _rows(found), left=2, wrap=(5,))
    return body, figs
