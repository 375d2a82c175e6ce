"""The parts of an experiment file: a model, the inputs, the prompt, where cells run, what else is recorded.

Each is a frozen, strict pydantic model; :mod:`.spec` assembles them into an
:class:`~.spec.Experiment` and checks what spans several parts.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..data.datasets import HF_COLUMNS
from ..data.scoring import METRICS
from .options import check_attention, check_device, check_text

DEFAULT_PROMPT = "Describe this image in detail."
DTYPE_NAMES = ("float32", "float16", "bfloat16")
MAX_TOKENS = 1_000_000
MAX_SIDE = 8192  # an 8192 x 8192 RGB image is 200 MB
MAX_IMAGES = 64
MAX_SEED = 2**32 - 1

PositiveInt = Annotated[int, Field(ge=1)]
Tokens = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]
Text = Annotated[str, Field(max_length=4096)]
Dtype = Literal["auto", "float32", "float16", "bfloat16"]
MethodName = Literal["direct", "subtract", "both"]
MetricName = Literal["vqa", "exact_match", "anls", "relaxed", "multiple_choice", "yes_no"]
assert set(METRICS) == set(MetricName.__args__)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        if isinstance(value, str):
            check_text(value)
        return value


class ModelSpec(_Strict):
    """One model: a built-in name, a hub id or a local directory."""

    name: Text = Field(min_length=1)
    dtype: Dtype = "auto"
    device: str = "auto"
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    vision: list[Text] | None = None  # module or method paths overriding the vision-encoder lookup

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return check_device(value)

    @field_validator("attn_implementation")
    @classmethod
    def _attention(cls, value: str | None) -> str | None:
        return check_attention(value)


class SyntheticInputs(_Strict):
    """One prompt, with a generated image (or a given one), repeated as the batch needs."""

    kind: Literal["synthetic"] = "synthetic"
    prompt: Text = DEFAULT_PROMPT
    image: Text | None = None
    image_size: Side = 336  # the generated image's side (a given image is used as it is)
    images: int = Field(default=1, ge=0, le=MAX_IMAGES)  # images per prompt on a VLM (0: text only)

    @model_validator(mode="after")
    def _size_of_the_generated_image(self) -> "SyntheticInputs":
        if self.image is not None and "image_size" in self.model_fields_set:
            raise ValueError("image_size sizes the generated image: with an image given it does nothing")
        return self


class DatasetInputs(_Strict):
    """A data set: a manifest, LLaVA eval questions, a Hugging Face data set on disk, or synthetic VQA."""

    kind: Literal["manifest", "llava", "hf", "synthetic-vqa"]
    path: Text | None = None
    answers: Text | None = None  # llava: the answers file
    image_folder: Text | None = None  # llava: where images live (default: beside the questions)
    split: Text | None = None  # hf
    columns: dict[str, Text] = Field(default_factory=dict)  # hf: phasetime field -> column
    limit: Annotated[int, Field(ge=1, le=10**9)] | None = None
    samples: Annotated[int, Field(ge=1, le=100_000)] = 20  # synthetic-vqa
    multiple_choice: bool = False  # synthetic-vqa
    image_size: Annotated[int, Field(ge=8, le=MAX_SIDE)] = 224  # synthetic-vqa: drawing size

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

    pre: Text = ""
    post: Text = ""


class ExecutorSpec(_Strict):
    """Where cells run: this process (``local``) or a Ray cluster (``ray``)."""

    kind: Literal["local", "ray"] = "local"
    address: Text | None = None  # ray: an existing cluster ("auto", "ray://host:10001"); None starts one
    workers: Annotated[int, Field(ge=1, le=4096)] | None = None  # ray: default one per GPU, else one per CPU
    gpus_per_worker: Annotated[float, Field(ge=0, le=64)] | None = None  # default 1 on a cluster with GPUs
    cpus_per_worker: Annotated[float, Field(ge=0, le=1024)] = 1.0
    retries: Annotated[int, Field(ge=0, le=10)] = 1  # a cell whose worker died runs again this often

    @model_validator(mode="after")
    def _ray_options_need_ray(self) -> "ExecutorSpec":
        ray_only = [k for k in ("address", "workers", "gpus_per_worker") if getattr(self, k) is not None]
        if self.kind == "local" and ray_only:
            raise ValueError(f"{ray_only[0]} does nothing on the local executor (kind: ray, --executor ray)")
        return self


class ResourcesSpec(_Strict):
    """What the probe records beside time (docs/metrics.md, "Resources")."""

    memory: bool = False  # peak memory per phase, KV cache, weights by part
    cost: bool = False  # FLOPs (in a replay) and bytes per phase, against the device's roof
    energy: bool = False  # GPU energy per phase (NVML; synchronises at phase boundaries)
