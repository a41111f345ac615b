"""Verification: one forward pass over the whole draft tree, then the acceptance rule.

The verifier knows trees and models, never drafters. It returns which nodes were accepted and
which tokens the model emitted; the loop (``generate.py``) decides what to keep.

Acceptance walks the tree from the root. At each accepted node it takes the token the model
itself would choose there - the argmax of the processed logits when greedy, one sample from the
processed distribution when sampling - and descends to the child holding that token, or stops
and emits it as the bonus token.

Why sampling this way is lossless (deterministic drafts): the emitted sequence is built one
token at a time, each token drawn with fresh randomness from the model's processed conditional
``p(. | prefix so far)``, exactly as plain sampling draws it. The draft only decides *whether
that conditional was already computed* (the prefix is a tree path) or not (stop, and compute it
next step); it never changes which distribution a token is drawn from, nor reuses randomness.
So the joint distribution of the output equals plain sampling's, whatever the drafter guessed.

Drafts *sampled* from a distribution ``q`` of the drafter's own (STAND's Gumbel-top-k, recorded in
``tree.proposals``) are checked by recursive rejection sampling instead, which accepts more when
``q`` is close to the model's ``p``. The children ``x1, x2, ...`` were drawn without replacement
from ``q``; in that order, ``xi`` is accepted with probability ``min(1, p(xi) / q(xi))``; on
rejection ``p`` becomes the residual ``max(p - q, 0)`` (normalised) and ``xi`` is removed from
``q`` (renormalised). The token finally emitted - an accepted ``xi`` or, when all are rejected,
a sample of the last residual - is distributed exactly as ``p`` (SpecInfer, arXiv 2305.09781;
recursive speculative decoding, arXiv 2402.14160). The walk stops at the first sampled token the
tree no longer holds (pruned away): the prefix processed so far is still a valid rejection
chain, and the residual sample may still land on any child and descend.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import numpy as np
import torch
from transformers import LogitsProcessorList

from .tree import DraftTree

__all__ = ["Verdict", "tree_inputs", "tree_forward", "accept", "top_candidates"]


@dataclass
class Verdict:
    """What one verification step decided.

    Attributes:
        accepted: ``(m,)`` node indices of the accepted path, root first (``m >= 1``).
        tokens: the ``m`` tokens the model emitted: the accepted drafts, then the bonus token.
        scores: processed scores ``(1, vocab)`` behind each emitted token, when asked for.
        raw_logits: raw logits ``(1, vocab)`` behind each emitted token, when asked for.
    """

    accepted: np.ndarray
    tokens: list[int]
    scores: list[torch.Tensor] = field(default_factory=list)
    raw_logits: list[torch.Tensor] = field(default_factory=list)


def tree_inputs(model: torch.nn.Module, tree: DraftTree, past_len: int) -> dict[str, torch.Tensor]:
    """The model inputs of a tree pass: ``input_ids`` ``(1, n)``, the additive tree-attention
    ``attention_mask`` ``(1, 1, n, past_len + n)`` and ``position_ids`` ``(1, n)``."""
    device = model.device
    return {
        "input_ids": tree.input_ids(device),
        "attention_mask": tree.attention_mask(past_len, model.dtype, device),
        "position_ids": tree.position_ids(past_len, device),
    }


def tree_forward(model: torch.nn.Module, tree: DraftTree, cache, past_len: int,
                 inputs: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """Run the model once over every tree node, appending their K/V to ``cache``.

    Args:
        model: a transformers causal LM using sdpa or eager attention.
        tree: the draft tree; its root is the last chosen token, not yet in the cache.
        cache: the model's ``DynamicCache`` holding exactly ``past_len`` positions.
        past_len: number of cached positions.
        inputs: :func:`tree_inputs` of this tree, if already built.

    Returns:
        ``(len(tree), vocab)`` float32 logits, row ``i`` predicting what follows node ``i``.
    """
    if inputs is None:
        inputs = tree_inputs(model, tree, past_len)
    out = model(**inputs, cache=cache, use_cache=True)
    return out.logits[0].float()


def accept(
    tree: DraftTree,
    logits: torch.Tensor,
    prefix_ids: torch.Tensor,
    logits_processor: LogitsProcessorList | None,
    do_sample: bool,
    keep_scores: bool = False,
    keep_logits: bool = False,
) -> Verdict:
    """Walk the tree with the model's own choices.

    Args:
        tree: the verified tree.
        logits: ``(len(tree), vocab)`` raw logits from :func:`tree_forward`.
        prefix_ids: ``(1, seq_len)`` ids generated so far, ending with the root token, on the
            logits' device. The processors of node ``i`` see ``prefix_ids`` followed by the
            tokens on the path to ``i``: exactly what plain decoding would have passed them.
        logits_processor: the generation config's processors (warpers included when sampling).
        do_sample: sample (multinomial on the processed distribution) instead of argmax.
        keep_scores / keep_logits: return the per-token scores / raw logits (for
            ``output_scores`` / ``output_logits``).
    """
    kids = tree.children()
    has_procs = logits_processor is not None and len(logits_processor) > 0
    fast_greedy = not do_sample and not has_procs and not keep_scores and not keep_logits
    if fast_greedy:
        choice = torch.argmax(logits, dim=-1).tolist()

    node = 0
    accepted = [0]
    tokens: list[int] = []
    scores: list[torch.Tensor] = []
    raw: list[torch.Tensor] = []
    while True:
        if fast_greedy:
            tok = choice[node]
        else:
            row = logits[node : node + 1]
            if has_procs:
                path = tree.path_to(node)[1:]
                ids = prefix_ids
                if path.size:
                    drafted = torch.from_numpy(tree.tokens[path]).to(prefix_ids.device).unsqueeze(0)
                    ids = torch.cat([prefix_ids, drafted], dim=-1)
                # Processors may modify scores in place: give them a copy of the row.
                proc = logits_processor(ids, row.clone())
            else:
                proc = row
            if do_sample:
                probs = torch.nn.functional.softmax(proc, dim=-1)
                proposal = tree.proposals.get(node)
                if proposal is not None:
                    tok = _rejection_sample(probs[0], proposal, kids[node])
                else:
                    tok = int(torch.multinomial(probs, num_samples=1)[0, 0])
            else:
                tok = int(torch.argmax(proc, dim=-1)[0])
            if keep_scores:
                scores.append(proc.clone() if proc is row else proc)
            if keep_logits:
                raw.append(row.clone())
        tokens.append(tok)
        child = kids[node].get(tok)
        if child is None:
            break
        accepted.append(child)
        node = child
    return Verdict(np.asarray(accepted, dtype=np.int64), tokens, scores, raw)


def top_candidates(logits: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` most likely next tokens and their probabilities (softmax over the row).

    Args:
        logits: ``(n, vocab)`` raw logits.
        k: candidates per row (0: none, without touching the logits).

    Returns:
        ``(tokens (n, k) int32, probs (n, k) float32)``, most likely first; ``-1`` / ``0``
        padding when ``k`` exceeds the vocabulary.
    """
    n, vocab = logits.shape
    tok = np.full((n, k), -1, np.int32)
    prob = np.zeros((n, k), np.float32)
    kk = min(k, vocab)
    if kk == 0:
        return tok, prob
    with torch.no_grad():
        top_val, top_idx = torch.topk(logits, kk, dim=-1)
        top_p = torch.exp(top_val.float() - torch.logsumexp(logits.float(), dim=-1, keepdim=True))
    tok[:, :kk] = top_idx.cpu().numpy()
    prob[:, :kk] = top_p.cpu().numpy()
    return tok, prob


