"""``phasetime report``: one self-contained, interactive HTML file of a run, or of run B against run A.

The figures are Plotly charts built from the run's summary (per-cell medians and quartiles:
a million rows become a few hundred numbers before anything is drawn) and drawn by the
plotting library's own JavaScript, embedded in the file (about 4.8 MB), so it opens offline.
Sections, the answers first: the verdict (checks, stability, machine, the length effect of
each method judged over cells, zero decode over N >= 2; details folded), where the time goes
(the phase breakdown, cells named by what varies; a negative ``other``, possible only with the
legacy method, drawn left of zero), per-token latency against output length (a row per model,
the direct and the legacy method side by side on one scale), phases against every swept
parameter, a 2-D sweep's dominant phase, inter-token latency, one call's timeline, accuracy
against latency with the Pareto front, the roofline and memory per phase (with ``--cost`` /
``--memory``); then the tables: medians per cell, checks, environment, configuration.
"""

from __future__ import annotations

import html
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from ..stability import judge_table
from ..checks import CheckResult, failed, one_method, run_checks
from ..compare import compare_runs, sync_mismatch
from ..summary import SUMMARY_PHASES, CellSummary, floats, strings, summarize, varying
from ..length import TOLERANCE, judge_configs
from . import answers, text
from .engine import engine_table
from .load import load_section
from .operators import operators_section
from . import figures as f
from . import figures_more as g
from .labels import cell_label
from .labels import labels as make_labels
from .page import clean, figure_html, fmt, page, table

SWEEP_AXES = ("image_size", "max_pixels", "max_visual_tokens", "batch_size", "max_new_tokens")
ROW_PHASES = ("vision_ms", "prefill_ms", "decode_ms", "other_ms", "total_ms", "ttft_ms", "tpot_ms")


def representative_call(table: pa.Table) -> dict[str, Any] | None:
    """The direct call with the most decode steps whose total is closest to its cells' median."""
    if "decode_steps" not in table.column_names or "method" not in table.column_names:
        return None
    steps, total, method = floats(table, "decode_steps"), floats(table, "total_ms"), strings(table, "method")
    direct = method == "direct"
    if not direct.any():
        return None
    sel = np.flatnonzero(direct & (steps == np.nanmax(np.where(direct, steps, np.nan))))
    best = sel[np.argmin(np.abs(total[sel] - np.median(total[sel])))]
    return table.slice(int(best), 1).to_pylist()[0]


def _summary_table(summary: list[CellSummary], labels: list[str], unstable: set[Any]) -> str:
    shown = varying(summary)
    scored = any(c.accuracy is not None for c in summary)
    headers = ["cell", *[c.replace("_", " ") for c in shown], "N", "n",
               *[p.removesuffix("_ms") + " median [q1, q3]" for p in ROW_PHASES]] + (["accuracy [95% CI]"] if scored else [])
    rows = []
    for cell, label in zip(summary, labels):
        mark = " <span class='unstable' title='unstable: see the banner and the checks'>⚠</span>" if cell.cell in unstable else ""
        row = [html.escape(label) + mark, *[fmt(cell.get(k)) for k in shown], fmt(cell.output_tokens, 0), fmt(cell.n)]
        for p in ROW_PHASES:
            s = cell.phases[p]
            row.append(f"{fmt(s.median)} <span class='q'>[{fmt(s.q1)}, {fmt(s.q3)}]</span>" if s.median is not None else "-")
        if scored:
            ci = cell.accuracy_ci
            row.append(f"{fmt(cell.accuracy, 3)} <span class='q'>[{fmt(ci[0], 3)}, {fmt(ci[1], 3)}]</span>" if ci else "-")
        rows.append(row)
    return table(headers, rows, left=1 + len(shown))


