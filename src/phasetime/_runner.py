"""The runner: every experiment (a quick ``phasetime run --model`` included) goes through here.

For each cell of the grid (``_experiment.expand``) it loads the model (once per model,
dtype and attention implementation), makes warm-up calls that are never stored, then
measures every sample x repeat with :func:`phasetime.measure`, decodes and scores the
answers, and stores the cell's rows atomically (``_store.write_cell``). A cell that fails
(out of memory, a model error) is recorded as failed and the run goes on; Ctrl-C stops
after the current call; ``resume=True`` skips finished cells. When every cell has been
tried the parts are merged into ``measurements.parquet``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import random
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from PIL import Image

from . import models
from ._datasets import BadSample, DatasetError, Sample, format_question, load_hf, load_llava, load_manifest, synthetic_vqa, take
from ._env import environment
from ._experiment import Cell, DatasetInputs, Experiment, expand
from ._inputs import chat_prompt, encode, synthetic_image
from ._measure import measure
from ._probe import _Nvtx, _sequences_tensor
from ._scoring import score
from ._store import (
    RUN_FILE, SCHEMA_VERSION, consolidate, measurement_rows, read_cell_records, read_run, write_cell, write_json,
)


CALL_ID_STRIDE = 1_000_000  # call ids are cell * stride + the call's number within the cell


class RunError(ValueError):
    """Bad input to a run: reported as one line, before anything is written."""


@dataclass
class RunResult:
    """What a run did; ``interrupted`` when Ctrl-C stopped it (resume with ``resume=True``)."""

    out_dir: Path
    cells: int
    skipped: int = 0
    done: int = 0
    failed: int = 0
    rows: int = 0
    calls: int = 0
    failed_samples: list[str] = field(default_factory=list)
    interrupted: bool = False
    errors: dict[int, str] = field(default_factory=dict)


ProgressFn = Callable[[str, dict[str, Any]], None]


# --- output directory ------------------------------------------------------------------------
def prepare_out_dir(out: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """Check ``out`` is usable: absent, empty, resumable (``resume``) or replaceable (``overwrite``)."""
    path = Path(out)
    if overwrite and resume:
        raise RunError("--overwrite and --resume exclude each other")
    if path.exists() and not path.is_dir():
        raise RunError(f"--out {path} exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not (overwrite or resume):
        raise RunError(f"--out {path} exists and is not empty (pass --resume to continue it or --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunError(f"cannot create {path.parent}: {exc}") from exc
    return path


def _git_revision(directory: Path | None) -> dict[str, Any] | None:
    if directory is None:
        return None
    try:
        rev = subprocess.run(
            ["git", "-C", str(directory), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(directory), "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"revision": rev, "dirty": bool(dirty)}


# --- samples ----------------------------------------------------------------------------------
def load_samples(experiment: Experiment) -> list[Sample]:
    """The experiment's samples (for synthetic inputs: the one prompt)."""
    inputs = experiment.inputs
    if not isinstance(inputs, DatasetInputs):
        if inputs.image is not None:
            images: tuple[Any, ...] = (inputs.image,) * inputs.images
        else:
            images = (synthetic_image(inputs.image_size, experiment.seed),) * inputs.images
        return [Sample(id="synthetic", question=inputs.prompt, images=images)]
    try:
        if inputs.kind == "manifest":
            samples = load_manifest(inputs.path)
        elif inputs.kind == "llava":
            samples = load_llava(inputs.path, inputs.answers, inputs.image_folder)
        elif inputs.kind == "hf":
            samples = load_hf(inputs.path, inputs.columns, inputs.split)
        else:
            samples = synthetic_vqa(
                inputs.samples, seed=experiment.seed, image_size=inputs.image_size, multiple_choice=inputs.multiple_choice
            )
    except DatasetError as exc:
        raise RunError(str(exc)) from None
    samples = take(samples, inputs.limit)
    if not samples:
        raise RunError("the data set has no samples")
    if experiment.metric is not None:
        missing = [s.id for s in samples if not s.answers]
        if missing:
            raise RunError(f"metric {experiment.metric!r} needs answers; sample {missing[0]!r} has none")
        if experiment.metric == "multiple_choice":
            no_choices = [s.id for s in samples if not s.choices]
            if no_choices:
                raise RunError(f"multiple_choice needs choices; sample {no_choices[0]!r} has none")
    return samples


