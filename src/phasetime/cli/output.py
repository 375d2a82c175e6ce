"""Tables the commands print: summaries, checks, comparisons, a directory's inventory."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.table import Table

from .app import consoles

if TYPE_CHECKING:
    from ..analysis.checks import CheckResult
    from ..analysis.summary import CellSummary
    from ..results.integrity import Inventory


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def count(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_summary(summary: list["CellSummary"], title: str) -> None:
    """Per cell: the parameters that vary, rows, median output length, median (and p90 below) per phase."""
    from ..analysis.summary import SUMMARY_PHASES, varying

    shown = [c for c in varying(summary) if c not in ("max_new_tokens", "batch_size")]  # shown as N and B
    scored = any(cell.accuracy is not None for cell in summary)
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in shown:
        table.add_column(name.replace("_", " "), overflow="fold")
    for name in ("N", "B", "n"):
        table.add_column(name, justify="right")
    audio = any((cell.median("audio_ms") or 0.0) > 0 for cell in summary)  # a column only where there is audio
    phases_shown = ("vision_ms", "audio_ms", *SUMMARY_PHASES[1:]) if audio else SUMMARY_PHASES
    for phase in phases_shown:
        table.add_column(phase.removesuffix("_ms"), justify="right")
    if scored:
        table.add_column("acc", justify="right")
    for cell in summary:
        phases = [f"{ms(cell.phases[p].median)}\n[dim]{ms(cell.phases[p].p90)}[/]" for p in phases_shown]
        table.add_row(
            *(escape(str(cell.get(c))) for c in shown),
            count(cell.output_tokens),
            count(cell.get("batch_size")),
            count(cell.n),
            *phases,
            *([ms(cell.accuracy)] if scored else []),
        )
    table.caption = (
        "ms per cell of n rows (N output tokens, batch B): median, p90 below; "
        "tpot = decode / (N - 1) ('-' where N < 2) for the direct method; the legacy subtract method's "
        "own per-token value is decode / N"
    )
    consoles.out.print(table)


def print_levels(levels: list[Any], title: str) -> None:
    """Per rate level of a load: throughput, goodput, the client's percentiles, the send."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in ("model", "rate", "n", "req/s", "tok/s", "goodput", "TTFT p50", "p90", "p99", "TPOT p50", "p99",
                 "ITL p99", "E2E p99", "lag p99"):
        table.add_column(name, justify="left" if name == "model" else "right")

    def q(level: Any, column: str, j: int) -> str:
        found = level.quantiles.get(column)
        return "-" if not found else ms(found[j].value)
    for lv in levels:
        good = "-" if lv.goodput_rps is None else f"{lv.goodput_rps:.2f}"
        lag = ms(lv.lag_p99_ms) + ("" if lv.held else " [red]not held[/]")
        name = str(lv.params.get("model")) + (f" ({lv.label})" if lv.label else "")
        table.add_row(escape(name), f"{lv.params['rate']:g}", str(lv.requests),
                      f"{lv.throughput_rps:.2f}", f"{lv.tokens_per_s:.1f}", good, q(lv, "client_ttft_ms", 0),
                      q(lv, "client_ttft_ms", 1), q(lv, "client_ttft_ms", 2), q(lv, "client_tpot_ms", 0),
                      q(lv, "client_tpot_ms", 2), q(lv, "client_itl_ms", 2), q(lv, "client_e2e_ms", 2), lag)
    table.caption = ("per planned rate (requests/s): answered requests, throughput and goodput (requests/s meeting "
                     "every SLO) over the level's duration; the client's latencies in ms (bench serve's definitions); "
                     "the send's lag behind its plan. phasetime report draws them with intervals and TTFT's parts")
    consoles.out.print(table)