def _timeline_row(table_: pa.Table, fetch_call: Callable[[int], list[dict[str, Any]]] | None,
                  pool: ThreadPoolExecutor) -> Callable[[], dict[str, Any] | None]:
    """The representative call's row for the timeline; a table read without its bulk columns
    has it fetched (``fetch_call``) in ``pool`` meanwhile: Parquet decodes without the GIL."""
    row = representative_call(table_)
    if row is None or "spans" in row or fetch_call is None:
        return lambda: row
    pending = pool.submit(fetch_call, int(row["call_id"]))
    return lambda: next(iter(pending.result()), None)


def _figures(table_: pa.Table, summary: list[CellSummary], labels: list[str], full: list[str], unstable: set[Any],
             effects: dict[str, list[Any]], timeline_row: Callable[[], dict[str, Any] | None] = lambda: None,
             zero: dict[str, tuple[int, int]] | None = None,
             fetch_itl: Callable[[], pa.ChunkedArray] | None = None) -> list[tuple[str, str, str, Any]]:
    """(id, title, caption, figure) of every figure the run has data for, the answers first."""
    out: list[tuple[str, str, str, Any]] = [
        ("fig-breakdown", "Where the time goes", "Median vision, prefill, decode and other per cell (ms), stacked, cells "
         "named by the parameters that vary; the black tick is the median total (medians of parts need not add up to "
         "the median of their sum). Hover for the exact sum. A negative 'other' (only the legacy subtraction produces "
         "one: its phases add up to more than its call) is drawn to the left of zero. ⚠ marks a cell whose repeated "
         "calls are unstable; a cell named c<i> is keyed in the table of medians per cell.",
         f.breakdown(summary, _bar_labels(labels, full), unstable, full)),
        ("fig-length", "Does per-token latency depend on the output length?", "Median per-token latency per cell "
         "against the output length N, with its interquartile band: left the direct method's decode / (N - 1), right "
         "(when the run has it) the legacy subtraction's decode / N, on one scale per model. The legend gives each "
         "line's change from the shortest to the longest output (a share of its mean), judged over cells (the verdict above has its 95% "
         "interval). A line per configuration; the first four are drawn, click the legend for the others.",
         answers.length_figure(summary, effects, zero or {})),
        ("fig-positions", "The hardware's per-position profile", "Median gap between consecutive tokens at each "
         "decode step, with its interquartile band over calls, a line per configuration (direct method, every output "
         "length pooled). A first step slower than the next (warm-up inside each call) or gaps growing along the "
         "output (attention over a longer context) belong to the machine: they make TPOT depend on N on a good "
         "measurement, and the verdict above reports their size beside the method's own effect, judged position by "
         "position.", answers.position_figure(table_)),
    ]
    shown = varying(summary)
    axes = [a for a in SWEEP_AXES if a in shown]
    if "visual_tokens" in table_.column_names and ("image_size" in shown or "max_pixels" in shown):
        summary_vt = [c for c in summary if c.visual_tokens is not None]
        out.append(("fig-vs-visual_tokens", "Phases against visual tokens", "Median phases against the image's "
                    "placeholder tokens in the prompt, with interquartile bands.", f.vs_parameter(
                        [_with(c, "visual_tokens", c.visual_tokens) for c in summary_vt], "visual_tokens",
                        also=("image_size", "max_pixels", "max_visual_tokens"))))
    for axis in axes:
        longest = " at the longest output length" if axis != "max_new_tokens" and "max_new_tokens" in shown else ""
        out.append((f"fig-vs-{axis}", f"Phases against {axis.replace('_', ' ')}", "Median vision, prefill, TTFT, TPOT "
                    f"and total per configuration{longest}, with interquartile bands.", f.vs_parameter(summary, axis)))
    numeric = [a for a in axes if a != "batch_size"]
    if len(numeric) >= 2:
        out.append((f"fig-2d", f"{numeric[0]} x {numeric[1]}", "Left: median total against the first parameter, a "
                    "line per value of the second. Right: the phase taking the largest share of the call.",
                    f.dominant(summary, numeric[0], numeric[1])))
    out.append(("fig-itl", "Inter-token latency", "Empirical CDF of the gaps between consecutive tokens, per cell "
                "(direct method).", f.itl_cdf(table_, summary, labels, fetch_itl)))
    out.append(("fig-rounds", "Assisted and prompt-lookup decoding", "A point per call, a colour per way of "
                "decoding (every output length): TPOT against the share of proposed candidates the target "
                "accepted, and against the candidates proposed per round (docs/metrics.md, Rounds).", g.rounds(table_, summary)))
    row = timeline_row()
    if row is not None and "spans" in row:
        out.append(("fig-timeline", f"Timeline of call {row['call_id']}", "Every phase and decode step of one "
                    "representative call; red ticks: each token ready.", f.timeline(row)))
    out += [
        ("fig-accuracy", "Accuracy against latency", "Accuracy per cell (Wilson 95% interval) against median TTFT and "
         "total (interquartile range); stars and the dotted line: the Pareto front. Right: every sample's total "
         "latency by answer.", g.accuracy(summary, table_, labels)),
        ("fig-roofline", "Roofline", "Achieved FLOP/s against FLOP per byte moved, per cell and phase, under the "
         "device's roof (docs/metrics.md, Resources).", g.roofline(summary, labels)),
        ("fig-memory", "Memory per phase", "Peak memory per phase (CUDA: allocated; CPU: resident, coarse) and the KV "
         "cache at the end of the call.", g.memory(summary, labels)),
    ]
    return [entry for entry in out if entry[3] is not None]


