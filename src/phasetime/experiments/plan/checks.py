"""Everything a run can check before it writes a byte: models, devices, output lengths
against the model's positions, NVTX, the data set, and every image fully decoded.

:func:`prepare` returns what the run needs (samples, the bad ones, cells, device, threads)
or raises :class:`RunError`, one line naming the value the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...core.errors import PhasetimeError
from .. import models
from ..running.conditions import resolve_threads
from ..data.datasets import BadSample, DatasetError, Sample, load_hf, load_llava, load_manifest, take
from ..data.inputs import synthetic_image
from .grid import Cell, batches, calls_per_cell, count_cells, expand
from .parts import DatasetInputs
from .spec import Experiment
from ..data.synthetic import synthetic_vqa


class RunError(PhasetimeError, ValueError):
    """Bad input to a run: reported as one line, before anything is written."""


# A run beyond either limit is refused unless the user confirms it (``--yes``): a typo in a
# sweep (a 10^6-cell grid, warm-up 10000) should not silently start a run of days.
MAX_CELLS = 10_000
MAX_CALLS = 200_000


def check_size(experiment: Experiment, samples: list[Sample] | None = None) -> int:
    """The run's calls (warm-up included), or a RunError when it is beyond the limits."""
    cells = count_cells(experiment)
    if cells > MAX_CELLS:
        raise RunError(f"the sweep has {cells:,} cells, more than {MAX_CELLS:,}; check the sweep, or pass --yes "
                       "(yes=True) to run it anyway")
    if samples is None:
        return 0
    # The grid is a full product: each batch size has the same share of the cells.
    per_cell = calls_per_cell(experiment, batches(samples, experiment))
    calls = cells // len(per_cell) * sum(per_cell.values())
    if calls > MAX_CALLS:
        raise RunError(f"the run makes {calls:,} generate() calls ({cells:,} cells, {experiment.warmup} warm-up and "
                       f"{experiment.repeats} measured per batch of samples), more than {MAX_CALLS:,}; pass --yes "
                       "(yes=True) to run it anyway")
    return calls


def check_batches(experiment: Experiment, samples: list[Sample]) -> None:
    """A batch larger than the data set would be labelled with a size no call had."""
    if isinstance(experiment.inputs, DatasetInputs):
        too_big = [b for b in experiment.sweep.batch_size if b > len(samples)]
        if too_big:
            raise RunError(f"sweep.batch_size: {too_big[0]} is larger than the data set, which has {len(samples)} "
                           f"usable sample(s)")


@dataclass
class Prepared:
    cells: list[Cell]
    samples: list[Sample]
    bad: list[tuple[str, str]]  # (sample id, reason) of samples skipped with --skip-bad-samples
    device: Any
    threads: int | None


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
            samples = load_manifest(inputs.path or "")
        elif inputs.kind == "llava":
            samples = load_llava(inputs.path or "", inputs.answers, inputs.image_folder)
        elif inputs.kind == "hf":
            samples = load_hf(inputs.path or "", inputs.columns, inputs.split)
        else:
            samples = synthetic_vqa(inputs.samples, seed=experiment.seed, image_size=inputs.image_size,
                                    multiple_choice=inputs.multiple_choice)
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


def decode_images(samples: list[Sample]) -> list[tuple[Sample, str]]:
    """(sample, reason) for every sample whose image files cannot be fully decoded."""
    bad = []
    for sample in samples:
        if all(not isinstance(i, (str, bytes)) and not hasattr(i, "__fspath__") for i in sample.images):
            continue  # in-memory images only
        try:
            sample.load_images()
        except BadSample as exc:
            bad.append((sample, str(exc).split(": ", 1)[-1]))
    return bad


def _check_decoding(experiment: Experiment, samples: list[Sample]) -> None:
    """What a model cannot do with a way of decoding, found from its config (before any load):
    a draft with another tokenizer, prompt lookup over a prompt with images."""
    from ...hf.generation import vocabulary_mismatch

    with_images = any(s.images for s in samples)
    for i, spec in enumerate(experiment.models):
        shape = models.shape(spec.name, spec.trust_remote_code)
        for j, options in enumerate(experiment.sweep.generation):
            where = f"sweep.generation[{j}]"
            if options.get("draft") is not None:
                mismatch = vocabulary_mismatch(shape.vocabulary, models.shape(options["draft"]).vocabulary)
                if mismatch:
                    raise RunError(f"{where}.draft {options['draft']!r} with models[{i}] {spec.name!r}: {mismatch}")
            if options.get("prompt_lookup_num_tokens") and with_images and shape.takes_images:
                raise RunError(f"{where}: prompt lookup on models[{i}] {spec.name!r} with images is not supported: its "
                               "candidates copy the prompt's image placeholder tokens, which the model then cannot "
                               "match to image features (use a draft model, or a text prompt: inputs.images: 0)")


