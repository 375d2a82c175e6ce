"""Reversible changes to a model: methods replaced by wrappers, hooks registered, targets counted.

Mechanics only (:mod:`.hooks` decides what to change): every change is undone in reverse order,
and a method someone else patched over ours is left alone (our wrapper stays, inert, and calls
through), so no two patchers restore each other's methods wrongly.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Hashable


class Patches:
    """The changes one owner made to a model, each undoable, all undone by :meth:`undo_all`."""

    def __init__(self) -> None:
        self._patches: list[tuple[Any, str, bool, Any, Any]] = []
        self._handles: list[Any] = []
        self._targets: dict[Hashable, Callable[[], None]] = {}  # key -> undo

    def patch(self, owner: Any, name: str, make_wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Callable[[], None]:
        """Replace ``owner.name`` by a wrapper (signature kept: generate() inspects that of
        get_image_features); returns the undo function."""
        had_own = name in vars(owner)
        previous = vars(owner)[name] if had_own else None
        original = getattr(owner, name)
        wrapper = functools.wraps(original)(make_wrapper(original))
        setattr(owner, name, wrapper)
        entry = (owner, name, had_own, previous, wrapper)
        self._patches.append(entry)

        def undo() -> None:
            if entry in self._patches:
                self._patches.remove(entry)
                self._restore(entry)

        return undo

    @staticmethod
    def _restore(entry: tuple[Any, str, bool, Any, Any]) -> None:
        owner, name, had_own, previous, wrapper = entry
        if vars(owner).get(name) is not wrapper:
            return  # someone patched over us: our wrapper stays, inert, and calls through
        if had_own:
            setattr(owner, name, previous)
        else:
            delattr(owner, name)

    def hook(self, handle: Any) -> None:
        """Keep a hook's handle, to remove it with the rest."""
        self._handles.append(handle)

    def target(self, key: Hashable, install: Callable[[], Callable[[], None]]) -> None:
        """Install the target ``key`` once (``install`` returns its undo)."""
        if key not in self._targets:
            self._targets[key] = install()

    def has_target(self, key: Hashable) -> bool:
        return key in self._targets

    def undo_all(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for undo in self._targets.values():
            undo()
        self._targets.clear()
        for entry in reversed(self._patches):
            self._restore(entry)
        self._patches.clear()
