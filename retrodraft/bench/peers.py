"""Other projects' drafters, wrapped as retrodraft drafters so the benchmark verifies every method's
guesses with one verifier (retrodraft's exact tree verifier): the runs compare *drafters*, not
serving stacks.

``SuffixDecodingPeer`` drives SuffixDecoding's own implementation, ``SuffixDecodingCache`` of the
``arctic-inference`` package (Oliaro et al., "SuffixDecoding", arXiv:2411.04975; the code vLLM's
``method="suffix"`` imports). It is a benchmark peer, not a dependency of retrodraft: install it
with ``bash benchmarks/install_arctic.sh`` (arctic-inference ships only a source distribution; the
script builds its C++ suffix tree against the installed torch, no CUDA needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..drafters.base import Drafter, Outcome, Request
from ..errors import ConfigError
from ..tree import DraftTree

__all__ = ["SuffixDecodingPeer", "SuffixParams", "MethodUnavailable", "suffix_available"]

INSTALL_HINT = "install it with `bash benchmarks/install_arctic.sh` (builds its C++ suffix tree; no CUDA needed)"


class MethodUnavailable(ConfigError):
    """A benchmark method whose third-party package is not installed; the bench skips it."""


def suffix_available() -> str | None:
    """None when arctic-inference's SuffixDecodingCache imports, else why not (one line)."""
    try:
        from arctic_inference.suffix_decoding import SuffixDecodingCache  # noqa: F401
    except Exception as e:  # ImportError, or a native extension built for another Python/ABI
        return f"arctic-inference (SuffixDecoding) is not importable ({type(e).__name__}: {e}); {INSTALL_HINT}"
    return None


@dataclass(frozen=True)
class SuffixParams:
    """SuffixDecoding's knobs, at the defaults arctic-inference 0.3.0 publishes for its vLLM plugin
    (``ArcticSpeculativeConfig``, ``method="suffix"``):

    Attributes:
        max_tree_depth: ``suffix_cache_max_depth`` = 64, the deepest suffix stored and the
            longest context tail matched.
        max_cached_requests: ``suffix_cache_max_requests`` = 100000 responses in the global tree
            (FIFO eviction beyond).
        max_spec_factor / max_spec_offset: ``suffix_max_spec_factor`` = 1.0 and
            ``suffix_max_spec_offset`` = 0.0: at most ``factor * match_length + offset`` tokens
            are drafted (adaptive speculation).
        min_token_prob: ``suffix_min_token_prob`` = 0.1, the least estimated probability a draft
            token may have.
        use_tree_spec: False - the plugin drafts one path (``speculate``'s default); the paper's
            simulator defaults to trees (``True``).
        num_speculative_tokens: 16, the plugin's draft length for ``method="suffix"`` when
            neither ``suffix_speculative_tokens`` nor ``num_speculative_tokens`` is set. The bench
            gives it as the node budget (``suffix@N`` changes it).
    """

    max_tree_depth: int = 64
    max_cached_requests: int = 100000
    max_spec_factor: float = 1.0
    max_spec_offset: float = 0.0
    min_token_prob: float = 0.1
    use_tree_spec: bool = False
    num_speculative_tokens: int = 16


class SuffixDecodingPeer(Drafter):
    """arctic-inference's ``SuffixDecodingCache`` behind retrodraft's drafter interface.

    Per ``generate`` call (one request, as vLLM's proposer drives it): :meth:`begin` stops the
    previous request - its response stays in the global suffix tree, where later requests find
    it - and starts a new one with the prompt (the per-request tree); :meth:`observe` appends the
    committed tokens (the first one, chosen by the prefill, included) to the response;
    :meth:`propose` calls ``speculate`` on the last ``max_tree_depth`` tokens of the context and
    turns its draft (a path, or a tree with ``use_tree_spec``) into a :class:`DraftTree` scored by
    SuffixDecoding's own probability estimates.

    Example: after a request whose response was ``[7, 8, 9]``, a later context ending in
    ``[.., 5, 7, 8]`` matches ``[7, 8]`` (length 2) and drafts ``[9]``: at most
    ``1.0 * 2`` tokens, but the stored response ends there.
    """

    name = "suffix"

    def __init__(self, params: SuffixParams | None = None) -> None:
        reason = suffix_available()
        if reason is not None:
            raise MethodUnavailable(reason)
        self.params = params or SuffixParams()
        self.reset()

    def reset(self) -> None:
        from arctic_inference.suffix_decoding import SuffixDecodingCache

        self.cache = SuffixDecodingCache(max_tree_depth=self.params.max_tree_depth,
                                         max_cached_requests=self.params.max_cached_requests)
        self._req: int | None = None
        self._next_req = 0
        self._fed = 0  # tokens of the current request (prompt + response) the cache has seen

    def begin(self, request: Request) -> None:
        if self._req is not None:
            self.cache.stop_request(self._req)
        self._req, self._next_req = self._next_req, self._next_req + 1
        prompt = np.ascontiguousarray(request.prompt, dtype=np.int32)
        self.cache.start_request(self._req, prompt)
        self._fed = prompt.shape[0]

    def propose(self, context: np.ndarray, budget: int) -> DraftTree:
        root = int(context[-1])
        limit = min(budget, self.params.num_speculative_tokens)
        if self._req is None or limit <= 0:
            return DraftTree.root_only(root)
        tail = np.ascontiguousarray(context[-self.params.max_tree_depth:], dtype=np.int32)
        p = self.params
        draft = self.cache.speculate(self._req, tail, max_spec_tokens=limit, max_spec_factor=p.max_spec_factor,
                                     max_spec_offset=p.max_spec_offset, min_token_prob=p.min_token_prob,
                                     use_tree_spec=p.use_tree_spec)
        if not draft.token_ids:
            return DraftTree.root_only(root)
        # Draft parents index the draft list (-1: the last context token); tree node i + 1 is draft i.
        tokens = [root] + list(draft.token_ids)
        parents = [-1] + [q + 1 for q in draft.parents]
        return DraftTree.from_arrays(tokens, parents, [1.0] + list(draft.probs))

    def observe(self, outcome: Outcome) -> None:
        if self._req is None:
            return
        # context + committed is the whole request so far; feed the cache what it has not seen.
        n_ctx = outcome.context.shape[0]
        new = np.concatenate([outcome.context[self._fed:], outcome.committed[max(0, self._fed - n_ctx):]])
        if new.size:
            self.cache.add_active_response(self._req, np.ascontiguousarray(new, dtype=np.int32))
        self._fed = n_ctx + outcome.committed.shape[0]
