"""The commands that read a results directory: verify, export, check, compare, report, load, trace."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from .app import app, consoles


# What a comparison reads: every column but the per-step lists (ITL gaps included).
SUMMARY_ONLY = ("ready_ms", "decode_forward_ms", "spans", "itl_ms")


def _run_info(results: Path) -> dict | None:
    """run.json of a directory that :func:`phasetime.results.read` verified (None for a lone file)."""
    from ..results.files import RUN_FILE, read_json

    file = results / RUN_FILE
    return read_json(file) if results.is_dir() and file.exists() else None


@app.command("verify")
def cmd_verify(results: Annotated[Path, typer.Argument(help="A results directory.")]) -> None:
    """Check a results directory's integrity (markers, parts, merged file, run.json); exit 1 when damaged."""
    from ..results.integrity import verify
    from .output import print_inventory

    inventory = verify(results)
    print_inventory(inventory)
    if inventory.problems:
        raise typer.Exit(1)


@app.command("export")
def cmd_export(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    format: Annotated[str, typer.Option("--format", help="One of csv, parquet, jsonl.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (default: DIR/export.<format>).")] = None,
    legacy_names: Annotated[bool, typer.Option("--legacy-names", help="Add T_total, T_vision_total, ... columns of older scripts.")] = False,
) -> None:
    """Export the measurements of a results directory as CSV, Parquet or JSON lines."""
    from ..results.export import export

    path, rows = export(results, format, output, legacy_names=legacy_names)
    consoles.out.print(f"wrote {rows} rows to {path}", highlight=False, soft_wrap=True)


def _defaults():  # the check thresholds' defaults, without importing the analysis at start-up
    return dict(tolerance_ms=0.05, length_tolerance=0.05, min_cells=3, stability_ratio=2.0, short_tokens=8, outlier_z=3.5,
                precision=0.05, cv_warn=0.10, cv_fail=0.20, spread_warn=0.25)


D = _defaults()


@app.command("check")
def cmd_check(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    legacy: Annotated[bool, typer.Option("--legacy", help="Also show the length effect of the old denominator decode / N of the direct rows (info).")] = False,
    method: Annotated[Optional[str], typer.Option(help="Judge the rows of one method only (direct or subtract) of a --method both run (default: all).")] = None,
    length_tolerance: Annotated[float, typer.Option(help="How far the shortest calls' TPOT may read from the same positions of the longest (a share) and count as equal: its 95% CI within it passes, beyond it and excluding 0 fails.")] = D["length_tolerance"],
    min_cells: Annotated[int, typer.Option(help="Judge the length effect only over at least this many cells (output lengths).")] = D["min_cells"],
    stability_ratio: Annotated[float, typer.Option(help="Warn when CV(tpot) short / long exceeds this.")] = D["stability_ratio"],
    short_tokens: Annotated[int, typer.Option(help="Outputs of at most this many tokens are short.")] = D["short_tokens"],
    tolerance_ms: Annotated[float, typer.Option(help="How far below 0 a phase or other_ms may read.")] = D["tolerance_ms"],
    outlier_z: Annotated[float, typer.Option(help="Modified z-score beyond which a row is an outlier.")] = D["outlier_z"],
    precision: Annotated[float, typer.Option(help="Half-width of the 95% interval of a cell's mean the repeats should reach.")] = D["precision"],
    cv_warn: Annotated[float, typer.Option(help="Stability: warn from this CV of a cell's repeated calls (outliers left out).")] = D["cv_warn"],
    cv_fail: Annotated[float, typer.Option(help="Stability: fail from this robust CV, 1.4826 MAD / median (too noisy to trust).")] = D["cv_fail"],
    spread_warn: Annotated[float, typer.Option(help="Stability: warn when the median call is this much slower than the fastest.")] = D["spread_warn"],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Also write the results as JSON here.")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on an inconclusive verdict too (default: a warning, exit 0).")] = False,
) -> None:
    """Audit a results directory; exit 1 when a check fails (--strict: or is inconclusive). Writes nothing unless -o is given."""
    from rich.markup import escape

    from ..analysis.checks import Thresholds, failed, inconclusive, one_method, run_checks
    from ..results.files import write_json
    from ..results.integrity import verify
    from ..results.reader import BULK_COLUMNS, read
    from .output import print_checks

    thresholds = Thresholds(length_tolerance=length_tolerance, min_cells=min_cells, stability_ratio=stability_ratio, short_tokens=short_tokens,
                            tolerance_ms=tolerance_ms, outlier_z=outlier_z, precision=precision, cv_warn=cv_warn,
                            cv_fail=cv_fail, spread_warn=spread_warn)
    # the ITL gaps are read: the length effect is judged position by position
    inventory = verify(results) if results.is_dir() else None
    table = one_method(read(results, exclude=BULK_COLUMNS, inventory=inventory), method)
    checks = run_checks(table, _run_info(results), thresholds, legacy=legacy)
    if output is not None:
        write_json(output, {"thresholds": asdict(thresholds), "method": method or "all",
                            "checks": [r.to_dict() for r in checks]})
    print_checks(checks)
    undecided = inconclusive(checks)
    if undecided:
        names = ", ".join(dict.fromkeys(f"{r.check} ({r.scope})" for r in undecided))
        consoles.err.print(f"[yellow]warning:[/] inconclusive: {escape(names)}; the data cannot tell (see each "
                           "line's detail for what would settle it)" + (" (--strict: exit 1)" if strict else ""),
                           highlight=False, soft_wrap=True)
    if failed(checks) or (strict and undecided):
        raise typer.Exit(1)


