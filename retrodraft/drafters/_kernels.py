"""The numba kernels several drafters share, so each drafter file holds only its paper's idea.

- :class:`TreeBuffers`: the output arrays of a draft (tokens, parents, depths, scores), allocated
  once per drafter and grown on demand; :func:`init_root` / :func:`add_node` write into them and
  :func:`to_tree` copies the first ``m`` nodes out as a :class:`~retrodraft.tree.DraftTree`.
- :func:`discount`: the acceptance estimate ``p / (1 + shrink * p)`` of a stored probability
  ``p`` that was measured in another context (so is over-confident).
- :func:`sort_desc`: insertion sort of a short (token, weight) row by weight, heaviest first.
- :func:`keep_top`: keep the ``k`` heaviest of a stream of (weight, id) pairs, heaviest first.
- :func:`heap_push` / :func:`heap_pop`: a max-heap of (score, id) for best-first expansion.
- :func:`shift_in`: the last ``N`` tokens ending at a child, from its parent's.
- :func:`fill_template`: fill a rank-path template (see :mod:`._template`) from rows of
  ``(token, probability)`` candidates; the drafter says how a node's history finds its row.

Example (a template ``[[0], [1], [0, 0]]`` filled from rows keyed on the last token)::

    rows: 5 -> [7 (0.6), 3 (0.2)], 7 -> [8 (0.5)]       root 5, shrink 0
    tree: 5 -> 7 (0.6) -> 8 (0.3)
            -> 3 (0.2)
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..jit import njit
from ..tree import DraftTree

__all__ = ["TreeBuffers", "tree_buffers", "grown", "to_tree", "discount", "init_root", "add_node", "sort_desc",
           "keep_top", "heap_push", "heap_pop", "shift_in", "fill_template", "last_token_row"]


class TreeBuffers(NamedTuple):
    """Preallocated output of one draft; node 0 is the root.

    Attributes:
        tokens: ``(n,)`` int64.
        parents: ``(n,)`` int32, ``-1`` for the root.
        depths: ``(n,)`` int32.
        scores: ``(n,)`` float32 path acceptance estimates.
        where: ``(n,)`` int64 scratch (template node -> output node, -1 if dropped).
    """

    tokens: np.ndarray
    parents: np.ndarray
    depths: np.ndarray
    scores: np.ndarray
    where: np.ndarray


def tree_buffers(n: int) -> TreeBuffers:
    """Buffers for drafts of up to ``n`` nodes (root included)."""
    return TreeBuffers(np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n, np.float32),
                       np.empty(n, np.int64))


def grown(buf: TreeBuffers, n: int) -> TreeBuffers:
    """``buf`` if it holds ``n`` nodes, else new buffers of at least twice its size."""
    size = buf.tokens.shape[0]
    return buf if size >= n else tree_buffers(max(n, 2 * size))


def to_tree(buf: TreeBuffers, m: int, proposals: dict | None = None) -> DraftTree:
    """A :class:`DraftTree` of the first ``m`` nodes (copied: the buffers are reused)."""
    return DraftTree(buf.tokens[:m].copy(), buf.parents[:m].copy(), buf.depths[:m].copy(), buf.scores[:m].copy(),
                     proposals or {})


@njit(inline="always")
def discount(p, shrink):
    """Acceptance estimate of a candidate stored with probability ``p``: ``p / (1 + shrink * p)``."""
    return p / (1.0 + shrink * p)


@njit
def init_root(buf, root):
    """Node 0 = ``root`` (no parent, depth 0, score 1)."""
    buf.tokens[0] = root
    buf.parents[0] = -1
    buf.depths[0] = 0
    buf.scores[0] = 1.0


@njit
def add_node(buf, m, parent, token, score):
    """Node ``m`` = ``token`` below ``parent`` with path score ``score``."""
    buf.tokens[m] = token
    buf.parents[m] = parent
    buf.depths[m] = buf.depths[parent] + 1
    buf.scores[m] = score


@njit
def sort_desc(tok, w, m):
    """Sort ``tok[:m]``, ``w[:m]`` (1-D views) by weight, heaviest first; ties keep their order."""
    for i in range(1, m):
        t, x = tok[i], w[i]
        j = i - 1
        while j >= 0 and w[j] < x:
            tok[j + 1] = tok[j]
            w[j + 1] = w[j]
            j -= 1
        tok[j + 1] = t
        w[j + 1] = x


@njit
def keep_top(w, ids, kept, weight, ident):
    """Offer ``(weight, ident)`` to the ``kept`` heaviest so far, ``w[:kept]`` descending, at most
    ``len(w)`` of them; returns the new count. Equal weights keep their arrival order."""
    k = w.shape[0]
    if kept < k or weight > w[kept - 1]:
        j = kept if kept < k else k - 1
        while j > 0 and w[j - 1] < weight:
            w[j] = w[j - 1]
            ids[j] = ids[j - 1]
            j -= 1
        w[j] = weight
        ids[j] = ident
        if kept < k:
            kept += 1
    return kept


@njit
def _heap_before(h_sc, h_id, i, j):
    # max-heap on score; equal scores: the smaller id (pushed earlier) first, for determinism
    return h_sc[i] > h_sc[j] or (h_sc[i] == h_sc[j] and h_id[i] < h_id[j])


@njit
def heap_push(h_sc, h_id, size, score, ident):
    """Push ``(score, ident)`` onto the heap ``h_sc[:size]``, ``h_id[:size]``; returns the new size."""
    i = size
    h_sc[i] = score
    h_id[i] = ident
    while i > 0:
        p = (i - 1) >> 1
        if _heap_before(h_sc, h_id, p, i):
            break
        h_sc[p], h_sc[i] = h_sc[i], h_sc[p]
        h_id[p], h_id[i] = h_id[i], h_id[p]
        i = p
    return size + 1


@njit
def heap_pop(h_sc, h_id, size):
    """Remove the top (highest score, then smallest id; read it at index 0 first); returns the new size."""
    size -= 1
    h_sc[0] = h_sc[size]
    h_id[0] = h_id[size]
    i = 0
    while True:
        l = 2 * i + 1
        r = l + 1
        b = i
        if l < size and _heap_before(h_sc, h_id, l, b):
            b = l
        if r < size and _heap_before(h_sc, h_id, r, b):
            b = r
        if b == i:
            break
        h_sc[b], h_sc[i] = h_sc[i], h_sc[b]
        h_id[b], h_id[i] = h_id[i], h_id[b]
        i = b
    return size


@njit
def shift_in(hist, dst, src, token):
    """``hist[dst]`` = the last ``N`` tokens of ``hist[src]`` followed by ``token`` (``hist (n, N)``)."""
    big_n = hist.shape[1]
    for j in range(big_n - 1):
        hist[dst, j] = hist[src, j + 1]
    hist[dst, big_n - 1] = token


@njit
def last_token_row(table, hist_row):
    """Row lookup of a matrix indexed by token (``table = (rows,)``): the last token's row or -1."""
    t = hist_row[hist_row.shape[0] - 1]
    return t if 0 <= t < table[0] else -1