def print_phase_ops(found: list[Any], title: str) -> None:
    """Per model and phase of the profiled calls: its time, top operators, the rest, no operator."""
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in ("model", "phase", "ms/call", "top operators (share of the phase)", "operators", "no operator",
                 "GPU kernels busy / wall ms"):
        table.add_column(name, justify="left" if name in ("model", "phase", "top operators (share of the phase)")
                         else "right")
    for p in found:
        tops = "\n".join(f"{escape(name)} {100 * p.share(v):.0f}%" for name, v in p.top[:3])
        gpu = "-" if p.kernel_ms is None else f"{p.kernel_ms:.3f} / {p.device_ms:.3f}"
        table.add_row(escape(p.model), p.phase, f"{p.phase_ms:.3f}", tops, f"{100 * p.share(p.operators_ms):.0f}%",
                      f"{100 * p.share(p.uncovered_ms):.0f}%", gpu)
    table.caption = ("per profiled call (run --profile; never timed rows: the profiler slows a call, read shares); "
                     "operators: the share of the phase their self time fills; no operator: host work outside "
                     "torch's operators (Python, generate()'s bookkeeping, launch latency). phasetime report draws them")
    consoles.out.print(table)


_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "inconclusive": "magenta", "warn": "yellow", "skip": "dim",
                  "info": "dim"}


def print_checks(results: list["CheckResult"]) -> None:
    """One row per check and scope; the threshold and detail in a dim line below the name."""
    from ..analysis.checks import failed

    table = Table(title="checks", title_justify="left")
    table.add_column("check (threshold; detail)")
    table.add_column("scope")
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for r in results:
        note = escape(f"{r.threshold}; {r.detail}" if r.detail else r.threshold)
        table.add_row(f"{escape(r.check)}\n[dim]{note}[/]", escape(r.scope), "-" if r.value is None else str(r.value),
                      f"[{_VERDICT_STYLE[r.verdict]}]{r.verdict}[/]")
    consoles.out.print(table)
    bad = failed(results)
    names = ", ".join(sorted({r.check for r in bad}))
    undecided = sum(r.verdict == "inconclusive" for r in results)
    # One unwrapped line, so that scripts can read the failed checks from it.
    consoles.out.print(f"{len(results)} checks, {undecided} inconclusive, {len(bad)} failed" + (f": {names}" if bad else ""),
                       soft_wrap=True, highlight=False)


def print_method_comparison(result: dict[str, Any]) -> None:
    phases = Table(title="direct vs subtract: medians (ms)", title_justify="left")
    for name in ("phase", "direct", "subtract", "median difference per cell", "cells"):
        phases.add_column(name, justify="left" if name == "phase" else "right")
    for p in result["phases"]:
        phases.add_row(p["phase"], ms(p["direct_median"]), ms(p["subtract_median"]), ms(p["median_difference"]),
                       str(p["cells"]))
    consoles.out.print(phases)
    zero = Table(title="calls with N >= 2 tokens but no decode time (N = 1 has no decode)", title_justify="left")
    for name in ("method", "calls", "decode = 0", "negative before clamping"):
        zero.add_column(name, justify="left" if name == "method" else "right")
    for m, z in result["zero_decode"].items():
        zero.add_row(m, str(z["calls_with_tokens"]), pct(z["decode_zero_share"]), pct(z["negative_before_clamp_share"]))
    consoles.out.print(zero)
    corr = Table(title="per-token latency against output length, judged over cells: the shortest calls' value "
                       "against the longest's (direct: at the same positions; legacy: against the direct method)",
                 title_justify="left")
    for name in ("method", "scope", "cells", "calls", "effect", "CI", "verdict"):
        corr.add_column(name, justify="left" if name in ("method", "scope", "verdict") else "right")
    for c in result["correlation"]:
        ci = "-" if c["ci"] is None else f"[{100 * c['ci'][0]:+.1f}%, {100 * c['ci'][1]:+.1f}%]"
        style = _VERDICT_STYLE.get(c["verdict"], "")
        corr.add_row(c["method"], escape(c["scope"]), str(c["cells"]), str(c["calls"]),
                     "-" if c["change"] is None else f"{100 * c['change']:+.1f}%", ci,
                     f"[{style}]{c['verdict']}[/]" if style else c["verdict"])
    consoles.out.print(corr)
    for c in result["correlation"]:
        consoles.out.print(f"[dim]{escape(c['method'])}, {escape(c['scope'])}: {escape(c['detail'])}[/]", soft_wrap=True)
    spread = Table(title="measurement spread (median CV over cells)", title_justify="left")
    for name in ("method", "decode CV", "per-token CV"):
        spread.add_column(name, justify="left" if name == "method" else "right")
    for m, s in result["spread"].items():
        spread.add_row(m, pct(s["decode_cv_median"]), pct(s["tpot_cv_median"]))
    consoles.out.print(spread)


