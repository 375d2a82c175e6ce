"""What kind of model the adapter has in hand: a compiled wrapper, a model with its own generate().

Read once per model (or class), never per step.
"""

from __future__ import annotations

import functools
import inspect
import sys
from typing import Any

import torch

from .generation import option

INNER_LM_NAMES = ("language_model", "text_model", "text_decoder")


def unwrap(model: Any) -> Any:
    """The module under a ``torch.compile(model)`` wrapper (its hooks are the ones that run)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def brings_own_generate(model: Any) -> bool:
    """Whether the model's class overrides GenerationMixin's generate()."""
    generate = getattr(type(model), "generate", None)
    return generate is not None and getattr(generate, "__qualname__", "") != "GenerationMixin.generate"


def hands_over_to_itself(model: Any) -> bool:
    """Whether a model's own generate() hands over to the standard one on the same model
    (``super().generate(...)``, as Janus does in text mode): such a call is timed as a standard
    one, its forwards being the model's own."""
    cls: Any = type(model)  # hashable, as lru_cache needs (mypy types a class as unhashable)
    return _calls_super_generate(cls)


@functools.lru_cache(maxsize=None)
def _calls_super_generate(cls: Any) -> bool:
    """Read once per class: a new ModelHooks is made at every measure() call."""
    try:
        source = inspect.getsource(cls.generate)
    except (OSError, TypeError):
        return False
    return "super().generate(" in source


def inner_language_model(model: Any) -> Any | None:
    """The language model a model with its own generate() hands over to, if it is a standard one."""
    for name in INNER_LM_NAMES:
        inner = getattr(model, name, None)
        if isinstance(inner, torch.nn.Module) and hasattr(inner, "generate") and not brings_own_generate(inner):
            return inner
    return None


def forget_compiled(model: torch.nn.Module) -> int:
    """Make torch.compile trace the model's compiled forwards (``m.forward = torch.compile(m.forward)``)
    again at their next call, so that hooks added since are traced too (dynamo does not guard on
    a module's hooks: hooks added after a forward compiled never run inside it). Returns how many
    compiled forwards it found; the recompile shows in that call's ``compiles``."""
    if "torch._dynamo" not in sys.modules:
        return 0  # nothing was ever compiled in this process
    from torch._C._dynamo.eval_frame import reset_code

    found = 0
    for code in compiled_forwards(model):
        if code not in _RETRACED:
            reset_code(code)
            _RETRACED.add(code)
            found += 1
    return found


_RETRACED: set[Any] = set()


def compiled_forwards(model: torch.nn.Module) -> list[Any]:
    """The code objects of the model's forwards compiled with ``m.forward = torch.compile(m.forward)``."""
    codes = []
    for module in model.modules():
        original = getattr(vars(module).get("forward"), "_torchdynamo_orig_callable", None)
        code = getattr(getattr(original, "__func__", original), "__code__", None)
        if code is not None:
            codes.append(code)
    return codes


def may_run_compiled(model: torch.nn.Module, kwargs: dict[str, Any]) -> bool:
    """Whether a generate() call may run compiled code around the language model's forward:
    a forward in the model compiled by the user, or transformers compiling it for a static
    cache (``cache_implementation``, a compileable cache passed in, a ``compile_config``)."""
    if "torch._dynamo" not in sys.modules:
        return False  # nothing was ever compiled in this process
    if option(model, kwargs, "compile_config") is not None or option(model, kwargs, "cache_implementation") is not None:
        return True
    cache = kwargs.get("past_key_values", kwargs.get("cache"))
    if cache is not None and getattr(cache, "is_compileable", False) and type(cache).__name__ != "DynamicCache":
        return True
    return bool(compiled_forwards(model))
