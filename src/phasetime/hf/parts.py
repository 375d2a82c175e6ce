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
from .names import AUDIO_MODULE_NAMES, AUDIO_PROJECTOR_NAMES, PROJECTOR_NAMES, VISION_MODULE_NAMES

PARTS = ("vision", "projector", "audio")


def _by_names(model: torch.nn.Module) -> dict[str, list[torch.nn.Module]]:
    parts: dict[str, list[torch.nn.Module]] = {p: [] for p in PARTS}
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in VISION_MODULE_NAMES:
            parts["vision"].append(module)
        elif leaf in PROJECTOR_NAMES or leaf in AUDIO_PROJECTOR_NAMES:
            parts["projector"].append(module)
        elif leaf in AUDIO_MODULE_NAMES:
            parts["audio"].append(module)
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
