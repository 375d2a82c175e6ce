"""What the report says first: can these numbers be trusted (one line per question, details
folded), and does per-token latency depend on the output length, the direct and the legacy
method side by side in one figure per model.

The study phasetime serves asks (``shared/seed``, the planning note): is there still zero
decode with tokens generated; how do the direct and the legacy method compare; is the
per-token latency free of the output length. :func:`verdict` answers each in a line;
:func:`length_figure` draws the third.
"""

from __future__ import annotations

import html
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ...results.tables import call_ids, group_indices
from ..checks import CheckResult
from ..length import CONFIG_COLUMNS, SKIP, LengthJudgement
from ..positions import position_profile
from ..summary import CellSummary, floats, strings
from .labels import name, series_keys, split
from .plots import axis_for, band, color, figure, grid, translucent

METHOD_TITLES = {"direct": "direct: decode / (N - 1)", "subtract": "legacy subtraction: decode / N"}
SHOWN_SERIES = 4  # lines drawn per panel; the others start hidden (click their legend entry)


def zero_decode(table: pa.Table, by_model: bool = False) -> dict[str, tuple[int, int]]:
    """Per method (``by_model``: per ``model|method``): (calls with N >= 2 whose decode reads
    <= 0, calls with N >= 2). N = 1 has no decode (its one token comes out of prefill): zero is
    right there, and is not counted."""
    if table.num_rows == 0 or "decode_ms" not in table.column_names:
        return {}
    n, decode = floats(table, "output_tokens"), floats(table, "decode_ms")
    keys = [k for k in (("model", "method") if by_model else ("method",)) if k in table.column_names]
    calls = call_ids(table)
    out: dict[str, tuple[int, int]] = {}
    for key, rows in group_indices(table, keys).items():
        name_ = "|".join(str(v) for v in key) if "method" in keys else "|".join([*map(str, key), "direct"])
        sel = rows[n[rows] >= 2]
        # one verdict per call: a call counts when any of its sequences with tokens read no decode
        bad = np.unique(calls[sel[~(decode[sel] > 0)]]).size
        out[name_] = (int(bad), int(np.unique(calls[sel]).size))
    return out


def _effects_line(method: str, found: list[LengthJudgement], tolerance: float) -> tuple[str, list[str]]:
    """One line on the length effect of a method over its configurations (the worst verdict
    first: fail, then inconclusive, then pass), and a whole line per configuration."""
    what = html.escape(METHOD_TITLES.get(method, method))
    details = [f"{what}, {html.escape(e.scope)}: <span class='{e.verdict}'>{e.verdict}</span> "
               f"{html.escape(e.describe())}" for e in found]
    counts = {v: [e for e in found if e.verdict == v] for v in ("fail", "inconclusive", "pass", SKIP)}
    if not any(counts[v] for v in ("fail", "inconclusive", "pass")):
        reason = counts[SKIP][0].reason if counts[SKIP] else "no cell with N >= 2"
        return f"<span class='skip'>skip</span> {what}: {html.escape(reason)}", details
    verdict = next(v for v in ("fail", "inconclusive", "pass") if counts[v])
    judged = sum(len(counts[v]) for v in ("fail", "inconclusive", "pass"))
    parts = [f"{len(counts[v])} {v}" for v in ("fail", "inconclusive", "pass") if counts[v]]
    text = f"{', '.join(parts)} of {judged} configuration(s), tolerance {100 * tolerance:g}%"
    shown = counts[verdict][0] if verdict != "fail" else max(counts["fail"], key=lambda e: abs(e.effect or 0))
    lead = f"{'Largest' if verdict == 'fail' else 'First'}: {shown.scope}: " if judged > 1 else ""
    text += f". {lead}{shown.describe()}"
    return f"<span class='{verdict}'>{verdict}</span> {what}: {html.escape(text)}", details


