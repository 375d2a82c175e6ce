"""The experiment behind ``phasetime run --model ...``: built from command-line options."""

from __future__ import annotations

from ..models import DEFAULT_MODEL
from .parts import DEFAULT_PROMPT
from .spec import Experiment, parse_experiment


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
    threads: int | str = "auto",
    executor: str = "local",
    address: str | None = None,
    memory: bool = False,
    cost: bool = False,
    energy: bool = False,
    draft: str | None = None,
    num_assistant_tokens: int | None = None,
    prompt_lookup: int | None = None,
    num_beams: int | None = None,
    backend: str = "hf",
    order: str = "shuffled",
) -> Experiment:
    """The experiment behind ``phasetime run --model ...``: one model, synthetic input, an output-length sweep.
    ``draft`` / ``num_assistant_tokens`` (assisted decoding), ``prompt_lookup``
    (``prompt_lookup_num_tokens``) and ``num_beams`` set how it decodes; ``backend``: ``hf`` or ``vllm``;
    ``order``: ``shuffled``, ``grid`` or ``interleaved`` (the experiment file's ``order``)."""
    generation = {key: value for key, value in (("draft", draft), ("num_assistant_tokens", num_assistant_tokens),
                                                ("prompt_lookup_num_tokens", prompt_lookup), ("num_beams", num_beams))
                  if value is not None}
    data = {
        "name": "run",
        "models": [{"name": model, "dtype": dtype, "device": device}],
        "inputs": {"kind": "synthetic", "prompt": prompt, "image": image,
                   **({"image_size": image_size} if image is None else {})},
        "sweep": {"max_new_tokens": list(max_new_tokens), "batch_size": [batch_size], "method": [method],
                  "generation": [generation]},
        "min_new_tokens": "max" if min_new_tokens is None else min_new_tokens,
        "repeats": repeats,
        "warmup": warmup,
        "seed": seed,
        "threads": threads,
        "executor": {"kind": executor, **({"address": address} if address is not None else {})},
        "resources": {"memory": memory, "cost": cost, "energy": energy},
        "backend": backend,
        "order": order,
    }
    return parse_experiment(data, "options")