@app.command("compare")
def cmd_compare(
    a: Annotated[Path, typer.Argument(help="A results directory (the baseline).")],
    b: Annotated[Optional[Path], typer.Argument(help="A second results directory to compare with A.")] = None,
    methods: Annotated[bool, typer.Option("--methods", help="Direct vs legacy subtraction within A (a --method both run).")] = False,
    on: Annotated[Optional[str], typer.Option(help="Parameters to match cells on, comma-separated (default: automatic).")] = None,
    correction: Annotated[str, typer.Option(help="How a cell's p is adjusted over the table: holm (family-wise error) or bh (false discovery rate, Benjamini-Hochberg).")] = "holm",
) -> None:
    """Compare direct and legacy timing in one run (--methods), or run B against run A (the over-cells headline first)."""
    from rich.markup import escape

    from ..analysis.compare import compare_methods, compare_runs, sync_mismatch
    from ..core.errors import UsageError
    from ..results.reader import BULK_COLUMNS, read
    from .output import print_method_comparison, print_run_comparison

    if methods == (b is not None):
        raise UsageError("give either --methods with one directory, or two directories")
    if methods:
        print_method_comparison(compare_methods(read(a, exclude=BULK_COLUMNS)))
    else:
        assert b is not None
        table_a, table_b = read(a, exclude=SUMMARY_ONLY), read(b, exclude=SUMMARY_ONLY)
        mismatch = sync_mismatch(table_a, table_b)
        if mismatch:
            consoles.err.print(f"[yellow]warning:[/] {escape(mismatch)}", highlight=False, soft_wrap=True)
        keys, rows = compare_runs(table_a, table_b, on=on.split(",") if on else None, correction=correction)
        print_run_comparison(keys, rows, a, b, correction)


