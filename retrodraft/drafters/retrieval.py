"""Retrieval drafting (REST / RASD, made model-free): continuations from a corpus.

Each step the longest suffix of the context is looked up in the attached corpus indexes and in a
per-request datastore (the prompt, plus the request's documents, e.g. RAG passages); the
continuations that followed it there become a trie whose node scores are count shares (how many
retrieved continuations pass through the node), discounted by how short the match was.

As in RASD (arXiv 2503.03434), where a draft model's probabilities prune the retrieval tree, the
trie is then checked against the model's *own* recent predictions, with no draft model: the
Token Recycling matrix holds, for each token, the top-k the target model gave after it in its
latest verification pass. A retrieved step the model ranked highly is trusted more (the two
sources combine as a noisy-or); one outside the model's top-k is discounted by ``miss``, so its
subtree loses the budget to better guesses. The assistant then fuses this trie with the other
drafters' trees by longest-prefix matching, so where the corpus and the n-gram drafters agree a
path is kept once with the higher score.

An index must come from the model's tokenizer: it is checked (fingerprint of vocabulary and
special tokens) on the first call with a model (and by ``retrodraft export``), and a mismatch is
refused naming both. Nothing is learnt while decoding, so the drafter has no saved state.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import ConfigError, IndexMismatchError
from ..index.corpus import CorpusIndex, retrieve
from ..index.store import suffix_array
from ..jit import njit
from ..tree import DraftTree
from .base import Drafter, Request

__all__ = ["Retrieval"]


@njit
def _rescore(parents, counts, estimate, confidence, miss, out):
    # Path score = product of per-step factors; a step's factor is its count share, combined
    # with the model's own estimate when one is known (NaN = unknown).
    out[0] = 1.0
    for i in range(1, parents.shape[0]):
        p = parents[i]
        f = counts[i] / counts[p] if counts[p] > 0 else 0.0
        e = estimate[i]
        if not np.isnan(e):
            f = f * miss if e <= 0.0 else 1.0 - (1.0 - f) * (1.0 - e)
        if p == 0:
            f *= confidence
        out[i] = out[p] * f


class _Datastore:
    """A small in-memory token store with a suffix array (per request)."""

    def __init__(self) -> None:
        self.docs: list[np.ndarray] = []
        self.tokens = np.zeros(0, np.int32)
        self.sa = np.zeros(0, np.int32)

    def set(self, docs: Sequence[np.ndarray]) -> None:
        self.docs = [np.asarray(d, np.int32) for d in docs if len(d)]
        if not self.docs:
            self.tokens, self.sa = np.zeros(0, np.int32), np.zeros(0, np.int32)
            return
        parts = []
        for d in self.docs:
            parts += [d, np.array([-1], np.int32)]
        self.tokens = np.concatenate(parts)
        self.sa = suffix_array(self.tokens).astype(np.int32)


class Retrieval(Drafter):
    """Drafts the continuations a corpus holds after the current context's longest suffix.

    Args:
        index: a corpus index folder, an opened :class:`~retrodraft.index.CorpusIndex`, or a list
            of either (queried together); None for the per-request datastore only. Opened indexes
            are read-only and can be shared by any number of drafters.
        use_prompt: also retrieve from the prompt of each call.
        max_len / min_len: suffix lengths tried, longest first (a 1-token match is too weak to
            trust in a large corpus, hence the default 2).
        depth: tokens per continuation.
        max_matches: occurrences sampled per shard.
        confidence: the score of a match of ``L`` tokens is scaled by ``L / (L + confidence)``.
        miss: factor on a retrieved step the model's recent top-k does not contain (RASD-style
            pruning, needs a ``recycling`` drafter next to this one; 1 turns it off).

    Attributes:
        estimator: the drafter whose :meth:`~retrodraft.drafters.base.Drafter.next_token_estimate`
            checks retrieved steps; :class:`~retrodraft.RetroDraft` hands it its ``recycling``
            drafter through :meth:`use_estimator`.
    """

    name = "retrieval"
    wants_estimator = True
    reads_documents = True

    def __init__(self, index=None, use_prompt: bool = True, max_len: int = 16, min_len: int = 2, depth: int = 8,
                 max_matches: int = 64, confidence: float = 2.0, miss: float = 0.25) -> None:
        for label, v, lo, hi in (("max_len", max_len, 1, 256), ("depth", depth, 1, 64),
                                 ("max_matches", max_matches, 1, 100_000)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        if isinstance(min_len, bool) or not isinstance(min_len, (int, np.integer)) or not 1 <= min_len <= max_len:
            raise ConfigError(f"min_len must be an integer from 1 to max_len={max_len}, got {min_len!r}.")
        items = [] if index is None else (list(index) if isinstance(index, (list, tuple)) else [index])
        self.indexes: list[CorpusIndex] = [i if isinstance(i, CorpusIndex) else CorpusIndex(i) for i in items]
        self.use_prompt = bool(use_prompt)
        self.max_len, self.min_len, self.depth, self.max_matches = int(max_len), int(min_len), int(depth), int(max_matches)
        self.confidence = float(confidence)
        if isinstance(miss, bool) or not isinstance(miss, (int, float, np.floating)) or not 0.0 <= miss <= 1.0:
            raise ConfigError(f"miss must be a number from 0 to 1, got {miss!r}.")
        self.miss = float(miss)
        self.estimator: Drafter | None = None
        self.store = _Datastore()
        self._checked: set[str] = set()

    def use_estimator(self, estimator: Drafter | None) -> None:
        self.estimator = estimator

    # ------------------------------------------------------------------ per request
    def check_tokenizer(self, tokenizer) -> None:
        """Refuse indexes built with another tokenizer than ``tokenizer``."""
        for idx in self.indexes:
            idx.check_tokenizer(tokenizer)

    def check_model(self, model) -> None:
        """Refuse indexes built with another tokenizer than ``model``'s (checked once per model)."""
        path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
        if not self.indexes or not path or path in self._checked:
            return
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError):
            tok = None
        if tok is not None:
            self.check_tokenizer(tok)
        else:  # no tokenizer beside the model: its vocabulary size is all there is to check
            vocab = model.config.get_text_config().vocab_size
            for idx in self.indexes:
                if idx.header["tokenizer"].get("vocab_size", 0) > vocab:
                    raise IndexMismatchError(f"index {idx.path} uses token ids up to "
                                             f"{idx.header['tokenizer']['vocab_size']} but the model's vocabulary has "
                                             f"{vocab}: another tokenizer.")
        self._checked.add(path)

    def begin(self, request: Request) -> None:
        """Draft from the request's documents (and its prompt, with ``use_prompt``) in this call."""
        docs = [np.asarray(d, np.int32) for d in request.documents]
        if self.use_prompt and len(request.prompt) > 1:
            docs.append(np.asarray(request.prompt[:-1], np.int32))  # the last token is the first root
        self.store.set(docs)

    # ------------------------------------------------------------------ drafting
    def _shards(self) -> list[tuple[np.ndarray, np.ndarray]]:
        shards = [sh for idx in self.indexes for sh in idx.shards]
        if len(self.store.tokens):
            shards.append((self.store.tokens, self.store.sa))
        return shards

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        if budget <= 0:
            return DraftTree.root_only(root)
        r = retrieve(self._shards(), context, self.max_len, self.min_len, self.depth, self.max_matches)
        if r.match_len == 0:
            return DraftTree.root_only(root)
        parents = np.asarray(r.parents, np.int64)
        tokens = np.asarray(r.tokens, np.int64)
        estimate = np.full(len(tokens), np.nan, np.float32)
        if self.estimator is not None and self.miss < 1.0 and len(tokens) > 1:
            estimate[1:] = self.estimator.next_token_estimate(tokens[parents[1:]], tokens[1:])
        scores = np.empty(len(tokens), np.float64)
        _rescore(parents, np.asarray(r.counts, np.float64), estimate, r.match_len / (r.match_len + self.confidence),
                 self.miss, scores)
        return DraftTree.from_arrays(tokens, parents, scores.astype(np.float32)).prune(budget)

    def reset(self) -> None:
        self.store.set([])
