"""The discovery call's trace: tensor marks carried through every torch operation, and every module call.

Used by :mod:`.media`, which says what the marks mean and what is decided from them. A
:class:`Tracer` holds, for one call in one thread, the :class:`Mark` of every tensor computed
from the call's media or text inputs, by weak reference (:class:`~torch.utils.weak.WeakIdKeyDictionary`:
a freed tensor's mark goes with it, and a new tensor at the same address starts unmarked), and
a :class:`ModuleCall` for every module call: what it read, and in which language-model forward.
:class:`Follow` is the :class:`~torch.overrides.TorchFunctionMode` that carries the marks.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

from .generation import medium_of

VISION, AUDIO, TEXT = 1, 2, 4
MEDIA = VISION | AUDIO
# The call's media inputs as they came, or as code outside any module call made of them (a cast,
# a reshape): an operation keeps it only when all its media-marked inputs have it, and a module's
# outputs lose it (they are what the module made). A module reading it reads the media themselves.
RAW = 8
BITS = {"vision": VISION, "audio": AUDIO}


@dataclass(frozen=True, slots=True)
class Mark:
    """What a tensor was computed from: ``flags`` (the media, text and raw bits), ``origin`` (the
    module whose own code made it, for saying what a module reads; None: the call's inputs, or
    code outside every module) and ``keys`` (the media inputs it derives from)."""

    flags: int
    origin: str | None = None
    keys: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ModuleCall:
    """One call of a module in the discovery call: ``forward`` is the language-model forward it
    ran in (0: the prefill; None: outside every forward), ``flags`` the union of its inputs'
    marks, ``origins`` where its media-marked inputs came from."""

    path: str
    forward: int | None
    flags: int
    origins: frozenset[str | None] = frozenset()
    keys: frozenset[str] = frozenset()


def ancestor(origin: str, path: str) -> bool:
    """Whether the module at ``origin`` contains the one at ``path`` (the root's path is "")."""
    return origin == "" or path.startswith(origin + ".")


class Tracer:
    """Records one discovery call: the marks (by weak reference) and every module call."""

    def __init__(self, root: torch.nn.Module, lm: torch.nn.Module) -> None:
        self.marks: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.paths = {id(m): name for name, m in root.named_modules()}  # modules live as long as the call
        self.lm = lm
        self.thread = threading.get_ident()
        self.stack: list[str] = []
        self.calls: list[ModuleCall] = []
        self.forwards: list[set[str]] = []  # the modules each language-model forward ran
        self.current: int | None = None
        self.handles: list[Any] = []
        for module in root.modules():
            self.handles.append(module.register_forward_pre_hook(self._pre, with_kwargs=True, prepend=True))
            self.handles.append(module.register_forward_hook(self._post, always_call=True))

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()

    def seed(self, media: dict[str, torch.Tensor], text: Sequence[torch.Tensor]) -> None:
        for tensor in text:
            self.marks[tensor] = Mark(TEXT)
        for key, tensor in media.items():
            self.marks[tensor] = Mark(BITS[medium_of(key)] | RAW, None, frozenset({key}))

    # -- marks ------------------------------------------------------------------------------------
    def read(self, values: Any, depth: int = 0) -> list[Mark]:
        """The marks of the tensors in ``values`` (tuples, lists and dicts searched 3 deep); a
        cache object counts as text."""
        if isinstance(values, torch.Tensor):
            mark = self.marks.get(values)
            return [mark] if mark is not None else []
        if depth > 3:
            return []
        if isinstance(values, dict):
            values = values.values()
        elif not isinstance(values, (list, tuple)):
            return [Mark(TEXT)] if hasattr(values, "get_seq_length") else []
        return [m for v in values for m in self.read(v, depth + 1)]

    def combine(self, marks: list[Mark]) -> Mark | None:
        """The mark of what an operation made from inputs with ``marks``, in the module running
        now: its origin is that module, unless the data comes out of one of its submodules
        (then it keeps that origin: the module's own code only reshapes what a submodule made)."""
        if not marks:
            return None
        flags, keys, raw = 0, frozenset[str](), True
        for m in marks:
            flags |= m.flags
            keys |= m.keys
            raw = raw and (not m.flags & MEDIA or bool(m.flags & RAW))
        if not flags:
            return None
        flags = flags | RAW if raw and flags & MEDIA else flags & ~RAW
        running = self.stack[-1] if self.stack else None
        origin = running
        for m in marks:
            if m.flags & MEDIA and (running is None or (m.origin is not None and ancestor(running, m.origin))):
                origin = m.origin
                break
        return Mark(flags, origin, keys)

    def stamp(self, values: Any, mark: Mark, depth: int = 0) -> None:
        """Give the tensors in ``values`` the mark (a tensor written in place keeps its own bits
        too, but is raw only if both are)."""
        if isinstance(values, torch.Tensor):
            old = self.marks.get(values)
            if old is not None:
                raw = RAW if old.flags & mark.flags & RAW else 0
                mark = Mark((old.flags | mark.flags) & ~RAW | raw, mark.origin, old.keys | mark.keys)
            self.marks[values] = mark
        elif isinstance(values, (list, tuple)) and depth < 2:
            for v in values:
                self.stamp(v, mark, depth + 1)

    def made(self, values: Any, depth: int = 0) -> None:
        """A module returned ``values``: what it made is no longer the media as they came."""
        if isinstance(values, torch.Tensor):
            old = self.marks.get(values)
            if old is not None and old.flags & RAW:
                self.marks[values] = Mark(old.flags & ~RAW, old.origin, old.keys)
        elif depth < 3 and isinstance(values, (list, tuple, dict)):
            for v in (values.values() if isinstance(values, dict) else values):
                self.made(v, depth + 1)

    # -- module calls -----------------------------------------------------------------------------
    def _pre(self, module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        if threading.get_ident() != self.thread:
            return
        path = self.paths.get(id(module))
        if path is None:
            return
        if module is self.lm:
            self.forwards.append(set())
            self.current = len(self.forwards) - 1
        marks = self.read(args) + self.read(kwargs)
        media = [m for m in marks if m.flags & MEDIA]
        flags = 0
        for m in marks:
            flags |= m.flags
        self.calls.append(ModuleCall(path, self.current, flags, frozenset(m.origin for m in media),
                                     frozenset(k for m in media for k in m.keys)))
        if self.current is not None:
            self.forwards[self.current].add(path)
        self.stack.append(path)

    def _post(self, module: Any, args: Any, output: Any) -> None:
        if threading.get_ident() != self.thread or id(module) not in self.paths:
            return
        if self.stack:
            self.stack.pop()
        self.made(output)
        if module is self.lm:
            self.current = None


def _in_place(name: str) -> bool:
    """Whether an operation of this name writes into its first argument: ``add_``,
    ``masked_scatter_``, ``__setitem__``, ``__iadd__`` (not ``__get__``, a property's read)."""
    if name.startswith("__"):
        return name == "__setitem__" or (name.startswith("__i") and name.endswith("__") and name != "__index__"
                                         and name != "__init__" and name != "__iter__")
    return name.endswith("_")


class Follow(TorchFunctionMode):
    """Carries the tracer's marks through every torch operation."""

    def __init__(self, tracer: Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        tracer = self.tracer
        mark = tracer.combine(tracer.read(args) + tracer.read(kwargs))
        if mark is not None:
            tracer.stamp(out, mark)
            if _in_place(getattr(func, "__name__", "")) and args and isinstance(args[0], torch.Tensor):
                tracer.stamp(args[0], mark)  # an in-place operation writes into its first argument ...
                if args[0]._base is not None:
                    tracer.stamp(args[0]._base, mark)  # ... and, through a view, into the tensor viewed
            if isinstance(kwargs.get("out"), torch.Tensor):
                tracer.stamp(kwargs["out"], mark)
        return out
