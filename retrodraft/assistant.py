"""RetroDraft: the object users pass as ``generate(..., assistant=RetroDraft())``.

It owns the drafters, the node budget and the statistics of the last call. Each step it asks
every drafter for a tree, fuses the trees by longest-prefix matching, keeps the best-scored
nodes - as many as pay on this device (``budget="auto"``, see :mod:`retrodraft.cost`) or a fixed
number - and after verification feeds the verdict back to every drafter.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np
import torch

from pathlib import Path

from .cost import CostModel, TreeSizer, model_key
from .drafters import Drafter, make_drafter
from .errors import ConfigError
from .shape import TreeShape
from .tree import DraftTree

__all__ = ["RetroDraft", "Stats", "BUDGET_PRESETS", "DEFAULT_DRAFTERS", "MAX_BUDGET", "AUTO_MAX_NODES"]

#: Fixed draft nodes per step by device and dtype, for ``budget="preset"``. A tree's cost differs
#: wildly by device: on the 2-core CPU of ../shared/MODELS.md a 16-token float32 pass costs ~2x
#: one token, a bfloat16 one ~1.3x, and on a GPU ~1x up to 64 tokens. The CPU values are the best
#: fixed budgets of the committed sweeps (benchmarks/results/sweep-*): 8 and 16 tie in float32 on
#: SmolLM2-135M, and 8 beat 16, 32 and 64 in bfloat16 on Qwen2.5-Coder-1.5B. The GPU value is
#: untested here (no GPU was lent). ``budget="auto"`` (the default) sizes every step instead.
BUDGET_PRESETS: dict[str, int] = {"cpu-float32": 8, "cpu-bfloat16": 8, "gpu": 64}
DEFAULT_DRAFTERS: tuple[str, ...] = ("recycling", "lookup")
MAX_BUDGET = 1024
#: The most draft nodes ``budget="auto"`` drafts and may verify per step. Beyond ~32 nodes no CPU
#: sweep gained (the cost grows faster than acceptance) and drafting itself gets dearer; a GPU
#: user can raise it with ``RetroDraft(max_nodes=...)``.
AUTO_MAX_NODES = 32


@dataclass
class Stats:
    """What one ``generate`` call did, for benchmarks and curious users.

    Attributes:
        steps: verification passes (the prefill is not one).
        new_tokens: tokens generated, the prefill's first token included.
        accepted: tokens committed by each step (accepted drafts plus the bonus token).
        tree_sizes: nodes verified by each step (root included).
        draft_s / verify_s / bookkeeping_s: seconds drafting (propose, fusion, sizing,
            observe), in the model's tree pass, and everything else of a step: building the
            mask and inputs, acceptance, cache compaction, stopping checks.
        prefill_s / wall_s: seconds for the prefill and the whole call.
    """

    steps: int = 0
    new_tokens: int = 0
    accepted: list[int] = field(default_factory=list)
    tree_sizes: list[int] = field(default_factory=list)
    draft_s: float = 0.0
    verify_s: float = 0.0
    bookkeeping_s: float = 0.0
    prefill_s: float = 0.0
    wall_s: float = 0.0

    @property
    def mean_accepted(self) -> float:
        """Mean tokens committed per verification step (the bonus token counted)."""
        return float(np.mean(self.accepted)) if self.accepted else 0.0

    @property
    def mean_tree_size(self) -> float:
        return float(np.mean(self.tree_sizes)) if self.tree_sizes else 0.0

    def record_step(self, tree_size: int, committed: int, draft_s: float, verify_s: float, bookkeeping_s: float) -> None:
        self.steps += 1
        self.tree_sizes.append(tree_size)
        self.accepted.append(committed)
        self.draft_s += draft_s
        self.verify_s += verify_s
        self.bookkeeping_s += bookkeeping_s

    def as_dict(self) -> dict:
        d = asdict(self)
        d["mean_accepted"] = self.mean_accepted
        d["mean_tree_size"] = self.mean_tree_size
        return d


class RetroDraft:
    """Model-free drafting for ``model.generate(..., assistant=RetroDraft())``.

    Args:
        drafters: drafter names (``"recycling"``, ``"lookup"``) or :class:`Drafter` instances;
            default :data:`DEFAULT_DRAFTERS`. Their trees are fused each step.
        budget: ``"auto"`` (default): each step verify as many of the fused tree's best nodes
            as maximize expected tokens per second on this model, device and dtype (measured
            cost curve, calibrated acceptance; none when drafting does not pay). An integer
            0..``MAX_BUDGET``: always that many nodes (when the drafters find that many).
            ``"preset"``: the fixed :data:`BUDGET_PRESETS` value for the device and dtype.
        tree: a calibrated tree shape (:class:`~retrodraft.shape.TreeShape`, a preset name such
            as ``"cpu-bfloat16"``, or a ``.json`` path from ``retrodraft calibrate``) that the
            template-filling drafters (``recycling``, ``stand``) draft into.
        index: corpus index folder(s) or opened :class:`~retrodraft.index.CorpusIndex` objects
            for the ``retrieval`` drafter (added to the default drafters when ``drafters`` is
            not given).
        cost: the :class:`~retrodraft.cost.CostModel` for ``budget="auto"`` (or a ``.json``
            path saved by it); default: measured once per model/device/dtype and cached.
        max_nodes: the most draft nodes ``budget="auto"`` may choose (default
            :data:`AUTO_MAX_NODES`; drafting more costs CPU time every step).

    Drafter state persists across calls (a warm start); :meth:`reset` forgets it.
    ``stats`` describes the most recent call.
    """

    def __init__(self, drafters: Sequence[str | Drafter] | None = None, budget: int | str = "auto",
                 tree: "str | Path | TreeShape | None" = None, index=None,
                 cost: "CostModel | str | Path | None" = None, max_nodes: int | None = None) -> None:
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
        prior = next((d for d in self.drafters if hasattr(d, "next_token_estimate")), None)
        for d in self.drafters:
            if hasattr(d, "prior") and d.prior is None:
                d.prior = prior
        self.budget = _check_budget(budget)
        self.tree = None if tree is None else (tree if isinstance(tree, TreeShape) else TreeShape.load(tree))
        if self.tree is not None:
            shaped = [d for d in self.drafters if hasattr(d, "use_template")]
            if not shaped:
                raise ConfigError("tree= shapes the drafters that fill a template (recycling, stand); "
                                  f"none of {[d.name for d in self.drafters]} does.")
            for d in shaped:
                d.use_template(self.tree.paths)
        self.cost = cost if cost is None or isinstance(cost, CostModel) else CostModel.load(cost)
        if max_nodes is not None and (isinstance(max_nodes, bool) or not isinstance(max_nodes, (int, np.integer))
                                      or not 1 <= max_nodes <= MAX_BUDGET):
            raise ConfigError(f"max_nodes must be an integer from 1 to {MAX_BUDGET}, got {max_nodes!r}.")
        self.max_nodes = AUTO_MAX_NODES if max_nodes is None else int(max_nodes)
        self.sizer: TreeSizer | None = None
        self.stats = Stats()
        self._vocab_size: int | None = None

    def __repr__(self) -> str:
        return f"RetroDraft(drafters={[d.name for d in self.drafters]!r}, budget={self.budget!r})"

    # ------------------------------------------------------------------ per call
    def budget_for(self, model: torch.nn.Module) -> int:
        """The most draft nodes a step of this call may verify on ``model``."""
        if self.budget == "auto":
            return self.max_nodes if self.sizer is None else self.sizer.max_nodes
        if self.budget != "preset":
            return int(self.budget)
        device = next(model.parameters()).device
        if device.type != "cpu":
            return BUDGET_PRESETS["gpu"]
        return BUDGET_PRESETS["cpu-bfloat16" if model.dtype in (torch.bfloat16, torch.float16) else "cpu-float32"]

    def begin(self, prompt: np.ndarray, vocab_size: int, model: torch.nn.Module | None = None,
              temperature: float | None = None) -> Stats:
        """Start a call: fresh statistics, drafters told about the prompt and the decoding mode
        (``temperature`` None when greedy)."""
        self.stats = Stats()
        self._vocab_size = vocab_size
        if self.budget == "auto" and model is not None and (
                self.sizer is None or (self.cost is None and self.sizer.cost.key != model_key(model))):
            # The calibration learnt so far is kept across calls (on one model), like the
            # drafters' state.
            self.sizer = TreeSizer(self.cost if self.cost is not None else CostModel.for_model(model),
                                   max_nodes=self.max_nodes)
        for d in self.drafters:
            d.sampling_temperature = temperature
            if model is not None and hasattr(d, "check_model"):
                d.check_model(model)
            d.begin(prompt, vocab_size)
        return self.stats

    def draft(self, context: np.ndarray, budget: int, max_depth: int | None = None) -> DraftTree:
        """Fuse every drafter's proposal into one tree of at most ``budget`` draft nodes.

        Args:
            context: ``(seq_len,)`` ids so far; the last one is the root.
            budget: draft nodes allowed below the root.
            max_depth: drop nodes deeper than this (tokens that could never be kept).
        """
        root = int(context[-1])
        if budget <= 0 or (max_depth is not None and max_depth <= 0):
            return DraftTree.root_only(root)
        tree = None
        for d in self.drafters:
            t = d.propose(context, budget)
            tree = t if tree is None else tree.merge(t)
        if tree.proposals and len(self.drafters) > 1:
            # Fusion folds other drafters' guesses into sampled children and re-ranks them by
            # value, which would bias the verifier's rejection chain; sampled drafts in a fused
            # tree are verified by the sample-and-descend rule instead (exact for any tree).
            tree.proposals = {}
        if max_depth is not None and tree.max_depth > max_depth:
            tree = tree.select(np.flatnonzero(tree.depths <= max_depth))
        if self.budget == "auto" and self.sizer is not None:
            budget = self.sizer.choose(tree, limit=budget)
        return tree.prune(budget)

    def observe(self, tree: DraftTree, accepted: np.ndarray, logits: torch.Tensor) -> None:
        """Feed one verification's outcome to every drafter (and the tree sizer)."""
        if self.sizer is not None and self.budget == "auto":
            self.sizer.observe(tree, accepted)
        for d in self.drafters:
            d.observe(tree, accepted, logits)

    def reset(self) -> None:
        """Forget all drafter state and the tree sizer's calibration (cold start)."""
        self.sizer = None
        for d in self.drafters:
            d.reset()


def _check_budget(budget: int | str) -> int | str:
    if budget in ("auto", "preset"):
        return budget
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise ConfigError(f"budget must be an integer from 0 to {MAX_BUDGET}, 'auto' or 'preset', got {budget!r}.")
    if not 0 <= int(budget) <= MAX_BUDGET:
        raise ConfigError(f"budget must be from 0 to {MAX_BUDGET} draft nodes, got {budget}.")
    return int(budget)