BAR_LABEL = 80  # a bar's label may be this long (its axis makes room); longer ones become keys


def _bar_labels(short: list[str], full: list[str]) -> list[str]:
    """The breakdown's labels: every cell's whole parameters when they are unique and fit, else
    the short keys (c0, c1, ...) the table of medians resolves; never two cells with one label."""
    if len(set(full)) == len(full) and max((len(x) for x in full), default=0) <= BAR_LABEL:
        return full
    return short


def _with(cell: CellSummary, key: str, value: Any) -> CellSummary:
    import dataclasses

    return dataclasses.replace(cell, params={**cell.params, key: value})


def _environment(run_info: dict[str, Any] | None) -> str:
    env = dict((run_info or {}).get("environment") or {})
    for key in ("threads", "conditions_before", "conditions_after", "executor"):
        if (run_info or {}).get(key) is not None:
            env[key] = run_info[key]  # type: ignore[index]
    rows = [[html.escape(k), fmt(json.dumps(v) if isinstance(v, (dict, list)) else v)] for k, v in env.items()]
    return table(["field", "value"], rows, left=2, wrap=(1,))


def _effects(table_: pa.Table, run_info: dict[str, Any] | None = None,
             tolerance: float = TOLERANCE) -> dict[str, list[Any]]:
    """The length judgements of each method over cells (:mod:`..length`): the same function
    and level as ``phasetime check``."""
    order = ((run_info or {}).get("experiment") or {}).get("order")
    out: dict[str, list[Any]] = {}
    for j in judge_configs(table_, tolerance, interleaved=None if order is None else order == "interleaved"):
        out.setdefault(j.method, []).append(j)
    return out


def _by_method(table_: pa.Table) -> dict[str, pa.Table]:
    present = set(strings(table_, "method").tolist())
    return {m: one_method(table_, m) for m in ("direct", "subtract") if m in present}


def _folded(title: str, body: str, open_: bool = False) -> str:
    return f"<details{' open' if open_ else ''}><summary>{html.escape(title)}</summary>{body}</details>"


