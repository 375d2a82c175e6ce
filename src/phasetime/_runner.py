"""Running a latency sweep: one model, a list of output lengths, repeats and warm-up.

:class:`RunSpec` holds every option with its default (the CLI takes its defaults from
here). :func:`run` validates the spec and the output directory before loading anything,
measures every (method, output length) cell, and writes the results directory in one
piece: it is assembled in a hidden sibling directory and renamed into place at the end,
so an error or Ctrl-C leaves no half-written results behind.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from . import models
from ._env import environment
from ._inputs import DEFAULT_PROMPT, build_inputs, load_image, synthetic_image
from ._measure import measure
from ._record import METHODS, Measurement
from ._store import _umask, MEASUREMENTS_FILE, RUN_FILE, SCHEMA_VERSION, measurement_rows, rows_to_table, write_json, write_table


class RunError(ValueError):
    """Bad input to a run: reported as one line, before anything is written."""


@dataclass(frozen=True)
class RunSpec:
    """Everything a latency sweep needs; the defaults are phasetime's defaults."""

    model: str = models.DEFAULT_MODEL
    max_new_tokens: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
    min_new_tokens: int | None = None  # None: equal to max_new_tokens, so lengths are what was asked
    repeats: int = 5
    warmup: int = 2
    prompt: str = DEFAULT_PROMPT
    image: str | None = None
    image_size: int = 336
    batch_size: int = 1
    methods: tuple[str, ...] = ("direct",)
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    generate_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.max_new_tokens:
            raise RunError("max_new_tokens needs at least one value")
        for n in self.max_new_tokens:
            if not isinstance(n, int) or n < 1:
                raise RunError(f"max_new_tokens values must be integers >= 1, got {n!r}")
        if self.min_new_tokens is not None and self.min_new_tokens < 0:
            raise RunError(f"min_new_tokens must be >= 0, got {self.min_new_tokens}")
        if self.repeats < 1:
            raise RunError(f"repeats must be >= 1, got {self.repeats}")
        if self.warmup < 0:
            raise RunError(f"warmup must be >= 0, got {self.warmup}")
        if self.batch_size < 1:
            raise RunError(f"batch size must be >= 1, got {self.batch_size}")
        if self.image_size < 1:
            raise RunError(f"image size must be >= 1, got {self.image_size}")
        for method in self.methods:
            if method not in METHODS:
                raise RunError(f"unknown method {method!r} (choose from direct, subtract, both)")

    @property
    def total_calls(self) -> int:
        """Measured plus warm-up calls, for progress reporting."""
        return len(self.max_new_tokens) * len(self.methods) * (self.repeats + self.warmup)


@dataclass(frozen=True)
class RunResult:
    out_dir: Path
    rows: int
    calls: int


def prepare_out_dir(out: str | Path, overwrite: bool) -> Path:
    """Check ``out`` is usable: absent, empty, or (with ``overwrite``) replaceable."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise RunError(f"--out {path} exists and is not empty (pass --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {path.parent}: {exc}") from exc
    return path


def _generate_kwargs(spec: RunSpec, n: int) -> dict[str, Any]:
    kwargs = {"max_new_tokens": n, "min_new_tokens": n if spec.min_new_tokens is None else min(spec.min_new_tokens, n)}
    kwargs.update(spec.generate_kwargs)
    return kwargs


def run(
    spec: RunSpec,
    out: str | Path,
    *,
    overwrite: bool = False,
    on_call: Callable[[str], None] | None = None,
) -> RunResult:
    """Measure every cell of ``spec`` and write ``out/measurements.parquet`` and ``out/run.json``.

    ``on_call(description)`` is called after every call (warm-up included), for progress.
    """
    # 1. Validate everything that can be checked before loading the model.
    out_dir = prepare_out_dir(out, overwrite)
    image = None
    try:
        device = models.resolve_device(spec.device)
        models.resolve_dtype(spec.dtype, device)
    except models.ModelLoadError as exc:
        raise RunError(str(exc)) from None
    if spec.image is not None:
        try:
            image = load_image(spec.image)
        except ValueError as exc:
            raise RunError(str(exc)) from None

    # 2. Model and inputs.
    try:
        model, processor = models.load(spec.model, device=device, dtype=spec.dtype, seed=spec.seed)
    except models.ModelLoadError as exc:
        raise RunError(str(exc)) from None
    vlm = models.is_vision_language(processor)
    if vlm and image is None:
        image = synthetic_image(spec.image_size, spec.seed)
    if not vlm and spec.image is not None:
        raise RunError(f"model {spec.model!r} takes no images; drop --image")
    inputs = build_inputs(processor, spec.prompt, [image] if vlm else [], batch_size=spec.batch_size, device=device)

    # 3. Measure: per cell, warm-up calls (never stored), then the repeats.
    params = {
        "model": spec.model,
        "device": str(device),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "image_width": image.size[0] if vlm else None,
        "image_height": image.size[1] if vlm else None,
    }
    rows: list[dict[str, Any]] = []
    call_id = 0
    torch.manual_seed(spec.seed)
    for n in spec.max_new_tokens:
        kwargs = _generate_kwargs(spec, n)
        cell = {**params, "max_new_tokens": n, "min_new_tokens": kwargs["min_new_tokens"]}
        for method in spec.methods:
            for _ in range(spec.warmup):
                measure(model, inputs, method=method, **kwargs)
                if on_call:
                    on_call(f"{method} N={n} warm-up")
            for repeat in range(spec.repeats):
                m: Measurement = measure(model, inputs, method=method, **kwargs)
                rows.extend(measurement_rows(m, call_id=call_id, repeat=repeat, params=cell))
                call_id += 1
                if on_call:
                    on_call(f"{method} N={n}")

    # 4. Write the directory in one piece.
    run_info = {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "arguments": {**asdict(spec), "max_new_tokens": list(spec.max_new_tokens), "methods": list(spec.methods)},
        "environment": environment(device),
        "inputs": {"prompt_tokens": int(inputs["input_ids"].shape[1]), "vision_language": vlm},
    }
    _publish(out_dir, rows, run_info)
    return RunResult(out_dir=out_dir, rows=len(rows), calls=call_id)


def _publish(out_dir: Path, rows: list[dict[str, Any]], run_info: dict[str, Any]) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        staging.chmod(0o777 & ~_umask())  # mkdtemp creates 0700
        write_table(staging / MEASUREMENTS_FILE, rows_to_table(rows))
        write_json(staging / RUN_FILE, run_info)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
