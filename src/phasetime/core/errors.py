"""The errors phasetime raises on purpose.

Every error meant for the user derives from :class:`PhasetimeError` and carries a message
that names what the user wrote (the file, key, flag or value). The command line catches
this one type, prints its message as one line and exits 2; anything else is a bug of ours
and keeps its traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message as one line for a user-facing error (at most ``limit``
    characters), or its type's name when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else ""
    return line or type(exc).__name__


class PhasetimeError(Exception):
    """Base class of every error phasetime raises for bad input, bad files or unsupported use."""


class UsageError(PhasetimeError, ValueError):
    """A value phasetime cannot use (an argument out of range, an unknown name)."""


class UnsupportedGeneration(PhasetimeError, RuntimeError):
    """Raised for a generation phasetime cannot time correctly.

    The message names the mode (e.g. ``"beam_search"``, ``"assisted_generate"``) or what is
    missing, and how to fix it where there is a fix; a wrong number is never returned instead.
    """
