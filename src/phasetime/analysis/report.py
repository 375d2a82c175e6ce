"""``phasetime report``: one self-contained HTML file with tables and plots of a run.

Every plot is a matplotlib figure embedded as a base64 PNG, so the file opens anywhere
without network access. Sections: environment and configuration, medians and p90 per
cell, phase breakdown (stacked bars), tpot against output length (with the legacy
denominator as a faint overlay), ITL CDFs, the timeline of one representative call, phase
latency against each swept parameter, accuracy against latency (scored runs only), and the
check results.
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any

import numpy as np
import pyarrow as pa

from ..core.stats import median
from .checks import CheckResult, run_checks
from .summary import SUMMARY_PHASES, CellSummary, cell_keys, floats, group_indices, list_values, strings, summarize, varying

SWEEP_AXES = ("image_size", "max_pixels", "max_visual_tokens", "batch_size", "max_new_tokens")
PHASE_COLORS = {"vision": "#4e79a7", "prefill": "#f28e2b", "decode": "#59a14f", "other": "#bab0ac"}


def _figure(width: float = 7.0, height: float = 3.6) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=110)
    return fig, ax


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _cell_label(cell: CellSummary, shown: list[str]) -> str:
    parts = [f"{c}={cell.get(c)}" for c in shown]
    return ", ".join(parts) or f"cell {cell.get('cell', '')}"


# --- plots ------------------------------------------------------------------------------------
def plot_breakdown(summary: list[CellSummary]) -> str:
    """Stacked bars: median vision / prefill / decode / other per cell."""
    shown = varying(summary)
    labels = [_cell_label(c, shown) for c in summary]
    fig, ax = _figure(7.5, 0.35 * len(summary) + 1.5)
    left = np.zeros(len(summary))
    for phase in ("vision", "prefill", "decode", "other"):
        values = np.array([c.median(f"{phase}_ms") or 0.0 for c in summary])
        ax.barh(labels, values, left=left, color=PHASE_COLORS[phase], label=phase)
        left += values
    ax.invert_yaxis()
    ax.set_xlabel("median ms")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12 - 0.6 / max(len(summary), 1)), ncol=4, fontsize=8,
              frameon=False)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def plot_tpot_vs_length(table: pa.Table) -> str:
    """tpot (decode / (N - 1)) against output length, legacy decode / N as a faint overlay."""
    n, decode, method = floats(table, "output_tokens"), floats(table, "decode_ms"), strings(table, "method")
    fig, ax = _figure()
    for m, marker in (("direct", "o"), ("subtract", "s")):
        sel = (method == m) & (n >= 2) & np.isfinite(decode)
        if not sel.any():
            continue
        lengths = np.unique(n[sel])
        right = [np.median(decode[sel & (n == k)] / (k - 1)) for k in lengths]
        legacy = [np.median(decode[sel & (n == k)] / k) for k in lengths]
        ax.plot(lengths, right, marker=marker, label=f"{m}: decode / (N - 1)")
        ax.plot(lengths, legacy, marker=marker, alpha=0.3, linestyle="--", label=f"{m}: decode / N (legacy)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("output tokens N")
    ax.set_ylabel("per-token latency, median ms")
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)


def plot_itl_cdf(table: pa.Table, summary: list[CellSummary]) -> str:
    """Empirical CDF of inter-token latencies, one line per cell (direct method).

    Each line is drawn through 201 quantiles of the cell's gaps: the same curve as every
    gap would give, at a size that stays small on millions of rows.
    """
    fig, ax = _figure()
    keys = cell_keys(table)
    shown = varying(summary)
    by_key = {tuple(c.get(k) for k in keys): c for c in summary}
    gaps, owner = list_values(table, "itl_ms")
    order = np.argsort(owner, kind="stable")
    gaps, owner = gaps[order], owner[order]
    direct = strings(table, "method") == "direct"
    levels = np.linspace(0, 1, 201)
    drawn = 0
    for key, idx in group_indices(table, keys).items():
        rows = idx[direct[idx]]
        if rows.size == 0:
            continue
        starts, ends = np.searchsorted(owner, rows), np.searchsorted(owner, rows, side="right")
        values = np.concatenate([gaps[a:b] for a, b in zip(starts, ends)]) if rows.size else np.empty(0)
        if values.size == 0:
            continue
        ax.plot(np.quantile(values, levels), levels, drawstyle="steps-post",
                label=_cell_label(by_key[key], shown) if key in by_key else None if drawn < 12 else None)
        drawn += 1
    ax.set_xlabel("inter-token latency, ms")
    ax.set_ylabel("fraction of gaps")
    if drawn:
        ax.legend(fontsize=6, ncol=2, loc="lower right")
    return _png(fig)


def representative_call(table: pa.Table) -> dict[str, Any] | None:
    """The direct call with the most decode steps whose total is closest to its cell's median."""
    steps, total = floats(table, "decode_steps"), floats(table, "total_ms")
    method = strings(table, "method")
    sel = np.flatnonzero((method == "direct") & (steps == np.nanmax(np.where(method == "direct", steps, np.nan))))
    if sel.size == 0:
        return None
    best = sel[np.argmin(np.abs(total[sel] - np.median(total[sel])))]
    return table.slice(int(best), 1).to_pylist()[0]


