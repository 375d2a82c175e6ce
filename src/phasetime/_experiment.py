"""Experiment files: what to measure, declared as data and validated before anything runs.

An experiment names one or more models, the inputs (a synthetic prompt + image, or a data
set), a sweep grid, repeats, warm-up, a seed and optionally a scoring metric. The grid
expands to *cells* (one combination of swept values for one model); every cell x sample x
repeat is one measured ``generate()`` call. See ``docs/experiments.md`` for the format.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._datasets import HF_COLUMNS
from ._inputs import DEFAULT_PROMPT
from ._probe import SUPPORTED_MODES, generation_mode
from ._scoring import METRICS
from .models import DEFAULT_MODEL, DTYPES

PositiveInt = Annotated[int, Field(ge=1)]
MetricName = Literal["vqa", "exact_match", "anls", "relaxed", "multiple_choice", "yes_no"]
assert set(METRICS) == set(MetricName.__args__)  # type: ignore[attr-defined]


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message lists every problem with its path."""


def _check_dtype(value: str) -> str:
    if value != "auto" and value not in DTYPES:
        raise ValueError(f"unknown dtype {value!r} (choose from auto, {', '.join(DTYPES)})")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSpec(_Strict):
    """One model: a built-in name, a hub id or a local directory."""

    name: str = Field(min_length=1)
    dtype: str = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    vision: list[str] | None = None  # module paths overriding the vision-encoder lookup

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        return _check_dtype(value)


class SyntheticInputs(_Strict):
    """One prompt, with a generated image (or a given one), repeated as the batch needs."""

    kind: Literal["synthetic"] = "synthetic"
    prompt: str = DEFAULT_PROMPT
    image: str | None = None
    image_size: PositiveInt = 336
    images: int = Field(default=1, ge=0)  # images per prompt on a VLM (0: text only)


class DatasetInputs(_Strict):
    """A data set: a manifest, LLaVA eval questions, a Hugging Face data set on disk, or synthetic VQA."""

    kind: Literal["manifest", "llava", "hf", "synthetic-vqa"]
    path: str | None = None
    answers: str | None = None  # llava: the answers file
    image_folder: str | None = None  # llava: where images live (default: beside the questions)
    split: str | None = None  # hf
    columns: dict[str, str] = Field(default_factory=dict)  # hf: phasetime field -> column
    limit: PositiveInt | None = None
    samples: PositiveInt = 20  # synthetic-vqa
    multiple_choice: bool = False  # synthetic-vqa
    image_size: PositiveInt = 224  # synthetic-vqa: drawing size

    @model_validator(mode="after")
    def _path_needed(self) -> "DatasetInputs":
        if self.kind != "synthetic-vqa" and not self.path:
            raise ValueError(f"a {self.kind!r} data set needs a path")
        unknown = set(self.columns) - set(HF_COLUMNS)
        if unknown:
            raise ValueError(f"columns: unknown field(s) {sorted(unknown)}")
        return self


class PromptSpec(_Strict):
    """Text around each question; the processor's chat template wraps the result."""

    pre: str = ""
    post: str = ""


GenerationOptions = dict[str, Any]
_RESERVED_GENERATION = {"max_new_tokens", "min_new_tokens"}


