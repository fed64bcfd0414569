"""Device tables of int64 columns (the addresses of layers' logits, their parameter indices or sizes) that one
kernel launch reads for several layers, kept between steps in a dict the caller owns (the model's).

Eviction: a table is keyed by its device and its contents, so a kept table is never stale. The
``LIMIT`` tables used least recently are kept; using one more evicts the least recently used. A table used
while a CUDA graph is being captured on the current stream is kept for as long as the dict (a graph replays
the addresses it captured; the dict's owner outlives its graphs), and none is built during a capture (a
host-to-device copy cannot be captured): ``columns`` then returns None and the caller launches without one.
"""

from __future__ import annotations

import torch

LIMIT = 64  # tables kept beside the captured ones (a model's shapes of layers, and a step-values table)
_RECENT = "device_tables.recent"  # the tables in order of use, least recent first
_CAPTURED = "device_tables.captured"  # the tables a CUDA graph may replay


def columns(store: dict, device: torch.device, values: tuple[tuple[int, ...], ...]) -> tuple[torch.Tensor, ...] | None:
    """int64 tensors on ``device``, one per tuple of ``values``, kept in ``store`` (see the module docstring).

    Args:
        store: the caller's dict of tables, {} at first; nothing else is kept in it.
        device: where the kernels read the tables.
        values: the tables' columns, as ints.

    Returns:
        the tables, or None while a CUDA graph is being captured on ``device``'s current stream and
        ``store`` holds none of these values.
    """
    key = (device, values)
    recent = store.get(_RECENT)
    if recent is None:
        recent, store[_CAPTURED] = store.setdefault(_RECENT, {}), {}
    captured = store[_CAPTURED]
    tables = captured.get(key)
    if tables is not None:
        return tables
    tables = recent.pop(key, None)
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        if tables is not None:
            captured[key] = tables
        return tables
    if tables is None:
        tables = tuple(torch.tensor(column, dtype=torch.int64, device=device) for column in values)
        if len(recent) >= LIMIT:
            del recent[next(iter(recent))]
    recent[key] = tables
    return tables


def kept(store: dict) -> int:
    """How many tables ``store`` keeps (captured ones included)."""
    return len(store.get(_RECENT, ())) + len(store.get(_CAPTURED, ()))
