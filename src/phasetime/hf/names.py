"""Media encoders by their usual names: only a fallback, and paths the user writes.

phasetime finds a model's media encoders by following the data of a call
(:mod:`phasetime.hf.media`). Names stay for three things only:

* the fallback where that pass cannot run (it says why): the shallowest ``vision_tower`` /
  ``visual`` / ``vision_model`` / ... modules, with their projector (``multi_modal_projector``,
  ...), and the same for audio (``audio_tower``, ``audio_encoder``, ...);
* ``get_image_features``, which the legacy subtraction method times on its own, as the
  legacy code did (:mod:`phasetime.hf.legacy`);
* the paths a user names (``Probe(model, vision=["model.vision_tower"])``), resolved here.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from ..core.errors import UsageError

VISION_METHODS = ("get_image_features", "get_video_features")
VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")
AUDIO_MODULE_NAMES = ("audio_tower", "audio_encoder", "audio_model", "speech_encoder", "audio")
# Projectors that run as separate modules after the tower (the tower-name fallback adds them).
# Connectors by their usual names too: a perceiver resampler, an abstractor, an aligner, a merger.
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "vision_projection", "connector", "resampler",
                   "vision_resampler", "perceiver_resampler", "abstractor", "aligner", "visual_projection",
                   "image_projection", "merger", "vision_adapter")
AUDIO_PROJECTOR_NAMES = ("audio_projector", "audio_projection", "multi_modal_audio_projector")


def resolve_path(model: torch.nn.Module, path: str, what: str = "vision") -> Any:
    """``model.a.b`` for ``path="a.b"`` (a leading ``"model."`` naming the root is allowed)."""
    obj: Any = model
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            if i == 0 and part == "model" and len(parts) > 1 and not hasattr(model, "model"):
                continue
            raise UsageError(f"{what} path {path!r}: {type(obj).__name__} has no attribute {part!r}")
        obj = getattr(obj, part)
    return obj


def vision_methods(model: torch.nn.Module) -> tuple[Any, list[str]] | None:
    """``(owner, method names)`` of ``get_image_features`` / ``get_video_features`` on the
    object generate() calls them on (the base model), so each image is counted once."""
    for owner in (getattr(model, "base_model", None), model):
        if owner is None:
            continue
        names = [n for n in VISION_METHODS if callable(getattr(owner, n, None))]
        if names:
            return owner, names
    return None


def _shallowest(model: torch.nn.Module, names: Iterable[str]) -> list[tuple[str, torch.nn.Module]]:
    wanted = set(names)
    found = [(name, module) for name, module in model.named_modules() if name.rsplit(".", 1)[-1] in wanted]
    if not found:
        return []
    depth = min(name.count(".") for name, _ in found)
    return [(name, module) for name, module in found if name.count(".") == depth]


def vision_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(path, module) of the vision tower(s) found by name, followed by their projector(s)."""
    towers = _shallowest(model, VISION_MODULE_NAMES)
    if not towers:
        return []
    return towers + _shallowest(model, PROJECTOR_NAMES)


def audio_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(path, module) of the audio encoder(s) found by name, followed by their projector(s)."""
    towers = [(n, m) for n, m in _shallowest(model, AUDIO_MODULE_NAMES) if isinstance(m, torch.nn.Module)]
    if not towers:
        return []
    return towers + _shallowest(model, AUDIO_PROJECTOR_NAMES)


def media_by_name(model: torch.nn.Module) -> list[tuple[str, str, bool]]:
    """(path, medium, whether it is an encoder rather than a projector) of every media module
    found by name: the fallback's modules, and the weights' parts before any discovery."""
    found = []
    for medium, named, encoders in (("vision", vision_modules, VISION_MODULE_NAMES),
                                    ("audio", audio_modules, AUDIO_MODULE_NAMES)):
        found += [(path, medium, path.rsplit(".", 1)[-1] in encoders) for path, _ in named(model)]
    return found
