"""The ``phasetime`` application object, its consoles and its one error handler.

Importing this module imports neither torch, transformers nor pyarrow: each command
imports what it needs when it runs, so ``phasetime --help``, ``--version`` and argument
errors answer at once.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    help="Direct, phase-by-phase latency of Hugging Face generate() calls.",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
)


def _console(stderr: bool) -> Console:
    """A console; without a terminal (a pipe, a CI log) tables keep their full width."""
    stream = sys.stderr if stderr else sys.stdout
    tty = stream.isatty()
    width = None if tty else int(os.environ.get("COLUMNS") or 0) or 240
    return Console(stderr=stderr, width=width, soft_wrap=False)


class _Consoles:
    """Created on first use, so that tests (and pipes opened later) get the right streams."""

    def __init__(self) -> None:
        self._out: Console | None = None
        self._err: Console | None = None

    @property
    def out(self) -> Console:
        if self._out is None:
            self._out = _console(False)
        return self._out

    @out.setter
    def out(self, console: Console) -> None:
        self._out = console

    @property
    def err(self) -> Console:
        if self._err is None:
            self._err = _console(True)
        return self._err

    def reset(self) -> None:
        self._out = self._err = None


consoles = _Consoles()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line ``error: ...`` on stderr and exit with ``code``."""
    consoles.err.print(f"[bold red]error:[/] {_escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _version(value: bool) -> None:
    if value:
        from ..core.version import VERSION

        typer.echo(f"phasetime {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Direct, phase-by-phase latency of Hugging Face generate() calls."""


def command() -> Any:
    """The click command of :data:`app`, its flags shown without a value type in --help
    (typer gives a flag the type ``<bool>``, which reads as if it took a value)."""
    import typer.main

    root = typer.main.get_command(app)
    groups = [root, *getattr(root, "commands", {}).values()]
    for cmd in groups:
        for param in cmd.params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        cmd.get_help_option = _bare_help(cmd.get_help_option)
    return root


def _bare_help(make: Any) -> Any:
    def get_help_option(ctx: Any) -> Any:
        option = make(ctx)
        if option is not None:
            option.metavar = ""
        return option

    return get_help_option


def main(argv: list[str] | None = None) -> None:
    """The console script: every PhasetimeError is one line (exit 2); Ctrl-C exits 130 quietly."""
    consoles.reset()
    try:
        from ..core.errors import PhasetimeError

        try:
            code = command().main(args=argv, standalone_mode=False)
        except PhasetimeError as exc:
            consoles.err.print(f"[bold red]error:[/] {_escape(str(exc))}", highlight=False, soft_wrap=True)
            code = 2
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted", file=sys.stderr)
        code = 130
    except BrokenPipeError:
        code = 1
    except Exception as exc:
        if not (hasattr(exc, "show") and hasattr(exc, "exit_code")):
            raise  # a bug of ours: keep its traceback
        exc.show()  # a usage error (unknown option, bad value): click's own message
        code = exc.exit_code
    sys.exit(code if isinstance(code, int) else 0)