def build_report(table_: pa.Table, run_info: dict[str, Any] | None, checks: list[CheckResult] | None = None,
                 title: str = "phasetime report", tolerance: float = TOLERANCE,
                 fetch_call: Callable[[int], list[dict[str, Any]]] | None = None,
                 fetch_itl: Callable[[], pa.ChunkedArray] | None = None,
                 profiles: pa.Table | None = None) -> tuple[str, list[str]]:
    """The HTML page of a run and the ids of its figures: the verdict first, then where the
    time goes, the length effect (direct and legacy side by side), the sweep's own axes, and
    only then the tables (medians per cell, checks, environment, configuration). A table read
    without its bulk columns gets its timeline's call from ``fetch_call(call_id)``, and one read
    without ``itl_ms`` the column (row for row) from ``fetch_itl()``; ``profiles``: the run's
    profiled calls (``--profile``), drawn as each phase's operators."""
    with ThreadPoolExecutor(1) as pool:
        timeline_row = _timeline_row(table_, fetch_call, pool)
        return _build_report(table_, run_info, checks, title, tolerance, timeline_row, fetch_itl, profiles)


def _build_report(table_: pa.Table, run_info: dict[str, Any] | None, checks: list[CheckResult] | None, title: str,
                  tolerance: float, timeline_row: Callable[[], dict[str, Any] | None],
                  fetch_itl: Callable[[], pa.ChunkedArray] | None, profiles: pa.Table | None = None) -> tuple[str, list[str]]:
    if "itl_ms" not in table_.column_names and fetch_itl is not None:
        table_ = table_.append_column("itl_ms", fetch_itl())  # the verdicts judge by position (row for row)
    summary = summarize(table_)
    by_method = _by_method(table_) if "method" in table_.column_names else {}
    legacy_failed: list[str] = []
    # each method's stability and length judged once: for its checks, the verdict and the figures
    judged = {m: judge_table(t) for m, t in by_method.items()} if len(by_method) == 2 else {"all": judge_table(table_)}
    effects = _effects(table_, run_info, tolerance)
    if checks is None and len(by_method) == 2:
        # the verdict judges the direct rows; the legacy rows fail by design and are named apart
        # (their length verdict, against the direct method, has a line of its own)
        legacy_failed = sorted({r.check for r in failed(run_checks(by_method["subtract"], run_info,
                                                                   judged=judged["subtract"], lengths=[]))})
        checks = run_checks(by_method["direct"], run_info, judged=judged["direct"], lengths=effects.get("direct", []))
    checks = checks if checks is not None else run_checks(table_, run_info, judged=judged.get("all"),
                                                          lengths=[j for js in effects.values() for j in js])
    labels, _ = make_labels(summary)
    full = [cell_label(c, varying(summary), whole=True) for c in summary]
    unstable = {scope.get("cell") for groups in judged.values() for scope, _, j in groups if j.verdict in ("warn", "fail")}
    zero = answers.zero_decode(table_, by_model=True)
    figs = _figures(table_, summary, labels, full, unstable, effects, timeline_row, zero, fetch_itl)
    experiment = (run_info or {}).get("experiment", {})
    levels_html, load_figs = load_section(table_, ((experiment.get("load") or {}).get("slo")))
    ops_html, ops_figs = operators_section(profiles)
    figs = load_figs + figs + ops_figs
    check_rows = [[html.escape(r.check), html.escape(r.scope), fmt(r.value), html.escape(r.threshold),
                   f"<span class='{r.verdict}'>{r.verdict}</span>", html.escape(r.detail)] for r in checks]
    intro = (f"<p>{table_.num_rows} rows in {len(summary)} cells. Times in ms; definitions in phasetime's "
             "docs/metrics.md. Hover a figure for values, drag to zoom (double-click resets), click a legend entry to "
             "show or hide it; the camera icon saves the figure as SVG.</p>")
    cells_table = _summary_table(summary, labels, unstable)
    sections = [
        answers.verdict(checks, run_info, table_, effects, tolerance, legacy_failed, zero),
        *(figure_html(i, t, c) for i, t, c, _ in figs),
        "<h2 id='tables'>Tables</h2>",
        *(("<h3 id='load'>Per rate level</h3>", levels_html) if levels_html else ()),
        *(("<h3 id='operators'>Operators per phase (profiled calls)</h3>", ops_html) if ops_html else ()),
        "<h3 id='summary'>Medians per cell</h3>", _folded(f"{len(summary)} cells (click to show or hide)", cells_table,
                                                          open_=len(summary) <= 12),
        *(("<h3 id='engine'>vLLM's own figures</h3>", engine) if (engine := engine_table(table_, summary, full)) else ()),
        "<h3 id='checks'>Checks</h3>", table(["check", "scope", "value", "threshold", "verdict", "detail"], check_rows,
                                             left=6, wrap=(1, 3, 5)),
        "<h3 id='environment'>Environment</h3>", _folded("versions, machine, conditions", _environment(run_info)),
        "<h3 id='configuration'>Configuration</h3>",
        _folded("the experiment as run", f"<pre>{html.escape(json.dumps(experiment, indent=1))}</pre>"),
    ]
    return page(title, intro, sections, {i: clean(fig) for i, _, _, fig in figs}), [i for i, _, _, _ in figs]


