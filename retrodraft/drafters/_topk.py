"""Top-k next-token probabilities of every verified node, computed once per step.

Several drafters learn from the same logits (``recycling``, ``stand``, ``aded``); the softmax
normaliser over a 150k vocabulary is the expensive part, so the last result is memoised on the
logits tensor itself. The memo holds a reference to that tensor, so its identity cannot be
reused by a different tensor while the entry is alive.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["top_probs"]

_memo: dict = {"logits": None, "k": 0, "out": None}


def top_probs(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(tokens (n, k) int32, probs (n, k) float32)``: each row's ``k`` most likely tokens.

    Args:
        logits: ``(n, vocab)`` raw logits.
        k: candidates wanted; a larger ``k`` than the memo's recomputes, a smaller one slices.
    """
    if _memo["logits"] is logits and _memo["k"] >= k:
        tok, prob = _memo["out"]
        return tok[:, :k], prob[:, :k]
    kk = min(k, logits.shape[-1])
    with torch.no_grad():
        top_val, top_idx = torch.topk(logits, kk, dim=-1)
        top_p = torch.exp(top_val.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True))
    tok = np.full((logits.shape[0], k), -1, np.int32)
    prob = np.zeros((logits.shape[0], k), np.float32)
    tok[:, :kk] = top_idx.cpu().numpy()
    prob[:, :kk] = top_p.cpu().numpy()
    _memo.update(logits=logits, k=k, out=(tok, prob))
    return tok, prob
