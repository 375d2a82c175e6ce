"""``phasetime inspect``: what phasetime will time in a model, found by timing one short call.

The first thing to run on a new model: it loads the model, makes one probed call (with an
image when the model takes images; the media discovery call runs first) and reports what was
timed as media (each module, and how and why it was found), the language model found, how
prefill and decode were told apart, the generation mode, where vision ran (before the first
forward, inside it, or again in decode forwards), and anything that deserves a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ...core.errors import PhasetimeError, UnsupportedGeneration, UsageError, first_line
from ...hf.generation import check_mode
from ...hf.structure import brings_own_generate, inner_language_model, unwrap
from ...hf.probe import Probe
from ...core.record import Measurement
from .. import models
from ..data.inputs import build_inputs, load_image, synthetic_image

PROMPT = "Describe this image."


@dataclass
class Inspection:
    model: str
    model_class: str
    parameters: int
    device: str
    dtype: str
    takes_images: bool
    media: list[tuple[str, str, str, str]]  # (medium, path, how found, why)
    language: list[str]  # the language model's outermost modules (what runs at every decode step)
    generation_mode: str
    own_generate: str | None
    measurement: Measurement | None
    vision_placement: str
    warnings: list[str] = field(default_factory=list)
    error: str | None = None


def _placement(m: Measurement) -> str:
    spans = m.spans
    vision = [s for s in spans if s[0] == "vision"]
    if not vision:
        return "no vision ran"
    prefill = [s for s in spans if s[0] == "prefill"]
    first = prefill[0] if prefill else None
    where = "inside the first (prefill) forward" if first and first[1] <= vision[0][1] <= first[2] else \
        "before the first forward"
    if m.decode_vision_ms > 0:
        where += "; again inside decode forwards (counted as vision, taken out of decode)"
    return where


def inspect_model(name: str, *, image: str | None = None, device: str = "auto", dtype: str = "auto",
                  max_new_tokens: int = 4, trust_remote_code: bool = False, vision: list[str] | None = None,
                  audio: list[str] | None = None) -> Inspection:
    """Load ``name`` and time one short call; see the module docstring."""
    models.check_name(name)
    model, processor = models.load(name, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
    target = unwrap(model)
    first = next(target.parameters())
    takes_images = models.is_vision_language(processor)
    own = None
    if brings_own_generate(target):
        inner = inner_language_model(target)
        own = (f"{type(target).__name__}.generate() hands over to {type(inner).__name__}.generate(): its forwards "
               "are prefill and decode" if inner is not None else
               f"{type(target).__name__} brings its own generate(), which phasetime cannot time")
    pictures = ([load_image(image)] if image else [synthetic_image(224)]) if takes_images else []
    try:
        inputs = build_inputs(processor, PROMPT, pictures, device=first.device)
    except PhasetimeError:
        raise
    except Exception as exc:  # noqa: BLE001 - a processor raises whatever it raises
        raise UsageError(f"the processor of {name!r} could not build a prompt{' with an image' if pictures else ''}: "
                         f"{first_line(exc, 200)}") from None
    kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens}
    probe = Probe(model, vision=vision, audio=audio)
    result = Inspection(model=name, model_class=type(target).__name__, parameters=sum(p.numel() for p in target.parameters()),
                        device=str(first.device), dtype=str(first.dtype).removeprefix("torch."), takes_images=takes_images,
                        media=[], language=[], generation_mode=check_mode(target, kwargs), own_generate=own, measurement=None,
                        vision_placement="")
    try:
        with probe:
            model.generate(**inputs, **kwargs)
    except UnsupportedGeneration as exc:
        result.error = str(exc)
    result.media, result.language = probe.describe_media(), probe.language_model()
    if probe.measurements:
        m = result.measurement = probe.measurements[-1]
        result.vision_placement = _placement(m)
        result.warnings += _warnings(m, takes_images)
    return result


def _warnings(m: Measurement, takes_images: bool) -> list[str]:
    out = []
    if takes_images and m.vision_calls == 0:
        out.append("the model takes images but no vision encoder ran: vision time is in prefill")
    if m.decode_vision_ms > 0:
        out.append(f"vision ran inside decode forwards ({m.decode_vision_ms:.2f} ms): the model re-encodes its image "
                   "every step (use_cache=False on transformers <= 5.17?)")
    if m.total_ms > 0 and m.other_ms / m.total_ms > 0.3:
        out.append(f"{100 * m.other_ms / m.total_ms:.0f}% of the call is generate()'s own work (other_ms): the model "
                   "is small or the call short; warm up and measure longer outputs")
    if m.prefill_forwards > 1:
        out.append(f"the prompt was consumed in {m.prefill_forwards} forwards (chunked prefill)")
    return out