def plot_timeline(row: dict[str, Any]) -> str:
    """One call: vision, prefill and every decode step on a time axis, with ready marks."""
    fig, ax = _figure(7.5, 2.4)
    lanes = {"vision": 2, "prefill": 1, "decode": 0}
    for span in row.get("spans") or []:
        ax.barh(lanes[span["name"]], span["end_ms"] - span["start_ms"], left=span["start_ms"],
                color=PHASE_COLORS[span["name"]], edgecolor="white", linewidth=0.5)
    for t in row.get("ready_ms") or []:
        ax.axvline(t, color="#c00000", linewidth=0.6, alpha=0.6)
    ax.axvline(row["total_ms"], color="black", linestyle="--", linewidth=0.8)
    ax.set_yticks(list(lanes.values()), list(lanes))
    ax.set_xlabel(f"ms since generate() was entered (call {row['call_id']}, red: token ready, dashed: return)")
    return _png(fig)


def plot_vs_parameter(summary: list[CellSummary], axis: str) -> str:
    """Median phases against one swept parameter (other parameters: separate lines per method)."""
    fig, ax = _figure()
    for method in sorted({c.get("method") for c in summary}):
        cells = [c for c in summary if c.get("method") == method and c.get(axis) is not None]
        xs = sorted({c.get(axis) for c in cells})
        for phase, color in (("vision_ms", PHASE_COLORS["vision"]), ("prefill_ms", PHASE_COLORS["prefill"]),
                             ("ttft_ms", "#e15759"), ("tpot_ms", PHASE_COLORS["decode"])):
            ys = np.array([median(c.median(phase) for c in cells if c.get(axis) == x) for x in xs], dtype=float)
            if np.isfinite(ys).any():
                ax.plot(xs, ys, marker="o", color=color, linestyle="-" if method == "direct" else ":",
                        label=f"{phase.removesuffix('_ms')} ({method})")
    ax.set_xlabel(axis.replace("_", " "))
    ax.set_ylabel("median ms")
    if ax.lines:
        ax.legend(fontsize=7, ncol=2, loc="upper left")
    return _png(fig)


def plot_accuracy(summary: list[CellSummary]) -> str:
    """Per cell: accuracy against median total latency."""
    fig, ax = _figure()
    shown = varying(summary)
    for cell in summary:
        if cell.accuracy is None:
            continue
        ax.scatter(cell.median("total_ms"), cell.accuracy, s=30)
        ax.annotate(_cell_label(cell, shown), (cell.median("total_ms"), cell.accuracy), fontsize=6)
    ax.set_xlabel("median total ms per call")
    ax.set_ylabel("accuracy (mean score)")
    return _png(fig)


