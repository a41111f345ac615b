"""RetroDraft: the object users pass as ``generate(..., assistant=RetroDraft())``.

It owns the drafters, the sizing policy and the statistics of the last call. Each step it asks
every drafter for a tree, fuses the trees (:func:`~retrodraft.verify.fuse`), keeps the best-scored
nodes - as many as pay on this device (``sizing="auto"``, see :mod:`retrodraft.sizing`) or a fixed
number - and after verification hands the step's :class:`~retrodraft.drafters.base.Outcome` to
every drafter.
"""

from __future__ import annotations

import inspect
import threading
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .cost import CostModel, model_key
from .drafters import Drafter, make_drafter
from .drafters.base import NextTokenEstimator, Outcome, Request
from .errors import ConfigError
from .prefix_cache import DEFAULT_PREFIX_CACHE_BYTES, PrefixCache, check_prefix_cache_bytes
from .shape import TreeShape
from .sizing import TreeSizer
from .trace import Trace
from .tree import DraftTree
from .verify import fuse

__all__ = ["RetroDraft", "Stats", "BUDGET_PRESETS", "DEFAULT_DRAFTERS", "MAX_BUDGET", "AUTO_MAX_NODES", "SIZINGS"]

#: Fixed draft nodes per step by device and dtype, for ``sizing="preset"``: the best fixed
#: budgets of the committed sweeps (``benchmarks/results/sweep-*``) on CPU; the GPU value is
#: untested. ``sizing="auto"`` (the default) sizes every step instead.
BUDGET_PRESETS: dict[str, int] = {"cpu-float32": 8, "cpu-bfloat16": 8, "gpu": 64}
#: The drafters of ``RetroDraft()``: ``history`` joined ``recycling`` + ``lookup`` when it paid in one
#: interleaved run on Qwen2.5-Coder-1.5B bf16 (HumanEval 2.02x vs 1.96x, Spec-Bench 1.43x vs 1.45x,
#: i.e. within noise) and wins where requests repeat (``benchmarks/results/*-history``).
DEFAULT_DRAFTERS: tuple[str, ...] = ("history", "recycling", "lookup")
MAX_BUDGET = 1024
#: The default node cap of ``sizing="auto"``: the most draft nodes drafted and verified per
#: step. Drafting more costs CPU time every step; a GPU user can raise it with ``budget=``.
AUTO_MAX_NODES = 32
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
    def accepted(self) -> list[int]:
        """Deprecated name of :attr:`committed`."""
        warnings.warn("Stats.accepted is now Stats.committed (it counts committed tokens)", DeprecationWarning,
                      stacklevel=2)
        return self.committed

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
            :data:`AUTO_MAX_NODES` with ``sizing="auto"``).
        shape: a calibrated tree shape (:class:`~retrodraft.shape.TreeShape`, a preset name such
            as ``"cpu-bfloat16"``, or a ``.json`` path from ``retrodraft calibrate``) that the
            template-filling drafters (``recycling``, ``stand``) draft into.
        index: corpus index folder(s) or opened :class:`~retrodraft.index.CorpusIndex` objects
            for the ``retrieval`` drafter (added to the default drafters when ``drafters`` is
            not given).
        cost: the :class:`~retrodraft.cost.CostModel` for ``sizing="auto"`` (or a ``.json``
            path saved by it); default: measured once per model/device/dtype and cached.
        max_nodes: deprecated; the node cap of ``sizing="auto"`` is ``budget``.
        trace: record every step of each call in ``self.trace`` (a :class:`~retrodraft.trace.Trace`;
            see also :meth:`start_trace`); off by default.
        sizing: how each step's tree size is chosen, one of :data:`SIZINGS`: ``"auto"`` verifies
            as many of the fused tree's best nodes (at most ``budget``) as maximize expected
            tokens per second on this model, device and dtype (measured cost curve, calibrated
            acceptance; none when drafting does not pay); ``"fixed"`` always ``budget`` nodes;
            ``"preset"`` the :data:`BUDGET_PRESETS` value for the device and dtype. Default:
            ``"fixed"`` when ``budget`` is given, else ``"auto"``.
        tree: deprecated name of ``shape``.
        prefix_cache: bytes of KV kept from earlier calls so that a prompt starting like an
            earlier one (a resent conversation) prefills only what is new (see
            :mod:`retrodraft.prefix_cache`); default :data:`DEFAULT_PREFIX_CACHE_BYTES`, ``0``
            turns it off. A :class:`~retrodraft.prefix_cache.PrefixCache` instance may be passed to
            share one store between assistants. Never saved with the state.

    Drafter state persists across calls (a warm start); :meth:`reset` forgets it.
    ``stats`` describes the most recent call.
    """

    def __init__(self, drafters: Sequence[str | Drafter] | None = None, budget: int | None = None,
                 shape: "str | Path | TreeShape | None" = None, index=None,
                 cost: "CostModel | str | Path | None" = None, max_nodes: int | None = None, *,
                 trace: bool = False, sizing: str | None = None, tree: "str | Path | TreeShape | None" = None,
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
        self._legacy = {id(d): _legacy_methods(d) for d in self.drafters}
        # RASD-style pruning: retrieval checks its guesses against recycling's model estimates.
        estimator = next((d for d in self.drafters if isinstance(d, NextTokenEstimator)), None)
        for d in self.drafters:
            if d.wants_estimator:
                d.use_estimator(estimator)
        self.sizing, self.budget = _check_sizing(sizing, budget, max_nodes)
        if tree is not None:
            warnings.warn("RetroDraft(tree=...) is now RetroDraft(shape=...)", DeprecationWarning, stacklevel=2)
            shape = tree if shape is None else shape
        self.shape = None if shape is None else (shape if isinstance(shape, TreeShape) else TreeShape.load(shape))
        if self.shape is not None:
            shaped = [d for d in self.drafters if hasattr(d, "use_template")]
            if not shaped:
                raise ConfigError("shape= shapes the drafters that fill a template (recycling, stand); "
                                  f"none of {[d.name for d in self.drafters]} does.")
            for d in shaped:
                d.use_template(self.shape.paths)
        self.cost = cost if cost is None or isinstance(cost, CostModel) else CostModel.load(cost)
        self.sizer: TreeSizer | None = None
        self.stats = Stats()
        self.trace: Trace | None = Trace() if trace else None
        if isinstance(prefix_cache, PrefixCache):
            self.prefix_cache: PrefixCache | None = prefix_cache
        else:
            size = check_prefix_cache_bytes(prefix_cache)
            self.prefix_cache = PrefixCache(size) if size else None
        # Held for a whole generate call: threads sharing this assistant take turns.
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"RetroDraft(drafters={[d.name for d in self.drafters]!r}, sizing={self.sizing!r}, budget={self.budget!r})"

    @property
    def tree(self) -> TreeShape | None:
        """Deprecated name of :attr:`shape`."""
        warnings.warn("RetroDraft.tree is now RetroDraft.shape", DeprecationWarning, stacklevel=2)
        return self.shape

    @property
    def max_nodes(self) -> int:
        """The node cap of ``sizing="auto"`` (deprecated name of :attr:`budget`)."""
        return self.budget if self.budget is not None else AUTO_MAX_NODES

    @property
    def top_k(self) -> int:
        """Candidates per verified node the drafters read from each :class:`Outcome`."""
        return max((d.top_k for d in self.drafters), default=0)

    def start_trace(self) -> Trace:
        """Record every step of the following calls in ``self.trace`` (each call replaces it)."""
        self.trace = Trace()
        return self.trace

    # ------------------------------------------------------------------ per call
    def budget_for(self, model: torch.nn.Module) -> int:
        """The most draft nodes a step of this call may verify on ``model``."""
        if self.sizing == "auto":
            return self.budget if self.sizer is None else self.sizer.max_nodes
        if self.sizing == "fixed":
            return self.budget
        device = next(model.parameters()).device
        if device.type != "cpu":
            return BUDGET_PRESETS["gpu"]
        return BUDGET_PRESETS["cpu-bfloat16" if model.dtype in (torch.bfloat16, torch.float16) else "cpu-float32"]

    def begin(self, request: Request, model: torch.nn.Module | None = None, *legacy, **legacy_kw) -> Stats:
        """Start a call: fresh statistics, the tree sizer for ``model``, drafters told about the
        request (``begin(prompt, vocab_size, model, temperature=...)`` is the deprecated form)."""
        if not isinstance(request, Request):
            warnings.warn("RetroDraft.begin(prompt, vocab_size, model, temperature) is now "
                          "RetroDraft.begin(Request(prompt, vocab_size, temperature), model)", DeprecationWarning,
                          stacklevel=2)
            vocab_size, model = model, (legacy[0] if legacy else legacy_kw.get("model"))
            temperature = legacy[1] if len(legacy) > 1 else legacy_kw.get("temperature")
            request = Request(np.asarray(request), int(vocab_size), temperature)
        self.stats = Stats()
        if self.sizing == "auto" and model is not None and (
                self.sizer is None or (self.cost is None and self.sizer.cost.key != model_key(model))):
            # The calibration learnt so far is kept across calls (on one model), like the
            # drafters' state.
            self.sizer = TreeSizer(self.cost if self.cost is not None else CostModel.for_model(model),
                                   max_nodes=self.budget)
        for d in self.drafters:
            if model is not None:
                d.check_model(model)
            if self._legacy_of(d)[0]:
                d.sampling_temperature = request.temperature
                d.begin(request.prompt, request.vocab_size)
            else:
                d.begin(request)
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
        tree = fuse([d.propose(context, budget) for d in self.drafters])
        if max_depth is not None and tree.max_depth > max_depth:
            tree = tree.select(np.flatnonzero(tree.depths <= max_depth))
        if self.sizing == "auto" and self.sizer is not None:
            budget = self.sizer.choose(tree, limit=budget, context=len(context))
        return tree.prune(budget)

    def observe(self, outcome: Outcome, logits: torch.Tensor | None = None) -> None:
        """Hand one step's outcome to the tree sizer, every drafter and the trace.

        ``logits`` (``(len(tree), vocab)`` raw) is needed only by drafters that still implement
        the deprecated ``observe(tree, accepted, logits)``.
        """
        if self.sizer is not None and self.sizing == "auto":
            self.sizer.observe(outcome.tree, outcome.accepted)
        for d in self.drafters:
            if self._legacy_of(d)[1]:
                d.observe(outcome.tree, outcome.accepted, logits)
            else:
                d.observe(outcome)
        if self.trace is not None:
            self.trace.record(outcome)

    def reset(self) -> None:
        """Forget all drafter state, the tree sizer's calibration and the prefix cache (cold start)."""
        self.sizer = None
        if self.prefix_cache is not None:
            self.prefix_cache.clear()
        for d in self.drafters:
            d.reset()

    def _legacy_of(self, d: Drafter) -> tuple[bool, bool]:
        known = self._legacy.get(id(d))
        if known is None:  # a drafter added after construction
            known = self._legacy[id(d)] = _legacy_methods(d)
        return known

    # ------------------------------------------------------------------ saved state
    def save(self, path: "str | Path", tokenizer) -> Path:
        """Write what the drafters and the tree sizer learnt to the folder ``path``, tied to
        ``tokenizer`` (atomically; see :mod:`retrodraft.state`). Returns ``path``."""
        from .state import save

        with self._lock:
            return save(self, path, tokenizer)

    def load_state(self, path: "str | Path", tokenizer) -> None:
        """Take over the state saved at ``path`` (same drafters); refuses a state saved for
        another tokenizer, truncated, corrupted or from a newer format (:class:`~retrodraft.errors.StateError`)."""
        from .state import restore

        with self._lock:
            restore(self, path, tokenizer)

    @classmethod
    def load(cls, path: "str | Path", tokenizer, **kwargs) -> "RetroDraft":
        """A new assistant with the drafters saved at ``path`` and what they learnt; ``kwargs`` as
        for the constructor (``sizing``, ``budget``, ``index``, ...)."""
        from .state import load

        return load(path, tokenizer, **kwargs)