def check_images(samples: Sequence[Sample]) -> list[tuple[Sample, str]]:
    """(sample, reason) for every sample with a missing or unreadable image file."""
    bad = []
    for sample in samples:
        for image in sample.images:
            if isinstance(image, Image.Image):
                continue
            try:
                with Image.open(image) as img:
                    img.verify()
            except FileNotFoundError:
                bad.append((sample, f"image not found: {image}"))
                break
            except Exception as exc:  # PIL raises many types for corrupt files
                bad.append((sample, f"cannot read image {image}: {exc}"))
                break
    return bad


# --- one batch -------------------------------------------------------------------------------
@contextlib.contextmanager
def resolution(processor: Any, cell: Cell) -> Iterator[None]:
    """Temporarily cap the pixels of a dynamic-resolution image processor (Qwen2-VL style)."""
    max_pixels = cell.params["max_pixels"]
    tokens = cell.params["max_visual_tokens"]
    if max_pixels is None and tokens is None:
        yield
        return
    ip = getattr(processor, "image_processor", None)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    size = getattr(ip, "size", None)
    if patch is None or merge is None or size is None or not hasattr(size, "longest_edge") and not isinstance(size, dict):
        raise RunError("max_pixels / max_visual_tokens need a dynamic-resolution image processor (e.g. Qwen2-VL)")
    if tokens is not None:
        max_pixels = tokens * (patch * merge) ** 2
    # size holds the pixel budget: longest_edge = max pixels, shortest_edge = min pixels.
    if isinstance(size, dict):
        shortest = min(size.get("shortest_edge") or max_pixels, max_pixels)
        ip.size = {**size, "longest_edge": max_pixels, "shortest_edge": shortest}
    else:  # transformers' SizeDict, a dataclass
        shortest = min(size.shortest_edge or max_pixels, max_pixels)
        ip.size = dataclasses.replace(size, longest_edge=max_pixels, shortest_edge=shortest)
    try:
        yield
    finally:
        ip.size = size


def _resize(image: Image.Image, longer_side: int | None) -> Image.Image:
    if longer_side is None:
        return image
    w, h = image.size
    scale = longer_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BICUBIC)


@dataclass
class Batch:
    samples: list[Sample]
    inputs: dict[str, Any]
    extras: list[dict[str, Any]]  # per-sample row fields, preprocess_ms included


def _image_token_ids(processor: Any, model: torch.nn.Module) -> set[int]:
    ids = set()
    for owner in (processor, getattr(model, "config", None)):
        for name in ("image_token_id", "video_token_id", "image_token_index"):
            value = getattr(owner, name, None)
            if isinstance(value, int):
                ids.add(value)
    return ids


def prepare_batch(
    samples: list[Sample], images: list[list[Image.Image]], processor: Any, model: torch.nn.Module,
    experiment: Experiment, cell: Cell, device: torch.device,
) -> Batch:
    """Run the processor on a batch (timed: ``preprocess_ms``) and collect per-sample fields."""
    texts = [chat_prompt(processor, format_question(s, experiment.prompt.pre, experiment.prompt.post), len(imgs))
             for s, imgs in zip(samples, images)]
    start = time.perf_counter_ns()
    with resolution(processor, cell):
        inputs = encode(processor, texts, images, device)
    preprocess_ms = (time.perf_counter_ns() - start) / 1e6
    token_ids = _image_token_ids(processor, model)
    ids = inputs["input_ids"]
    visual = torch.isin(ids, torch.tensor(sorted(token_ids), device=ids.device)).sum(1).tolist() if token_ids else [0] * len(samples)
    extras = []
    for sample, imgs, n_visual in zip(samples, images, visual):
        extras.append({
            "sample_id": sample.id,
            "category": sample.category,
            "n_images": len(imgs),
            "image_width": imgs[0].size[0] if imgs else None,
            "image_height": imgs[0].size[1] if imgs else None,
            "visual_tokens": int(n_visual),
            "preprocess_ms": preprocess_ms,
        })
    return Batch(samples, inputs, extras)


# --- the run ---------------------------------------------------------------------------------
class _StopFlag:
    """Set by Ctrl-C (SIGINT): the run stops after the current call."""

    def __init__(self) -> None:
        self.set = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.set:  # a second Ctrl-C: stop now
                raise KeyboardInterrupt
            self.set = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)


class _Interrupted(Exception):
    pass


def _run_info(experiment: Experiment, source: Path | None, device: torch.device, n_cells: int) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "experiment": experiment.model_dump(mode="json"),
        "experiment_file": str(source) if source is not None else None,
        "git": _git_revision(source.parent if source is not None else None),
        "environment": environment(device),
        "cells": n_cells,
    }


