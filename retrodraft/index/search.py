"""Suffix-array kernels: longest matching suffix, and the continuations that follow it.

Everything works on one shard's ``tokens`` (int32, documents separated by -1) and its suffix
array ``sa``. Both may be read-only memory maps; the kernels only touch the pages they compare,
and never read outside ``tokens`` even when ``sa`` is corrupted (positions out of range compare
as shorter than any pattern and continue nothing).
"""

from __future__ import annotations

import numpy as np

from ..jit import njit

__all__ = ["longest_match", "continuations", "count_trie"]


@njit(inline="always")
def _cmp(tokens, start, pattern, p0):
    """Compare the suffix at ``start`` with ``pattern[p0:]``: -1 less, 0 pattern is a prefix, 1 greater."""
    n = tokens.shape[0]
    for j in range(p0, pattern.shape[0]):
        i = start + j - p0
        if i >= n or i < 0:
            return -1
        a = tokens[i]
        b = pattern[j]
        if a < 0:  # the separator sorts after every token (as in the suffix array)
            return 1
        if a != b:
            return -1 if a < b else 1
    return 0


@njit
def _range(tokens, sa, pattern, p0):
    """``[lo, hi)`` of suffix-array rows whose suffix starts with ``pattern[p0:]``."""
    lo, hi = 0, sa.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if _cmp(tokens, sa[mid], pattern, p0) < 0:
            lo = mid + 1
        else:
            hi = mid
    first = lo
    hi = sa.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if _cmp(tokens, sa[mid], pattern, p0) <= 0:
            lo = mid + 1
        else:
            hi = mid
    return first, lo


@njit
def longest_match(tokens, sa, context, min_len):
    """Longest suffix of ``context`` (at least ``min_len`` long) that occurs in the shard.

    Returns ``(length, lo, hi)``: the suffix-array rows ``[lo, hi)`` all start with the last
    ``length`` tokens of ``context``; ``(0, 0, 0)`` if not even ``min_len`` tokens match.
    Longer suffixes occur in a subset of the places shorter ones do, so the search shrinks
    from the longest and stops at the first hit.
    """
    m = context.shape[0]
    for length in range(m, min_len - 1, -1):
        lo, hi = _range(tokens, sa, context, m - length)
        if hi > lo:
            return length, lo, hi
    return 0, 0, 0


@njit
def continuations(tokens, sa, lo, hi, skip, depth, max_matches):
    """``(k, depth)`` int32: up to ``max_matches`` continuations of the matched rows, -1 padded.

    A continuation starts ``skip`` tokens after a match start (past the matched suffix) and stops
    at a document separator. Rows are sampled evenly over ``[lo, hi)`` when there are more.
    """
    total = hi - lo
    k = min(total, max_matches)
    out = np.full((k, depth), -1, np.int32)
    n = tokens.shape[0]
    for r in range(k):
        row = lo + (r * total) // k
        start = sa[row] + skip
        for j in range(depth):
            i = start + j
            if i >= n or i < 0 or tokens[i] < 0:
                break
            out[r, j] = tokens[i]
    return out


@njit
def count_trie(conts, weights, root):
    """A trie of continuations with summed weights: ``(tokens, parents, weight)``, root first.

    Shapes: conts ``(k, depth)`` (-1 padded), weights ``(k,)``. Children are found by a linear
    scan over the nodes made so far; tries here hold at most a few hundred nodes.
    """
    k, depth = conts.shape
    cap = k * depth + 1
    tok = np.empty(cap, np.int64)
    par = np.empty(cap, np.int64)
    w = np.zeros(cap, np.float64)
    tok[0] = root
    par[0] = -1
    m = 1
    for r in range(k):
        node = 0
        w[0] += weights[r]
        for j in range(depth):
            t = conts[r, j]
            if t < 0:
                break
            child = -1
            for c in range(1, m):
                if par[c] == node and tok[c] == t:
                    child = c
                    break
            if child < 0:
                child = m
                tok[m] = t
                par[m] = node
                m += 1
            w[child] += weights[r]
            node = child
    return tok[:m].copy(), par[:m].copy(), w[:m].copy()
