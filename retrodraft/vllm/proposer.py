"""retrodraft's token-only drafters as a vLLM speculative proposer (``method="custom_class"``).

vLLM (0.32) builds ``cls(vllm_config)`` in its worker, calls ``load_model(target_model)`` once and,
after every step, ``propose(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)``: per batch
row, the tokens sampled this step and the row's token ids. It wants one chain per row back. Each
step, per row, this proposer:

1. finds which request the row holds (:mod:`._runner`, or :mod:`.rows` by content), starting a
   fresh set of drafters for a new request (``History`` over the engine's one shared memory,
   ``PromptLookup``, ``Retrieval`` over the shared corpus indexes) and ending the drafters of
   requests that finished (``History`` stores the request in the shared memory then);
2. tells the row's drafters what the last chain became (``observe``: vLLM accepted the first
   ``len(sampled) - 1`` drafted tokens) and updates the score calibration;
3. fuses the drafters' trees and keeps the chain with the largest expected gain
   (:func:`.chain.best_chain`), at most ``num_speculative_tokens`` long;

then cuts the chains to the batch's token budget (:func:`.chain.allot`). Decisions use token ids
and counts only (no clock), so every tensor-parallel rank drafts the same chains.

Classes named ``RetroDraft_<hex>`` are made on import from the options the name carries
(:mod:`.options`); ``RetroDraftProposer`` runs with the defaults.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..drafters.base import Drafter, Outcome, Request
from ..drafters.history import History
from ..drafters.lookup import PromptLookup
from ..drafters.retrieval import Retrieval
from ..memory import SuffixMemory
from ..tree import DraftTree
from . import _runner, _state_io
from .chain import Calibrator, RowTrust, SpeedRate, allot, best_chain
from .options import CLASS_PREFIX, VllmOptions, decode
from .rows import ContentRows

__all__ = ["RetroDraftProposer"]

log = logging.getLogger("retrodraft.vllm")


@dataclass
class _Live:
    """One request in flight: its drafters and the chain drafted for it last step."""

    drafters: list[Drafter]
    seen: int = 0  # tokens the row held when the last chain was drafted
    chain: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    raw: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    depths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    cal: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))  # calibrated, before trust
    token_cost: float = 0.0  # what a drafted token cost when the chain was drafted
    trust: RowTrust = field(default_factory=RowTrust)
    steps: int = 0
    drafted: int = 0
    accepted: int = 0
    tokens: int = 0


class RetroDraftProposer:
    """vLLM custom proposer running retrodraft's token-only drafters (see the module docstring).

    Args:
        vllm_config: vLLM's ``VllmConfig`` (its ``speculative_config.num_speculative_tokens``
            caps the chains; its model config names the tokenizer for state and index checks).
    """

    options: VllmOptions = VllmOptions()

    def __init__(self, vllm_config: Any) -> None:
        self.opts = type(self).options
        self.k = int(vllm_config.speculative_config.num_speculative_tokens)
        model_config = vllm_config.model_config
        self.vocab_size = int(model_config.get_vocab_size())
        self._tokenizer_name = getattr(model_config, "tokenizer", None) or model_config.model
        self._tokenizer = None
        self.memory = SuffixMemory(max_bytes=self.opts.memory_mb << 20)
        self.indexes = _open_indexes(self.opts.index, self.tokenizer if self.opts.index else None)
        self._keeper = History(memory=self.memory)  # loads and saves the shared memory
        if self.opts.state and _state_io.load_history(self.opts.state, self.tokenizer, self._keeper):
            log.info("retrodraft: %d requests loaded from %s", self.memory.n_requests, self.opts.state)
        self._rate_cut = self.opts.cut == "rate"
        self.calibrator = Calibrator(depth_buckets=5 if self._rate_cut else 1)
        self.speed = SpeedRate()
        self.live: dict[Any, _Live] = {}
        self.finished: list[dict] = []
        self.totals = {"steps": 0, "row_steps": 0, "drafted": 0, "accepted": 0, "draft_seconds": 0.0,
                       "requests": 0}
        self._content = ContentRows()
        self._view: _runner.RunnerView | None = None
        self._unsaved = 0
        self._closed = False
        atexit.register(self.close)

    # ------------------------------------------------------------------ vLLM's interface
    def load_model(self, target_model: Any = None) -> None:
        """Called once by vLLM's runner (on itself): find the runner's request bookkeeping."""
        self._view = _runner.attach(self)
        if self._view is None:
            log.warning("retrodraft: vLLM runner internals not found (untested vLLM version?): requests are "
                        "followed by their token ids instead.")
        self._warm_up()

    def _warm_up(self) -> None:
        """Run the drafting kernels on two made-up requests (a throwaway memory, no counts kept),
        so numba compiles them, or loads its cache, while the engine starts rather than inside
        the first real requests' steps."""
        shared = self.memory
        self.memory = SuffixMemory(max_bytes=1 << 20)
        try:
            prompt = (np.arange(48, dtype=np.int64) % 7 + 1) % self.vocab_size
            for _ in range(2):  # the second request finds the first in the memory
                drafters = self._new_drafters()
                for d in drafters:
                    d.begin(Request(prompt=prompt, vocab_size=self.vocab_size))
                ctx = prompt
                for _ in range(3):
                    tree = DraftTree.fuse([d.propose(ctx, self.opts.nodes) for d in drafters])
                    cal = Calibrator(depth_buckets=5)(tree.scores, tree.depths)
                    nodes = best_chain(tree, RowTrust()(cal, tree.depths), 0.05, self.k)
                    allot([cal[nodes]], self.opts.batch_tokens)
                    chain = tree.tokens[nodes]
                    committed = np.concatenate([chain, ctx[-1:]]).astype(np.int64)  # all accepted + a bonus
                    outcome = Outcome(context=ctx, tree=_chain_tree(int(ctx[-1]), chain),
                                      accepted=np.arange(chain.shape[0] + 1, dtype=np.int64), committed=committed,
                                      top_tokens=np.zeros((chain.shape[0] + 1, 0), np.int32),
                                      top_probs=np.zeros((chain.shape[0] + 1, 0), np.float32))
                    for d in drafters:
                        d.observe(outcome)
                    ctx = np.concatenate([ctx, committed])
                for d in drafters:
                    d.end()
        finally:
            self.memory = shared

    def propose(self, sampled_token_ids: list[list[int]], num_tokens_no_spec: np.ndarray, token_ids_cpu: np.ndarray,
                slot_mappings: Any = None) -> list[list[int]]:
        """One chain of draft token ids per batch row (``[]``: none); see the module docstring.

        Args:
            sampled_token_ids: per row, the tokens sampled this step (accepted drafts, then the
                model's bonus token); empty for a row not decoding this step.
            num_tokens_no_spec: ``(rows,)`` int: tokens the row holds, this step's included.
            token_ids_cpu: ``(max_rows, max_len)`` int32: prompt and output per row.
            slot_mappings: unused (no draft model, no KV cache of our own).
        """
        t0 = time.perf_counter()
        n_rows = len(sampled_token_ids)
        keys, live = self._keys(sampled_token_ids, num_tokens_no_spec, token_ids_cpu)
        for key in [k for k in self.live if k not in live]:
            self._end(key)
        active = sum(1 for s in sampled_token_ids if s)
        token_cost = self.opts.min_score + self.opts.batch_cost * max(active - 1, 0)
        chains: list[np.ndarray] = [np.zeros(0, np.int64)] * n_rows
        cals: list[np.ndarray] = [np.zeros(0)] * n_rows
        picked: list[tuple] = [()] * n_rows
        for i, s in enumerate(sampled_token_ids):
            if not s or keys[i] is None:
                continue
            n = int(num_tokens_no_spec[i])
            ctx = np.asarray(token_ids_cpu[i, :n], np.int64)
            req = self._follow(keys[i], ctx, s)
            tree = DraftTree.fuse([d.propose(ctx, self.opts.nodes) for d in req.drafters])
            if self._rate_cut:  # see chain.SpeedRate and chain.RowTrust
                cal = self.calibrator(tree.scores, tree.depths)
                score = req.trust(cal, tree.depths)
                nodes = best_chain(tree, score, token_cost * self.speed.rate, self.k)
            else:
                cal = score = self.calibrator(tree.scores)
                nodes = best_chain(tree, score, token_cost, self.k)
            chains[i] = tree.tokens[nodes]
            picked[i] = (tree.scores[nodes], tree.depths[nodes].astype(np.int64), cal[nodes])
            cals[i] = np.minimum.accumulate(score[nodes]) if len(nodes) else score[nodes]
        keep = allot(cals, self.opts.batch_tokens)
        out: list[list[int]] = [[] for _ in range(n_rows)]
        for i in range(n_rows):
            if keys[i] is None or keys[i] not in self.live or not sampled_token_ids[i]:
                continue
            req = self.live[keys[i]]
            req.chain = chains[i][: keep[i]]
            req.raw, req.depths, req.cal = (x[: keep[i]] for x in picked[i])
            req.token_cost = token_cost
            req.seen = int(num_tokens_no_spec[i])
            req.drafted += len(req.chain)
            self.totals["drafted"] += len(req.chain)
            out[i] = req.chain.tolist()
        self.totals["steps"] += 1
        self.totals["row_steps"] += active
        self.totals["draft_seconds"] += time.perf_counter() - t0  # reported, never decides anything
        return out

    # ------------------------------------------------------------------ requests
    def _keys(self, sampled, num_tokens, token_ids) -> tuple[list, set]:
        if self._view is not None:
            keys = self._view.row_keys(len(sampled))
            if keys is not None:
                return keys, self._view.live()
        return self._content.step(sampled, num_tokens, token_ids)

    def _new_drafters(self) -> list[Drafter]:
        made = {"history": lambda: History(memory=self.memory), "lookup": PromptLookup,
                "retrieval": lambda: Retrieval(index=self.indexes or None)}
        return [made[name]() for name in self.opts.drafters]

    def _follow(self, key: Any, ctx: np.ndarray, sampled: list[int]) -> _Live:
        """The request behind ``key``, told what its last chain became (new ones begun)."""
        committed = np.asarray(sampled, np.int64)
        before = ctx[: ctx.shape[0] - committed.shape[0]]
        req = self.live.get(key)
        if req is None or req.seen != before.shape[0]:
            if req is not None:  # the row's history was rewritten (recomputed after preemption)
                self._end(key)
            req = _Live(self._new_drafters())
            self.live[key] = req
            request = Request(prompt=before, vocab_size=self.vocab_size)
            for d in req.drafters:
                d.begin(request)
            tree, accepted = DraftTree.root_only(int(before[-1])), np.zeros(1, np.int64)
        else:
            a = min(committed.shape[0] - 1, req.chain.shape[0])
            self.calibrator.update(req.raw, a, req.depths)
            req.trust.update(req.depths, req.cal, a)
            self.speed.update(a + 1, req.chain.shape[0], req.token_cost)
            req.accepted += a
            self.totals["accepted"] += a
            tree = _chain_tree(int(before[-1]), req.chain)
            accepted = np.arange(a + 1, dtype=np.int64)
        outcome = Outcome(context=before, tree=tree, accepted=accepted, committed=committed,
                          top_tokens=np.zeros((len(tree), 0), np.int32), top_probs=np.zeros((len(tree), 0), np.float32))
        for d in req.drafters:
            d.observe(outcome)
        req.steps += 1
        req.tokens = ctx.shape[0]
        return req

    def _end(self, key: Any) -> None:
        req = self.live.pop(key)
        for d in req.drafters:
            d.end()
        self.finished.append({"steps": req.steps, "drafted": req.drafted, "accepted": req.accepted,
                              "tokens": req.tokens})
        del self.finished[:-1000]
        self.totals["requests"] += 1
        self._unsaved += 1
        if self.opts.state and self._unsaved >= self.opts.save_every:
            self.save()
        if self.opts.stats:
            self.write_stats()

    # ------------------------------------------------------------------ state and stats
    @property
    def tokenizer(self):
        """The model's tokenizer (loaded on first use: only state and index checks need it)."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self._tokenizer_name)
        return self._tokenizer

    def save(self) -> None:
        """Save the shared memory to the ``state`` folder (finished requests only)."""
        if self.opts.state and _first_rank():
            _state_io.save_history(self.opts.state, self.tokenizer, self._keeper)
            self._unsaved = 0

    def stats(self) -> dict:
        """Counts since start: steps, row-steps drafted, tokens drafted and accepted, drafting
        seconds, the memory's size, and per finished request (latest 1000, oldest first)."""
        t = dict(self.totals)
        t["mean_accepted_length"] = (t["accepted"] + t["row_steps"]) / t["row_steps"] if t["row_steps"] else 0.0
        t["memory"] = {"requests": self.memory.n_requests, "tokens": self.memory.n_tokens}
        t["runner_adapter"] = self._view is not None
        t["finished"] = list(self.finished)
        return t

    def write_stats(self) -> None:
        """Rewrite the ``stats`` JSON file atomically."""
        if not _first_rank():
            return
        path = Path(self.opts.stats)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".stats-", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(self.stats(), f)
        os.replace(tmp, path)

    def close(self) -> None:
        """End every request in flight, save the state and the stats (also run at exit)."""
        if self._closed:
            return
        self._closed = True
        for key in list(self.live):
            self._end(key)
        if self.opts.state and self._unsaved:
            self.save()
        if self.opts.stats:
            self.write_stats()


def _first_rank() -> bool:
    """True in the process that writes files: every tensor/pipeline-parallel rank drafts the
    same chains, and only the first saves them (they would write the same bytes)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _chain_tree(root: int, chain: np.ndarray) -> DraftTree:
    """The verified chain as a tree: root, then each token the child of the one before."""
    n = chain.shape[0]
    return DraftTree.from_arrays(np.concatenate([[root], chain]).astype(np.int64), np.arange(-1, n, dtype=np.int64))


def _open_indexes(paths: tuple[str, ...], tokenizer) -> list:
    if not paths:
        return []
    from ..index.corpus import CorpusIndex

    out = []
    for p in paths:
        idx = CorpusIndex(p)
        idx.check_tokenizer(tokenizer)
        out.append(idx)
    return out


_made: dict[str, type] = {}


def __getattr__(name: str) -> type:
    """``RetroDraft_<hex>``: a proposer class with the options the name carries."""
    if not name.startswith(CLASS_PREFIX):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _made:
        _made[name] = type(name, (RetroDraftProposer,), {"options": decode(name), "__module__": __name__})
    return _made[name]
