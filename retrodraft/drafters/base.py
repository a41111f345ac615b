"""The one interface every drafter implements, and the two records that feed it.

A drafter guesses; it never touches the model. Per ``generate`` call the loop hands it a
:class:`Request` through :meth:`Drafter.begin`; per step it asks for a tree with
:meth:`Drafter.propose` (no side effects: proposing twice from the same state gives the same
tree; a drafter that samples its guesses draws fresh noise from its own generator) and, after
verification, hands back one :class:`Outcome` through :meth:`Drafter.observe` - the only way a
drafter learns. The model's top-k at every verified node is computed once per step by the loop
(``Drafter.top_k`` declares how many candidates a drafter wants), so no drafter recomputes a
softmax over the vocabulary and no two drafters share hidden state.

State lives on the drafter and persists across ``generate`` calls (a warm start, as in the Token
Recycling paper) until :meth:`Drafter.reset`. :meth:`Drafter.end` closes each call (also one that
raised), and :meth:`Drafter.state` / :meth:`Drafter.load_state` expose what was learnt for saving.

Capabilities are declared, never probed: a drafter that fills a tree shape sets ``fills_shape``
and implements :meth:`Drafter.use_shape`; one that reads the request's documents sets
``reads_documents``; one that can estimate the model's next token sets ``estimates_next_token``
and implements :meth:`Drafter.next_token_estimate`; one that wants those estimates sets
``wants_estimator``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import StateError
from ..tree import DraftTree

__all__ = ["Drafter", "Request", "Outcome"]


@dataclass(frozen=True)
class Request:
    """What a drafter may know about one ``generate`` call.

    Attributes:
        prompt: ``(prompt_len,)`` int64 prompt token ids.
        vocab_size: rows of the model's output vocabulary.
        temperature: None when decoding greedily, else the sampling temperature. A drafter that
            samples its own guesses (``stand``) does so only when this is set, and must then
            record them in ``DraftTree.proposals``.
        documents: token id arrays ``(len_i,)`` the caller gives this request (retrieved
            passages, definitions the prompt mentions): drafters with ``reads_documents`` draft
            from them for this request only (see :meth:`retrodraft.RetroDraft.options`).
    """

    prompt: np.ndarray
    vocab_size: int
    temperature: float | None = None
    documents: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """One verification step, as every drafter sees it.

    Attributes:
        context: ``(n,)`` int64 ids before the step; ``context[-1]`` is the tree's root.
        tree: the tree that was verified (the fusion of the drafters' trees, pruned).
        accepted: ``(m,)`` int64 node indices of the accepted path, root first.
        committed: ``(c,)`` int64 token ids appended to the output by this step: the accepted
            drafts after the root plus the model's bonus token, cut where a stopping criterion
            fired. ``context`` + ``committed`` is the next step's context.
        top_tokens: ``(len(tree), k)`` int32: the model's ``k`` most likely next tokens at every
            verified node (raw logits, before logits processors), ``-1`` padding when the
            vocabulary is smaller than ``k``.
        top_probs: ``(len(tree), k)`` float32 softmax probabilities of ``top_tokens``.
    """

    context: np.ndarray
    tree: DraftTree
    accepted: np.ndarray
    committed: np.ndarray
    top_tokens: np.ndarray
    top_probs: np.ndarray

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The first ``k`` candidates per node as contiguous ``(len(tree), k)`` arrays (int32
        tokens, float32 probabilities), padded with ``-1`` / ``0`` if fewer were computed."""
        have = min(k, self.top_tokens.shape[1])
        if have == k:
            return np.ascontiguousarray(self.top_tokens[:, :k]), np.ascontiguousarray(self.top_probs[:, :k])
        tok = np.full((self.top_tokens.shape[0], k), -1, np.int32)
        prob = np.zeros((self.top_tokens.shape[0], k), np.float32)
        tok[:, :have] = self.top_tokens[:, :have]
        prob[:, :have] = self.top_probs[:, :have]
        return tok, prob


class Drafter(ABC):
    """Base class of all drafters.

    Subclasses set ``name`` (the stable public name used in ``RetroDraft(drafters=[...])``) and,
    when they learn from the model's candidates, ``top_k`` (how many per verified node they need
    in :attr:`Outcome.top_tokens`).
    """

    name: str = "drafter"
    #: Candidates per verified node this drafter reads from :class:`Outcome` (0: none).
    top_k: int = 0
    #: True when the drafter fills a tree shape and takes one through :meth:`use_shape`.
    fills_shape: bool = False
    #: True when the drafter drafts from :attr:`Request.documents`.
    reads_documents: bool = False
    #: True when :meth:`next_token_estimate` answers (other drafters may prune with it).
    estimates_next_token: bool = False
    #: True when the drafter takes an estimating drafter through :meth:`use_estimator`.
    wants_estimator: bool = False

    def check_model(self, model) -> None:
        """Refuse a model this drafter cannot draft for (raise a :class:`~retrodraft.errors.RetroDraftError`);
        called once per ``generate`` call, before :meth:`begin`."""

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse a tokenizer this drafter's data was not made with (raise a
        :class:`~retrodraft.errors.RetroDraftError`); called by ``retrodraft export``."""

    def begin(self, request: Request) -> None:
        """Called once per ``generate`` call before the first proposal."""

    def end(self) -> None:
        """Called exactly once after each :meth:`begin`, when the call finishes or raises."""

    @abstractmethod
    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        """Guess what follows ``context``, without learning anything (see :meth:`observe`).

        Args:
            context: ``(seq_len,)`` int64, prompt plus everything generated so far; the last
                token is the tree's root (chosen, not yet verified by the cache).
            budget: at most this many draft nodes below the root.

        Returns:
            A :class:`DraftTree` rooted at ``context[-1]`` with at most ``budget`` draft nodes;
            ``scores`` estimate each path's acceptance probability so trees can be fused.
        """

    def observe(self, outcome: Outcome) -> None:
        """Learn from one verification step."""

    def use_shape(self, paths: Sequence[Sequence[int]]) -> None:
        """Fill this tree shape (rank paths, e.g. a calibrated
        :class:`~retrodraft.shape.TreeShape`'s ``paths``) from now on; only called when
        ``fills_shape``."""
        raise NotImplementedError(f"drafter {self.name!r} does not fill a tree shape (fills_shape is False).")

    def next_token_estimate(self, parents: np.ndarray, children: np.ndarray) -> np.ndarray | None:
        """``(n,)`` float32 P(child | parent token) for ``(n,)`` token pairs, as last seen: 0 if
        unranked, NaN if unknown; None from a drafter that does not estimate
        (``estimates_next_token`` False)."""
        return None

    def use_estimator(self, estimator: "Drafter | None") -> None:
        """Receive the drafter whose :meth:`next_token_estimate` checks guesses (only called when
        ``wants_estimator``; None when no drafter of the assistant estimates)."""

    def reset(self) -> None:
        """Forget everything learnt so far (a cold start)."""

    def state(self) -> dict:
        """What was learnt, as ``{name: ndarray | JSON value}`` (saved by :mod:`retrodraft.state`);
        empty for a drafter that learns nothing."""
        return {}

    def load_state(self, d: dict) -> None:
        """Take over a state returned by :meth:`state` (raise a
        :class:`~retrodraft.errors.StateError` if it does not fit this drafter)."""
        if d:
            raise StateError(f"drafter {self.name!r} learns nothing, but its saved state holds {sorted(d)}.")