@njit
def fill_template(row_of, table, rows, tail, tpl, shrink, hist, buf):
    """Fill a rank-path template breadth-first from candidate rows; returns the node count.

    ``rows = (tok, w)``: candidate tokens (-1 = none) and probabilities, ``(rows, k)`` each;
    ``tpl = (parent, rank)``: the compiled template (see :mod:`._template`). Template node ``j``
    becomes candidate ``rank[j]`` of the row its parent's history finds (``row_of(table,
    history) -> row or -1``), scored ``parent score * discount(p)``; an unknown row or candidate
    drops ``j`` and its subtree. ``buf.where[j]`` is template node ``j``'s output index or -1.
    Shapes: tail ``(N,)`` (the last ``N`` tokens, ending at the root), tpl ``(T,)`` each (node
    0 = root), hist ``(>= T, N)`` scratch, buf ``>= T`` nodes.
    """
    tok, w = rows
    tpl_parent, tpl_rank = tpl
    n_tpl = tpl_parent.shape[0]
    k = tok.shape[1]
    hist[0] = tail
    init_root(buf, tail[tail.shape[0] - 1])
    where = buf.where
    where[0] = 0
    row = -2  # row of output node ``row_node``: looked up once per parent (children are contiguous)
    row_node = -1
    m = 1
    for j in range(1, n_tpl):
        where[j] = -1
        pj = where[tpl_parent[j]]
        if pj < 0:
            continue
        if pj != row_node:
            row = row_of(table, hist[pj])
            row_node = pj
        r = tpl_rank[j]
        if row < 0 or r >= k or tok[row, r] < 0:
            continue
        t = tok[row, r]
        where[j] = m
        add_node(buf, m, pj, t, buf.scores[pj] * discount(w[row, r], shrink))
        shift_in(hist, m, pj, t)
        m += 1
    return m