def _check_backend(experiment: Experiment) -> None:
    """The engine must be there, and able to load each built-in asked of it."""
    if experiment.backend not in ("vllm", "vllm-server"):
        return
    from ...vllm.engine import unavailable
    from ...vllm.server import server_unavailable
    from ..models.tiny import VLLM_BUILTINS

    load = experiment.load
    missing = unavailable() if load is None else server_unavailable(load.python) if load.server is None else None
    if missing:
        raise RunError(missing)
    for i, spec in enumerate(experiment.models):
        if spec.name in models.BUILTIN and spec.name not in VLLM_BUILTINS:
            raise RunError(f"models[{i}]: the built-in {spec.name!r} does not load in vLLM (the built-ins it runs: "
                           f"{', '.join(sorted(VLLM_BUILTINS))})")


def _check_models(experiment: Experiment, cells: list[Cell]) -> Any:
    longest = max(experiment.sweep.max_new_tokens)
    device = None
    for i, spec in enumerate(experiment.models):
        try:
            models.check_name(spec.name)
            dev = models.resolve_device(spec.device)
            for dtype in experiment.sweep.dtype or [spec.dtype]:
                models.resolve_dtype(dtype, dev)
        except models.ModelLoadError as exc:
            raise RunError(f"models[{i}]: {exc}") from None
        device = device or dev
        positions = models.max_positions(spec.name, spec.trust_remote_code)
        if positions is not None and longest >= positions:
            raise RunError(f"sweep.max_new_tokens: {longest} does not fit model {spec.name!r}, which has "
                           f"{positions} positions (prompt included)")
    for j, options in enumerate(experiment.sweep.generation):
        if options.get("draft") is not None:
            try:
                models.check_name(options["draft"])
            except models.ModelLoadError as exc:
                raise RunError(f"sweep.generation[{j}].draft: {exc}") from None
    return device


def _check_profile(cells: list[Cell]) -> None:
    """--profile needs calls phasetime runs in its own process, with phases (the hf backend's direct
    method, or vLLM's offline engine)."""
    if any(c.params.get("backend") == "vllm-server" for c in cells):
        raise RunError("--profile: the vllm-server backend cannot be profiled. The server runs its model in "
                       "processes of its own, where phasetime's profiler does not reach, and vLLM's own profiler "
                       "(its /start_profile endpoint) writes a trace that carries no phase boundaries; profile the "
                       "model with backend vllm (the offline engine, in phasetime's process) or hf")
    if all(c.params.get("method") != "direct" for c in cells):
        raise RunError("--profile: the legacy method's calls have no phases to put operators in; profile the "
                       "direct method (method: direct or both)")


def prepare(experiment: Experiment, *, skip_bad_samples: bool = False, nvtx: bool = False,
            yes: bool = False, profile: int = 0) -> Prepared:
    """Check everything that can be checked before a model loads; see the module docstring.
    ``yes``: run a sweep beyond :data:`MAX_CELLS` cells or :data:`MAX_CALLS` calls; ``profile``:
    the profiled calls per cell (refused where they cannot run)."""
    if not yes:
        check_size(experiment)
    cells = expand(experiment)
    device = _check_models(experiment, cells)
    if nvtx:
        from ...core.nvtx import Nvtx as _Nvtx

        try:
            _Nvtx()
        except PhasetimeError as exc:
            raise RunError(f"--nvtx: {exc}") from None
    if profile:
        _check_profile(cells)
    _check_backend(experiment)
    samples = load_samples(experiment)
    _check_decoding(experiment, samples)
    bad = decode_images(samples)
    if bad and not isinstance(experiment.inputs, DatasetInputs):
        raise RunError(f"inputs.image: {bad[0][1]}")
    if bad and not skip_bad_samples:
        sample, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise RunError(f"sample {sample.id!r}: {reason}{more} (pass --skip-bad-samples to record it as failed and go on)")
    bad_ids = {s.id for s, _ in bad}
    samples = [s for s in samples if s.id not in bad_ids]
    if not samples:
        raise RunError("every sample is bad")
    check_batches(experiment, samples)
    if not yes:
        check_size(experiment, samples)
    threads = resolve_threads(experiment.threads, device.type)
    return Prepared(cells, samples, [(s.id, reason) for s, reason in bad], device, threads)
