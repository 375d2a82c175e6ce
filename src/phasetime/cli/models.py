"""Commands about models: the built-ins, and what phasetime times in a model."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from .app import app, consoles, fail


@app.command("models")
def cmd_models() -> None:
    """List the built-in models (random weights, no download)."""
    from ..experiments import models

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("architecture")
    for name, doc in models.BUILTIN.items():
        table.add_row(name + (" (default)" if name == models.DEFAULT_MODEL else ""), doc)
    consoles.out.print(table)


@app.command("inspect")
def cmd_inspect(
    model: Annotated[str, typer.Argument(help="Built-in name, hub id or local directory.")],
    image: Annotated[Optional[str], typer.Option(help="Image file for the call (default: a generated one).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, float32, float16 or bfloat16.")] = "auto",
    vision: Annotated[Optional[list[str]], typer.Option(help="Module or method path to time as vision (repeatable); found by following the data otherwise.")] = None,
    audio: Annotated[Optional[list[str]], typer.Option(help="Module or method path to time as audio (repeatable).")] = None,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow the model's own code.")] = False,
) -> None:
    """Time one short call and show what phasetime times as media, prefill and decode in MODEL, and why."""
    from ..experiments.models.inspection import inspect_model

    found = inspect_model(model, image=image, device=device, dtype=dtype, vision=vision, audio=audio,
                          trust_remote_code=trust_remote_code)
    out = consoles.out
    out.print(f"[bold]{escape(found.model)}[/]: {found.model_class}, {found.parameters:,} parameters, "
              f"{found.dtype} on {found.device}", highlight=False, soft_wrap=True)
    out.print(f"takes images: {'yes' if found.takes_images else 'no'}; generation mode: {found.generation_mode}",
              highlight=False)
    if found.own_generate:
        out.print(f"own generate(): {escape(found.own_generate)}", highlight=False, soft_wrap=True)
    if not found.media:
        out.print("media timed: nothing" + (" (the model takes no images)" if not found.takes_images else ""),
                  highlight=False)
    else:
        out.print("media timed (each module's outermost calls), and how each was found:", highlight=False)
        for medium, path, how, why in found.media:
            out.print(f"  {medium}: {escape(path)} ({escape(how)}): {escape(why)}", highlight=False, soft_wrap=True)
    if found.language:
        out.print("language model (what runs at every decode step): " + escape(", ".join(found.language)),
                  highlight=False, soft_wrap=True)
    m = found.measurement
    if m is not None:
        out.print(f"vision ran: {escape(found.vision_placement)} ({m.vision_calls} call(s), {m.vision_ms:.2f} ms)",
                  highlight=False, soft_wrap=True)
        out.print(f"prefill: {m.prefill_forwards} forward(s) consuming {m.prompt_tokens} prompt positions, "
                  f"{m.prefill_ms:.2f} ms; decode: {m.decode_steps} forwards for {m.sequences[0].output_tokens} tokens "
                  f"(N - 1), tpot {m.sequences[0].tpot_ms or 0:.2f} ms", highlight=False, soft_wrap=True)
        out.print(f"call: total {m.total_ms:.2f} ms, ttft {m.ttft_ms or 0:.2f} ms, other {m.other_ms:.2f} ms, "
                  f"probe's own time {m.probe_ms or 0:.3f} ms", highlight=False, soft_wrap=True)
    for warning in found.warnings:
        out.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    if found.error:
        out.print(f"[bold red]cannot be timed:[/] {escape(found.error)}", soft_wrap=True)
        raise typer.Exit(1)


@app.command("roof")
def cmd_roof(
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16 (default: the device's usual one).")] = "auto",
    measure: Annotated[bool, typer.Option("--measure", help="Measure this machine (a matmul and a copy) instead of "
                                                            "trusting the datasheet; cached per device.")] = False,
) -> None:
    """The device's peak FLOP/s and memory bandwidth: datasheet figures, or measured here."""
    from ..sensors.roof import DATASHEETS, NoisyRoof, cached_roof, datasheet, device_name, measure_and_cache
    from ..experiments import models

    dev = models.resolve_device(device)
    chosen = str(models.resolve_dtype(dtype, dev)).removeprefix("torch.")
    name = device_name(dev)
    sheet = datasheet(name, chosen) if dev.type == "cuda" else None
    out = consoles.out
    out.print(f"{escape(name)}, {chosen}", highlight=False)
    if sheet is not None:
        out.print(f"datasheet: {sheet.flops_per_s / 1e12:.1f} TFLOP/s, {sheet.bytes_per_s / 1e12:.2f} TB/s "
                  f"({escape(sheet.source.removeprefix('datasheet: '))})", highlight=False, soft_wrap=True)
    found = cached_roof(dev, chosen)
    if measure:
        try:
            found = measure_and_cache(dev, chosen)
        except NoisyRoof as exc:
            fail(f"{exc}; nothing cached")
    if found is not None:
        when = f"{'measured now' if measure else 'cached'}, {found.measured_at or 'date not recorded'}"
        spread = f", rounds within {100 * found.spread:.1f}%" if found.spread is not None else ""
        out.print(f"measured:  {found.flops_per_s / 1e12:.3f} TFLOP/s, {found.bytes_per_s / 1e9:.1f} GB/s "
                  f"(a square matmul, a large copy; {when}{spread}; in ~/.cache/phasetime/roof.json)",
                  highlight=False, soft_wrap=True)
    else:
        out.print("measured:  none cached for this device, dtype and thread count (phasetime roof --measure "
                  "measures it)", highlight=False, soft_wrap=True)
    table = Table(title="datasheet figures phasetime knows (dense, TFLOP/s and TB/s)", title_justify="left")
    for column in ("GPU", "FP32", "TF32", "BF16/FP16", "memory"):
        table.add_column(column, justify="left" if column == "GPU" else "right")
    for s in DATASHEETS:
        f = s.flops
        table.add_row(s.name, f"{f['float32'] / 1e12:g}", f"{f['tf32'] / 1e12:g}" if "tf32" in f else "-",
                      f"{f['bfloat16'] / 1e12:g}", f"{s.bandwidth / 1e12:g}")
    out.print(table)
