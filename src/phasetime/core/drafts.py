"""Recording the rounds of assisted and prompt-lookup decoding.

transformers builds a candidate generator per assisted call (``_get_candidate_generator``)
and asks it for candidates once per round (``get_candidates``). The model's hooks patch
the first (see :mod:`phasetime.core.hooks`); for a call being timed, :func:`instrument`
wraps that generator's ``get_candidates`` (an attribute of this one object, which lives
for the call only) in ``draft_start`` / ``draft_end`` marks, and hooks the draft model's
forwards for the call's duration. :mod:`phasetime.core.rounds` reads the marks.

Only the two generators whose rounds are understood are timed: a draft model with the
target's tokenizer (``AssistedCandidateGenerator``) and prompt lookup
(``PromptLookupCandidateGenerator``); any other is refused by name before its first round.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

import torch

from .errors import UnsupportedGeneration
from .generation import PIXEL_KEYS

if TYPE_CHECKING:
    from .hooks import CallState, ModelHooks

TIMED_GENERATORS = ("AssistedCandidateGenerator", "PromptLookupCandidateGenerator")
# Image inputs a text draft cannot take (transformers <= 5.17 hands the target's to the draft).
_IMAGE_ONLY_KEYS = (*PIXEL_KEYS, "image_sizes", "image_grid_thw", "video_grid_thw")


def wrap_candidate_generator(hooks: "ModelHooks") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The wrapper of the language model's ``_get_candidate_generator``."""

    def make(original: Callable[..., Any]) -> Callable[..., Any]:
        def get_candidate_generator(*args: Any, **kwargs: Any) -> Any:
            generator = original(*args, **kwargs)
            state = hooks.call if hooks.installed else None
            if state is None:
                return generator
            name = type(generator).__name__
            if name not in TIMED_GENERATORS:
                raise UnsupportedGeneration(f"candidate generator {name} is not supported: phasetime times a draft model "
                                            "with the target's tokenizer and prompt lookup")
            instrument(hooks, state, generator)
            return generator

        return get_candidate_generator

    return make


def instrument(hooks: "ModelHooks", state: "CallState", generator: Any) -> None:
    """Mark every round's candidate search, and the draft model's forwards, for this call."""
    search = generator.get_candidates

    @functools.wraps(search)
    def get_candidates(input_ids: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        length = int(input_ids.shape[1])
        hooks.each(lambda r: r.mark("draft_start", length))
        candidates, logits = search(input_ids, *args, **kwargs)
        proposed = int(candidates.shape[1]) - length
        hooks.each(lambda r: r.mark("draft_end", proposed))
        return candidates, logits

    generator.get_candidates = get_candidates
    draft = getattr(generator, "assistant_model", None)
    if not isinstance(draft, torch.nn.Module):
        return
    _drop_image_inputs(generator, draft)

    @torch.compiler.disable
    def pre(module: Any, args: Any) -> None:
        hooks.each(lambda r: r.mark("draft_forward_start"))

    @torch.compiler.disable
    def post(module: Any, args: Any, output: Any) -> None:
        hooks.each(lambda r: r.mark("draft_forward_end"))

    state.handles.append(draft.register_forward_pre_hook(pre, prepend=True))
    state.handles.append(draft.register_forward_hook(post))


def _drop_image_inputs(generator: Any, draft: torch.nn.Module) -> None:
    """A text draft gets no image inputs (transformers <= 5.17 passes the target's pixels to
    the draft's generate(), which refuses them; newer versions encode them beforehand)."""
    if callable(getattr(draft, "get_image_features", None)):
        return
    kept = getattr(generator, "assistant_kwargs", None)
    if isinstance(kept, dict):
        for key in [k for k in kept if k in _IMAGE_ONLY_KEYS or "pixel" in k]:
            del kept[key]
