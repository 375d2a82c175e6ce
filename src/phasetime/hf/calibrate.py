"""What the probe costs that it cannot time itself, measured once per process.

The probe's hooks time their own bodies, but not torch calling them (the module's hook
dispatch, ``torch.compiler.disable``'s wrapper where the hooks are guarded) nor the frame the
stopping-criteria wrapper adds to every step. :func:`unseen_ns` measures those against the
same calls without the probe's hooks, on a module of no work, once per process (~20 ms), so
that ``probe_ms`` owns everything the probe adds (docs/benchmarks.md, "The probe's cost").
"""

from __future__ import annotations

import functools
import time
from typing import Any

import torch

_ROUNDS, _CALLS = 7, 400


def _best_ns(fn: Any) -> float:
    """The fastest of several rounds, per call (a stall only adds time)."""
    best = float("inf")
    for _ in range(_ROUNDS):
        start = time.perf_counter_ns()
        for _ in range(_CALLS):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / _CALLS)
    return best


@functools.lru_cache(maxsize=None)
def unseen_ns(guarded: bool) -> tuple[float, float]:
    """(ns one forward hook call costs beyond its body, ns the stopping-criteria wrapper adds
    to a step); ``guarded``: the hooks wrapped in ``torch.compiler.disable``."""
    from transformers.generation.stopping_criteria import StoppingCriteriaList

    from .outputs import StopRecorder

    module = torch.nn.Identity()
    x = torch.zeros(1)
    module.register_forward_pre_hook(lambda m, a: None)  # the plain generate()'s own hook
    bare = _best_ns(lambda: module(input=x))

    def pre(m: Any, a: Any, k: Any) -> None:
        return None

    def post(m: Any, a: Any, o: Any) -> None:
        return None

    hooks = (torch.compiler.disable(pre), torch.compiler.disable(post)) if guarded else (pre, post)
    module.register_forward_pre_hook(hooks[0], with_kwargs=True, prepend=True)
    module.register_forward_hook(hooks[1])
    hooked = _best_ns(lambda: module(input=x))
    criteria = StoppingCriteriaList([])
    wrapped = StopRecorder().wrap(criteria)
    ids = torch.zeros(1, 1, dtype=torch.long)
    plain, recording = _best_ns(lambda: criteria(ids, None)), _best_ns(lambda: wrapped(ids, None))
    return max(hooked - bare, 0.0) / 2, max(recording - plain, 0.0)
