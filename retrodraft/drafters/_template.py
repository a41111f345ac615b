"""Tree shapes for the drafters that fill one: which candidate ranks to expand, as flat arrays.

Drafters and users call them shapes (``TokenRecycling(shape=...)``, ``RetroDraft(shape=...)``);
this module compiles them (its internal word is template). A shape node is a path of ranks below
the root: ``(0, 1)`` is the 2nd candidate (rank 1) of the 1st candidate (rank 0) of the root. A
shape is compiled to two parents-first arrays,
``parent`` and ``rank``, with node 0 the root (``parent = -1``, ``rank = -1``).

Example::

    >>> parent, rank = compile_template([(0,), (1,), (0, 0)], k=8)
    >>> parent.tolist(), rank.tolist()
    ([-1, 0, 0, 1], [-1, 0, 1, 0])
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError

__all__ = ["PAPER80", "TEMPLATES", "compile_template", "generated_template", "template_paths"]

#: The 80-node template of the Token Recycling paper (arXiv 2408.08696, "2.2.2"), one line per
#: level, each word a rank path written as digits.
PAPER80 = """
0 1 2 3 4 5 6 7
00 01 02 03 04 05 06 07 10 11 12 13 20 21 22 30 31 40 50 60 70
000 001 002 003 004 005 006 007 010 011 012 020 021 030 040 050 060 070 100 101 110 200 300 400 500
0000 0001 0002 0003 0004 0010 0011 0020 0030 0040 0100 0200 1000 2000 3000
00000 00001 00002 00010 00020 00100 01000 10000
000000 000001 000100
"""

#: Prior probability that a candidate of a given rank is the model's next token, used to grow
#: the "wide" template: ranks fall off roughly geometrically after the top one.
RANK_PRIOR = (0.6, 0.12, 0.06, 0.04, 0.03, 0.02, 0.015, 0.01)


def _parse(text: str) -> list[tuple[int, ...]]:
    return [tuple(int(c) for c in word) for word in text.split()]


def generated_template(k: int = 8, max_depth: int = 8, threshold: float = 2.5e-3) -> list[tuple[int, ...]]:
    """Every rank path up to ``max_depth`` whose prior (product of :data:`RANK_PRIOR`) >= ``threshold``.

    With the defaults: 190 nodes, a chain of top candidates 8 deep plus bushy upper levels, so
    that score-based pruning can pick either a long chain or a wide fan, whichever the
    recycled probabilities favour.
    """
    prior = RANK_PRIOR[:k]
    out: list[tuple[int, ...]] = []
    frontier: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for _ in range(max_depth):
        nxt = []
        for path, p in frontier:
            for r, pr in enumerate(prior):
                if p * pr >= threshold:
                    nxt.append((path + (r,), p * pr))
        out += [path for path, _ in nxt]
        frontier = nxt
    return out


TEMPLATES: dict[str, list[tuple[int, ...]]] = {
    "paper80": _parse(PAPER80),
    "wide": generated_template(),
}


def template_paths(template: str | Sequence[Sequence[int]], k: int) -> list[tuple[int, ...]]:
    """Resolve a preset name or an explicit list of rank paths, checking it against ``k``.

    A preset drops the paths that use a rank ``>= k``; an explicit list must not use one.
    """
    if isinstance(template, str):
        if template not in TEMPLATES:
            raise ConfigError(
                f"unknown shape {template!r}; presets: {', '.join(TEMPLATES)}, or a list of rank paths."
            )
        paths = [p for p in TEMPLATES[template] if max(p) < k]
        # Keep only paths whose prefixes survived the rank filter.
        kept: set[tuple[int, ...]] = {()}
        for p in sorted(paths, key=len):
            if p[:-1] in kept:
                kept.add(p)
        return [p for p in paths if p in kept]
    try:
        paths = [tuple(int(r) for r in p) for p in template]
    except TypeError:
        raise ConfigError(
            "shape must be 'paper80', 'wide' or a list of rank paths such as [[0], [1], [0, 0]]."
        ) from None
    for p in paths:
        if len(p) == 0:
            raise ConfigError("shape rank paths must be non-empty; the root is implicit.")
        if min(p) < 0 or max(p) >= k:
            raise ConfigError(f"shape path {list(p)} uses a rank outside 0..{k - 1} (k={k}).")
    seen = set(paths)
    for p in paths:
        if len(p) > 1 and p[:-1] not in seen:
            raise ConfigError(f"shape path {list(p)} needs its prefix {list(p[:-1])} in the shape too.")
    return list(dict.fromkeys(paths))


def compile_template(paths: Sequence[tuple[int, ...]], k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Rank paths -> ``(parent, rank)`` int32 arrays of shape ``(len(paths) + 1,)``, BFS order.

    Node 0 is the root. Within a level, nodes keep the order of ``paths``.
    """
    order = sorted(range(len(paths)), key=lambda i: len(paths[i]))  # stable: keeps list order per level
    index: dict[tuple[int, ...], int] = {(): 0}
    parent = np.full(len(paths) + 1, -1, dtype=np.int32)
    rank = np.full(len(paths) + 1, -1, dtype=np.int32)
    for j, i in enumerate(order, start=1):
        p = paths[i]
        index[p] = j
        parent[j] = index[p[:-1]]
        rank[j] = p[-1]
    return parent, rank
