"""A bounded n-gram table: context hash -> k weighted successor tokens, in numpy arrays.

Shared by the drafters that key on more than one previous token (``stand``: n-grams storing
next-token distributions; ``aded``: adaptive tri-gram counts). A dict of tuples would be simpler
but unbounded and slow to walk from numba; here the table is an open-addressing hash table with
a fixed number of slots, so its memory is known up front (:attr:`NgramTable.nbytes`) and a full
table evicts the least recently touched row in the probe window instead of growing.

Keys hash the last ``n`` tokens together with ``n`` itself, so contexts of different orders
live side by side. A hash collision maps two contexts onto one row; with 64-bit keys it is
rare, and a wrong guess only costs a rejected draft, never a wrong output.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..jit import njit
from ._kernels import sort_desc

__all__ = ["NgramTable", "NgramArrays", "context_hash", "find", "claim", "sort_row", "longest_row"]

PROBE = 16  # slots searched per key before evicting
PAD = -2  # history slots before the start of the text


@njit(inline="always")
def context_hash(hist, end, n):
    """64-bit hash of ``hist[end - n:end]`` and ``n``; never 0 (0 marks an empty slot)."""
    h = np.uint64(0xCBF29CE484222325) ^ np.uint64(n)
    for i in range(end - n, end):
        h ^= np.uint64(hist[i] + 1)
        h *= np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    if h == np.uint64(0):
        h = np.uint64(1)
    return h


@njit
def find(keys, h):
    """Slot of key ``h`` or -1."""
    mask = np.int64(keys.shape[0] - 1)
    s = np.int64(h & np.uint64(mask))
    for _ in range(PROBE):
        k = keys[s]
        if k == h:
            return s
        if k == np.uint64(0):
            return -1
        s = (s + 1) & mask
    return -1


class NgramArrays(NamedTuple):
    """The arrays of an :class:`NgramTable`, as one argument for the kernels."""

    keys: np.ndarray
    tok: np.ndarray
    w: np.ndarray
    stamp: np.ndarray
    count: np.ndarray


@njit
def claim(tab, h, now):
    """Slot for key ``h``: its own, an empty one, or the stalest in the probe window (cleared)."""
    keys, tok, w, stamp, count = tab.keys, tab.tok, tab.w, tab.stamp, tab.count
    mask = np.int64(keys.shape[0] - 1)
    s = np.int64(h & np.uint64(mask))
    victim = s
    for _ in range(PROBE):
        k = keys[s]
        if k == h:
            stamp[s] = now
            return s
        if k == np.uint64(0):
            victim = s
            break
        if stamp[s] < stamp[victim]:
            victim = s
        s = (s + 1) & mask
    keys[victim] = h
    stamp[victim] = now
    count[victim] = 0.0
    for r in range(tok.shape[1]):
        tok[victim, r] = -1
        w[victim, r] = 0.0
    return victim


@njit
def sort_row(tok, w, s):
    """Order row ``s`` by weight, descending."""
    sort_desc(tok[s], w[s], tok.shape[1])


@njit
def longest_row(table, hist_row):
    """Slot of the longest known context ending ``hist_row`` (order >= ``n_min``), or -1.

    ``table = (keys, n_min)``; slots of ``hist_row`` holding :data:`PAD` are before the text.
    """
    keys, n_min = table
    big_n = hist_row.shape[0]
    for order in range(big_n, n_min - 1, -1):
        if hist_row[big_n - order] == PAD:
            continue
        s = find(keys, context_hash(hist_row, big_n, order))
        if s >= 0:
            return s
    return -1


class NgramTable:
    """Fixed-size table of ``slots`` rows, each ``k`` successor tokens with float weights.

    Args:
        k: successors kept per context.
        max_bytes: memory cap; the slot count is the largest power of two that fits.

    Arrays (all allocated once): ``keys (slots,) uint64``, ``tok (slots, k) int32`` (-1 = none),
    ``w (slots, k) float32``, ``stamp (slots,) int64`` (last touch, for eviction),
    ``count (slots,) float32`` (observations merged into the row).
    """

    def __init__(self, k: int, max_bytes: int) -> None:
        per_slot = 8 + 8 * k + 8 + 4
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 64 * per_slot:
            raise ConfigError(f"table memory must be an integer of at least {64 * per_slot} bytes, got {max_bytes!r}.")
        slots = 1 << int(np.log2(max_bytes // per_slot))
        self.k = k
        self.max_bytes = int(max_bytes)
        self.keys = np.zeros(slots, np.uint64)
        self.tok = np.full((slots, k), -1, np.int32)
        self.w = np.zeros((slots, k), np.float32)
        self.stamp = np.zeros(slots, np.int64)
        self.count = np.zeros(slots, np.float32)
        self.now = 0
        self.arrays = NgramArrays(self.keys, self.tok, self.w, self.stamp, self.count)

    @property
    def slots(self) -> int:
        return int(self.keys.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the table's arrays (the bound promised by ``max_bytes``)."""
        return int(self.keys.nbytes + self.tok.nbytes + self.w.nbytes + self.stamp.nbytes + self.count.nbytes)

    @property
    def used(self) -> int:
        return int(np.count_nonzero(self.keys))

    def clear(self) -> None:
        self.keys.fill(0)
        self.tok.fill(-1)
        self.w.fill(0.0)
        self.stamp.fill(0)
        self.count.fill(0.0)
        self.now = 0

    def row(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """``(tokens, weights)`` stored for exactly this context (all of it is the key), or None."""
        ctx = np.asarray(context, np.int64)
        s = find(self.keys, np.uint64(context_hash(ctx, len(ctx), len(ctx))))
        if s < 0:
            return None
        keep = self.tok[s] >= 0
        return self.tok[s][keep].copy(), self.w[s][keep].copy()
