"""Where a model encodes its images: the parts the probe times as ``vision``.

Three ways, tried in order:

1. ``vision=[module paths]`` given by the user (``Probe(model, vision=[...])``);
2. by name (the fast path): the ``get_image_features`` / ``get_video_features`` methods of
   the base model, which cover the tower *and* the projector; else the shallowest
   ``vision_tower`` / ``visual`` / ``vision_model`` / ... submodules, with their projector
   (``multi_modal_projector``, ...) when the model has one;
3. by the pixels (discovery): during a call that carries pixel inputs, the outermost
   module that receives the pixel tensor and is not part of the language model. The
   probe uses what it found from then on.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch

from .errors import UsageError

VISION_METHODS = ("get_image_features", "get_video_features")
VISION_MODULE_NAMES = ("vision_tower", "visual", "vision_model", "vision_encoder", "image_encoder")
# Projectors that run as separate modules after the tower (the tower-name fallback adds them).
# Connectors by their usual names too: a perceiver resampler, an abstractor, an aligner, a merger.
PROJECTOR_NAMES = ("multi_modal_projector", "mm_projector", "vision_projection", "connector", "resampler",
                   "vision_resampler", "perceiver_resampler", "abstractor", "aligner", "visual_projection",
                   "image_projection", "merger", "vision_adapter")


def resolve_path(model: torch.nn.Module, path: str) -> Any:
    """``model.a.b`` for ``path="a.b"`` (a leading ``"model."`` naming the root is allowed)."""
    obj: Any = model
    parts = path.split(".")
    for i, part in enumerate(parts):
        if not hasattr(obj, part):
            if i == 0 and part == "model" and len(parts) > 1 and not hasattr(model, "model"):
                continue
            raise UsageError(f"vision path {path!r}: {type(obj).__name__} has no attribute {part!r}")
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


def language_modules(model: torch.nn.Module) -> set[int]:
    """ids of the modules that hold the language model's input or output embeddings, and of
    their ancestors: a module among them is not a vision encoder, whatever it receives."""
    paths = {id(module): name for name, module in model.named_modules()}
    ids = {id(model)}
    wanted: set[str] = set()
    for getter in ("get_input_embeddings", "get_output_embeddings"):
        try:
            module = getattr(model, getter)()
        except (AttributeError, NotImplementedError, TypeError):
            module = None
        if isinstance(module, torch.nn.Module) and id(module) in paths:
            path = paths[id(module)]
            parts = path.split(".")
            wanted.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    for name, module in model.named_modules():
        if name in wanted:
            ids.add(id(module))
    return ids


def receives(pixels: Iterable[torch.Tensor], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """Whether a module call's arguments include one of the pixel tensors: ``"identity"`` (the
    same tensor), ``"shape"`` (one of its shape: a cast or a move to another device keeps the
    shape, but so may an unrelated tensor), else None."""
    pixels = list(pixels)
    shapes = {tuple(p.shape) for p in pixels}
    ids = {id(p) for p in pixels}
    values = [v for v in (*args, *kwargs.values()) if isinstance(v, torch.Tensor)]
    if any(id(v) in ids for v in values):
        return "identity"
    return "shape" if any(tuple(v.shape) in shapes for v in values) else None