def run_experiment(
    experiment: Experiment,
    out: str | Path,
    *,
    source: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    skip_bad_samples: bool = False,
    nvtx: bool = False,
    progress: ProgressFn | None = None,
) -> RunResult:
    """Run every cell of ``experiment`` into the results directory ``out``; see the module docstring."""
    notify = progress or (lambda event, info: None)
    # 1. Everything that can be checked before a model loads.
    out_dir = prepare_out_dir(out, overwrite=overwrite, resume=resume)
    cells = expand(experiment)
    for spec in experiment.models:
        try:
            models.check_name(spec.name)
            models.resolve_dtype(spec.dtype, models.resolve_device(spec.device))
        except models.ModelLoadError as exc:
            raise RunError(str(exc)) from None
    if nvtx:
        try:
            _Nvtx()
        except ValueError as exc:
            raise RunError(str(exc)) from None
    samples = load_samples(experiment)
    bad = check_images(samples)
    if bad and not skip_bad_samples:
        sample, reason = bad[0]
        raise RunError(f"sample {sample.id!r}: {reason} (pass --skip-bad-samples to record it as failed and go on)")
    bad_ids = {s.id for s, _ in bad}
    samples = [s for s in samples if s.id not in bad_ids]
    if not samples:
        raise RunError("every sample is bad")
    device = models.resolve_device(experiment.models[0].device)

    # 2. The directory: run.json first, so a killed run can always be resumed.
    records: dict[int, dict[str, Any]] = {}
    if resume and (out_dir / RUN_FILE).exists():
        saved = read_run(out_dir)
        if saved.get("experiment") != experiment.model_dump(mode="json"):
            raise RunError(f"the experiment differs from the one in {out_dir / RUN_FILE}; use a new --out or --overwrite")
        records = read_cell_records(out_dir)
    else:
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.mkdir(parents=True)
        info = _run_info(experiment, source, device, len(cells))
        info["failed_samples"] = [{"sample_id": s.id, "error": reason} for s, reason in bad]
        write_json(out_dir / RUN_FILE, info)

    result = RunResult(out_dir=out_dir, cells=len(cells), failed_samples=sorted(bad_ids))
    todo = execution_order([c for c in cells if records.get(c.index, {}).get("status") != "done"], experiment)
    result.skipped = len(cells) - len(todo)
    batches = _batches(samples, experiment)
    notify("plan", {"cells": len(todo), "calls_per_cell": _calls_per_cell(experiment, batches), "skipped": result.skipped})

    # 3. The cells, grouped by the model they load.
    stop = _StopFlag()
    with stop.installed():
        try:
            for load_key in dict.fromkeys(c.load_key for c in todo):
                group = [c for c in todo if c.load_key == load_key]
                _run_group(group, experiment, batches, out_dir, result, stop, notify, skip_bad_samples, nvtx)
        except _Interrupted:
            result.interrupted = True
    if not result.interrupted:
        consolidate(out_dir)
    return result


def execution_order(cells: list[Cell], experiment: Experiment) -> list[Cell]:
    """Cells grouped by loaded model (grid order of models); within a model, shuffled with
    the experiment's seed unless ``order: grid``."""
    if experiment.order == "grid":
        return cells
    rng = random.Random(experiment.seed)
    out = []
    for load_key in dict.fromkeys(c.load_key for c in cells):
        group = [c for c in cells if c.load_key == load_key]
        rng.shuffle(group)
        out.extend(group)
    return out


def _batches(samples: list[Sample], experiment: Experiment) -> dict[int, list[list[Sample]]]:
    """Samples grouped into batches, per batch size. Synthetic input repeats its one prompt."""
    out = {}
    for size in experiment.sweep.batch_size:
        if isinstance(experiment.inputs, DatasetInputs):
            out[size] = [samples[i:i + size] for i in range(0, len(samples), size)]
        else:
            out[size] = [samples * size]
    return out


def _calls_per_cell(experiment: Experiment, batches: dict[int, list[list[Sample]]]) -> dict[int, int]:
    return {size: experiment.warmup + experiment.repeats * len(b) for size, b in batches.items()}


