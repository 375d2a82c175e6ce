"""Naming cells and grouping them into panels and lines, from what varies between them."""

from __future__ import annotations

from typing import Any, Sequence

from ..summary import CellSummary, varying

LONG = 36  # labels longer than this become c<cell> with a key table
FACETS = ("model",)  # one panel per value
SERIES = ("method", "batch_size", "dtype", "attn_implementation", "generation", "image_size", "max_pixels",
          "max_visual_tokens", "max_new_tokens")


def _value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 24 else text[:22] + "…"


def cell_label(cell: CellSummary, shown: Sequence[str], whole: bool = False) -> str:
    """The cell named by the parameters in ``shown`` (long values cut, unless ``whole``)."""
    parts = [f"{c}={cell.get(c) if whole else _value(cell.get(c))}" for c in shown]
    return ", ".join(parts) or f"cell {cell.cell if cell.cell is not None else ''}"


def labels(summary: list[CellSummary]) -> tuple[list[str], list[tuple[str, str]]]:
    """A label per cell, unique, and the key (short label, full label) when labels had to be
    shortened: too long, or two cells whose values cut to the same text (a figure would draw
    them as one bar)."""
    shown = varying(summary)
    full = [cell_label(c, shown) for c in summary]
    if max((len(label) for label in full), default=0) <= LONG and len(set(full)) == len(full):
        return full, []
    short = [f"c{c.cell if c.cell is not None else i}" for i, c in enumerate(summary)]
    if len(set(short)) != len(short):  # cells without a cell id of their own
        short = [f"c{i}" for i in range(len(summary))]
    return short, list(zip(short, [cell_label(c, shown, whole=True) for c in summary]))


def facets(summary: list[CellSummary]) -> list[str]:
    """The parameters that get a panel each (those of :data:`FACETS` that vary)."""
    vary = set(varying(summary))
    return [f for f in FACETS if f in vary]


def split(summary: list[CellSummary], keys: Sequence[str]) -> dict[tuple, list[CellSummary]]:
    """Cells grouped by the values of ``keys``, in first-seen order."""
    out: dict[tuple, list[CellSummary]] = {}
    for cell in summary:
        out.setdefault(tuple(cell.get(k) for k in keys), []).append(cell)
    return out


def series_keys(summary: list[CellSummary], exclude: Sequence[str]) -> list[str]:
    """The varying parameters that tell one line from another in a panel (not the x axis, not the facets)."""
    vary = set(varying(summary))
    return [k for k in SERIES if k in vary and k not in exclude]


def name(keys: Sequence[str], values: Sequence[Any]) -> str:
    return ", ".join(f"{k}={_value(v)}" for k, v in zip(keys, values)) or "all"
