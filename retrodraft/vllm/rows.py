"""Which request each batch row holds, from token ids alone (the fallback to :mod:`._runner`).

A request's tokens only grow: the row that holds ``tokens[:n]`` this step held
``tokens[:n - len(sampled)]`` the step before, wherever the batch moved it. So each row is keyed
by a hash of its tokens, and a row continues the request whose previous tokens hash the same.

Limits (why the runner adapter is preferred): a request missing from one step's batch (paused,
preempted) counts as ended, and two requests with identical tokens so far are told apart only by
order.
"""

from __future__ import annotations

import itertools

import numpy as np

__all__ = ["ContentRows"]


class ContentRows:
    """Keys per batch row that follow requests across steps by their content."""

    def __init__(self) -> None:
        self._by_hash: dict[int, list[int]] = {}
        self._next = itertools.count()

    def step(self, sampled: list[list[int]], num_tokens: np.ndarray, token_ids: np.ndarray) -> tuple[list, set]:
        """``(one key per row or None, the keys still live)`` for this step.

        Args:
            sampled: per row, the tokens sampled this step (empty: the row is skipped).
            num_tokens: ``(rows,)`` tokens held per row, the sampled ones included.
            token_ids: ``(max_rows, max_len)`` token ids per row.
        """
        keys: list = []
        fresh: dict[int, list[int]] = {}
        for i, s in enumerate(sampled):
            n = int(num_tokens[i])
            prev = n - len(s)
            stack = self._by_hash.get(hash(token_ids[i, :prev].tobytes())) if prev > 0 else None
            key = stack.pop(0) if stack else None
            if key is None and s:
                key = next(self._next)
            keys.append(key)
            if key is not None:
                fresh.setdefault(hash(token_ids[i, :n].tobytes()), []).append(key)
        self._by_hash = fresh
        return keys, {k for ks in fresh.values() for k in ks}
