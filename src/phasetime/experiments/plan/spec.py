"""Experiment files: what to measure, declared as data and validated before anything runs.

An experiment names one or more models, the inputs (a synthetic prompt + image, or a data
set), a sweep grid, repeats, warm-up, a seed, threads, an executor and optionally a
scoring metric. Every value is type- and range-checked here, with every problem listed by
its path; what needs the model or the data (output length within the model's positions,
images that decode) is checked by :mod:`.validate` before anything is written. The grid
expands to cells in :mod:`.plan`. See ``docs/experiments.md`` for the format.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...core.errors import PhasetimeError
from .load import LoadSpec
from .options import check_attention, check_backend, check_decoding, check_engine_args, check_generation
from .parts import (MAX_SEED, MAX_SIDE, MAX_TOKENS, DatasetInputs, Dtype, ExecutorSpec, MethodName, MetricName, ModelSpec,
                    PromptSpec, ResourcesSpec, Side, SyntheticInputs, Text, Tokens, _Strict)
from .yaml_keys import UniqueKeyLoader

class ExperimentError(PhasetimeError, ValueError):
    """An experiment file that cannot be used; the message lists every problem with its path."""


class Sweep(_Strict):
    """The grid: every list is an axis; cells are the product of all axes."""

    max_new_tokens: list[Tokens] = Field(default_factory=lambda: [32], min_length=1)
    batch_size: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=lambda: [1], min_length=1)
    image_size: list[Side] | None = None  # images resized so the longer side is this
    max_pixels: list[Annotated[int, Field(ge=1, le=MAX_SIDE * MAX_SIDE)]] | None = None  # dynamic resolution
    max_visual_tokens: list[Tokens] | None = None  # the same, counted in visual tokens
    dtype: list[Dtype] | None = None  # overrides each model's dtype
    attn_implementation: list[str] | None = None
    method: list[MethodName] = Field(default_factory=lambda: list[MethodName](["direct"]), min_length=1)
    generation: list[dict[str, Any]] = Field(default_factory=lambda: [dict[str, Any]()], min_length=1)

    @field_validator("attn_implementation")
    @classmethod
    def _attention(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            check_attention(value)
        return values

    @field_validator("generation")
    @classmethod
    def _generation(cls, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for options in values:
            check_generation(options)
        return values

    @model_validator(mode="after")
    def _one_resolution_axis(self) -> "Sweep":
        if self.max_pixels and self.max_visual_tokens:
            raise ValueError("sweep either max_pixels or max_visual_tokens, not both")
        return self


# More warm-up calls than this per cell is a typo, not a warm-up: the first few calls are the slow ones.
MAX_WARMUP = 100


class Experiment(_Strict):
    """A whole experiment file (see ``docs/experiments.md``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=200)
    description: Text = ""
    models: list[ModelSpec] = Field(min_length=1, max_length=1000)
    inputs: Annotated[Union[SyntheticInputs, DatasetInputs], Field(discriminator="kind")] = SyntheticInputs()
    prompt: PromptSpec = PromptSpec()
    sweep: Sweep = Sweep()
    metric: MetricName | None = None
    min_new_tokens: Union[Literal["max"], Annotated[int, Field(ge=0, le=MAX_TOKENS)], None] = None
    repeats: Annotated[int, Field(ge=1, le=100_000)] = 3
    warmup: Annotated[int, Field(ge=0, le=MAX_WARMUP)] = 1
    seed: Annotated[int, Field(ge=0, le=MAX_SEED)] = 0
    # torch intra-op threads (and OMP/MKL): "auto" is 1 on a CPU model (see docs/metrics.md,
    # "Threads"), torch's default on CUDA.
    threads: Union[Literal["auto"], Annotated[int, Field(ge=1, le=1024)]] = "auto"
    # Execution order of a model's cells. "shuffled" (seeded) keeps a machine's slow drift
    # from lining up with a swept parameter (output length, say) and posing as its effect;
    # "interleaved" also spreads each cell's repeats over its block of cells (round r runs
    # the r-th repeat of every cell of the block, in a new random order each round), so that
    # a cell's repeats do not all share one moment of the machine (docs/experiments.md).
    order: Literal["shuffled", "grid", "interleaved"] = "shuffled"
    # order interleaved: at most this many cells (of one model) per block; a block is stored
    # when its last round ends, so Ctrl-C or a crash loses the block under way
    interleave_block: Annotated[int, Field(ge=2, le=1000)] = 16
    executor: ExecutorSpec = ExecutorSpec()
    resources: ResourcesSpec = ResourcesSpec()
    # the engine that runs the calls: Hugging Face generate() or vLLM (docs/metrics.md, "vLLM")
    backend: Literal["hf", "vllm", "vllm-server"] = "hf"
    # backend vllm-server: the load each rate level sends (docs/experiments.md, "Serving under load")
    load: LoadSpec | None = None
    # backend vllm: more arguments of vllm.LLM (max_num_batched_tokens, max_model_len, ...)
    engine_args: dict[str, Any] = Field(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _names_as_models(cls, value: Any) -> Any:
        if isinstance(value, (str, dict)):
            value = [value]
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value

    @field_validator("executor", mode="before")
    @classmethod
    def _kind_as_executor(cls, value: Any) -> Any:
        return {"kind": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _decoding_fits(self) -> "Experiment":
        sweep = self.sweep
        check_decoding(sweep.generation, sweep.method, sweep.batch_size, self.resources.cost or self.resources.energy)
        asked = [name for name, on in self.resources.model_dump().items() if on]
        check_backend(self.backend, sweep.generation, sweep.method, asked, self.executor.kind)
        check_engine_args(self.backend, self.engine_args)
        if (self.backend == "vllm-server") != (self.load is not None):
            raise ValueError("backend vllm-server needs a load: section (rates, requests or duration_s), and a load: "
                             "section needs backend: vllm-server")
        if self.backend == "vllm-server" and sweep.batch_size != [1]:
            raise ValueError("backend vllm-server: requests arrive one by one at the load's rate; drop batch_size")
        if self.load is not None and self.load.output == "data" and self.inputs.kind == "synthetic":
            raise ValueError("load.output: data takes each sample's answer length; synthetic inputs have no answers")
        if self.order == "interleaved" and self.executor.kind != "local":
            raise ValueError("order: interleaved runs on the local executor (a Ray worker measures whole cells); "
                             "use order: shuffled with executor ray")
        return self

    @model_validator(mode="after")
    def _lengths_fit(self) -> "Experiment":
        shortest = min(self.sweep.max_new_tokens)
        if isinstance(self.min_new_tokens, int) and self.min_new_tokens > shortest:
            raise ValueError(f"min_new_tokens {self.min_new_tokens} is more than max_new_tokens {shortest}: that cell "
                             "would end at max_new_tokens")
        return self

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


_BRANCHES = ("synthetic", "manifest", "llava", "hf", "synthetic-vqa")


def _format_errors(exc: ValidationError, source: str) -> str:
    """Every problem on its line, under a count; a single problem is one line."""
    problems = []
    for err in exc.errors():
        path = ""
        for part in err["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            elif part in _BRANCHES and path.endswith("inputs"):
                continue  # the discriminated union's branch name is noise in a path
            else:
                path += ("." if path else "") + str(part)
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append((path, message))
    if len(problems) == 1:
        path, message = problems[0]
        return f"{source}: {path + ': ' if path else ''}{message}"
    return "\n".join([f"{source}: {len(problems)} problem(s)"] + [f"  {p or '(top level)'}: {m}" for p, m in problems])


def parse_experiment(data: Any, source: str = "experiment") -> Experiment:
    """Validate a parsed experiment (a dict); :class:`ExperimentError` lists every problem."""
    if not isinstance(data, dict):
        raise ExperimentError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return Experiment.model_validate(data)
    except ValidationError as exc:
        raise ExperimentError(_format_errors(exc, source)) from None
    except RecursionError:
        raise ExperimentError(f"{source}: nested too deeply") from None


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment YAML (or JSON) file; relative data paths are resolved against it."""
    p = Path(path)
    try:
        text = p.read_bytes().decode("utf-8")
        data = yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except OSError as exc:
        raise ExperimentError(f"cannot read {p}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ExperimentError(f"{p}: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise ExperimentError(f"{p}: nested too deeply") from None
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

    def local(name: str) -> str | None:
        """The resolved name of a local model directory or model-building file, else None."""
        file, sep, function = name.rpartition(":")
        try:
            if sep and file.endswith(".py") and (base / file).is_file():
                return f"{resolve(file)}:{function}"
            return resolve(name) if (base / name).is_dir() else None
        except OSError:  # a name too long for a path, say: not local
            return None

    models = [m.model_copy(update={"name": local(m.name)}) if local(m.name) else m for m in experiment.models]
    generation = [{**g, "draft": local(g["draft"]) or g["draft"]} if isinstance(g.get("draft"), str) else g
                  for g in experiment.sweep.generation]
    sweep = experiment.sweep.model_copy(update={"generation": generation})
    return experiment.model_copy(update={"inputs": inputs, "models": models, "sweep": sweep})