def print_run_comparison(keys: list[str], rows: list[Any], a: Path, b: Path, correction: str = "holm") -> None:
    head = [r for r in rows if r.cell == "geometric mean"]
    if head:
        top = Table(title=f"{b} against {a}: B / A per phase over the matched cells (geometric mean; 95% CI, "
                          "unit: the cell)", title_justify="left")
        for name in ("phase", "B/A", "95% CI", "verdict"):
            top.add_column(name, justify="left" if name in ("phase", "verdict") else "right")
        for r in head:
            style = "green" if r.verdict.startswith("faster") else "red" if r.verdict.startswith("slower") else "dim"
            top.add_row(r.phase.removesuffix("_ms"), "-" if r.ratio is None else f"{r.ratio:.3f}",
                        "-" if r.ci is None else f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]", f"[{style}]{escape(r.verdict)}[/]")
        consoles.out.print(top)
    adjusted = {"holm": "Holm", "bh": "Benjamini-Hochberg"}.get(correction, correction)
    table = Table(title=f"per cell and phase (matched on {', '.join(keys) or 'nothing'}; p adjusted over the "
                        f"{sum(r.p_value is not None for r in rows)} tests of this table: {adjusted})",
                  title_justify="left")
    for name in ("cell", "phase", "A ms", "B ms", "B/A", "95% CI", "p", "p adj.", "verdict"):
        table.add_column(name, justify="left" if name in ("cell", "phase", "verdict") else "right")
    for r in rows:
        if r.cell == "geometric mean":
            continue
        style = {"faster": "green", "slower": "red"}.get(r.verdict, "dim" if r.verdict == "not significant" else "")
        table.add_row(escape(r.cell), r.phase.removesuffix("_ms"), ms(r.median_a), ms(r.median_b),
                      "-" if r.ratio is None else f"{r.ratio:.3f}",
                      "-" if r.ci is None else f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]",
                      "-" if r.p_value is None else f"{r.p_value:.3g}",
                      "-" if r.p_adjusted is None else f"{r.p_adjusted:.3g}",
                      f"[{style}]{r.verdict}[/]" if style else r.verdict)
    consoles.out.print(table)


def print_inventory(inv: "Inventory") -> None:
    """What ``phasetime verify`` found: cells, where their rows are, problems and notes."""
    done = sorted(inv.done)
    failed = sorted(i for i, m in inv.markers.items() if m.get("status") == "failed")
    total = (inv.run or {}).get("cells")
    consoles.out.print(f"{inv.root}: {len(done)} cells done ({inv.rows()} rows), {len(failed)} failed"
                       + (f", of {total}" if isinstance(total, int) else ""), highlight=False, soft_wrap=True)
    for problem in inv.problems:
        consoles.out.print(f"[bold red]damaged[/] {escape(str(problem))}"
                           + (" [dim](--resume measures it again)[/]" if problem.cell is not None else ""),
                           soft_wrap=True)
    for note in inv.notes:
        consoles.out.print(f"[dim]note[/] {escape(note)}", soft_wrap=True)
    consoles.out.print("intact" if not inv.problems else f"{len(inv.problems)} problem(s)", highlight=False)
