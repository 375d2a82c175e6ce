"""Which of a model's weights belong to which part: vision and audio encoders, their projectors, the rest.

Feeds the memory sensor's ``weights_*_bytes`` and the bytes each phase must move. The parts are
the media modules found by following the data (:mod:`.media`: an ``encoder`` reads the media
inputs, a ``connector`` what another media module returned); before any call with media, or
where the pass fell back to them, the modules' names.
"""

from __future__ import annotations

import torch

from ..sensors.memory import parameter_bytes
from . import media
from .names import media_by_name

PARTS = ("vision", "projector", "audio")


def _by_names(model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    parts: dict[str, list[torch.nn.Module]] = {p: [] for p in PARTS}
    for path, medium, encoder in media_by_name(model):
        parts[medium if encoder else "projector"].append(model.get_submodule(path))
    return parts


def weight_bytes(model: torch.nn.Module) -> dict[str, int]:
    """Parameter bytes of the vision encoder(s), the projector(s) (every medium's connectors),
    the audio encoder(s) and the rest (``language``)."""
    found = [f for m in media.maps(model) if m.source == "dataflow" for f in m.found]
    if not found:
        return parameter_bytes(model, _by_names(model))
    parts: dict[str, list[torch.nn.Module]] = {p: [] for p in PARTS}
    for f in found:
        part = "projector" if f.role == "connector" else f.phase
        parts[part].append(model.get_submodule(f.path))
    return parameter_bytes(model, parts)