class Sweep(_Strict):
    """The grid: every list is an axis; cells are the product of all axes."""

    max_new_tokens: list[PositiveInt] = Field(default_factory=lambda: [32], min_length=1)
    batch_size: list[PositiveInt] = Field(default_factory=lambda: [1], min_length=1)
    image_size: list[PositiveInt] | None = None  # images resized so the longer side is this
    max_pixels: list[PositiveInt] | None = None  # processors with dynamic resolution (Qwen2-VL)
    max_visual_tokens: list[PositiveInt] | None = None  # the same, counted in visual tokens
    dtype: list[str] | None = None  # overrides each model's dtype
    attn_implementation: list[str] | None = None
    method: list[Literal["direct", "subtract", "both"]] = Field(default_factory=lambda: ["direct"], min_length=1)
    generation: list[GenerationOptions] = Field(default_factory=lambda: [{}], min_length=1)

    @field_validator("dtype")
    @classmethod
    def _dtypes(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            _check_dtype(value)
        return values

    @field_validator("generation")
    @classmethod
    def _generation(cls, values: list[GenerationOptions]) -> list[GenerationOptions]:
        for options in values:
            reserved = _RESERVED_GENERATION & set(options)
            if reserved:
                raise ValueError(f"{sorted(reserved)} cannot be set here (max/min_new_tokens have their own keys)")
            mode = generation_mode(None, options)
            if mode not in SUPPORTED_MODES:
                raise ValueError(f"{options}: generation mode {mode!r} cannot be timed (supported: greedy_search, sample)")
        return values

    @model_validator(mode="after")
    def _one_resolution_axis(self) -> "Sweep":
        if self.max_pixels and self.max_visual_tokens:
            raise ValueError("sweep either max_pixels or max_visual_tokens, not both")
        return self


class Experiment(_Strict):
    """A whole experiment file (see ``docs/experiments.md``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    models: list[ModelSpec] = Field(min_length=1)
    inputs: Annotated[Union[SyntheticInputs, DatasetInputs], Field(discriminator="kind")] = SyntheticInputs()
    prompt: PromptSpec = PromptSpec()
    sweep: Sweep = Sweep()
    metric: MetricName | None = None
    min_new_tokens: Union[Literal["max"], Annotated[int, Field(ge=0)], None] = None
    repeats: PositiveInt = 3
    warmup: int = Field(default=1, ge=0)
    seed: int = 0
    # Execution order of a model's cells. "shuffled" (seeded) keeps a machine's slow drift
    # from lining up with a swept parameter (output length, say) and posing as its effect.
    order: Literal["shuffled", "grid"] = "shuffled"

    @field_validator("models", mode="before")
    @classmethod
    def _names_as_models(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _metric_needs_answers(self) -> "Experiment":
        if self.metric is not None and self.inputs.kind == "synthetic":
            raise ValueError("a metric needs a data set with answers (inputs.kind: manifest, llava, hf or synthetic-vqa)")
        return self

    def resolved_min_new_tokens(self, max_new_tokens: int) -> int:
        """``min_new_tokens`` of a cell: equal to max (exact lengths) unless scored or told otherwise."""
        value = self.min_new_tokens
        if value is None:
            value = 0 if self.metric is not None else "max"
        return max_new_tokens if value == "max" else min(int(value), max_new_tokens)


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = [f"{source}: {exc.error_count()} problem(s)"]
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in ("synthetic", "manifest", "llava", "hf", "synthetic-vqa") and path.endswith("inputs"):
                continue  # the discriminated union's branch name is noise in a path
            else:
                path += ("." if path else "") + str(part)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"  {path or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_experiment(data: Any, source: str = "experiment") -> Experiment:
    """Validate a parsed experiment (a dict); :class:`ExperimentError` lists every problem."""
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(_format_errors(exc, source)) from None


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML (or JSON) file; relative data paths are resolved against it."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ExperimentError(f"cannot read {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ExperimentError(f"{p}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    experiment = parse_experiment(data, str(p))
    return _resolve_paths(experiment, p.parent)


def _resolve_paths(experiment: Experiment, base: Path) -> Experiment:
    def resolve(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute():
            return value
        return str((base / value).resolve())

    inputs = experiment.inputs
    if isinstance(inputs, DatasetInputs):
        inputs = inputs.model_copy(
            update={"path": resolve(inputs.path), "answers": resolve(inputs.answers), "image_folder": resolve(inputs.image_folder)}
        )
    elif inputs.image is not None:
        inputs = inputs.model_copy(update={"image": resolve(inputs.image)})
    models = [
        m.model_copy(update={"name": resolve(m.name)}) if (base / m.name).is_dir() else m for m in experiment.models
    ]
    return experiment.model_copy(update={"inputs": inputs, "models": models})


def quick_experiment(
    *,
    model: str = DEFAULT_MODEL,
    max_new_tokens: list[int] | tuple[int, ...] = (1, 2, 4, 8, 16, 32),
    min_new_tokens: int | None = None,
    repeats: int = 5,
    warmup: int = 2,
    prompt: str = DEFAULT_PROMPT,
    image: str | None = None,
    image_size: int = 336,
    batch_size: int = 1,
    method: str = "direct",
    device: str = "auto",
    dtype: str = "auto",
    seed: int = 0,
) -> Experiment:
    """The experiment behind ``phasetime run --model ...``: one model, synthetic input, an output-length sweep."""
    data = {
        "name": "run",
        "models": [{"name": model, "dtype": dtype, "device": device}],
        "inputs": {"kind": "synthetic", "prompt": prompt, "image": image, "image_size": image_size},
        "sweep": {"max_new_tokens": list(max_new_tokens), "batch_size": [batch_size], "method": [method]},
        "min_new_tokens": "max" if min_new_tokens is None else min_new_tokens,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
    }
    return parse_experiment(data, "options")


# --- the grid ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One combination of swept values for one model. ``params`` become result columns."""

    index: int
    model: ModelSpec
    params: dict[str, Any]

    @property
    def key(self) -> str:
        """A stable digest of the parameters, to recognise the cell when resuming."""
        blob = json.dumps({"model": self.model.model_dump(), **self.params}, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:12]

    @property
    def load_key(self) -> tuple[Any, ...]:
        """Cells with the same load key share one loaded model."""
        return (self.model.name, self.params["dtype"], self.model.device, self.params["attn_implementation"],
                self.model.trust_remote_code)

    @property
    def generate_kwargs(self) -> dict[str, Any]:
        kwargs = dict(json.loads(self.params["generation"]))
        kwargs["max_new_tokens"] = self.params["max_new_tokens"]
        kwargs["min_new_tokens"] = self.params["min_new_tokens"]
        return kwargs


def expand(experiment: Experiment) -> list[Cell]:
    """Every cell of the grid, models outermost (so each model loads once), output length innermost."""
    sweep = experiment.sweep
    methods: list[str] = []
    for method in sweep.method:
        for m in (("direct", "subtract") if method == "both" else (method,)):
            if m not in methods:
                methods.append(m)
    cells = []
    for model in experiment.models:
        axes = itertools.product(
            sweep.dtype or [model.dtype],
            sweep.attn_implementation or [model.attn_implementation],
            methods,
            sweep.image_size or [None],
            sweep.max_pixels or [None],
            sweep.max_visual_tokens or [None],
            sweep.batch_size,
            sweep.generation,
            sweep.max_new_tokens,
        )
        for dtype, attn, method, image_size, max_pixels, max_tokens, batch, generation, n in axes:
            params = {
                "model": model.name,
                "dtype": dtype,
                "attn_implementation": attn,
                "method": method,
                "image_size": image_size,
                "max_pixels": max_pixels,
                "max_visual_tokens": max_tokens,
                "batch_size": batch,
                "generation": json.dumps(generation, sort_keys=True),
                "max_new_tokens": n,
                "min_new_tokens": experiment.resolved_min_new_tokens(n),
            }
            cells.append(Cell(index=len(cells), model=model, params=params))
    return cells
