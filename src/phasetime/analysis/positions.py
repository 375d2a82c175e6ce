"""Inter-token gaps by position: each call's gap at every position (a batch's sequences averaged),
each cell's median profile over its calls, and the additive fit that separates a cell's level from
the profile every call shares (:mod:`.length` judges the levels; the report draws the profile)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..results.tables import call_ids, group_indices, strings


def _group_quantiles(keys: np.ndarray, values: np.ndarray, qs: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(the distinct keys, their values' quantiles [keys, qs]) with numpy's linear interpolation."""
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    counts = np.diff(np.r_[starts, k.size])
    out = np.empty((starts.size, len(qs)))
    for j, q in enumerate(qs):
        pos = starts + q * (counts - 1)
        lo = np.floor(pos).astype(np.int64)
        hi = np.minimum(lo + 1, starts + counts - 1)
        out[:, j] = v[lo] + (v[hi] - v[lo]) * (pos - lo)
    return k[starts], out


def _call_gaps(table: pa.Table, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per (call, position) of ``rows``: (call index, 0-based position, the call's mean gap over
    its sequences); None without ``itl_ms``."""
    if "itl_ms" not in table.column_names or rows.size == 0:
        return None
    column = table.column("itl_ms").take(pa.array(rows)).combine_chunks()
    gaps = np.asarray(pc.list_flatten(column).to_numpy(zero_copy_only=False), dtype=float)
    parent = np.asarray(pc.list_parent_indices(column).to_numpy(zero_copy_only=False), dtype=np.int64)
    if gaps.size == 0:
        return None
    position = np.arange(gaps.size) - np.searchsorted(parent, parent)
    _, call = np.unique(call_ids(table)[rows], return_inverse=True)
    ok = np.isfinite(gaps)
    width = int(position.max()) + 1
    key = call[parent][ok].astype(np.int64) * width + position[ok]
    distinct, inverse = np.unique(key, return_inverse=True)
    mean = np.bincount(inverse, weights=gaps[ok]) / np.bincount(inverse)
    return distinct // width, distinct % width, mean


def profiles(table: pa.Table, cells: list[tuple[Any, np.ndarray]]) -> list[np.ndarray] | None:
    """Each cell's median gap by position over its calls (positions 0 .. N - 2); None without gaps."""
    out = []
    for cell, idx in cells:
        found = _call_gaps(table, idx)
        if found is None:
            return None
        _, position, mean = found
        keys, q = _group_quantiles(position, mean, (0.5,))
        length = int(round(cell.n)) - 1
        profile = np.full(length, np.nan)
        inside = keys < length
        profile[keys[inside]] = q[inside, 0]
        if not np.isfinite(profile).any():
            return None
        out.append(profile)
    return out


def shared_profile(profile_list: list[np.ndarray]) -> np.ndarray | None:
    """The log gap profile ``b_k`` every call shares, from the additive fit ``log g_c(k) = a_c +
    b_k`` over the cells' median profiles, made without each cell's last gap (the one an
    end-of-call cost would touch); backfitting: alternate means until they settle. NaN where
    no cell has the position outside its last gap; None when no cell has an interior gap."""
    width = max(p.size for p in profile_list)
    x = np.full((len(profile_list), width), np.nan)
    for c, p in enumerate(profile_list):
        x[c, :p.size] = np.where(p > 0, np.log(np.where(p > 0, p, 1.0)), np.nan)
    last = np.array([p.size - 1 for p in profile_list])
    interior = np.isfinite(x) & (np.arange(width)[None, :] < last[:, None])
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


def last_gap_contrast(table: pa.Table, rows: np.ndarray, n: int, b: np.ndarray) -> tuple[float, float | None, int] | None:
    """A cell's (of output length ``n``, its ``rows``) end-of-call contrast against the shared
    profile ``b``: per call, its last gap's log against the profile there, minus the mean of its
    other gaps' against the profile at theirs; the median over the cells' calls, the variance of
    that median's calls (None with one call) and their count. What the call's own moment and
    every shared position do cancel; what only the last step of a call carries stays. None
    when the call has no other gap or ``b`` lacks the position."""
    last = n - 2
    if last < 1 or last >= b.size or not np.isfinite(b[last]) or not np.isfinite(b[:last]).any():
        return None
    found = _call_gaps(table, rows)
    if found is None:
        return None
    call, position, mean = found
    keep = (position <= last) & (mean > 0)
    calls = np.unique(call[keep])
    grid = np.full((calls.size, last + 1), np.nan)
    grid[np.searchsorted(calls, call[keep]), position[keep]] = np.log(mean[keep]) - b[position[keep]]
    others = np.where(np.isfinite(b[:last]), grid[:, :last], np.nan)
    counted = np.isfinite(others).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_call = grid[:, last] - np.nansum(others, axis=1) / np.where(counted > 0, counted, np.nan)
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
        rows = rows[methods[rows] == "direct"]
        found = _call_gaps(table, rows)
        if found is None:
            continue
        _, position, mean = found
        positions, q = _group_quantiles(position, mean, (0.5, 0.25, 0.75))
        scope = ", ".join(f"{n}={v}" for n, v in zip(names, key) if n in varying) or "all rows"
        out.append((scope, positions + 1, q))
    return out


__all__ = ["last_gap_contrast", "position_profile", "profiles", "shared_profile"]
