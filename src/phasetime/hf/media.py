"""Which modules encode a call's media, found by following the data of one call.

A model's media encoders are not found by their names (those stay a fallback,
:mod:`.names`) but by what they compute. Once per model and kind of input (the set of media
keys a call carries), before the first call that carries it is timed, phasetime runs one short
greedy ``generate()`` (3 tokens, the call's own inputs; not timed, nothing kept, the random
state restored) under a :class:`torch.overrides.TorchFunctionMode` and a hook on every module
(docs/metrics.md, "Media"):

1. every tensor computed from a media input (:func:`~.generation.media_inputs`) carries the
   mark of its medium (vision, audio) through every torch operation; every tensor computed
   from text (ids, masks, positions, the cache, embeddings of ids) carries the text mark. Marks
   are held by weak reference: a freed tensor's mark goes with it, and a new tensor that gets
   the same address starts unmarked (0.3 kept ``id()`` s, and timed a text decoder as vision);
2. every module call is recorded with the marks of what it reads, and which language-model
   forward it ran in: the first forward consumes the prompt, the others are decode steps.

Then, for each module (pure: :func:`classify`):

* the **language model** is what runs at every decode step over the tokens, whatever its name:
  the outermost modules that run at every decode step and hold no module that reads the call's
  media inputs themselves. It, and what it contains, is never media, with one exception: a
  module inside it whose every input derives from media (a resampler re-run at every step,
  cross-attention's projections of the image features) is media, inside prefill or decode;
* a module that runs at every decode step is never media unless it reads media alone: an
  embedding module that merges image features into the text embeddings is text, the encoder it
  calls is vision;
* the **media phase** is the work outside the language model that depends on a media input:
  tower, connector, projector, resampler, or a Q-Former that also reads an instruction.

The outermost media modules are timed from then on, by cheap hooks (:mod:`.hooks`). Where the
pass cannot run, or finds no module reading the media, the names are the fallback, and the map
says why (``phasetime inspect`` prints it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import threading
import weakref
from dataclasses import dataclass, field
from functools import reduce
from typing import Any, Callable, Iterable, Sequence

import torch

from ..core.errors import first_line
from .generation import medium_of
from .names import media_by_name
from .tracing import AUDIO, MEDIA, RAW, TEXT, Follow, ModuleCall, Tracer, ancestor

DISCOVERY_TOKENS = 3  # output tokens of the discovery call: a prefill and two decode steps
# what the discovery call leaves out of the call's arguments: what has side effects (a streamer,
# the user's cache, stateful processors), decodes otherwise, or sets the length
_NOT_IN_DISCOVERY = ("streamer", "logits_processor", "stopping_criteria", "assistant_tokenizer", "tokenizer",
                     "stop_strings", "past_key_values", "cache", "prefill_chunk_size", "max_length", "min_length",
                     "max_time", "num_return_sequences", "return_dict_in_generate", "output_scores", "output_logits",
                     "output_attentions", "output_hidden_states", "negative_prompt_ids", "negative_prompt_attention_mask")


@dataclass(frozen=True)
class Found:
    """A module timed as a medium: ``phase`` (vision or audio), ``role`` (``encoder``: it reads
    the call's media inputs; ``connector``: what another media module returned), ``how``
    (``dataflow``, ``name`` or ``user``) and ``why``, in words; ``every_step``: it re-runs at
    every decode step (its time there is the medium's, inside decode); ``in_forward``: it runs
    inside the language model's forward (transformers <= 5.17 encodes images there)."""

    path: str
    phase: str
    role: str = "encoder"
    how: str = "dataflow"
    why: str = ""
    every_step: bool = False
    in_forward: bool = True


@dataclass(frozen=True)
class MediaMap:
    """What one model's calls of one kind (``kind``: their media keys) are timed as: the media
    modules found (outermost only), the language model's outermost modules, ``source``
    (``dataflow`` or ``names``) with ``reason`` when it is the names, ``complete`` (False: the
    call had no decode step, so what runs at every step is unknown) and ``notes``."""

    kind: frozenset[str]
    found: tuple[Found, ...]
    language: tuple[str, ...] = ()
    source: str = "dataflow"
    reason: str = ""
    complete: bool = True
    decode_steps: int = 0
    notes: tuple[str, ...] = ()
    modules: tuple[Any, ...] = field(default=(), repr=False, compare=False)  # weak references, in found's order

    def present(self, root: torch.nn.Module) -> bool:
        """Whether every module found is still the one at its path in ``root``."""
        for item, ref in zip(self.found, self.modules):
            try:
                if root.get_submodule(item.path) is not ref():
                    return False
            except AttributeError:
                return False
        return True


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == root or ancestor(root, path) for root in roots)


def _reads_inputs(path: str, call: ModuleCall) -> bool:
    """Whether a module call reads the call's media inputs themselves (or a cast, a reshape of
    them), not what another module returned (:data:`~.tracing.RAW`)."""
    return bool(call.flags & MEDIA and call.flags & RAW)


def _language(calls: dict[str, list[ModuleCall]], step: set[str]) -> list[str]:
    """The language model: the outermost modules that run at every decode step and hold no
    module that reads the media inputs themselves."""
    readers = {p for p, cs in calls.items() if any(_reads_inputs(p, c) for c in cs)}
    candidates = [p for p in step if not any(r == p or ancestor(p, r) for r in readers)]
    return sorted(p for p in candidates if not any(q != p and ancestor(q, p) for q in candidates))


def _is_media(path: str, calls: list[ModuleCall], step: set[str] | None, language: list[str]) -> bool:
    """The module docstring's rules; ``step`` None: no decode step was seen."""
    alone = all(c.flags & MEDIA and not c.flags & TEXT for c in calls)
    if step is not None and path in step:
        return alone  # runs at every decode step: media only on media alone
    if alone:
        return True
    mixed = any(c.flags & MEDIA and c.flags & TEXT for c in calls)
    return mixed and step is not None and not _inside(path, language)


def _found(path: str, calls: list[ModuleCall], outer: list[str], step: set[str] | None) -> Found:
    flags = reduce(lambda a, c: a | c.flags, calls, 0)
    keys = sorted({k for c in calls for k in c.keys})
    encoder = any(_reads_inputs(path, c) for c in calls)
    if encoder:
        why = f"reads {', '.join(keys)}"
    else:
        sources = sorted({next((o for o in outer if o == origin or ancestor(o, origin)), origin)
                          for c in calls for origin in c.origins if origin is not None})
        why = f"reads what {', '.join(sources)} returned (from {', '.join(keys)})"
    if flags & TEXT:
        why += " and text, outside the language model"
    every = step is not None and path in step
    if every:
        why += "; re-runs at every decode step on media alone (inside decode)"
    return Found(path, "audio" if flags & MEDIA == AUDIO else "vision", "encoder" if encoder else "connector",
                 "dataflow", why, every, any(c.forward is not None for c in calls))


def classify(kind: frozenset[str], calls: Sequence[ModuleCall], forwards: Sequence[set[str]]) -> MediaMap:
    """The media map of one discovery call (pure; see the module docstring): ``calls`` every
    module call, ``forwards`` the modules each language-model forward ran (the first consumed
    the prompt, the others are decode steps)."""
    decode = list(forwards[1:])
    step = set.intersection(*decode) if decode else None
    by: dict[str, list[ModuleCall]] = {}
    for call in calls:
        by.setdefault(call.path, []).append(call)
    language = _language(by, step) if step is not None else []
    media = [p for p, cs in by.items() if any(c.flags & MEDIA for c in cs) and _is_media(p, cs, step, language)]
    outer = sorted(p for p in media if not any(q != p and ancestor(q, p) for q in media))
    notes = []
    if step is None:
        notes.append("the discovery call had no decode step: only modules reading media alone were found")
    return MediaMap(kind, tuple(_found(p, by[p], outer, step) for p in outer), tuple(language), "dataflow",
                    complete=step is not None, decode_steps=len(decode), notes=tuple(notes))


def fallback(root: torch.nn.Module, kind: frozenset[str], reason: str) -> MediaMap:
    """The media map by names, for when the dataflow pass cannot run or finds nothing."""
    media = {medium_of(key) for key in kind}
    found = [Found(path, phase, "encoder" if encoder else "connector", "name",
                   f"named like a {phase} {'encoder' if encoder else 'projector'}")
             for path, phase, encoder in media_by_name(root) if phase in media]
    return _with_modules(root, MediaMap(kind, tuple(found), source="names", reason=reason))


def _with_modules(root: torch.nn.Module, found: MediaMap) -> MediaMap:
    return dataclasses.replace(found, modules=tuple(weakref.ref(root.get_submodule(f.path)) for f in found.found))


def discovery_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The discovery call's arguments: the call's own, greedy, 3 tokens, without what has side
    effects or decodes otherwise."""
    out = {k: v for k, v in kwargs.items() if k not in _NOT_IN_DISCOVERY}
    out.update(max_new_tokens=DISCOVERY_TOKENS, min_new_tokens=DISCOVERY_TOKENS, do_sample=False, num_beams=1,
               assistant_model=None, prompt_lookup_num_tokens=None)
    return out


@contextlib.contextmanager
def _untouched() -> Any:
    """Run eagerly (compiled code hides module calls and operations) and leave torch's random
    state as it was (a sampled call afterwards draws what it would have drawn)."""
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    eager = torch.compiler.set_stance("force_eager") if "torch._dynamo" in sys.modules else contextlib.nullcontext()
    try:
        with eager, torch.no_grad():
            yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def discover(root: torch.nn.Module, lm: torch.nn.Module, run: Callable[[], Any], media: dict[str, torch.Tensor],
             text: Sequence[torch.Tensor]) -> MediaMap:
    """Follow the data of ``run()`` (one discovery call of ``root``, whose language model's
    forward is ``lm``'s) and say which modules encode ``media``; see the module docstring."""
    kind = frozenset(media)
    tracer = Tracer(root, lm)
    tracer.seed(media, text)
    try:
        with _untouched(), Follow(tracer):
            run()
    except Exception as exc:  # noqa: BLE001 -- the model raises whatever it raises
        return fallback(root, kind, f"the dataflow pass could not run the call: {first_line(exc, 200)}")
    finally:
        tracer.close()
    found = classify(kind, tracer.calls, tracer.forwards)
    if not found.found:
        return fallback(root, kind, "no module outside the language model read a tensor derived from the media inputs")
    return _with_modules(root, found)


# model -> kind of input -> what its calls of that kind are timed as (weak: forgets models that are gone)
_MAPS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[frozenset[str], MediaMap]]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def known(root: torch.nn.Module, kind: frozenset[str]) -> MediaMap | None:
    """What calls of ``kind`` on ``root`` are timed as, if its discovery still holds (its modules
    are still the model's). An incomplete map (the discovery call had no decode step: a model
    that cannot make 3 tokens) is kept as it is, rather than followed again at every call."""
    with _LOCK:
        found = _MAPS.get(root, {}).get(kind)
    return found if found is not None and found.present(root) else None


def remember(root: torch.nn.Module, found: MediaMap) -> None:
    with _LOCK:
        _MAPS.setdefault(root, {})[found.kind] = found


def maps(root: torch.nn.Module) -> list[MediaMap]:
    """Every media map made for ``root`` so far (for ``phasetime inspect``)."""
    with _LOCK:
        return list(_MAPS.get(root, {}).values())