def _run_group(
    group: list[Cell], experiment: Experiment, batches: dict[int, list[list[Sample]]], out_dir: Path,
    result: RunResult, stop: _StopFlag, notify: ProgressFn, skip_bad_samples: bool, nvtx: bool,
) -> None:
    first = group[0]
    notify("load", {"model": first.model.name, "dtype": first.params["dtype"]})
    try:
        model, processor = models.load(
            first.model.name, device=first.model.device, dtype=first.params["dtype"],
            trust_remote_code=first.model.trust_remote_code, attn_implementation=first.params["attn_implementation"],
            seed=experiment.seed,
        )
    except Exception as exc:  # every cell of this model fails with the same error
        for cell in group:
            _fail_cell(out_dir, cell, f"loading the model failed: {_describe(exc)}", result, notify)
        return
    device = next(model.parameters()).device
    vlm = models.is_vision_language(processor)
    for cell in group:
        try:
            rows, failed = _run_cell(cell, model, processor, vlm, device, experiment, batches, result, stop, notify,
                                     skip_bad_samples, nvtx)
        except _Interrupted:
            raise
        except BadSample as exc:
            raise RunError(f"{exc} (pass --skip-bad-samples to record it as failed and go on)") from None
        except Exception as exc:  # out of memory, a model error, an unsupported mode: the run goes on
            if device.type == "cuda":
                torch.cuda.empty_cache()
            _fail_cell(out_dir, cell, _describe(exc), result, notify)
            continue
        write_cell(out_dir, cell.index, rows, {"status": "done", "key": cell.key, "params": cell.params,
                                               "failed_samples": failed})
        result.done += 1
        result.rows += len(rows)
        notify("cell", {"cell": cell.index, "status": "done"})
    del model  # free the device before the next model loads
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _fail_cell(out_dir: Path, cell: Cell, error: str, result: RunResult, notify: ProgressFn) -> None:
    write_cell(out_dir, cell.index, [], {"status": "failed", "key": cell.key, "params": cell.params, "error": error})
    result.failed += 1
    result.errors[cell.index] = error
    notify("cell", {"cell": cell.index, "status": "failed", "error": error})


def _cell_images(batch: list[Sample], cell: Cell, vlm: bool, failed: list[dict[str, str]], skip: bool) -> tuple[list[Sample], list[list[Image.Image]]]:
    kept, images = [], []
    for sample in batch:
        try:
            loaded = [_resize(img, cell.params["image_size"]) for img in sample.load_images()] if vlm else []
        except BadSample as exc:
            if not skip:
                raise
            failed.append({"sample_id": sample.id, "error": str(exc)})
            continue
        kept.append(sample)
        images.append(loaded)
    return kept, images


def _run_cell(
    cell: Cell, model: torch.nn.Module, processor: Any, vlm: bool, device: torch.device, experiment: Experiment,
    batches: dict[int, list[list[Sample]]], result: RunResult, stop: _StopFlag, notify: ProgressFn, skip: bool,
    nvtx: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Measure one cell: warm-up (not stored), then every batch x repeat. Returns (rows, failed samples)."""
    failed: list[dict[str, str]] = []
    kwargs = cell.generate_kwargs
    method = cell.params["method"]
    vision = cell.model.vision if method == "direct" else None
    nvtx = nvtx and method == "direct"  # the legacy method's three calls are not phases
    prepared = []
    for batch in batches[cell.params["batch_size"]]:
        kept, images = _cell_images(batch, cell, vlm, failed, skip)
        if kept:
            prepared.append((kept, images))
    if not prepared:
        raise RuntimeError("no usable sample in this cell")
    tokenizer = models.tokenizer_of(processor)
    params = {**cell.params, "cell": cell.index, "metric": experiment.metric}
    torch.manual_seed(experiment.seed)
    for _ in range(experiment.warmup):
        kept, images = prepared[0]
        measure(model, prepare_batch(kept, images, processor, model, experiment, cell, device).inputs,
                method=method, vision=vision, nvtx=nvtx, **kwargs)
        notify("call", {"cell": cell.index, "warmup": True})
        if stop.set:
            raise _Interrupted
    rows: list[dict[str, Any]] = []
    call_id = cell.index * CALL_ID_STRIDE  # unique in the directory, and the same when a cell is re-run
    for repeat in range(experiment.repeats):
        for kept, images in prepared:
            batch = prepare_batch(kept, images, processor, model, experiment, cell, device)
            m = measure(model, batch.inputs, method=method, vision=vision, nvtx=nvtx, **kwargs)
            _add_predictions(batch, m.output_ids, tokenizer, experiment.metric)
            rows.extend(measurement_rows(m, call_id=call_id, repeat=repeat, params=params, extras=batch.extras))
            call_id += 1
            result.calls += 1
            notify("call", {"cell": cell.index, "warmup": False})
            if stop.set:
                raise _Interrupted
    return rows, failed


def _add_predictions(batch: Batch, output: Any, tokenizer: Any, metric: str | None) -> None:
    prompt = batch.inputs["input_ids"].shape[1]
    texts = tokenizer.batch_decode(_sequences_tensor(output)[:, prompt:], skip_special_tokens=True)
    for extra, sample, text in zip(batch.extras, batch.samples, texts):
        prediction = text.strip()
        extra["prediction"] = prediction
        extra["score"] = score(metric, prediction, sample.answers, sample.choices) if metric else None