def text_report(table_: pa.Table, run_info: dict[str, Any] | None, format: str, title: str = "phasetime report") -> str:
    """The phase table and the checks as Markdown (``md``) or LaTeX (``tex``)."""
    summary = summarize(table_)
    checks = run_checks(table_, run_info)
    return text.markdown(summary, checks, title) if format == "md" else text.latex(summary, checks, title)


def build_comparison_report(a: pa.Table, b: pa.Table, name_a: str, name_b: str,
                            on: list[str] | None = None) -> tuple[str, list[str]]:
    """The HTML page of run B against run A: the ratio of medians per cell and phase, with its
    bootstrap 95% interval, and the comparison table."""
    keys, rows = compare_runs(a, b, on=on)
    short = {cell: f"c{i}" for i, cell in enumerate(dict.fromkeys(r.cell for r in rows if r.cell != "geometric mean"))}
    short["geometric mean"] = "all"
    fig = g.ratios(rows, short)
    title = f"phasetime: {name_b} against {name_a}"
    table_rows = [[short[r.cell], html.escape(r.cell), r.phase.removesuffix("_ms"), fmt(r.median_a), fmt(r.median_b), fmt(r.ratio, 3),
                   "-" if r.ci is None else f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]",
                   "-" if r.p_value is None else f"{r.p_value:.3g}",
                   "-" if r.p_adjusted is None else f"{r.p_adjusted:.3g}", html.escape(r.verdict)] for r in rows]
    mismatch = sync_mismatch(a, b)
    intro = ((f"<p class='warn'><b>Not like for like:</b> {html.escape(mismatch)}.</p>" if mismatch else "") +
             f"<p>B = {html.escape(name_b)} against A = {html.escape(name_a)}, cells matched on "
             f"{html.escape(', '.join(keys) or 'nothing')}. A ratio below 1: B is faster. The first rows ('all') answer "
             "per phase over the matched cells: the geometric mean ratio with its 95% interval, the cell as the unit. "
             "A cell's 'faster' or 'slower' needs its Mann-Whitney p, adjusted over every test of the table (Holm), "
             "below 0.05 and a 95% bootstrap interval that excludes 1.</p>")
    figs = [("fig-ratios", "B / A per cell and phase", "Ratio of medians with its bootstrap 95% interval, cells named by "
             "their key in the table below; green: significantly faster, red: significantly slower, grey: not "
             "significant.", fig)] if fig else []
    sections = [*(figure_html(i, t, c) for i, t, c, _ in figs), "<h2 id='comparison'>Per cell and phase</h2>",
                table(["key", "cell", "phase", "A ms", "B ms", "B/A", "95% CI", "p", "p (Holm)", "verdict"], table_rows,
                      left=3)]
    return page(title, intro, sections, {i: clean(fg) for i, _, _, fg in figs}), [i for i, _, _, _ in figs]


__all__ = ["SUMMARY_PHASES", "build_comparison_report", "build_report", "representative_call", "text_report"]
