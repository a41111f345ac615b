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

import numba
import numpy as np

from ..errors import ConfigError
from ..tree import DraftTree
from .base import Drafter

__all__ = ["PromptLookup"]


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _next(context, e, i):
    # Token i of the continuation after an occurrence ending at e; wraps with period N - e.
    return context[e + i % (context.shape[0] - e)]


@numba.njit(cache=True)
def _build_trie(
    context, pos, lens, m, min_n, max_n, max_matches, span, weight, conf,
    sel_pos, sel_w, sel_len, out_tok, out_par, out_dep, out_sc, w, best, first_child, next_sib,
):  # fmt: skip
    """Pick up to ``max_matches`` distinct continuations, longest match first, and trie them.

    Returns the number of trie nodes. Node 0 is the root ``context[-1]``.
    ``w[v]``: summed ``weight[L]`` of the matches whose continuation passes through ``v``
    (``w[0]`` also counts matches left out once ``max_matches`` was reached);
    ``best[v]``: their longest match length. Scores (``out_sc``) multiply, along the path,
    ``conf[best[v] + depth(parent)] * w[v] / w[parent]``.
    """
    s = 0
    total = 0.0
    for length in range(max_n, min_n - 1, -1):
        for j in range(m):
            if lens[j] != length:
                continue
            e = pos[j]
            total += weight[length]
            dup = -1
            for q in range(s):
                same = True
                for i in range(span):
                    if _next(context, e, i) != _next(context, sel_pos[q], i):
                        same = False
                        break
                if same:
                    dup = q
                    break
            if dup >= 0:
                sel_w[dup] += weight[length]
            elif s < max_matches:
                sel_pos[s] = e
                sel_w[s] = weight[length]
                sel_len[s] = length
                s += 1

    out_tok[0] = context[context.shape[0] - 1]
    out_par[0] = -1
    out_dep[0] = 0
    out_sc[0] = 1.0
    w[0] = total
    best[0] = max_n
    first_child[0] = -1
    size = 1
    for q in range(s):
        v = 0
        for i in range(span):
            t = _next(context, sel_pos[q], i)
            c = first_child[v]
            while c >= 0 and out_tok[c] != t:
                c = next_sib[c]
            if c < 0:
                c = size
                size += 1
                out_tok[c] = t
                out_par[c] = v
                out_dep[c] = out_dep[v] + 1
                w[c] = 0.0
                best[c] = 0
                first_child[c] = -1
                next_sib[c] = first_child[v]
                first_child[v] = c
            w[c] += sel_w[q]
            if sel_len[q] > best[c]:
                best[c] = sel_len[q]
            v = c

    top = conf.shape[0] - 1
    for c in range(1, size):
        p = out_par[c]
        out_sc[c] = out_sc[p] * conf[min(best[c] + out_dep[p], top)] * (w[c] / w[p])
    return size


#: Evidence weight of a match of length L is WEIGHT_BASE ** L: a longer match outweighs shorter ones.
WEIGHT_BASE = 2.0


def confidence(length: np.ndarray | int, floor: float = 0.33, ceil: float = 0.97, rate: float = 0.68):
    """Estimated probability that the next token repeats, after ``length`` tokens agreed.

    ``ceil - (ceil - floor) * rate ** (length - 1)``: 0.33 after one agreeing token, 0.77 after
    four, 0.94 after eight. Fitted to greedy SmolLM2-135M outputs on Spec-Bench and code prompts
    (one-token agreement is followed by the same token 33% of the time, eight-token 91-95%).
    """
    length = np.asarray(length, dtype=np.float64)
    return np.where(length >= 1, ceil - (ceil - floor) * rate ** (length - 1), 0.0)


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
    is the product along its path. On greedy SmolLM2-135M outputs these path scores were
    calibrated to within a few points (a score of 0.25 was accepted 25% of the time, 0.75 81%).
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
            self._sel_pos = np.empty(self.max_matches, np.int64)
            self._sel_w = np.empty(self.max_matches, np.float64)
            self._sel_len = np.empty(self.max_matches, np.int64)
            self._tok = np.empty(nodes, np.int64)
            self._par = np.empty(nodes, np.int32)
            self._dep = np.empty(nodes, np.int32)
            self._sc = np.empty(nodes, np.float32)
            self._w = np.empty(nodes, np.float64)
            self._best = np.empty(nodes, np.int64)
            self._first = np.empty(nodes, np.int64)
            self._next = np.empty(nodes, np.int64)
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
        size = _build_trie(
            context, self._pos, self._lens, m, self.min_ngram, self.max_ngram, self.max_matches, self._span,
            self._weight, self._conf, self._sel_pos, self._sel_w, self._sel_len,
            self._tok, self._par, self._dep, self._sc, self._w, self._best, self._first, self._next,
        )  # fmt: skip
        tree = DraftTree(
            self._tok[:size].copy(), self._par[:size].copy(), self._dep[:size].copy(), self._sc[:size].copy()
        )
        return tree.prune(budget)
