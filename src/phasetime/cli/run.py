"""``phasetime run``: an experiment file, or one model over output lengths."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Callable, Optional

import typer
from rich.markup import escape

from .app import app, consoles, fail

if TYPE_CHECKING:
    from ..experiments.running.run import RunResult

# The quick path's defaults live in quick_experiment's signature; the help texts below
# repeat them for --help, and a test checks that they agree.
HELP_DEFAULTS = {"model": "tiny-llava", "max_new_tokens": "1,2,4,8,16,32", "repeats": 5, "warmup": 2,
                 "image_size": 336, "threads": "auto"}


def parse_int_list(text: str, name: str) -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``; a one-line error naming the flag for anything else."""
    from ..experiments.plan.checks import RunError

    values = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or len(part) > 9:
            raise RunError(f"{name} takes integers (up to 1,000,000) separated by commas, got {text!r}")
        value = int(part)
        if not 1 <= value <= 1_000_000:
            raise RunError(f"{name} values must be within 1..1000000, got {value}")
        values.append(value)
    return tuple(values)


def _threads(text: str | None) -> int | str | None:
    from ..experiments.plan.checks import RunError

    if text is None or text == "auto":
        return text
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise RunError(f"--threads takes a number of threads (1..1024) or 'auto', got {text!r}")
    return int(text)