def _rejection_sample(p: torch.Tensor, proposal: tuple[np.ndarray, np.ndarray, np.ndarray], kids: dict[int, int]) -> int:
    """One token distributed exactly as ``p`` (``(vocab,)``), accepting sampled drafts when it can.

    ``proposal = (order, support, q)``: children drawn without replacement from ``q`` (over
    ``support``), in draw order. See the module docstring for the rule.
    """
    order, support, q = proposal
    qv = torch.zeros_like(p)
    qv[torch.from_numpy(np.asarray(support, np.int64)).to(p.device)] = torch.from_numpy(
        np.asarray(q, np.float32)).to(p.device, p.dtype)
    total = qv.sum()
    if total <= 0:
        return int(torch.multinomial(p, 1)[0])
    qv /= total
    p = p.clone()
    for x in np.asarray(order, np.int64).tolist():
        qx = float(qv[x])
        if x not in kids or qx <= 0.0:
            break
        if float(torch.rand((), device=p.device)) * qx < float(p[x]):
            return int(x)
        p = torch.clamp(p - qv, min=0.0)
        mass = p.sum()
        if mass <= 0:  # p == q up to rounding: the draft would have been accepted
            return int(x)
        p /= mass
        qv[x] = 0.0
        rest = qv.sum()
        if rest <= 0:
            break
        qv /= rest
    return int(torch.multinomial(p, 1)[0])
