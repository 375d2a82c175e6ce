"""Results: the one schema, the results directory (written safely, verified on every read),
export and trace.

The second floor: it imports only :mod:`phasetime.core`'s torch-free parts, so reading and
analysing results never imports torch.

    table = phasetime.results.read("results/my-run")      # a pyarrow Table, verified
    inventory = phasetime.results.verify("results/my-run")  # what is where, and any damage
"""

from __future__ import annotations

from .files import StoreError
from .integrity import Inventory, Problem, verify
from .reader import read
from .schema import COLUMNS, SCHEMA_VERSION, Column

__all__ = ["COLUMNS", "Column", "Inventory", "Problem", "SCHEMA_VERSION", "StoreError", "read", "verify"]