# --- the page -----------------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222} h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .5em;
text-align:right} th{background:#f4f4f4} td.l,th.l{text-align:left} figure{margin:1em 0} figure img{max-width:100%}
figcaption{font-size:.85em;color:#555} .pass{color:#1a7f37} .fail{color:#cf222e;font-weight:bold} .warn{color:#9a6700}
.skip,.info{color:#666} .banner{border:2px solid #d4a72c;background:#fff8c5;padding:.6em 1em;margin:1em 0}
.banner.fail{border-color:#cf222e;background:#ffebe9} pre{background:#f6f8fa;padding:.6em;font-size:.8em;overflow:auto;max-height:24em}
"""

# Marks the page once every plot has decoded, so a headless browser test can tell.
_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('figure img'));
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-plots', imgs.length);
  document.body.setAttribute('data-plots-loaded', ok);
});
"""


def _table(headers: list[str], rows: list[list[Any]], left: int = 0) -> str:
    head = "".join(f"<th class='{'l' if i < left else ''}'>{html.escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td class='{'l' if i < left else ''}'>{v}</td>" for i, v in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}"
    return html.escape(str(value))


def _figure_html(fig_id: str, png: str, caption: str) -> str:
    return (f"<figure id='{fig_id}'><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def stability_banner(checks: list[CheckResult], run_info: dict[str, Any] | None) -> str:
    """A banner above everything when the run was unstable or measured on a busy machine."""
    lines = [f"{r.check}: {r.detail}" for r in checks
             if r.check in ("stability", "machine") and r.verdict in ("warn", "fail")]
    lines += [f"during the run: {w}" for w in ((run_info or {}).get("warnings") or [])[:8]]
    if not lines:
        return ""
    failing = any(r.check == "stability" and r.verdict == "fail" for r in checks)
    head = ("These numbers are too noisy to trust" if failing else "These numbers are noisier than they should be")
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    return (f"<div id='stability-banner' class='banner {'fail' if failing else 'warn'}'><b>{head}.</b> "
            f"Rerun on a quiet machine (see docs/analysis.md, Stability).<ul>{items}</ul></div>")


def build_report(table: pa.Table, run_info: dict[str, Any] | None, checks: list[CheckResult] | None = None,
                 title: str = "phasetime report") -> tuple[str, list[str]]:
    """The HTML page and the ids of the figures it contains."""
    summary = summarize(table)
    checks = checks if checks is not None else run_checks(table, run_info)
    shown = varying(summary)
    figures: list[tuple[str, str, str]] = [
        ("fig-breakdown", plot_breakdown(summary), "Median vision / prefill / decode / other per cell."),
        ("fig-tpot", plot_tpot_vs_length(table),
         "Per-token latency against output length: decode / (N - 1), with the legacy decode / N faint."),
    ]
    if (strings(table, "method") == "direct").any():
        figures.append(("fig-itl", plot_itl_cdf(table, summary), "Inter-token latency distribution (CDF) per cell."))
        row = representative_call(table)
        if row is not None:
            figures.append(("fig-timeline", plot_timeline(row),
                            f"Timeline of call {row['call_id']}: every phase and decode step of one representative call."))
    axes = [a for a in SWEEP_AXES if a in shown] or ["max_new_tokens"]
    if "visual_tokens" in table.column_names and "image_size" in shown:
        axes.append("visual_tokens")  # visual tokens follow resolution: plot against them as well
    for axis in axes:
        figures.append((f"fig-vs-{axis}", plot_vs_parameter(summary, axis), f"Median phase latency against {axis}."))
    scored = any(c.accuracy is not None for c in summary)
    if scored:
        figures.append(("fig-accuracy", plot_accuracy(summary), "Accuracy against median latency per cell."))

    env = (run_info or {}).get("environment", {})
    experiment = (run_info or {}).get("experiment", {})
    env_rows = [[html.escape(k), _fmt(v if not isinstance(v, dict) else json.dumps(v))] for k, v in env.items()]
    headers = [c.replace("_", " ") for c in shown] + ["N", "n"] + [p.removesuffix("_ms") + " med / p90" for p in SUMMARY_PHASES]
    rows = []
    for c in summary:
        n_tokens = c.output_tokens
        cells = [_fmt(c.get(k)) for k in shown] + [_fmt(int(n_tokens) if n_tokens is not None and float(n_tokens).is_integer()
                                                        else n_tokens), _fmt(c.n)]
        cells += [f"{_fmt(c.phases[p].median)} / {_fmt(c.phases[p].p90)}" for p in SUMMARY_PHASES]
        if scored:
            cells.append(_fmt(c.accuracy))
        rows.append(cells)
    if scored:
        headers.append("accuracy")
    check_rows = [[html.escape(r.check), html.escape(r.scope), _fmt(r.value), html.escape(r.threshold),
                   f"<span class='{r.verdict}'>{r.verdict}</span>", html.escape(r.detail)] for r in checks]
    n_fail = sum(r.verdict == "fail" for r in checks)
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style><script>{_SCRIPT}</script></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        stability_banner(checks, run_info),
        f"<p>{table.num_rows} rows in {len(summary)} cells; checks: {len(checks) - n_fail} without failure, "
        f"<span class='{'fail' if n_fail else 'pass'}'>{n_fail} failed</span>. Times in ms; "
        "definitions in phasetime's docs/metrics.md.</p>",
        "<h2 id='environment'>Environment</h2>", _table(["", ""], env_rows, left=2),
        "<h2 id='configuration'>Configuration</h2>", f"<pre>{html.escape(json.dumps(experiment, indent=2))}</pre>",
        "<h2 id='summary'>Medians and p90 per cell</h2>", _table(headers, rows, left=len(shown)),
        "<h2 id='plots'>Plots</h2>",
        *(_figure_html(fid, png, caption) for fid, png, caption in figures),
        "<h2 id='checks'>Checks</h2>",
        _table(["check", "scope", "value", "threshold", "verdict", "detail"], check_rows, left=6),
        "</body></html>",
    ]
    return "\n".join(parts), [fid for fid, _, _ in figures]
