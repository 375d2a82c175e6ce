"""The ``phasetime`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import models
from ._experiment import ExperimentError, load_experiment, quick_experiment
from ._export import FORMATS, export
from ._runner import RunError, RunResult, prepare_out_dir, run_experiment
from ._store import StoreError, read_results
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
        table.add_column(name.replace("_", " "))
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
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out, skipping finished cells.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    skip_bad_samples: Annotated[bool, typer.Option(help="Record samples with bad images as failed and go on.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar and no table.")] = False,
    model: Annotated[Optional[str], typer.Option(help=f"Built-in name, hub id or local directory [default: {QUICK_DEFAULTS['model']}].")] = None,
    max_new_tokens: Annotated[Optional[str], typer.Option(help="Output lengths, comma-separated [default: 1,2,4,8,16,32].")] = None,
    min_new_tokens: Annotated[Optional[int], typer.Option(help="[default: equal to max new tokens].")] = None,
    repeats: Annotated[Optional[int], typer.Option(help=f"Measured calls per cell [default: {QUICK_DEFAULTS['repeats']}].")] = None,
    warmup: Annotated[Optional[int], typer.Option(help=f"Unstored warm-up calls per cell [default: {QUICK_DEFAULTS['warmup']}].")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="User prompt (the chat template is applied).")] = None,
    image: Annotated[Optional[Path], typer.Option(help="Image file [default: a generated one].")] = None,
    image_size: Annotated[Optional[int], typer.Option(help=f"Side of the generated image [default: {QUICK_DEFAULTS['image_size']}].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Copies of the prompt per call [default: 1].")] = None,
    method: Annotated[Optional[str], typer.Option(help="direct, subtract (legacy) or both [default: direct].")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, float32, float16 or bfloat16 [default: auto].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights and sampling [default: 0].")] = None,
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
        kwargs = dict(source=experiment, resume=resume, overwrite=overwrite, skip_bad_samples=skip_bad_samples)
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
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output file [default: DIR/export.<format>].")] = None,
    legacy_names: Annotated[bool, typer.Option(help="Add T_total, T_vision_total, ... columns of older scripts.")] = False,
) -> None:
    """Export the measurements of a results directory as CSV, Parquet or JSON lines."""
    try:
        path, rows = export(results, format, output, legacy_names=legacy_names)
    except (StoreError, ValueError) as exc:
        _fail(str(exc))
    out_console.print(f"wrote {rows} rows to {path}", highlight=False)


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
