"""Commands about models: the built-ins."""

from __future__ import annotations

from rich.table import Table

from .app import app, consoles


@app.command("models")
def cmd_models() -> None:
    """List the built-in models (random weights, no download)."""
    from ..experiments import models

    table = Table(title="built-in models")
    table.add_column("name")
    table.add_column("architecture")
    for name, doc in models.BUILTIN.items():
        table.add_row(name + (" (default)" if name == models.DEFAULT_MODEL else ""), doc)
    consoles.out.print(table)
