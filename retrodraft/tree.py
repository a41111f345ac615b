"""The draft tree: a flat, array-backed token trie that the verifier checks in one pass.

Node 0 is the root: the last token already chosen but not yet in the KV cache. Every other node
is a guess. Nodes are stored parents-first (``parent[i] < i``), so one left-to-right sweep can
compute anything that flows from root to leaves (depths, ancestor sets, path scores).

Each node carries a ``score``: the drafter's estimate of the probability that the whole
root-to-node path is accepted. Scores never grow along a path, so the ``n`` best-scored nodes
always form a connected subtree; that is what makes :meth:`DraftTree.prune` and fusing the trees
of several drafters (:meth:`DraftTree.fuse`, on :meth:`DraftTree.merge`) cheap.

Each node also carries its ``origins``: a bitmask of the drafters that proposed it (bit ``i`` =
the assistant's drafter ``i``, set by :meth:`DraftTree.tagged`). Fusion ORs the masks of the
nodes it folds together, so a node keeps every drafter that guessed it; traces read them.

Example::

    >>> t = DraftTree.from_paths(5, [[7, 8, 9], [7, 3], [2]])
    >>> t.tokens.tolist(), t.parents.tolist(), t.depths.tolist()
    ([5, 7, 8, 9, 3, 2], [-1, 0, 1, 2, 1, 0], [0, 1, 2, 3, 2, 1])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from .jit import njit

__all__ = ["DraftTree"]


@njit
def _ancestors(parents: np.ndarray) -> np.ndarray:
    # anc[i, j] is True iff j is i or an ancestor of i; valid because parent[i] < i.
    n = parents.shape[0]
    anc = np.zeros((n, n), dtype=np.bool_)
    for i in range(n):
        p = parents[i]
        if p >= 0:
            anc[i, :i] = anc[p, :i]
        anc[i, i] = True
    return anc


@dataclass(eq=False)
class DraftTree:
    """A token tree rooted at the last committed token.

    Attributes:
        tokens: ``(n,)`` int64 token ids; ``tokens[0]`` is the root.
        parents: ``(n,)`` int32 parent index, ``-1`` for the root; ``parents[i] < i``.
        depths: ``(n,)`` int32 distance from the root.
        scores: ``(n,)`` float32 estimated probability that the root-to-node path is accepted
            (root = 1). Non-increasing along every path.
        proposals: children that a drafter *sampled* rather than chose, keyed by parent index:
            ``(order, support, q)`` = the sampled tokens in the order they were drawn without
            replacement, and the distribution ``q`` (over ``support``) they were drawn from.
            The verifier needs both for rejection sampling (see :mod:`retrodraft.verify`);
            deterministic drafts leave this empty.
        origins: ``(n,)`` uint32 bitmask of the drafters that proposed each node (bit ``i`` =
            drafter ``i`` of the assistant); 0 when unknown. :meth:`merge` ORs the masks of
            folded nodes; :meth:`prune` and :meth:`select` carry them along.
    """

    tokens: np.ndarray
    parents: np.ndarray
    depths: np.ndarray
    scores: np.ndarray
    proposals: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    origins: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        if self.origins is None:
            self.origins = np.zeros(n, dtype=np.uint32)
        else:
            self.origins = np.asarray(self.origins, dtype=np.uint32)
            if self.origins.shape != (n,):
                raise ValueError(f"origins must have shape ({n},), got {self.origins.shape}")

    # ----------------------------------------------------------------- construction
    @classmethod
    def root_only(cls, root: int) -> "DraftTree":
        """The empty draft: plain one-token decoding."""
        return cls(
            np.array([root], dtype=np.int64),
            np.array([-1], dtype=np.int32),
            np.array([0], dtype=np.int32),
            np.array([1.0], dtype=np.float32),
        )

    @classmethod
    def from_arrays(
        cls,
        tokens: Sequence[int] | np.ndarray,
        parents: Sequence[int] | np.ndarray,
        scores: Sequence[float] | np.ndarray | None = None,
        origins: Sequence[int] | np.ndarray | None = None,
    ) -> "DraftTree":
        """Build from parents-first arrays, de-duplicating siblings that share a token.

        Nodes whose parent was dropped (a duplicate, or a negative token meaning "no guess") are
        dropped with their whole subtree. Scores are clamped so they never grow along a path;
        a folded duplicate's ``origins`` are ORed into the node it folds into.
        """
        tokens = np.asarray(tokens, dtype=np.int64)
        parents = np.asarray(parents, dtype=np.int64)
        n = tokens.shape[0]
        if n == 0 or parents[0] != -1:
            raise ValueError("a draft tree needs a root at index 0 with parent -1")
        if np.any(parents[1:] >= np.arange(1, n)) or np.any(parents[1:] < 0):
            raise ValueError("parents must come before their children (parent[i] < i)")
        sc = np.ones(n, dtype=np.float32) if scores is None else np.asarray(scores, dtype=np.float32)
        org = np.zeros(n, dtype=np.uint32) if origins is None else np.asarray(origins, dtype=np.uint32)
        out_tok, out_par, out_dep, out_sc, out_org, _ = _dedup(tokens, parents, sc, org)
        return cls(out_tok, out_par, out_dep, out_sc, origins=out_org)

    @classmethod
    def from_paths(
        cls,
        root: int,
        paths: Iterable[Sequence[int]],
        scores: Iterable[Sequence[float]] | None = None,
    ) -> "DraftTree":
        """Build a trie from token paths that all start below ``root``.

        ``scores``, when given, holds one per-node path score for each token of each path;
        shared prefixes keep the highest score any path gave them.
        """
        tree = cls.root_only(root)
        score_iter = iter(scores) if scores is not None else None
        for path in paths:
            s = next(score_iter) if score_iter is not None else None
            tree = tree.with_path(path, s)
        return tree

    def with_path(self, path: Sequence[int], scores: Sequence[float] | None = None) -> "DraftTree":
        """Return a tree with ``path`` (tokens below the root) inserted by longest-prefix match."""
        other_tok = np.concatenate([[self.tokens[0]], np.asarray(path, dtype=np.int64)])
        other_par = np.arange(-1, len(path), dtype=np.int32)
        if scores is None:
            other_sc = np.ones(len(path) + 1, dtype=np.float32)
        else:
            other_sc = np.concatenate([[1.0], np.asarray(scores, dtype=np.float32)]).astype(np.float32)
        return self.merge(DraftTree.from_arrays(other_tok, other_par, other_sc))

    def tagged(self, mask: int) -> "DraftTree":
        """This tree with ``mask`` ORed into every draft node's origins (the root is left alone).

        ``tree.tagged(1 << i)`` marks the nodes as proposed by drafter ``i``; arrays other than
        ``origins`` are shared with this tree.
        """
        if not 0 <= mask < 1 << 32:
            raise ValueError(f"origin mask must fit in 32 bits, got {mask}")
        org = self.origins.copy()
        org[1:] |= np.uint32(mask)
        return DraftTree(self.tokens, self.parents, self.depths, self.scores, self.proposals, org)

    # ----------------------------------------------------------------- combining
    def merge(self, other: "DraftTree") -> "DraftTree":
        """Fuse ``other`` into this tree by longest-prefix matching.

        Both trees must share the root token. A node of ``other`` whose root-to-node path already
        exists here is folded into the existing node (keeping the larger score and the union of
        both nodes' origins); everything below the longest shared prefix is grafted on. Order: this tree's nodes first, then the new ones.
        """
        if other.tokens[0] != self.tokens[0]:
            raise ValueError(
                f"cannot merge trees with different roots ({int(self.tokens[0])} vs {int(other.tokens[0])})"
            )
        tok = np.concatenate([self.tokens, other.tokens[1:]])
        n_self = self.tokens.shape[0]
        other_par = other.parents[1:].astype(np.int64)
        # other's node j (j>=1) goes to n_self + j - 1; other's root maps to our root (0).
        par = np.concatenate(
            [self.parents.astype(np.int64), np.where(other_par == 0, 0, other_par + n_self - 1)]
        )
        sc = np.concatenate([self.scores, other.scores[1:]])
        org = np.concatenate([self.origins, other.origins[1:]])
        out_tok, out_par, out_dep, out_sc, out_org, new = _dedup(tok, par, sc, org)
        props = {int(new[i]): v for i, v in self.proposals.items() if new[i] >= 0}
        for j, v in other.proposals.items():
            i = 0 if j == 0 else n_self + j - 1
            if new[i] >= 0:
                props.setdefault(int(new[i]), v)  # one sampled group per parent: the first kept
        return DraftTree(out_tok, out_par, out_dep, out_sc, props, out_org)

    @classmethod
    def fuse(cls, trees: Sequence["DraftTree"]) -> "DraftTree":
        """One tree from several drafters' trees (same root), by longest-prefix matching.

        Node origins record which tree proposed them (bit ``i`` = ``trees[i]``, for the first 32).
        Sampled drafts (``proposals``) survive only in a tree that was not fused with another:
        fusion folds other drafters' guesses into sampled children and re-ranks them by score,
        which would bias the rejection chain, so in a fused tree they are verified by the
        sample-and-descend rule, which is exact for any tree.
        """
        fused = trees[0].tagged(1)
        if len(trees) == 1:
            return fused
        for i, t in enumerate(trees[1:], start=1):
            fused = fused.merge(t.tagged(1 << i if i < 32 else 0))
        fused.proposals = {}
        return fused

    def prune(self, budget: int) -> "DraftTree":
        """Keep the root plus the ``budget`` best-scored draft nodes (a connected subtree).

        Ties are broken by index, and since a child's score never exceeds its parent's and the
        child comes later, every kept node's parent is kept too.
        """
        if budget < 0:
            raise ValueError(f"budget must be >= 0, got {budget}")
        n = self.tokens.shape[0]
        if n - 1 <= budget:
            return self
        # Stable sort on -score keeps index order among ties.
        order = np.argsort(-self.scores[1:], kind="stable")[:budget] + 1
        keep = np.sort(np.concatenate([[0], order]))
        return self.select(keep)

    def select(self, keep: np.ndarray) -> "DraftTree":
        """Sub-tree of the nodes ``keep`` (sorted, contains 0, closed under parents)."""
        remap = np.full(self.tokens.shape[0], -1, dtype=np.int64)
        remap[keep] = np.arange(keep.shape[0])
        par = self.parents[keep].astype(np.int64)
        new_par = np.where(par >= 0, remap[np.maximum(par, 0)], -1)
        if np.any(new_par[1:] < 0):
            raise ValueError("select() needs a set of nodes closed under parents")
        props = {int(remap[i]): v for i, v in self.proposals.items() if remap[i] >= 0}
        return DraftTree(
            self.tokens[keep].copy(), new_par.astype(np.int32), self.depths[keep].copy(), self.scores[keep].copy(), props,
            self.origins[keep].copy(),
        )

    # ----------------------------------------------------------------- queries
    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def root(self) -> int:
        return int(self.tokens[0])

    @property
    def max_depth(self) -> int:
        return int(self.depths.max())

    def path_to(self, node: int) -> np.ndarray:
        """Node indices from the root to ``node`` inclusive, shape ``(depth + 1,)``."""
        out = []
        while node >= 0:
            out.append(node)
            node = int(self.parents[node])
        return np.asarray(out[::-1], dtype=np.int64)

    def children(self) -> list[dict[int, int]]:
        """``children()[i]`` maps a child's token to its index, for walking the tree."""
        kids: list[dict[int, int]] = [dict() for _ in range(len(self))]
        for i in range(1, len(self)):
            kids[int(self.parents[i])][int(self.tokens[i])] = i
        return kids

    def paths(self) -> list[list[int]]:
        """Token paths (below the root) to every leaf; handy in tests and debugging."""
        has_child = np.zeros(len(self), dtype=bool)
        has_child[self.parents[1:]] = True
        return [self.tokens[self.path_to(i)[1:]].tolist() for i in range(1, len(self)) if not has_child[i]]

    # ----------------------------------------------------------------- model inputs
    def ancestors(self) -> np.ndarray:
        """``(n, n)`` bool: ``[i, j]`` iff node ``j`` is node ``i`` or one of its ancestors."""
        return _ancestors(self.parents.astype(np.int64))

    def attention_mask(self, past_len: int, dtype: torch.dtype, device: torch.device | str = "cpu") -> torch.Tensor:
        """Additive tree-attention mask, shape ``(1, 1, n, past_len + n)``.

        Every node sees the whole cached prefix, its ancestors and itself; 0 means attend and
        ``finfo(dtype).min`` means blocked (a boolean mask would be silently wrong under eager).
        """
        n = len(self)
        allowed = np.ones((n, past_len + n), dtype=np.bool_)
        allowed[:, past_len:] = self.ancestors()
        mask = torch.zeros((1, 1, n, past_len + n), dtype=dtype, device=device)
        blocked = torch.from_numpy(~allowed).to(device)
        mask[0, 0].masked_fill_(blocked, torch.finfo(dtype).min)
        return mask

    def position_ids(self, past_len: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Per-node positions ``past_len + depth``, shape ``(1, n)``."""
        return (torch.from_numpy(self.depths.astype(np.int64)) + past_len).unsqueeze(0).to(device)

    def input_ids(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """Node tokens as model input, shape ``(1, n)``."""
        return torch.from_numpy(self.tokens).unsqueeze(0).to(device)

    # ----------------------------------------------------------------- re-scoring
    def rescored(self, path: Sequence[int], factor: float) -> "DraftTree":
        """This tree with the scores of the node reached by ``path`` (tokens below the root) and
        of all its descendants multiplied by ``factor`` in [0, 1] (scores stay non-increasing);
        itself when no node is reached. Arrays other than ``scores`` are shared with this tree.
        """
        if not 0.0 <= factor <= 1.0:
            raise ValueError(f"factor must be in [0, 1], got {factor}")
        kids, node = self.children(), 0
        for t in path:
            node = kids[node].get(int(t), -1)
            if node < 0:
                return self
        inside = np.zeros(len(self), bool)
        inside[node] = True
        for i in range(node + 1, len(self)):
            inside[i] = inside[self.parents[i]]
        scores = self.scores.copy()
        scores[inside] *= np.float32(factor)
        return DraftTree(self.tokens, self.parents, self.depths, scores, self.proposals, self.origins)


@njit
def _dedup_kernel(tokens, parents, scores, origins, out_tok, out_par, out_dep, out_sc, out_org, new):
    # Walks nodes in order; new[i] is node i's index in the output or -1 if dropped.
    # A node equal (same parent, same token) to an earlier kept sibling folds into it
    # (out_org[kept] |= origins[folded]).
    n = tokens.shape[0]
    new[:] = -1
    m = 0
    # Sibling lookup by linear scan over kept children of the same parent: trees are small.
    for i in range(n):
        if i == 0:
            new[0] = 0
            out_tok[0] = tokens[0]
            out_par[0] = -1
            out_dep[0] = 0
            out_sc[0] = 1.0
            out_org[0] = origins[0]
            m = 1
            continue
        p = parents[i]
        if p < 0 or new[p] < 0 or tokens[i] < 0:
            continue
        np_ = new[p]
        found = -1
        for j in range(1, m):
            if out_par[j] == np_ and out_tok[j] == tokens[i]:
                found = j
                break
        s = min(scores[i], out_sc[np_])
        if found >= 0:
            new[i] = found
            out_org[found] |= origins[i]
            if s > out_sc[found]:
                out_sc[found] = s
            continue
        new[i] = m
        out_tok[m] = tokens[i]
        out_par[m] = np_
        out_dep[m] = out_dep[np_] + 1
        out_sc[m] = s
        out_org[m] = origins[i]
        m += 1
    return m


def _dedup(tokens: np.ndarray, parents: np.ndarray, scores: np.ndarray, origins: np.ndarray):
    n = tokens.shape[0]
    out_tok = np.empty(n, np.int64)
    out_par = np.empty(n, np.int32)
    out_dep = np.empty(n, np.int32)
    out_sc = np.empty(n, np.float32)
    out_org = np.empty(n, np.uint32)
    new = np.empty(n, np.int64)
    m = _dedup_kernel(
        tokens.astype(np.int64), parents.astype(np.int64), scores.astype(np.float32), origins.astype(np.uint32),
        out_tok, out_par, out_dep, out_sc, out_org, new,
    )
    # A folded duplicate may have raised a node's score above a descendant's: re-clamp downwards.
    for i in range(1, m):
        p = out_par[i]
        if out_sc[i] > out_sc[p]:
            out_sc[i] = out_sc[p]
    return out_tok[:m].copy(), out_par[:m].copy(), out_dep[:m].copy(), out_sc[:m].copy(), out_org[:m].copy(), new
