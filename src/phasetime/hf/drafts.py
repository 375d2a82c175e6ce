"""Recording the rounds of assisted and prompt-lookup decoding.

transformers builds a candidate generator per assisted call (``_get_candidate_generator``)
and asks it for candidates once per round (``get_candidates``). The model's hooks patch
the first (:mod:`.hooks`) and hand each generator of a timed call to :func:`instrument`, which
wraps that generator's ``get_candidates`` (an attribute of this one object, which lives for the
call only) in ``draft_start`` / ``draft_end`` marks and hooks the draft model's forwards for the
call's duration. :mod:`phasetime.core.rounds` reads the marks.

Only the two generators whose rounds are understood are timed: a draft model with the
target's tokenizer (``AssistedCandidateGenerator``) and prompt lookup
(``PromptLookupCandidateGenerator``); any other is refused by name before its first round.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from ..core.errors import UnsupportedGeneration
from .call import CallState
from .generation import is_text_key, media_inputs

TIMED_GENERATORS = ("AssistedCandidateGenerator", "PromptLookupCandidateGenerator")
# Image inputs a text draft cannot take (transformers <= 5.17 hands the target's to the draft).
_IMAGE_ONLY_KEYS = ("image_sizes", "image_grid_thw", "video_grid_thw")


def instrument(state: CallState, generator: Any) -> None:
    """Mark every round's candidate search, and the draft model's forwards, for this call."""
    name = type(generator).__name__
    if name not in TIMED_GENERATORS:
        raise UnsupportedGeneration(f"candidate generator {name} is not supported: phasetime times a draft model "
                                    "with the target's tokenizer and prompt lookup")
    search = generator.get_candidates

    @functools.wraps(search)
    def get_candidates(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        length = int(input_ids.shape[1])
        state.mark("draft_start", length)
        candidates, logits = search(input_ids, *args, **kwargs)
        state.mark("draft_end", int(candidates.shape[1]) - length)
        return candidates, logits

    generator.get_candidates = get_candidates
    draft = getattr(generator, "assistant_model", None)
    if not isinstance(draft, torch.nn.Module):
        return
    _drop_media_inputs(generator, draft)

    @torch.compiler.disable
    def pre(module: Any, args: Any) -> None:
        state.mark("draft_forward_start")

    @torch.compiler.disable
    def post(module: Any, args: Any, output: Any) -> None:
        state.mark("draft_forward_end")

    state.handles.append(draft.register_forward_pre_hook(pre, prepend=True))
    state.handles.append(draft.register_forward_hook(post))


def _drop_media_inputs(generator: Any, draft: torch.nn.Module) -> None:
    """A text draft gets no media inputs (transformers <= 5.17 passes the target's pixels to
    the draft's generate(), which refuses them; newer versions encode them beforehand)."""
    if callable(getattr(draft, "get_image_features", None)):
        return
    kept = getattr(generator, "assistant_kwargs", None)
    if isinstance(kept, dict):
        media_masks = [k for k in kept if (k in _IMAGE_ONLY_KEYS or "pixel" in k) and not is_text_key(k)]
        for key in [*media_inputs(kept), *media_masks]:
            kept.pop(key, None)
