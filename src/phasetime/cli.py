"""The ``phasetime`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import contextlib
import inspect
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Iterator, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import models
from ._experiment import ExperimentError, load_experiment, quick_experiment
from ._export import FORMATS, export
from ._runner import RunError, RunResult, prepare_out_dir, run_experiment
from ._checks import CheckResult, Thresholds, failed, run_checks
from ._compare import compare_methods, compare_runs
from ._report import build_report
from ._store import StoreError, atomic_write, read_results, read_run, write_json
from ._trace import trace
from ._summary import SUMMARY_PHASES, summarize, varying

app = typer.Typer(
    help="Direct, phase-by-phase latency of Hugging Face generate() calls.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
out_console = Console()
err_console = Console(stderr=True)
# The quick path's defaults live in quick_experiment's signature, nowhere else.
QUICK_DEFAULTS = {k: p.default for k, p in inspect.signature(quick_experiment).parameters.items()}


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True, markup=True)
    raise typer.Exit(code)


@contextlib.contextmanager
def _user_errors() -> Iterator[None]:
    """Report a bad directory, file or value as one line and exit 2."""
    try:
        yield
    except (StoreError, ValueError) as exc:
        _fail(str(exc))


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``; a one-line ``RunError`` for anything else."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            raise RunError(f"{name} takes integers separated by commas, got {text!r}") from None
        if value < 1:
            raise RunError(f"{name} values must be >= 1, got {value}")
        values.append(value)
    return tuple(values)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def print_summary(summary: list[dict[str, Any]], title: str) -> None:
    """Per cell: the parameters that vary, rows, median output length, median (and p90 below) per phase."""
    shown = [c for c in varying(summary) if c not in ("max_new_tokens", "batch_size")]  # shown as N and B
    scored = any(cell.get("accuracy") is not None for cell in summary)
    table = Table(title=title, title_justify="left", caption_justify="left")
    for name in shown:
        table.add_column(name.replace("_", " "), overflow="fold")
    for name in ("N", "B", "n"):
        table.add_column(name, justify="right")
    for phase in SUMMARY_PHASES:
        table.add_column(phase.removesuffix("_ms"), justify="right")
    if scored:
        table.add_column("acc", justify="right")
    for cell in summary:
        phases = [f"{_ms(cell[f'{p}_median'])}\n[dim]{_ms(cell[f'{p}_p90'])}[/]" for p in SUMMARY_PHASES]
        table.add_row(
            *(str(cell.get(c)) for c in shown),
            _count(cell.get("output_tokens")),
            _count(cell.get("batch_size")),
            _count(cell["n"]),
            *phases,
            *([_ms(cell["accuracy"])] if scored else []),
        )
    table.caption = (
        "ms per cell of n rows (N output tokens, batch B): median, p90 below; "
        "tpot = decode / (N - 1), '-' where N < 2 or not measured"
    )
    out_console.print(table)


@app.command("run")
def cmd_run(
    experiment: Annotated[Optional[Path], typer.Argument(help="An experiment YAML file; without it, the options below.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Results directory (default: results/<experiment name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run in --out, skipping finished cells.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty --out.")] = False,
    skip_bad_samples: Annotated[bool, typer.Option("--skip-bad-samples", help="Record samples with bad images as failed and go on.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar and no table.")] = False,
    nvtx: Annotated[bool, typer.Option("--nvtx", help="Wrap every phase and decode step in an NVTX range (CUDA).")] = False,
    model: Annotated[Optional[str], typer.Option(help=f"Built-in name, hub id or local directory (default: {QUICK_DEFAULTS['model']}).")] = None,
    max_new_tokens: Annotated[Optional[str], typer.Option(help="Output lengths, comma-separated (default: 1,2,4,8,16,32).")] = None,
    min_new_tokens: Annotated[Optional[int], typer.Option(help="(default: equal to max new tokens)")] = None,
    repeats: Annotated[Optional[int], typer.Option(help=f"Measured calls per cell (default: {QUICK_DEFAULTS['repeats']}).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help=f"Unstored warm-up calls per cell (default: {QUICK_DEFAULTS['warmup']}).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="User prompt (the chat template is applied).")] = None,
    image: Annotated[Optional[Path], typer.Option(help="Image file (default: a generated one).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help=f"Side of the generated image (default: {QUICK_DEFAULTS['image_size']}).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Copies of the prompt per call (default: 1).")] = None,
    method: Annotated[Optional[str], typer.Option(help="direct, subtract (legacy) or both (default: direct).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (default: auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, float32, float16 or bfloat16 (default: auto).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights and sampling (default: 0).")] = None,
) -> None:
    """Measure every phase of generate(): an experiment file, or one model over output lengths."""
    quick = {
        "model": model, "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens, "repeats": repeats,
        "warmup": warmup, "prompt": prompt, "image": image, "image_size": image_size, "batch_size": batch_size,
        "method": method, "device": device, "dtype": dtype, "seed": seed,
    }
    given = {k: v for k, v in quick.items() if v is not None}
    try:
        if experiment is not None:
            if given:
                raise RunError(f"--{next(iter(given)).replace('_', '-')} applies only without an experiment file")
            exp = load_experiment(experiment)
        else:
            if "max_new_tokens" in given:
                given["max_new_tokens"] = parse_int_list(given["max_new_tokens"], "--max-new-tokens")
            if "image" in given:
                given["image"] = str(given["image"])
            exp = quick_experiment(**given)
        out_dir = out if out is not None else Path("results") / exp.name
        prepare_out_dir(out_dir, overwrite=overwrite, resume=resume)  # fail before the progress bar starts
        kwargs = dict(source=experiment, resume=resume, overwrite=overwrite, skip_bad_samples=skip_bad_samples, nvtx=nvtx)
        if quiet:
            result = run_experiment(exp, out_dir, **kwargs)
        else:
            result = _run_with_progress(exp, out_dir, kwargs)
    except (RunError, StoreError, ExperimentError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted", code=130)
    _report_run(result, exp.name, quiet)


def _report_run(result: RunResult, name: str, quiet: bool) -> None:
    if not quiet and result.rows + result.skipped > 0:
        try:
            print_summary(summarize(read_results(result.out_dir)), f"{name}: {result.cells} cells")
        except StoreError:
            pass  # nothing stored yet (every cell failed, or interrupted in the first cell)
    for index, error in sorted(result.errors.items()):
        err_console.print(f"cell {index} failed: {error}", highlight=False, markup=False)
    parts = [f"{result.done} cells done", f"{result.failed} failed"]
    if result.skipped:
        parts.append(f"{result.skipped} already done")
    if result.failed_samples:
        parts.append(f"{len(result.failed_samples)} bad samples skipped")
    out_console.print(f"{', '.join(parts)}; {result.calls} measured calls, {result.rows} rows in {result.out_dir}", highlight=False)
    if result.interrupted:
        _fail(f"interrupted; continue with: phasetime run ... --out {result.out_dir} --resume", code=130)
    if result.failed:
        raise typer.Exit(1)


def _run_with_progress(exp: Any, out_dir: Path, kwargs: dict[str, Any]) -> RunResult:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        cells = progress.add_task("cells", total=None)
        calls = progress.add_task("calls", total=None)
        per_cell: dict[int, int] = {}

        def on_event(event: str, info: dict[str, Any]) -> None:
            if event == "plan":
                per_cell.update(info["calls_per_cell"])
                progress.update(cells, total=info["cells"])
            elif event == "load":
                progress.update(cells, description=f"cells ({info['model']})")
            elif event == "call":
                progress.update(calls, advance=1)
            elif event == "cell":
                progress.update(cells, advance=1)
                progress.reset(calls)

        return run_experiment(exp, out_dir, progress=on_event, **kwargs)


@app.command("export")
def cmd_export(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    format: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "csv",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file (default: DIR/export.<format>).")] = None,
    legacy_names: Annotated[bool, typer.Option("--legacy-names", help="Add T_total, T_vision_total, ... columns of older scripts.")] = False,
) -> None:
    """Export the measurements of a results directory as CSV, Parquet or JSON lines."""
    with _user_errors():
        path, rows = export(results, format, output, legacy_names=legacy_names)
    out_console.print(f"wrote {rows} rows to {path}", highlight=False)


@app.command("check")
def cmd_check(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    legacy: Annotated[bool, typer.Option("--legacy", help="Also show the correlation under the old denominator decode / N.")] = False,
    rho: Annotated[float, typer.Option(help="Fail when |Spearman rho(tpot, N)| exceeds this (CI excluding 0).")] = Thresholds.rho,
    min_n: Annotated[int, typer.Option(help="Judge the correlation only on at least this many rows.")] = Thresholds.min_n,
    stability_ratio: Annotated[float, typer.Option(help="Warn when CV(tpot) short / long exceeds this.")] = Thresholds.stability_ratio,
    short_tokens: Annotated[int, typer.Option(help="Outputs of at most this many tokens are short.")] = Thresholds.short_tokens,
    tolerance_ms: Annotated[float, typer.Option(help="How far below 0 a phase or other_ms may read.")] = Thresholds.tolerance_ms,
    outlier_z: Annotated[float, typer.Option(help="Modified z-score beyond which a row is an outlier.")] = Thresholds.outlier_z,
    precision: Annotated[float, typer.Option(help="Relative precision for the repeats rule.")] = Thresholds.precision,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="JSON file (default: DIR/check.json).")] = None,
) -> None:
    """Audit a results directory; exit 1 when a check fails."""
    thresholds = Thresholds(rho=rho, min_n=min_n, stability_ratio=stability_ratio, short_tokens=short_tokens,
                            tolerance_ms=tolerance_ms, outlier_z=outlier_z, precision=precision)
    with _user_errors():
        table = read_results(results)
        results_list = run_checks(table, _run_info(results), thresholds, legacy=legacy)
        write_json(output or results / "check.json",
                   {"thresholds": asdict(thresholds), "checks": [r.to_dict() for r in results_list]})
    print_checks(results_list)
    if failed(results_list):
        raise typer.Exit(1)


def _run_info(results: Path) -> dict[str, Any] | None:
    try:
        return read_run(results)
    except StoreError:
        return None


_VERDICT_STYLE = {"pass": "green", "fail": "bold red", "warn": "yellow", "skip": "dim", "info": "dim"}


def print_checks(results: list[CheckResult]) -> None:
    """One row per check and scope; the threshold and detail in a dim line below the name."""
    table = Table(title="checks", title_justify="left")
    table.add_column("check (threshold; detail)", ratio=3)
    table.add_column("scope", ratio=2)
    table.add_column("value", justify="right")
    table.add_column("verdict")
    for r in results:
        note = escape(f"{r.threshold}; {r.detail}" if r.detail else r.threshold)
        table.add_row(f"{escape(r.check)}\n[dim]{note}[/]", escape(r.scope), "-" if r.value is None else str(r.value),
                      f"[{_VERDICT_STYLE[r.verdict]}]{r.verdict}[/]")
    out_console.print(table)
    n_fail = len(failed(results))
    names = ", ".join(sorted({r.check for r in failed(results)}))
    # One unwrapped line, so that scripts can read the failed checks from it.
    out_console.print(f"{len(results)} checks, {n_fail} failed" + (f": {names}" if n_fail else ""), soft_wrap=True)


@app.command("compare")
def cmd_compare(
    a: Annotated[Path, typer.Argument(help="A results directory (the baseline).")],
    b: Annotated[Optional[Path], typer.Argument(help="A second results directory to compare with A.")] = None,
    methods: Annotated[bool, typer.Option("--methods", help="Direct vs legacy subtraction within A (a --method both run).")] = False,
    on: Annotated[Optional[str], typer.Option(help="Parameters to match cells on, comma-separated (default: automatic).")] = None,
) -> None:
    """Compare direct and legacy timing in one run (--methods), or run B against run A."""
    with _user_errors():
        if methods == (b is not None):
            raise ValueError("give either --methods with one directory, or two directories")
        if methods:
            print_method_comparison(compare_methods(read_results(a)))
        else:
            keys, rows = compare_runs(read_results(a), read_results(b), on=on.split(",") if on else None)
            print_run_comparison(keys, rows, a, b)


def print_method_comparison(result: dict[str, Any]) -> None:
    phases = Table(title="direct vs subtract: medians (ms)", title_justify="left")
    for name in ("phase", "direct", "subtract", "median difference per cell", "cells"):
        phases.add_column(name, justify="left" if name == "phase" else "right")
    for p in result["phases"]:
        phases.add_row(p["phase"], _ms(p["direct_median"]), _ms(p["subtract_median"]), _ms(p["median_difference"]), str(p["cells"]))
    out_console.print(phases)
    zero = Table(title="calls with tokens but no decode time", title_justify="left")
    for name in ("method", "calls", "decode = 0", "negative before clamping"):
        zero.add_column(name, justify="left" if name == "method" else "right")
    for m, z in result["zero_decode"].items():
        zero.add_row(m, str(z["calls_with_tokens"]), _pct(z["decode_zero_share"]), _pct(z["negative_before_clamp_share"]))
    out_console.print(zero)
    corr = Table(title="Spearman rho of per-token latency with output length", title_justify="left")
    for name in ("method", "denominator", "rows", "rho"):
        corr.add_column(name, justify="left" if name in ("method", "denominator") else "right")
    for c in result["correlation"]:
        corr.add_row(c["method"], c["denominator"], str(c["n"]), "-" if c["rho"] is None else f"{c['rho']:+.3f}")
    out_console.print(corr)
    spread = Table(title="measurement spread (median CV over cells)", title_justify="left")
    for name in ("method", "decode CV", "per-token CV"):
        spread.add_column(name, justify="left" if name == "method" else "right")
    for m, s in result["spread"].items():
        spread.add_row(m, _pct(s["decode_cv_median"]), _pct(s["tpot_cv_median"]))
    out_console.print(spread)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def print_run_comparison(keys: list[str], rows: list[Any], a: Path, b: Path) -> None:
    table = Table(title=f"{b} vs {a} (matched on {', '.join(keys) or 'nothing'})", title_justify="left")
    for name in ("cell", "phase", "A ms", "B ms", "B/A", "95% CI", "p", "verdict"):
        table.add_column(name, justify="left" if name in ("cell", "phase", "verdict") else "right")
    for r in rows:
        style = {"faster": "green", "slower": "red"}.get(r.verdict, "dim" if r.verdict == "not significant" else "")
        table.add_row(r.cell, r.phase.removesuffix("_ms"), _ms(r.median_a), _ms(r.median_b),
                      "-" if r.ratio is None else f"{r.ratio:.3f}",
                      "-" if r.ci is None else f"[{r.ci[0]:.3f}, {r.ci[1]:.3f}]",
                      "-" if r.p_value is None else f"{r.p_value:.3g}",
                      f"[{style}]{r.verdict}[/]" if style else r.verdict)
    out_console.print(table)


@app.command("report")
def cmd_report(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="HTML file (default: DIR/report.html).")] = None,
) -> None:
    """Write one self-contained HTML report (tables, plots, checks) of a results directory."""
    with _user_errors():
        table = read_results(results)
        page, figures = build_report(table, _run_info(results), title=f"phasetime report: {results.name}")
        path = output or results / "report.html"
        atomic_write(path, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    out_console.print(f"wrote {path} ({len(figures)} plots)", highlight=False)


@app.command("trace")
def cmd_trace(
    results: Annotated[Path, typer.Argument(help="A results directory.")],
    call: Annotated[Optional[list[int]], typer.Option("--call", help="Call id (repeatable) (default: the first call).")] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Trace JSON file.")] = Path("trace.json"),
) -> None:
    """Export calls as Chrome / Perfetto trace-event JSON (open in ui.perfetto.dev)."""
    with _user_errors():
        document = trace(read_results(results), call)
        write_json(output, document)
    out_console.print(f"wrote {output} ({len(document['traceEvents'])} events)", highlight=False)


@app.command("models")
def cmd_models() -> None:
    """List the built-in models (random weights, no download)."""
    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("architecture")
    for name, doc in models.BUILTIN.items():
        table.add_row(name + (" (default)" if name == models.DEFAULT_MODEL else ""), doc)
    out_console.print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