def _check_budget(budget, name: str = "budget", lo: int = 0) -> int:
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ConfigError(f"{name} must be an integer from {lo} to {MAX_BUDGET} (draft nodes per step), got {budget!r}.")
    if not lo <= int(budget) <= MAX_BUDGET:
        raise ConfigError(f"{name} must be from {lo} to {MAX_BUDGET} draft nodes, got {budget}.")
    return int(budget)


def _check_sizing(sizing: str | None, budget, max_nodes) -> tuple[str, int | None]:
    """``(sizing, node cap)`` from the constructor's arguments, old spellings included."""
    if isinstance(budget, str) and budget in SIZINGS and budget != "fixed":
        warnings.warn(f"RetroDraft(budget={budget!r}) is now RetroDraft(sizing={budget!r}); budget is the node cap",
                      DeprecationWarning, stacklevel=3)
        if sizing is not None and sizing != budget:
            raise ConfigError(f"budget={budget!r} and sizing={sizing!r} disagree; pass sizing only.")
        sizing, budget = budget, None
    if sizing is None:
        sizing = "auto" if budget is None else "fixed"
    if sizing not in SIZINGS:
        raise ConfigError(f"sizing must be one of {', '.join(map(repr, SIZINGS))}, got {sizing!r}.")
    if max_nodes is not None:
        max_nodes = _check_budget(max_nodes, "max_nodes", lo=1)
        warnings.warn("RetroDraft(max_nodes=N) is now RetroDraft(sizing='auto', budget=N)", DeprecationWarning,
                      stacklevel=3)
        if sizing == "auto" and budget is None:
            budget = max_nodes
    if budget is not None:
        budget = _check_budget(budget)
    if sizing == "fixed" and budget is None:
        raise ConfigError("sizing='fixed' needs budget=N (draft nodes per step).")
    if sizing == "preset" and budget is not None:
        raise ConfigError("sizing='preset' takes its node count from BUDGET_PRESETS; drop budget= or use "
                          "sizing='fixed'.")
    if sizing == "auto" and budget is None:
        budget = AUTO_MAX_NODES
    return sizing, budget


def _legacy_methods(d: Drafter) -> tuple[bool, bool]:
    """Whether ``d`` overrides the old ``begin(prompt, vocab_size)`` / ``observe(tree, accepted,
    logits)`` (told apart by their number of positional parameters); warns once for each."""
    def positional(method) -> int:
        params = inspect.signature(method).parameters.values()
        return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params)

    old_begin = positional(d.begin) >= 2
    old_observe = positional(d.observe) >= 3
    for old, what, new in ((old_begin, "begin(prompt, vocab_size)", "begin(request)"),
                           (old_observe, "observe(tree, accepted, logits)", "observe(outcome)")):
        if old:
            warnings.warn(f"drafter {d.name!r} implements the old {what}; implement {new} instead "
                          "(see retrodraft.drafters.base)", DeprecationWarning, stacklevel=4)
    return old_begin, old_observe
