"""The ``phasetime`` command line: each command parses, calls one library function, prints.

The top floor. Commands live in :mod:`.run`, :mod:`.analyze` and :mod:`.models`;
:func:`main` is the console script, with the one error handler (:mod:`.app`).
"""

from __future__ import annotations

from . import run, analyze, models
from .app import app, consoles, main
from .run import parse_int_list

__all__ = ["app", "consoles", "main", "parse_int_list"]

if __name__ == "__main__":
    main()