@app.command("run")
def cmd_run(
    experiment: Annotated[Optional[Path], typer.Argument(help="An experiment YAML file; without it, the options below.")] = None,
    out: Annotated[Optional[str], typer.Option(help="Results directory (default: results/<experiment name>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue a run in --out: skip finished cells, measure damaged ones again.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace phasetime's files in --out (other files are kept).")] = False,
    skip_bad_samples: Annotated[bool, typer.Option("--skip-bad-samples", help="Record samples with bad images as failed and go on.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress and no table.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Run a sweep beyond 10,000 cells or 200,000 calls (refused otherwise).")] = False,
    nvtx: Annotated[bool, typer.Option("--nvtx", help="Wrap every phase and decode step in an NVTX range (CUDA).")] = False,
    profile: Annotated[bool, typer.Option("--profile", help="After each cell's timed calls, profile extra calls with torch.profiler: operators (and CUDA kernels) per phase, in profiles.parquet (never timed rows).")] = False,
    profile_calls: Annotated[int, typer.Option(help="Profiled calls per cell with --profile.", min=1, max=100)] = 1,
    threads: Annotated[Optional[str], typer.Option(help="torch intra-op threads, or 'auto': 1 on CPU, torch's default on CUDA (default: auto, or the file's).")] = None,
    executor: Annotated[Optional[str], typer.Option(help="Where cells run: local or ray (default: local, or the file's).")] = None,
    address: Annotated[Optional[str], typer.Option(help="Ray cluster address (e.g. auto); without it Ray starts one here.")] = None,
    backend: Annotated[Optional[str], typer.Option(help="The engine: hf (generate()), vllm (needs scripts/setup-vllm.sh's environment) or vllm-server (needs a load: section in the file) (default: hf, or the file's).")] = None,
    order: Annotated[Optional[str], typer.Option(help="Order of the calls: shuffled (cells in a seeded random order), grid, or interleaved (also each cell's repeats spread over its block of cells: steadier cell medians on a noisy machine) (default: shuffled, or the file's).")] = None,
    memory: Annotated[bool, typer.Option("--memory", help="Also record peak memory per phase, the KV cache and the weights.")] = False,
    cost: Annotated[bool, typer.Option("--cost", help="Also count FLOPs and bytes per phase (a replay) against the device's roof.")] = False,
    energy: Annotated[bool, typer.Option("--energy", help="Also read the GPU's energy per phase (NVML; syncs at phase boundaries).")] = False,
    model: Annotated[Optional[str], typer.Option(help=f"Built-in name, hub id or local directory (default: {HELP_DEFAULTS['model']}).")] = None,
    max_new_tokens: Annotated[Optional[str], typer.Option(help=f"Output lengths, comma-separated (default: {HELP_DEFAULTS['max_new_tokens']}).")] = None,
    min_new_tokens: Annotated[Optional[int], typer.Option(help="(default: equal to max new tokens)")] = None,
    repeats: Annotated[Optional[int], typer.Option(help=f"Measured calls per cell (default: {HELP_DEFAULTS['repeats']}).")] = None,
    warmup: Annotated[Optional[int], typer.Option(help=f"Unstored warm-up calls per cell (default: {HELP_DEFAULTS['warmup']}).")] = None,
    prompt: Annotated[Optional[str], typer.Option(help="User prompt (the chat template is applied).")] = None,
    image: Annotated[Optional[str], typer.Option(help="Image file (default: a generated one).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help=f"Side of the generated image (default: {HELP_DEFAULTS['image_size']}).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Copies of the prompt per call (default: 1).")] = None,
    method: Annotated[Optional[str], typer.Option(help="direct, subtract (legacy) or both (default: direct).")] = None,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N (default: auto).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="auto, float32, float16 or bfloat16 (default: auto).")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for weights and sampling (default: 0).")] = None,
    draft: Annotated[Optional[str], typer.Option(help="Assisted decoding with this draft model (e.g. tiny-llava-draft).")] = None,
    num_assistant_tokens: Annotated[Optional[int], typer.Option(help="Candidates the draft proposes per round, to start with.")] = None,
    prompt_lookup: Annotated[Optional[int], typer.Option(help="Prompt lookup decoding: candidates per round (prompt_lookup_num_tokens).")] = None,
    num_beams: Annotated[Optional[int], typer.Option(help="Beam search with this many beams.")] = None,
) -> None:
    """Measure every phase of generate(): an experiment file, or one model over output lengths."""
    quick = {
        "model": model, "max_new_tokens": max_new_tokens, "min_new_tokens": min_new_tokens, "repeats": repeats,
        "warmup": warmup, "prompt": prompt, "image": image, "image_size": image_size, "batch_size": batch_size,
        "method": method, "device": device, "dtype": dtype, "seed": seed, "draft": draft,
        "num_assistant_tokens": num_assistant_tokens, "prompt_lookup": prompt_lookup, "num_beams": num_beams,
    }
    given = _given(quick, experiment)
    overrides = {"threads": _threads(threads), "executor": executor, "address": address, "backend": backend, "order": order,
                 "resources": {k: True for k, on in (("memory", memory), ("cost", cost), ("energy", energy)) if on}}
    from ..experiments.running.conditions import apply_threads

    if isinstance(overrides["threads"], int):
        apply_threads(overrides["threads"])  # before torch is imported, so OpenMP starts with them
    exp = _experiment(experiment, given, overrides)
    out_dir = out if out is not None else str(Path("results") / exp.name)
    from ..experiments.running.run import run_experiment

    kwargs: dict[str, Any] = dict(source=experiment, resume=resume, overwrite=overwrite,
                                  skip_bad_samples=skip_bad_samples, nvtx=nvtx, yes=yes,
                                  profile=profile_calls if profile else 0)
    if quiet:
        result = run_experiment(exp, out_dir, **kwargs)
    elif consoles.err.is_terminal:
        result = _run_with_bar(exp, out_dir, kwargs)
    else:
        result = run_experiment(exp, out_dir, progress=_line_progress(), **kwargs)
    _report_run(result, exp.name, quiet, exp.load.slo.model_dump() if exp.load is not None else None)


def _given(quick: dict[str, Any], experiment: Path | None) -> dict[str, Any]:
    """The quick options given, checked (they apply only without an experiment file)."""
    from ..experiments.plan.checks import RunError

    given: dict[str, Any] = {k: v for k, v in quick.items() if v is not None}
    if experiment is not None and given:
        raise RunError(f"--{next(iter(given)).replace('_', '-')} applies only without an experiment file")
    if "max_new_tokens" in given:
        given["max_new_tokens"] = parse_int_list(given["max_new_tokens"], "--max-new-tokens")
    if "image" in given and "image_size" in given:
        raise RunError("--image-size sizes the generated image: with --image it does nothing")
    return given


def _experiment(file: Path | None, given: dict[str, Any], overrides: dict[str, Any]) -> Any:
    from ..experiments.plan.quick import quick_experiment
    from ..experiments.plan.spec import load_experiment, parse_experiment

    if file is None:
        quick_args = {**given, **{k: v for k, v in overrides.items() if v is not None and k != "resources"},
                      **overrides["resources"]}
        return quick_experiment(**quick_args)
    exp = load_experiment(file)
    if all(not v for v in overrides.values()):
        return exp
    data = exp.model_dump(mode="json")
    data["resources"] = {**data["resources"], **overrides["resources"]}
    for key in ("threads", "backend", "order"):
        if overrides[key] is not None:
            data[key] = overrides[key]
    if overrides["executor"] is not None or overrides["address"] is not None:
        data["executor"] = {**data["executor"], **{k: v for k, v in (("kind", overrides["executor"]),
                                                                    ("address", overrides["address"])) if v is not None}}
    return parse_experiment(data, "options")


def _report_run(result: "RunResult", name: str, quiet: bool, slo: dict[str, Any] | None = None) -> None:
    from ..results.files import StoreError

    for line in result.repaired:
        consoles.err.print(f"set aside: {escape(line)}", highlight=False, soft_wrap=True)
    for note in result.notes:
        consoles.err.print(f"note: {escape(note)}", highlight=False, soft_wrap=True)
    if not quiet and result.rows + result.skipped > 0:
        from ..analysis.summary import summarize
        from ..results.reader import read
        from .output import print_summary

        try:
            table = read(result.out_dir)
            print_summary(summarize(table), f"{name}: {result.cells} cells")
            if "rate" in table.column_names and table.column("rate").null_count < table.num_rows:
                from ..analysis.load import levels
                from .output import print_levels

                print_levels(levels(table, slo), f"{name}: per rate level")
        except StoreError:
            pass  # nothing stored yet (every cell failed, or interrupted in the first cell)
    by_error: dict[str, list[int]] = {}
    for index, error in sorted(result.errors.items()):
        by_error.setdefault(error, []).append(index)
    for error, cells in by_error.items():  # cells that failed alike (a model that did not load): one line
        which = f"cell {cells[0]}" if len(cells) == 1 else f"{len(cells)} cells ({', '.join(map(str, cells[:8]))}" + \
            (", ...)" if len(cells) > 8 else ")")
        consoles.err.print(f"{which} failed: {escape(error)}", highlight=False, soft_wrap=True)
    if result.warnings:
        consoles.err.print(f"[yellow]stability: {len(result.warnings)} warning(s)[/] (phasetime check "
                           f"{escape(str(result.out_dir))} judges them):", soft_wrap=True)
        for warning in result.warnings[:10]:
            consoles.err.print(f"  {escape(warning)}", highlight=False, soft_wrap=True)
    parts = [f"{result.done} cells done", f"{result.failed} failed"]
    if result.skipped:
        parts.append(f"{result.skipped} already done")
    if result.failed_samples:
        parts.append(f"{len(result.failed_samples)} bad samples skipped")
    consoles.out.print(f"{', '.join(parts)}; {result.calls} measured calls, {result.rows} rows in {result.out_dir}",
                       highlight=False, soft_wrap=True)
    if result.profiled:
        consoles.out.print(f"{result.profiled} profiled calls, apart from the timed ones: phasetime ops {result.out_dir}",
                           highlight=False, soft_wrap=True)
    if result.interrupted:
        fail(f"interrupted; continue with: phasetime run ... --out {result.out_dir} --resume", code=130)
    if result.failed:
        raise typer.Exit(1)


def _line_progress() -> Callable[[str, dict[str, Any]], None]:
    """Without a terminal: one line per cell (and per model load, repair, warning) on stderr."""
    state = {"done": 0, "total": 0, "start": time.monotonic()}

    def on_event(event: str, info: dict[str, Any]) -> None:
        err = consoles.err
        if event == "plan":
            state["total"] = info["cells"]
            err.print(f"{info['cells']} cells to run" + (f", {info['skipped']} already done" if info["skipped"] else ""),
                      highlight=False)
        elif event == "load":
            err.print(f"loading {escape(info['model'])}", highlight=False)
        elif event == "cell":
            state["done"] += 1
            status = info["status"] + (f": {info['error']}" if info.get("error") else "")
            elapsed = time.monotonic() - state["start"]
            err.print(f"cell {state['done']}/{state['total']} (#{info['cell']}) {escape(status)} [{elapsed:.0f} s]",
                      highlight=False, soft_wrap=True)
            for warning in info.get("warnings") or []:
                err.print(f"  warning: {escape(warning)}", highlight=False, soft_wrap=True)
        elif event == "note":
            err.print(f"note: {escape(info['text'])}", highlight=False, soft_wrap=True)

    return on_event


def _run_with_bar(exp: Any, out_dir: str, kwargs: dict[str, Any]) -> "RunResult":
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ..experiments.running.run import run_experiment

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, console=consoles.err, transient=True) as progress:
        cells = progress.add_task("cells", total=None)
        calls = progress.add_task("calls", total=None)

        def on_event(event: str, info: dict[str, Any]) -> None:
            if event == "plan":
                progress.update(cells, total=info["cells"])
                progress.update(calls, total=info["calls"])  # warm-up included; over the run, not per cell
            elif event == "load":
                progress.update(cells, description=f"cells ({escape(info['model'])})")
            elif event == "call":
                progress.update(calls, advance=1)
            elif event == "cell":
                progress.update(cells, advance=1)
                for warning in info.get("warnings") or []:
                    progress.console.print(f"[yellow]warning[/] {escape(warning)}", highlight=False)

        return run_experiment(exp, out_dir, progress=on_event, **kwargs)