def verdict(checks: list[CheckResult], run_info: dict[str, Any] | None, table: pa.Table,
            effects: dict[str, list[LengthJudgement]], tolerance: float, legacy_failed: Sequence[str] = (),
            zero_by_model: dict[str, tuple[int, int]] | None = None) -> str:
    """The verdict block: one line per question, details folded. ``checks`` are those of the
    direct rows; ``legacy_failed`` names the checks the legacy rows fail (by design)."""
    failed = sorted({r.check for r in checks if r.verdict == "fail"})
    undecided = sorted({r.check for r in checks if r.verdict == "inconclusive"} - set(failed))
    warned = sorted({r.check for r in checks if r.verdict == "warn"} - set(failed))
    lines = [f"<li><b>Checks</b>: <span class='{'fail' if failed else 'pass'}'>{len(failed)} failed</span>"
             + (f" ({html.escape(', '.join(failed))})" if failed else "")
             + (f", <span class='inconclusive'>{len(undecided)} inconclusive</span> ({html.escape(', '.join(undecided))})"
                if undecided else "")
             + (f", {len(warned)} warned ({html.escape(', '.join(warned))})" if warned else "")
             + f" of {len(checks)}" + (" on the direct rows" if legacy_failed else "")
             + "; the table of checks is below the figures.</li>"]
    if legacy_failed:
        lines.append(f"<li><b>Legacy rows</b> (the subtraction baseline) fail {html.escape(', '.join(legacy_failed))}, "
                     "as the method does by design.</li>")
    partial = _partial(run_info, table)
    if partial:
        lines.insert(0, f"<li id='partial'><b>Partial run</b>: <span class='warn'>{html.escape(partial)}</span></li>")
    for check in ("stability", "machine"):
        r = next((c for c in checks if c.check == check), None)
        if r is not None:
            text = r.detail
            marker = " id='stability-banner'" if check == "stability" and r.verdict in ("warn", "fail") else ""
            lines.append(f"<li{marker}><b>{check.capitalize()}</b>: <span class='{r.verdict}'>{r.verdict}</span>"
                         f"{': ' + html.escape(text) if text else ''}"
                         + (" (rerun on a quiet machine, or with order: interleaved: docs/analysis.md, Stability)" if marker else "") + "</li>")
    details: list[str] = []
    for method, found in effects.items():
        line, more = _effects_line(method, found, tolerance)
        lines.append(f"<li><b>Per-token latency against output length</b>, {line}</li>")
        details += more
    for method, (bad, total) in _per_method(zero_by_model if zero_by_model is not None
                                            else zero_decode(table, by_model=True)).items():
        share = f"{100 * bad / total:.1f}%" if total else "-"
        mark = "skip" if not total else "fail" if bad else "pass"  # a count by hand: no interval to wait for
        lines.append(f"<li><b>Zero decode with tokens</b>, {html.escape(METHOD_TITLES.get(method, method))}: "
                     f"<span class='{mark}'>{mark}</span> {bad} of {total} calls with N &ge; 2 ({share})</li>")
    notes = [html.escape(n) for n in _warnings(checks, run_info)] + details
    folded = (f"<details><summary>details: the length effect of every configuration, what the machine and the run "
              f"reported ({len(notes)} line(s))</summary><ul>{''.join(f'<li>{n}</li>' for n in notes)}</ul></details>"
              if notes else "")
    return f"<section id='verdict'><h2>Verdict</h2><ul>{''.join(lines)}</ul>{folded}</section>"


def _partial(run_info: dict[str, Any] | None, table: pa.Table) -> str:
    """What a run that did not measure every planned cell lacks, in one line ("" when complete)."""
    planned = (run_info or {}).get("cells")
    if not isinstance(planned, int) or "cell" not in table.column_names:
        return ""
    done = len(set(table.column("cell").to_pylist()))
    if done >= planned:
        return ""
    why = ("interrupted" if (run_info or {}).get("interrupted") and not (run_info or {}).get("finished")
           else "failed or not yet measured")
    return (f"{done} of {planned} planned cells measured ({planned - done} {why}): every figure and verdict "
            "below covers only these; phasetime run --resume measures the rest")


