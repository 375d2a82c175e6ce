"""The ``phasetime`` command line: each command parses, calls one library function, prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from . import models
from ._runner import RunError, RunSpec, prepare_out_dir, run
from ._store import StoreError, read_table
from ._summary import SUMMARY_PHASES, summarize

app = typer.Typer(
    help="Direct, phase-by-phase latency of Hugging Face generate() calls.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)
out_console = Console()
err_console = Console(stderr=True)
_DEFAULTS = RunSpec()


def _fail(message: str, code: int = 2) -> None:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    table = Table(title=title, title_justify="left", caption_justify="left")
    table.add_column("method")
    for name in ("N", "B", "n"):
        table.add_column(name, justify="right")
    for phase in SUMMARY_PHASES:
        table.add_column(phase.removesuffix("_ms"), justify="right")
    for cell in summary:
        table.add_row(
            str(cell.get("method")),
            _count(cell.get("output_tokens")),
            _count(cell.get("batch_size")),
            _count(cell["n"]),
            *(_ms(cell[f"{p}_median"]) for p in SUMMARY_PHASES),
        )
    table.caption = "median ms per cell of n rows (N output tokens, batch B); tpot = decode / (N - 1), '-' where N < 2 or not measured"
    out_console.print(table)


@app.command("run")
def cmd_run(
    model: Annotated[str, typer.Option(help="Built-in name, hub id or local directory.")] = _DEFAULTS.model,
    max_new_tokens: Annotated[str, typer.Option(help="Output lengths, comma-separated.")] = ",".join(
        map(str, _DEFAULTS.max_new_tokens)
    ),
    min_new_tokens: Annotated[Optional[int], typer.Option(help="Default: equal to max new tokens.")] = None,
    repeats: Annotated[int, typer.Option(help="Measured calls per cell.")] = _DEFAULTS.repeats,
    warmup: Annotated[int, typer.Option(help="Unstored warm-up calls per cell.")] = _DEFAULTS.warmup,
    out: Annotated[Path, typer.Option(help="Results directory.")] = Path("results/run"),
    prompt: Annotated[str, typer.Option(help="User prompt (the chat template is applied).")] = _DEFAULTS.prompt,
    image: Annotated[Optional[Path], typer.Option(help="Image file; default: a generated one.")] = None,
    image_size: Annotated[int, typer.Option(help="Side of the generated image, pixels.")] = _DEFAULTS.image_size,
    batch_size: Annotated[int, typer.Option(help="Copies of the prompt per call.")] = _DEFAULTS.batch_size,
    method: Annotated[str, typer.Option(help="direct, subtract (legacy) or both.")] = "direct",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = _DEFAULTS.device,
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16.")] = _DEFAULTS.dtype,
    seed: Annotated[int, typer.Option(help="Seed for weights and sampling.")] = _DEFAULTS.seed,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress bar and no table.")] = False,
) -> None:
    """Measure every phase of generate() over output lengths; write Parquet + run.json."""
    try:
        spec = RunSpec(
            model=model,
            max_new_tokens=parse_int_list(max_new_tokens, "--max-new-tokens"),
            min_new_tokens=min_new_tokens,
            repeats=repeats,
            warmup=warmup,
            prompt=prompt,
            image=str(image) if image is not None else None,
            image_size=image_size,
            batch_size=batch_size,
            methods=("direct", "subtract") if method == "both" else (method,),
            device=device,
            dtype=dtype,
            seed=seed,
        )
        prepare_out_dir(out, overwrite)  # fail before the progress bar starts
        if quiet:
            result = run(spec, out, overwrite=overwrite)
        else:
            result = _run_with_progress(spec, out, overwrite)
    except (RunError, StoreError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _fail("interrupted; nothing was written", code=130)
    if not quiet:
        print_summary(summarize(read_table(result.out_dir)), f"{spec.model}: {result.calls} calls")
    out_console.print(f"wrote {result.rows} rows to {result.out_dir}", highlight=False)


def _run_with_progress(spec: RunSpec, out: Path, overwrite: bool) -> Any:
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"loading {spec.model}", total=spec.total_calls)

        def on_call(description: str) -> None:
            progress.update(task, advance=1, description=description)

        return run(spec, out, overwrite=overwrite, on_call=on_call)


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
