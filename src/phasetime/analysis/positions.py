"""Inter-token gaps by position: each call's gap at every position (a batch's sequences averaged),
each cell's median profile over its calls, the profile every call shares, and a call's last
gap against it (:mod:`.length` judges the contrasts; the report draws the profile)."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..results.tables import call_ids, group_indices, strings


def call_grid(table: pa.Table, rows: np.ndarray) -> np.ndarray | None:
    """[calls, positions] of ``rows``: each call's mean gap at each 0-based position over its
    sequences (NaN where it has none); None without ``itl_ms`` or gaps."""
    if "itl_ms" not in table.column_names or rows.size == 0:
        return None
    column = table.column("itl_ms").take(pa.array(rows)).combine_chunks()
    gaps = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=float)
    if gaps.size == 0:
        return None
    parent = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, parent[1:] != parent[:-1]])  # parents are in order
    position = np.arange(gaps.size) - np.repeat(starts, np.diff(np.r_[starts, gaps.size]))
    _, call = np.unique(call_ids(table)[rows], return_inverse=True)
    ok = np.isfinite(gaps)
    width = int(position.max()) + 1
    calls = int(call.max()) + 1
    flat = call[parent][ok].astype(np.int64) * width + position[ok]
    sums = np.bincount(flat, weights=gaps[ok], minlength=calls * width)
    counts = np.bincount(flat, minlength=calls * width)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan).reshape(calls, width)


def _over_calls(grid: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` percentile of each position over the calls that have it (NaN where none does)."""
    if not np.isnan(grid).any():
        return np.percentile(grid, q, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a position no call reached: NaN, said by the NaN
        return np.nanpercentile(grid, q, axis=0)


def _without_last(grid: np.ndarray) -> np.ndarray:
    """``grid`` with each call's own last gap (its last position with a gap) set to NaN."""
    has = np.isfinite(grid)
    last = grid.shape[1] - 1 - np.argmax(has[:, ::-1], axis=1)
    out = grid.copy()
    out[np.arange(grid.shape[0])[has.any(axis=1)], last[has.any(axis=1)]] = np.nan
    return out


def profiles(table: pa.Table, cells: list[tuple[Any, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """Per cell (its rows): (its median gap by position over its calls, each call's own last gap
    left out: the one an end-of-call cost would touch; its calls' gaps, :func:`call_grid`);
    None without gaps."""
    out = []
    for _, idx in cells:
        grid = call_grid(table, idx)
        if grid is None:
            return None
        out.append((_over_calls(_without_last(grid), 50), grid))
    return out


def shared_profile(profile_list: list[np.ndarray]) -> np.ndarray | None:
    """The log gap profile ``b_k`` every call shares, from the additive fit ``log g_c(k) = a_c +
    b_k`` over the cells' median profiles (each call's last gap already left out); backfitting:
    alternate means until they settle. NaN where no cell has the position; None when no cell
    has a gap but its calls' last."""
    width = max(p.size for p in profile_list)
    x = np.full((len(profile_list), width), np.nan)
    for c, p in enumerate(profile_list):
        x[c, :p.size] = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), np.nan)
    interior = np.isfinite(x)
    if not interior.any():
        return None
    xi = np.where(interior, x, 0.0)
    per_position, per_cell = interior.sum(axis=0), interior.sum(axis=1)
    a, b = np.zeros(len(profile_list)), np.zeros(width)
    for _ in range(1000):
        with np.errstate(invalid="ignore", divide="ignore"):
            b_new = np.where(per_position > 0, ((xi - a[:, None]) * interior).sum(axis=0) / per_position, np.nan)
            a_new = np.where(per_cell > 0, ((xi - np.nan_to_num(b_new)[None, :]) * interior).sum(axis=1)
                             / np.maximum(per_cell, 1), 0.0)
        done = np.nanmax(np.abs(np.r_[a_new - a, np.nan_to_num(b_new - b)])) < 1e-12
        a, b = a_new, b_new
        if done:
            break
    return b


def last_gap_contrast(grid: np.ndarray, b: np.ndarray) -> tuple[float, float | None, int] | None:
    """A cell's (its calls' gaps ``grid``) end-of-call contrast against the shared profile ``b``:
    per call, its own last gap's log against the profile at that position (a call that stopped
    early at EOS ends where it ended), minus the mean of its other gaps' against the profile at
    theirs; the median over the calls that have both, the variance of their mean (None with one
    call) and their count. What the call's own moment and every shared position do cancel; what
    only the last step of a call carries stays. None when no call qualifies."""
    width = min(grid.shape[1], b.size)
    grid = grid[:, :width]
    with np.errstate(invalid="ignore", divide="ignore"):
        logs = np.log(np.where(grid > 0, grid, np.nan)) - b[:width]
    has = np.isfinite(grid)
    rows = np.flatnonzero(has.any(axis=1))
    last = width - 1 - np.argmax(has[rows, ::-1], axis=1)
    ends = logs[rows, last]
    others = np.where(np.arange(width)[None, :] < last[:, None], logs[rows], np.nan)
    counted = np.isfinite(others).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_call = ends - np.nansum(others, axis=1) / np.where(counted > 0, counted, np.nan)
    per_call = per_call[np.isfinite(per_call)]
    if per_call.size == 0:
        return None
    spread = float(per_call.var(ddof=1) / per_call.size) if per_call.size >= 2 else None
    return float(np.median(per_call)), spread, int(per_call.size)


def position_profile(table: pa.Table, config_columns: tuple[str, ...]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Per configuration of the direct rows: (scope, positions 1.., [median, q1, q3] of the
    calls' gaps at each position, pooled over the configuration's cells), for the report's figure."""
    methods = strings(table, "method") if "method" in table.column_names else np.full(table.num_rows, "direct", object)
    names = [c for c in config_columns if c in table.column_names]
    varying = [n for n in names if len(table.column(n).unique()) > 1]
    out = []
    for key, rows in group_indices(table, names).items():
        grid = call_grid(table, rows[methods[rows] == "direct"])
        if grid is None:
            continue
        q = np.column_stack([_over_calls(grid, p) for p in (50, 25, 75)])
        keep = np.isfinite(q[:, 0])
        scope = ", ".join(f"{n}={v}" for n, v in zip(names, key) if n in varying) or "all rows"
        out.append((scope, np.flatnonzero(keep) + 1, q[keep]))
    return out


__all__ = ["call_grid", "last_gap_contrast", "position_profile", "profiles", "shared_profile"]
