"""RetroDraft: the object users pass as ``generate(..., assistant=RetroDraft())``.

It owns the drafters, the sizing policy and the statistics of the last call. Each step it asks
every drafter for a tree, fuses the trees (:meth:`~retrodraft.tree.DraftTree.fuse`), keeps the
best-scored nodes - as many as pay on this device (``sizing="auto"``, see :mod:`retrodraft.sizing`)
or a fixed number - and after verification hands the step's
:class:`~retrodraft.drafters.base.Outcome` to every drafter.

One assistant serves one call at a time: ``generate`` holds :attr:`RetroDraft.lock` for the whole
call, and :meth:`RetroDraft.options` overrides the sizing, the budget or the request's documents
for the calls made inside a ``with`` block (holding the lock, so other threads never see them).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch

from .cost import CostModel, model_key
from .drafters import Drafter, make_drafter
from .drafters.base import Outcome, Request
from .errors import ConfigError, StateError
from .prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache, check_prefix_cache_bytes
from .shape import TreeShape
from .sizing import TreeSizer
from .state import read_manifest, restore
from .state import save as save_state
from .trace import Trace
from .tree import DraftTree

__all__ = ["RetroDraft", "Stats", "BUDGET_PRESETS", "DEFAULT_DRAFTERS", "MAX_BUDGET", "DEFAULT_BUDGET", "SIZINGS"]

#: Fixed draft nodes per step by device and dtype, for ``sizing="preset"``: the best fixed
#: budgets of the committed sweeps (``benchmarks/results/sweep-*``) on CPU; the GPU value is
#: untested. ``sizing="auto"`` (the default) sizes every step instead.
BUDGET_PRESETS: dict[str, int] = {"cpu-float32": 8, "cpu-bfloat16": 8, "gpu": 64}
#: The drafters of ``RetroDraft()``: memory of past requests, the model's recycled candidates and
#: prompt lookup (the runs behind the choice are in ``benchmarks/results``).
DEFAULT_DRAFTERS: tuple[str, ...] = ("history", "recycling", "lookup")
MAX_BUDGET = 1024
#: The default node cap (``budget``) of ``sizing="auto"``: the most draft nodes drafted and
#: verified per step. Drafting more costs CPU time every step; a GPU user can raise it.
DEFAULT_BUDGET = 32
#: How a step's tree size is chosen: ``"auto"`` (cost model and calibrated acceptance, at most
#: ``budget`` nodes), ``"fixed"`` (always ``budget`` nodes when the drafters find that many),
#: ``"preset"`` (:data:`BUDGET_PRESETS` for the device and dtype).
SIZINGS: tuple[str, ...] = ("auto", "fixed", "preset")


@dataclass
class Stats:
    """What one ``generate`` call did, for benchmarks and curious users.

    Attributes:
        steps: verification passes (the prefill is not one).
        new_tokens: tokens generated, the prefill's first token included.
        committed: tokens committed by each step (accepted drafts plus the bonus token).
        tree_sizes: nodes verified by each step (root included).
        draft_s / verify_s / bookkeeping_s: seconds drafting (propose, fusion, sizing,
            learning), in the model's tree pass, and everything else of a step: building the
            mask and inputs, acceptance, cache compaction, stopping checks.
        prefill_s / wall_s: seconds for the prefill and the whole call.
        prefix_reused: prompt positions whose KV came from the prefix cache (not prefilled).
        prefix_skip: why nothing was reused ("" when something was): ``"off"``, ``"store empty"``,
            ``"no stored prefix"``, or a cache that cannot be reused exactly.
    """

    steps: int = 0
    new_tokens: int = 0
    committed: list[int] = field(default_factory=list)
    tree_sizes: list[int] = field(default_factory=list)
    draft_s: float = 0.0
    verify_s: float = 0.0
    bookkeeping_s: float = 0.0
    prefill_s: float = 0.0
    wall_s: float = 0.0
    prefix_reused: int = 0
    prefix_skip: str = ""

    @property
    def mean_committed(self) -> float:
        """Mean tokens committed per verification step (the bonus token counted)."""
        return float(np.mean(self.committed)) if self.committed else 0.0

    @property
    def mean_accepted(self) -> float:
        """The mean accepted tokens per step (MAT) of the literature: :attr:`mean_committed`."""
        return self.mean_committed

    @property
    def mean_tree_size(self) -> float:
        return float(np.mean(self.tree_sizes)) if self.tree_sizes else 0.0

    def record_step(self, tree_size: int, committed: int, draft_s: float = 0.0, verify_s: float = 0.0,
                    bookkeeping_s: float = 0.0) -> None:
        self.steps += 1
        self.tree_sizes.append(tree_size)
        self.committed.append(committed)
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.bookkeeping_s += bookkeeping_s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean_committed"] = d["mean_accepted"] = self.mean_committed
        d["mean_tree_size"] = self.mean_tree_size
        return d


class RetroDraft:
    """Model-free drafting for ``model.generate(..., assistant=RetroDraft())``.

    Args:
        drafters: drafter names (``"recycling"``, ``"lookup"``, ...) or :class:`Drafter`
            instances; default :data:`DEFAULT_DRAFTERS`. Their trees are fused each step.
        budget: the most draft nodes a step verifies, 0..``MAX_BUDGET`` (default
            :data:`DEFAULT_BUDGET` with ``sizing="auto"``).
        shape: a calibrated tree shape (:class:`~retrodraft.shape.TreeShape`, a preset name such
            as ``"cpu-bfloat16"``, or a ``.json`` path from ``retrodraft calibrate``) that the
            drafters which fill a shape (``recycling``, ``stand``: ``Drafter.fills_shape``) draft into.
        index: corpus index folder(s) or opened :class:`~retrodraft.index.CorpusIndex` objects
            for the ``retrieval`` drafter (added to the default drafters when ``drafters`` is
            not given).
        cost: the :class:`~retrodraft.cost.CostModel` for ``sizing="auto"`` (or a ``.json``
            path saved by it); default: measured once per model/device/dtype and cached.
        trace: record every step of each call in ``self.trace`` (a :class:`~retrodraft.trace.Trace`;
            see also :meth:`start_trace`); off by default.
        sizing: how each step's tree size is chosen, one of :data:`SIZINGS`: ``"auto"`` verifies
            as many of the fused tree's best nodes (at most ``budget``) as maximize expected
            tokens per second on this model, device and dtype (measured cost curve, calibrated
            acceptance; none when drafting does not pay); ``"fixed"`` always ``budget`` nodes;
            ``"preset"`` the :data:`BUDGET_PRESETS` value for the device and dtype. Default:
            ``"fixed"`` when ``budget`` is given, else ``"auto"``.
        prefix_cache: bytes of KV kept from earlier calls so that a prompt starting like an
            earlier one (a resent conversation) prefills only what is new (see
            :mod:`retrodraft.prefix_cache`); default :data:`DEFAULT_PREFIX_CACHE_BYTES`, ``0``
            turns it off. A :class:`~retrodraft.prefix_cache.PrefixCache` instance may be passed to
            share one store between assistants. Never saved with the state.

    Drafter state persists across calls (a warm start); :meth:`reset` forgets it.
    ``stats`` describes the most recent call.

    Attributes:
        lock: held by ``generate`` for a whole call and by :meth:`options` for its block, so
            threads sharing this assistant take turns (re-entrant).
    """

    def __init__(self, drafters: Sequence[str | Drafter] | None = None, budget: int | None = None,
                 shape: "str | Path | TreeShape | None" = None, index=None,
                 cost: "CostModel | str | Path | None" = None, *, trace: bool = False,
                 sizing: str | None = None,
                 prefix_cache: "int | PrefixCache" = DEFAULT_PREFIX_CACHE_BYTES) -> None:
        names = list(DEFAULT_DRAFTERS) if drafters is None else list(drafters)
        if isinstance(drafters, (str, Drafter)):
            names = [drafters]
        if index is not None and drafters is None:
            names.append("retrieval")
        if not names:
            raise ConfigError("RetroDraft needs at least one drafter, e.g. drafters=['recycling'].")
        if index is not None and "retrieval" not in names:
            raise ConfigError("index= feeds the 'retrieval' drafter: add it, e.g. drafters=['recycling', 'lookup', "
                              "'retrieval'].")
        self.drafters: list[Drafter] = [
            d if isinstance(d, Drafter) else make_drafter(d, **({"index": index} if d == "retrieval" else {}))
            for d in names
        ]
        # RASD-style pruning: retrieval checks its guesses against recycling's model estimates.
        estimator = next((d for d in self.drafters if d.estimates_next_token), None)
        for d in self.drafters:
            if d.wants_estimator:
                d.use_estimator(estimator)
        self.sizing, self.budget = _check_sizing(sizing, budget)
        self.shape = None if shape is None else (shape if isinstance(shape, TreeShape) else TreeShape.load(shape))
        if self.shape is not None:
            shaped = [d for d in self.drafters if d.fills_shape]
            if not shaped:
                raise ConfigError("shape= shapes the drafters that fill a shape (recycling, stand); "
                                  f"none of {[d.name for d in self.drafters]} does.")
            for d in shaped:
                d.use_shape(self.shape.paths)
        self.cost = cost if cost is None or isinstance(cost, CostModel) else CostModel.load(cost)
        self.sizer: TreeSizer | None = None
        self.stats = Stats()
        self.trace: Trace | None = Trace() if trace else None
        self.lock = threading.RLock()
        self._documents: tuple[np.ndarray, ...] | None = None  # set by options(documents=...)
        self._begun: list[Drafter] = []  # drafters to end() when the call finishes
        if isinstance(prefix_cache, PrefixCache):
            self.prefix_cache: PrefixCache | None = prefix_cache
        else:
            size = check_prefix_cache_bytes(prefix_cache)
            self.prefix_cache = PrefixCache(size) if size else None

    def __repr__(self) -> str:
        return f"RetroDraft(drafters={[d.name for d in self.drafters]!r}, sizing={self.sizing!r}, budget={self.budget!r})"

    @property
    def top_k(self) -> int:
        """Candidates per verified node the drafters read from each :class:`Outcome`."""
        return max((d.top_k for d in self.drafters), default=0)

    def start_trace(self) -> Trace:
        """Record every step of the following calls in ``self.trace`` (each call replaces it)."""
        self.trace = Trace()
        return self.trace

    # ------------------------------------------------------------------ per-call options
    def options(self, *, sizing: str | None = None, budget: int | None = None,
                documents: Sequence[Sequence[int]] | None = None):
        """Override options for the calls made inside a ``with`` block, then restore them::

            with assistant.options(documents=[passage_ids], budget=16):
                model.generate(ids, assistant=assistant)

        Args:
            sizing / budget: as for the constructor, resolved the same way (``budget`` alone
                means ``sizing="fixed"``); omit both to keep the assistant's own.
            documents: token id sequences this request may copy from (retrieved passages, the
                definitions a prompt mentions), handed to the drafters that read documents
                (``retrieval``) in :attr:`Request.documents`.

        Checked when called (a :class:`~retrodraft.errors.ConfigError` for a bad value). The
        block holds :attr:`lock`, so other threads' calls wait until it ends.
        """
        sized = _check_sizing(sizing, budget) if sizing is not None or budget is not None else None
        docs = None if documents is None else self._check_documents(documents)
        return self._override(sized, docs)

    @contextmanager
    def _override(self, sized: tuple[str, int | None] | None,
                  docs: tuple[np.ndarray, ...] | None) -> Iterator["RetroDraft"]:
        with self.lock:
            before = self.sizing, self.budget, self._documents
            if sized is not None:
                self.sizing, self.budget = sized
            if docs is not None:
                self._documents = docs
            try:
                yield self
            finally:
                self.sizing, self.budget, self._documents = before

    def _check_documents(self, documents: Sequence[Sequence[int]]) -> tuple[np.ndarray, ...]:
        if not any(d.reads_documents for d in self.drafters):
            raise ConfigError("documents= feeds the drafters that read documents (retrieval); none of "
                              f"{[d.name for d in self.drafters]} does.")
        if isinstance(documents, (str, bytes)) or isinstance(documents, np.ndarray) and documents.ndim != 1:
            raise ConfigError("documents must be a list of token id sequences.")
        out = []
        for doc in documents:
            try:
                a = np.asarray(doc, dtype=np.int64)
            except (TypeError, ValueError):
                raise ConfigError("documents must be a list of token id sequences.") from None
            if a.ndim != 1 or (a < 0).any():
                raise ConfigError("each document must be a flat sequence of non-negative token ids.")
            out.append(a)
        return tuple(out)

    # ------------------------------------------------------------------ per call
    def budget_for(self, model: torch.nn.Module) -> int:
        """The most draft nodes a step of this call may verify on ``model``."""
        if self.sizing == "auto":
            return self.budget if self.sizer is None else min(self.budget, self.sizer.budget)
        if self.sizing == "fixed":
            return self.budget
        device = next(model.parameters()).device
        if device.type != "cpu":
            return BUDGET_PRESETS["gpu"]
        return BUDGET_PRESETS["cpu-bfloat16" if model.dtype in (torch.bfloat16, torch.float16) else "cpu-float32"]

    def begin(self, request: Request, model: torch.nn.Module | None = None) -> Stats:
        """Start a call: fresh statistics, the tree sizer for ``model``, drafters told about the
        request (with the documents of :meth:`options`). Every drafter whose ``begin`` ran is
        ended by :meth:`end`, also when a later drafter's ``begin`` raises."""
        self.end()  # a call that was never ended (begin without generate) is closed first
        if self._documents is not None:
            request = replace(request, documents=self._documents)
        self.stats = Stats()
        if self.sizing == "auto" and model is not None and (
                self.sizer is None or (self.cost is None and self.sizer.cost.key != model_key(model))):
            # The calibration learnt so far is kept across calls (on one model), like the
            # drafters' state.
            self.sizer = TreeSizer(self.cost if self.cost is not None else CostModel.for_model(model),
                                   budget=self.budget)
        try:
            for d in self.drafters:
                if model is not None:
                    d.check_model(model)
                d.begin(request)
                self._begun.append(d)
        except BaseException:
            self.end()
            raise
        if self.trace is not None:
            self.trace.begin(request.prompt, [d.name for d in self.drafters])
        return self.stats

    def draft(self, context: np.ndarray, budget: int, max_depth: int | None = None) -> DraftTree:
        """Fuse every drafter's proposal into one tree of at most ``budget`` draft nodes.

        Args:
            context: ``(seq_len,)`` ids so far; the last one is the root.
            budget: draft nodes allowed below the root.
            max_depth: drop nodes deeper than this (tokens that could never be kept).
        """
        if budget <= 0 or (max_depth is not None and max_depth <= 0):
            return DraftTree.root_only(int(context[-1]))
        tree = DraftTree.fuse([d.propose(context, budget) for d in self.drafters])
        if max_depth is not None and tree.max_depth > max_depth:
            tree = tree.select(np.flatnonzero(tree.depths <= max_depth))
        if self.sizing == "auto" and self.sizer is not None:
            budget = self.sizer.choose(tree, budget=budget, context=len(context))
        return tree.prune(budget)

    def observe(self, outcome: Outcome) -> None:
        """Hand one step's outcome to the tree sizer, every drafter and the trace."""
        if self.sizer is not None and self.sizing == "auto":
            self.sizer.observe(outcome.tree, outcome.accepted)
        for d in self.drafters:
            d.observe(outcome)
        if self.trace is not None:
            self.trace.record(outcome)

    def end(self) -> None:
        """Finish the call: :meth:`Drafter.end` once on every drafter begun since the last
        ``end`` (``generate`` calls this when the call returns or raises; a second call is a no-op)."""
        begun, self._begun = self._begun, []
        error = None
        for d in begun:
            try:
                d.end()
            except BaseException as e:  # every drafter still ends; the first error is raised
                error = error or e
        if error is not None:
            raise error

    def reset(self) -> None:
        """Forget all drafter state, the tree sizer's calibration and the prefix cache (cold start)."""
        self.sizer = None
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        for d in self.drafters:
            d.reset()

    # ------------------------------------------------------------------ saved state
    def save(self, path: "str | Path", tokenizer) -> Path:
        """Write what the drafters and the tree sizer learnt to the folder ``path``, tied to
        ``tokenizer`` (atomically; see :mod:`retrodraft.state`). Returns ``path``."""
        with self.lock:
            return save_state(path, tokenizer, self.drafters, self.sizer)

    def load_state(self, path: "str | Path", tokenizer) -> None:
        """Take over the state saved at ``path`` (same drafters); refuses a state saved for
        another tokenizer, truncated, corrupted or from a newer format (:class:`~retrodraft.errors.StateError`).
        On a refusal the assistant is left as it was when nothing had been read yet, or reset
        (cold) if a drafter or the sizer refused its part."""
        with self.lock:
            saved = restore(path, tokenizer, self.drafters)
            if saved is None or self.sizing != "auto":
                return
            try:
                self.sizer = self._sizer_from(saved)
            except BaseException:
                self.reset()
                raise

    @classmethod
    def load(cls, path: "str | Path", tokenizer, **kwargs) -> "RetroDraft":
        """A new assistant with the drafters saved at ``path`` and what they learnt.

        Args:
            path: a state folder written by :meth:`save`.
            tokenizer: the model's tokenizer; a state saved for another one is refused.
            kwargs: as for the constructor (``sizing``, ``budget``, ``index``, ``cost``, ...);
                ``drafters`` defaults to the saved drafter names (pass instances when they were
                constructed with non-default table sizes).
        """
        kwargs.setdefault("drafters", [e["name"] for e in read_manifest(path)["drafters"]])
        assistant = cls(**kwargs)
        assistant.load_state(path, tokenizer)
        return assistant

    def _sizer_from(self, state: dict) -> TreeSizer:
        """A tree sizer with the saved calibration, on this assistant's cost curve if it has one,
        else on the curve the calibration was learnt under, every context of it (a state saved before
        contexts were kept has its first context only); replaced on a call with another model."""
        cost = self.cost
        if cost is None:
            try:
                contexts, grid = state.get("cost_contexts"), state.get("cost_grid")
                if (contexts is None) != (grid is None):
                    raise ConfigError("it has cost_contexts or cost_grid without the other")
                cost = CostModel(state["cost_sizes"], state["cost_seconds"], str(state.get("cost_key", "")),
                                 str(state.get("cost_device", "")), contexts=contexts, grid=grid)
            except (KeyError, ConfigError, ValueError) as e:
                raise StateError(f"the saved tree-sizer cost curve is invalid ({e}).") from None
        hits = state.get("hits")
        bins = hits.shape[-1] if isinstance(hits, np.ndarray) and hits.ndim in (1, 2) and 1 <= hits.shape[-1] <= 10_000 else 20
        sizer = TreeSizer(cost, budget=self.budget, bins=bins)
        sizer.load_state(state)
        return sizer


def _check_budget(budget) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ConfigError(f"budget must be an integer from 0 to {MAX_BUDGET} (draft nodes per step), got {budget!r}.")
    if not 0 <= int(budget) <= MAX_BUDGET:
        raise ConfigError(f"budget must be from 0 to {MAX_BUDGET} draft nodes, got {budget}.")
    return int(budget)


def _check_sizing(sizing: str | None, budget) -> tuple[str, int | None]:
    """``(sizing, budget)`` from the constructor's (or :meth:`RetroDraft.options`') arguments."""
    if sizing is None:
        sizing = "auto" if budget is None else "fixed"
    if sizing not in SIZINGS:
        raise ConfigError(f"sizing must be one of {', '.join(map(repr, SIZINGS))}, got {sizing!r}.")
    if budget is not None:
        budget = _check_budget(budget)
    if sizing == "fixed" and budget is None:
        raise ConfigError("sizing='fixed' needs budget=N (draft nodes per step).")
    if sizing == "preset" and budget is not None:
        raise ConfigError("sizing='preset' takes its node count from BUDGET_PRESETS; drop budget= or use "
                          "sizing='fixed'.")
    if sizing == "auto" and budget is None:
        budget = DEFAULT_BUDGET
    return sizing, budget
