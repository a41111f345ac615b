"""The one interface every drafter implements.

A drafter guesses; it never touches the model. The generation loop asks it for a tree with
:meth:`Drafter.propose`, the verifier checks the tree, and the loop hands the verdict and the
model's own logits back through :meth:`Drafter.observe` - the only way a drafter learns.
State lives on the drafter and persists across ``generate`` calls (a warm start, as in the Token
Recycling paper) until :meth:`Drafter.reset`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch

from ..tree import DraftTree

__all__ = ["Drafter"]


class Drafter(ABC):
    """Base class of all drafters.

    Subclasses set ``name`` (the stable public name used in ``RetroDraft(drafters=[...])``).
    """

    name: str = "drafter"
    #: Set by :class:`~retrodraft.RetroDraft` before :meth:`begin`: None when decoding greedily,
    #: else the sampling temperature. A drafter that samples its own guesses (``stand``) does so
    #: only when this is set, and must then record them in ``DraftTree.proposals``.
    sampling_temperature: float | None = None

    def begin(self, prompt: np.ndarray, vocab_size: int) -> None:
        """Called once per ``generate`` call before the first proposal.

        Args:
            prompt: ``(prompt_len,)`` int64 prompt token ids.
            vocab_size: size of the model's output vocabulary (rows of the logits).
        """

    @abstractmethod
    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        """Guess what follows ``context``.

        Args:
            context: ``(seq_len,)`` int64, prompt plus everything generated so far; the last
                token is the tree's root (chosen, not yet verified by the cache).
            budget: at most this many draft nodes below the root.

        Returns:
            A :class:`DraftTree` rooted at ``context[-1]`` with at most ``budget`` draft nodes;
            ``scores`` estimate each path's acceptance probability so trees can be fused.
        """

    def observe(self, tree: DraftTree, accepted: np.ndarray, logits: torch.Tensor) -> None:
        """Learn from one verification step.

        Args:
            tree: the tree that was verified (possibly the fusion of several drafters' trees).
            accepted: ``(m,)`` int64 node indices of the accepted path, root first. The token
                the model chose after the last of them is the next root.
            logits: ``(len(tree), vocab)`` raw (unprocessed) model logits at every node.
        """

    def reset(self) -> None:
        """Forget everything learnt so far (a cold start)."""
