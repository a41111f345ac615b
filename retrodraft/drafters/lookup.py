"""Prompt lookup that branches: earlier occurrences of the current suffix, merged into one trie.

The context so far (prompt plus output) often repeats itself: code reuses identifiers, answers
quote the question, a summary copies phrases. Every earlier place where the last ``n`` tokens
occurred is a guess that what followed it then follows now. Unlike transformers' prompt lookup
(one chain from the first match), every match up to ``max_matches`` becomes a branch of a trie.

Example (max_ngram = 3)::

    context = [1, 2, 3, 9, 1, 2, 4, 1, 2]          suffix [1, 2], root 2
    [1, 2] occurred before, ending at indices 2 and 5 (the 3-gram [4, 1, 2] never did):
        2 -> 4 -> 1 -> 2 -> 4 ...    the later occurrence, wrapping into the suffix
        2 -> 3 -> 9 -> 1 -> 2 ...    the earlier one
    Both are 2-gram matches of equal weight, so each first token scores
    confidence(2) * 1/2 = 0.27, and the token after it 0.27 * confidence(3) = 0.18.

A continuation that runs into the current suffix wraps around (the text is repeating with
period ``N - end``), so every branch is as long as the budget.

Nothing is learnt across calls: the context holds all the state, so :meth:`begin`,
:meth:`observe` and :meth:`reset` do nothing.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..errors import ConfigError
from ..jit import njit
from ..tree import DraftTree
from ._confidence import confidence
from ._kernels import add_node, init_root, to_tree, tree_buffers
from .base import Drafter

__all__ = ["PromptLookup"]


@njit
def _find_matches(context, min_n, max_n, pos, lens):
    """Earlier occurrences of the suffix, most recent first; returns how many.

    ``pos[j]`` is the end (exclusive) of occurrence j and ``lens[j]`` its length:
    ``context[e - L:e] == context[N - L:N]`` with ``L`` maximal, ``min_n <= L <= max_n``, ``e < N``.
    Shapes: context ``(N,)``, pos/lens ``(N,)``.
    """
    n = context.shape[0]
    m = 0
    for e in range(n - 1, 0, -1):
        length = 0
        while length < max_n and e - 1 - length >= 0 and context[e - 1 - length] == context[n - 1 - length]:
            length += 1
        if length >= min_n:
            pos[m] = e
            lens[m] = length
            m += 1
    return m


@njit
def _next(context, e, i):
    # Token i of the continuation after an occurrence ending at e; wraps with period N - e.
    return context[e + i % (context.shape[0] - e)]


class _Selection(NamedTuple):
    """Up to ``max_matches`` distinct continuations: where each ends, its evidence, its match length."""

    pos: np.ndarray  # (max_matches,) int64
    weight: np.ndarray  # (max_matches,) float64
    length: np.ndarray  # (max_matches,) int64


class _Trie(NamedTuple):
    """Per-node scratch of the trie: evidence, best match length, first child, next sibling."""

    w: np.ndarray  # (nodes,) float64
    best: np.ndarray  # (nodes,) int64
    first_child: np.ndarray  # (nodes,) int64
    next_sib: np.ndarray  # (nodes,) int64


@njit
def _select(context, pos, lens, m, span, weight, sel):
    """Pick up to ``len(sel.pos)`` distinct continuations (``span`` tokens), longest match first.

    Identical continuations pool their evidence (``weight[L]`` per match of length ``L``).
    Returns ``(how many were kept, the total evidence of all matches)``.
    """
    s = 0
    total = 0.0
    max_n = weight.shape[0] - 1
    for length in range(max_n, 0, -1):
        for j in range(m):
            if lens[j] != length:
                continue
            e = pos[j]
            total += weight[length]
            dup = -1
            for q in range(s):
                same = True
                for i in range(span):
                    if _next(context, e, i) != _next(context, sel.pos[q], i):
                        same = False
                        break
                if same:
                    dup = q
                    break
            if dup >= 0:
                sel.weight[dup] += weight[length]
            elif s < sel.pos.shape[0]:
                sel.pos[s] = e
                sel.weight[s] = weight[length]
                sel.length[s] = length
                s += 1
    return s, total


@njit
def _build_trie(context, sel, s, total, span, conf, buf, trie):
    """Trie of the ``s`` selected continuations below the root ``context[-1]``; returns its size.

    ``trie.w[v]``: summed evidence of the continuations through ``v`` (``w[0] = total`` also
    counts matches left out once the selection was full); ``trie.best[v]``: their longest match
    length. Scores multiply, along the path, ``conf[best[v] + depth(parent)] * w[v] / w[parent]``.
    """
    w, best, first_child, next_sib = trie.w, trie.best, trie.first_child, trie.next_sib
    init_root(buf, context[context.shape[0] - 1])
    w[0] = total
    best[0] = 0  # unused: the root keeps score 1
    first_child[0] = -1
    size = 1
    for q in range(s):
        v = 0
        for i in range(span):
            t = _next(context, sel.pos[q], i)
            c = first_child[v]
            while c >= 0 and buf.tokens[c] != t:
                c = next_sib[c]
            if c < 0:
                c = size
                size += 1
                add_node(buf, c, v, t, 0.0)
                w[c] = 0.0
                best[c] = 0
                first_child[c] = -1
                next_sib[c] = first_child[v]
                first_child[v] = c
            w[c] += sel.weight[q]
            if sel.length[q] > best[c]:
                best[c] = sel.length[q]
            v = c

    top = conf.shape[0] - 1
    for c in range(1, size):
        p = buf.parents[c]
        buf.scores[c] = buf.scores[p] * conf[min(best[c] + buf.depths[p], top)] * (w[c] / w[p])
    return size


#: Evidence weight of a match of length L is WEIGHT_BASE ** L: a longer match outweighs shorter ones.
WEIGHT_BASE = 2.0


class PromptLookup(Drafter):
    """Drafts the continuations of earlier occurrences of the context's suffix, as one trie.

    Args:
        max_ngram: longest suffix matched (longer matches are preferred and trusted more).
        min_ngram: shortest suffix matched, >= 1.
        max_matches: distinct continuations kept (branches of the trie), most recent first
            within one match length.

    Scores: the probability that a node is accepted once its parent was is estimated as
    ``confidence(L + d) * share``: ``L + d`` is how many tokens of the context already agree with
    the node's best occurrence (its match length ``L`` plus the ``d`` drafted tokens above the
    node) and ``share`` is the fraction of the parent's evidence (matches weighted by
    ``WEIGHT_BASE ** L``, identical continuations counted) that continues this way. A node's score
    is the product along its path.
    """

    name = "lookup"

    def __init__(self, max_ngram: int = 8, min_ngram: int = 1, max_matches: int = 8) -> None:
        for arg, value in (("max_ngram", max_ngram), ("min_ngram", min_ngram), ("max_matches", max_matches)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{arg} must be an integer >= 1, got {value!r}.")
        if min_ngram > max_ngram:
            raise ConfigError(f"min_ngram ({min_ngram}) must not exceed max_ngram ({max_ngram}).")
        self.max_ngram, self.min_ngram, self.max_matches = int(max_ngram), int(min_ngram), int(max_matches)
        self._weight = WEIGHT_BASE ** np.arange(self.max_ngram + 1)
        self._conf = confidence(np.arange(self.max_ngram + 257))
        self._pos = np.empty(0, np.int64)
        self._lens = np.empty(0, np.int64)
        self._sel = _Selection(np.empty(self.max_matches, np.int64), np.empty(self.max_matches, np.float64),
                               np.empty(self.max_matches, np.int64))
        self._span = -1
        self._ensure(16, 4)
        self.propose(np.array([1, 2, 1, 2], dtype=np.int64), 4)  # compile once

    def _ensure(self, n: int, span: int) -> None:
        if self._pos.shape[0] < n:
            size = max(n, 2 * self._pos.shape[0])
            self._pos = np.empty(size, np.int64)
            self._lens = np.empty(size, np.int64)
        if span != self._span:
            nodes = self.max_matches * span + 1
            self._buf = tree_buffers(nodes)
            self._trie = _Trie(np.empty(nodes, np.float64), np.empty(nodes, np.int64), np.empty(nodes, np.int64),
                               np.empty(nodes, np.int64))
            self._span = span

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        context = np.ascontiguousarray(context, dtype=np.int64)
        root = int(context[-1])
        if budget <= 0 or context.shape[0] < 2:
            return DraftTree.root_only(root)
        self._ensure(context.shape[0], int(budget))
        m = _find_matches(context, self.min_ngram, self.max_ngram, self._pos, self._lens)
        if m == 0:
            return DraftTree.root_only(root)
        s, total = _select(context, self._pos, self._lens, m, self._span, self._weight, self._sel)
        size = _build_trie(context, self._sel, s, total, self._span, self._conf, self._buf, self._trie)
        return to_tree(self._buf, size).prune(budget)

    # ------------------------------------------------------------------ saved state
    def state(self) -> dict:
        """Nothing is learnt: the context holds all of prompt lookup's state."""
        return {}

    def load_state(self, d: dict) -> None:
        """Nothing to restore."""