def _per_method(by_model: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    """``model|method`` counts summed per method (a call belongs to one model)."""
    out: dict[str, tuple[int, int]] = {}
    for key, (bad, total) in by_model.items():
        method = key.rsplit("|", 1)[-1]
        b, t = out.get(method, (0, 0))
        out[method] = (b + bad, t + total)
    return out


def _warnings(checks: list[CheckResult], run_info: dict[str, Any] | None) -> list[str]:
    """The machine's and the run's warnings, each once (run.json repeats the machine's)."""
    out: list[str] = []
    for r in checks:
        if r.check == "machine" and r.verdict == "warn":
            out += [w.strip() for w in r.detail.split("; ") if w.strip()]
    out += [str(w) for w in (run_info or {}).get("warnings") or []]
    return list(dict.fromkeys(out))


def length_figure(summary: list[CellSummary], effects: dict[str, list[LengthJudgement]],
                  zero: dict[str, tuple[int, int]]) -> dict[str, Any] | None:
    """Per-token latency against output length: a row per model, a panel per method (direct,
    legacy) on one y scale, a line per configuration with its interquartile band and, in its
    legend entry, its length effect over cells."""
    cells = [c for c in summary if c.get("max_new_tokens") is not None and (c.output_tokens or 0) >= 2
             and c.phases["tpot_ms"].median is not None]
    if len({c.get("max_new_tokens") for c in cells}) < 2:
        return None
    methods = [m for m in ("direct", "subtract") if any(c.get("method", "direct") == m for c in cells)]
    models = list(dict.fromkeys(c.get("model") for c in cells))
    panels = [(model, m) for model in models for m in methods]
    titles = [(f"{model}: " if len(models) > 1 else "") + METHOD_TITLES[m] for model, m in panels]
    axes, layout, rows = grid(titles, columns=len(methods), gap=0.08)
    keys = series_keys(cells, ["max_new_tokens", "method", "model"])
    data: list[dict[str, Any]] = []
    for (model, method), ax in zip(panels, axes):
        members = [c for c in cells if c.get("model") == model and c.get("method", "direct") == method]
        for i, (key, group) in enumerate(split(members, keys).items()):
            found = _match(effects.get(method, []), {"model": model, **dict(zip(keys, key))})
            data += _length_series(sorted(group, key=lambda c: c.get("max_new_tokens")), i, model, method,
                                   name(keys, key) if keys else "all", found, ax)
        layout[f"xaxis{ax[0][1:]}"].update(axis_for([c.get("max_new_tokens") for c in members], "output tokens N"))
        first_y = axes[panels.index((model, methods[0]))][1]
        layout[f"yaxis{ax[1][1:]}"].update({"title": {"text": "ms per output token"}, "rangemode": "tozero"})
        if ax[1] != first_y:
            layout[f"yaxis{ax[1][1:]}"]["matches"] = first_y  # one scale for a model's two methods
        bad, total = zero.get(f"{model}|{method}", (0, 0))
        if method == "subtract" and total:
            layout.setdefault("annotations", []).append({
                "text": f"decode = 0 in {bad} of {total} calls with N ≥ 2", "xref": f"{ax[0]} domain",
                "yref": f"{ax[1]} domain", "x": 0.98, "y": 0.04, "xanchor": "right", "showarrow": False,
                "font": {"size": 11, "color": "#cf222e"}})
    return figure(data, layout, height=330 * rows + 110)


def _length_series(group: list[CellSummary], i: int, model: Any, method: str, label: str,
                   found: LengthJudgement | None, ax: tuple[str, str]) -> list[dict[str, Any]]:
    """One configuration's line over N, with its interquartile band and its length effect in the legend."""
    x = [c.get("max_new_tokens") for c in group]
    size = "" if found is None or found.effect is None else f" ({found.verdict}: {100 * found.effect:+.1f}%)"
    visible: Any = True if i < SHOWN_SERIES else "legendonly"
    group_id = f"{model}|{method}|{label}"
    traces = [{**t, "visible": visible} for t in band(x, [c.phases["tpot_ms"].q1 for c in group],
                                                     [c.phases["tpot_ms"].q3 for c in group],
                                                     translucent(color(i)), label, ax, group_id)]
    traces.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": [c.median("tpot_ms") for c in group],
                   "xaxis": ax[0], "yaxis": ax[1], "name": f"{METHOD_TITLES[method].split(':')[0]}, {label}{size}",
                   "legendgroup": group_id, "visible": visible,
                   "line": {"color": color(i), "dash": "dash" if method == "subtract" else "solid"},
                   "hovertemplate": "N=%{x}<br>median %{y:.3f} ms per token<extra>" + label + "</extra>"})
    return traces


def _match(effects: list[LengthJudgement], wanted: dict[str, Any]) -> LengthJudgement | None:
    """The effect whose configuration agrees with ``wanted`` on every parameter both name."""
    for e in effects:
        config = dict(e.config)
        if all(config.get(k, v) == v for k, v in wanted.items()):
            return e
    return None


def position_figure(table: pa.Table) -> dict[str, Any] | None:
    """The hardware's per-position profile: the median gap between tokens at each decode step
    position, with its interquartile band over calls, a line per configuration (direct rows,
    pooled over output lengths). What every call shares (its first steps' warm-up, attention
    growing with the context) shows here; the length verdict judges what does not."""
    found = position_profile(table, CONFIG_COLUMNS)
    if not found or all(positions.size < 2 for _, positions, _ in found):
        return None
    data: list[dict[str, Any]] = []
    ax = ("x", "y")
    for i, (scope, positions, q) in enumerate(found):
        visible: Any = True if i < SHOWN_SERIES else "legendonly"
        x = positions.tolist()
        data += [{**t, "visible": visible} for t in band(x, q[:, 1].tolist(), q[:, 2].tolist(), translucent(color(i)),
                                                          scope, ax, scope)]
        data.append({"type": "scatter", "mode": "lines+markers", "x": x, "y": q[:, 0].tolist(), "name": scope,
                     "legendgroup": scope, "visible": visible, "line": {"color": color(i)}, "marker": {"size": 4},
                     "hovertemplate": "gap %{x}<br>median %{y:.3f} ms<extra>" + html.escape(scope) + "</extra>"})
    layout = {"xaxis": {"title": {"text": "decode step (gap k: between tokens k and k + 1)"}},
              "yaxis": {"title": {"text": "ms between tokens"}, "rangemode": "tozero"}}
    return figure(data, layout, height=380)


__all__ = ["length_figure", "position_figure", "verdict", "zero_decode"]
