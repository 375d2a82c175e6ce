"""One batch of a cell: images resized, the processor run (timed as ``preprocess_ms``), the
per-sample row fields, and the answers decoded and scored after the call."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from PIL import Image

from ...core.errors import PhasetimeError
from ...hf.outputs import sequences_tensor
from .datasets import Sample, format_question
from .inputs import chat_prompt, encode
from ..plan.grid import Cell
from .scoring import score
from ..plan.spec import Experiment


class CellError(PhasetimeError):
    """A cell that cannot run with its model (it is recorded as failed; the run goes on)."""


@contextlib.contextmanager
def resolution(processor: Any, cell: Cell) -> Iterator[None]:
    """Temporarily cap the pixels of a dynamic-resolution image processor (Qwen2-VL style)."""
    max_pixels = cell.params["max_pixels"]
    tokens = cell.params["max_visual_tokens"]
    if max_pixels is None and tokens is None:
        yield
        return
    ip: Any = getattr(processor, "image_processor", None)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    size: Any = getattr(ip, "size", None)
    dynamic = size is not None and (hasattr(size, "longest_edge") or isinstance(size, dict))
    if patch is None or merge is None or not dynamic:
        raise CellError("max_pixels / max_visual_tokens need a dynamic-resolution image processor (e.g. Qwen2-VL)")
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


def resize(image: Image.Image, longer_side: int | None) -> Image.Image:
    """``image`` scaled so that its longer side is ``longer_side`` (unchanged for None)."""
    if longer_side is None:
        return image
    w, h = image.size
    scale = longer_side / max(w, h)
    return image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)


@dataclass
class Batch:
    samples: list[Sample]
    inputs: dict[str, Any]
    extras: list[dict[str, Any]]  # per-sample row fields, preprocess_ms included


def image_token_ids(processor: Any, model: torch.nn.Module) -> set[int]:
    """The ids of the image / video placeholder tokens, from the processor or the model config."""
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
    texts = prompt_texts(samples, images, processor, experiment)
    start = time.perf_counter_ns()
    with resolution(processor, cell):
        inputs = encode(processor, texts, images, device)
    preprocess_ms = (time.perf_counter_ns() - start) / 1e6
    token_ids = image_token_ids(processor, model)
    ids = inputs["input_ids"]
    # ids: [B, S]
    visual = (torch.isin(ids, torch.tensor(sorted(token_ids), device=ids.device)).sum(1).tolist()
              if token_ids else [0] * len(samples))
    extras = []
    for sample, imgs, n_visual in zip(samples, images, visual):
        extras.append({**sample_fields(sample, imgs), "visual_tokens": int(n_visual), "preprocess_ms": preprocess_ms})
    return Batch(samples, inputs, extras)


def prompt_texts(samples: list[Sample], images: list[list[Image.Image]], processor: Any, experiment: Experiment) -> list[str]:
    """Each sample's question, with the experiment's text around it, through the chat template."""
    return [chat_prompt(processor, format_question(s, experiment.prompt.pre, experiment.prompt.post), len(imgs))
            for s, imgs in zip(samples, images)]


def sample_fields(sample: Sample, images: list[Image.Image]) -> dict[str, Any]:
    """The row fields of a sample and the images it was fed with."""
    return {"sample_id": sample.id, "category": sample.category, "n_images": len(images),
            "image_width": images[0].size[0] if images else None,
            "image_height": images[0].size[1] if images else None}


def add_prediction(extra: dict[str, Any], sample: Sample, text: str, metric: str | None) -> None:
    """A row's decoded answer, scored when the experiment has a metric."""
    prediction = text.strip()
    extra["prediction"] = prediction
    extra["score"] = score(metric, prediction, sample.answers, sample.choices) if metric else None


def add_predictions(batch: Batch, output: Any, tokenizer: Any, metric: str | None) -> None:
    """Decode each row's answer into its extras and score it when the experiment has a metric."""
    prompt = batch.inputs["input_ids"].shape[1]
    texts = tokenizer.batch_decode(sequences_tensor(output)[:, prompt:], skip_special_tokens=True)
    for extra, sample, text in zip(batch.extras, batch.samples, texts):
        add_prediction(extra, sample, text, metric)