@app.command("report")
def cmd_report(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    other: Annotated[Optional[Path], typer.Argument(help="A second results directory: report it against the first.")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (default: DIR/report.html, .md or .tex, or DIR/compare.html with two runs).")] = None,
    on: Annotated[Optional[str], typer.Option(help="With two runs: parameters to match cells on (default: automatic).")] = None,
    format: Annotated[str, typer.Option("--format", help="html (interactive), md or tex (the phase table and the checks, for a paper).")] = "html",
) -> None:
    """Write one self-contained, interactive HTML report of a run (or of run B against run A)."""
    from ..analysis.report import build_comparison_report, build_report
    from ..core.errors import UsageError
    from ..results.files import atomic_write
    from ..results.integrity import verify
    from ..results.profiles import read_profiles
    from ..results.reader import BULK_COLUMNS, read, read_call, read_columns

    if format not in ("html", "md", "tex"):
        raise UsageError(f"--format must be html, md or tex, got {format!r}")
    if format != "html":
        if other is not None:
            raise UsageError("--format md and tex write one run's tables; compare two runs with the HTML report")
        from ..analysis.report import text_report

        body = text_report(read(results, exclude=BULK_COLUMNS), _run_info(results), format, title=f"phasetime report: {results.name}")
        path = output or results / f"report.{format}"
        atomic_write(path, lambda tmp: Path(tmp).write_text(body, encoding="utf-8"))
        consoles.out.print(f"wrote {path}", highlight=False, soft_wrap=True)
        return
    if other is None:
        # read without the list columns; the one the inter-token figure needs is read meanwhile,
        # in a thread (Parquet decodes without the GIL while the checks and summaries run)
        from concurrent.futures import ThreadPoolExecutor

        inventory = None if results.is_file() else verify(results)
        summary_table = read(results, exclude=SUMMARY_ONLY, inventory=inventory)  # raises on damage
        with ThreadPoolExecutor(1) as pool:
            itl = pool.submit(read_columns, results, ["itl_ms"], inventory)
            page, figures = build_report(summary_table, _run_info(results), title=f"phasetime report: {results.name}",
                                         fetch_call=lambda call: read_call(results, call),
                                         fetch_itl=lambda: itl.result().column("itl_ms"),
                                         profiles=None if results.is_file() else read_profiles(results))
        path = output or results / "report.html"
    else:
        page, figures = build_comparison_report(read(results, exclude=SUMMARY_ONLY), read(other, exclude=SUMMARY_ONLY),
                                                str(results), str(other), on=on.split(",") if on else None)
        path = output or results / "compare.html"
    atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    consoles.out.print(f"wrote {path} ({len(figures)} plots)", highlight=False, soft_wrap=True)


@app.command("load")
def cmd_load(
    results: Annotated[Path, typer.Argument(help="A results directory of a load (backend: vllm-server).")],
    slo_ttft_ms: Annotated[Optional[float], typer.Option(help="Goodput's TTFT target, ms (default: the experiment's slo).")] = None,
    slo_tpot_ms: Annotated[Optional[float], typer.Option(help="Goodput's TPOT target, ms (default: the experiment's slo).")] = None,
) -> None:
    """Per rate level of a load: throughput, goodput, the client's TTFT / TPOT / ITL / E2E percentiles, the send."""
    from ..analysis.load import levels
    from ..core.errors import UsageError
    from ..results.reader import read
    from .output import print_levels

    table = read(results, exclude=("ready_ms", "decode_forward_ms", "spans", "itl_ms"))
    slo = dict((((_run_info(results) or {}).get("experiment") or {}).get("load") or {}).get("slo") or {})
    slo.update({k: v for k, v in (("ttft_ms", slo_ttft_ms), ("tpot_ms", slo_tpot_ms)) if v is not None})
    found = levels(table, slo)
    if not found:
        raise UsageError(f"{results} holds no load: its rows have no rate (backend: vllm-server makes them)")
    print_levels(found, f"{results.name}: per rate level")


@app.command("ops")
def cmd_ops(
    results: Annotated[Path, typer.Argument(help="A results directory of a run made with --profile.")],
    top: Annotated[int, typer.Option(help="Operators named per phase.", min=1, max=50)] = 5,
) -> None:
    """What each phase spends its time on: per model and phase, the profiled calls' top operators."""
    from ..analysis.operators import phase_ops
    from ..core.errors import UsageError
    from ..results.profiles import read_profiles
    from .output import print_phase_ops

    profiles = read_profiles(results)
    if profiles is None:
        raise UsageError(f"{results} holds no profiled calls: run it with --profile (phasetime run ... --profile)")
    print_phase_ops(phase_ops(profiles, top=top), f"{results.name}: operators per phase")


@app.command("trace")
def cmd_trace(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    call: Annotated[Optional[list[int]], typer.Option("--call", help="Call id (repeatable) (default: the first call); a profiled call's id (run --profile) draws its operators under its phases.")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Trace JSON file.")] = Path("trace.json"),
) -> None:
    """Export calls as Chrome / Perfetto trace-event JSON (open in ui.perfetto.dev)."""
    from ..results.files import write_json
    from ..results.profiles import read_profiles
    from ..results.reader import read
    from ..results.trace import trace

    profiled = results.is_dir() and read_profiles(results) is not None
    document = trace(read(results), call, read_profiles(results) if profiled else None,
                     read_profiles(results, "operators") if profiled else None)
    write_json(output, document)
    consoles.out.print(f"wrote {output} ({len(document['traceEvents'])} events)", highlight=False, soft_wrap=True)
