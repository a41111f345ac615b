"""Calibration: learn tree shapes from acceptance data (STAND's data-driven trees).

:func:`calibrate` drafts with a very large template (625 nodes, 20 deep) on sample prompts,
counts how often each template position lies on the accepted path, and keeps the ``budget``
most often accepted positions as a :class:`~retrodraft.shape.TreeShape`. A child is never
accepted more often than its parent, so the kept set is a connected subtree by construction.
"""

from __future__ import annotations

import heapq
import time

import numpy as np

from .assistant import RetroDraft
from .bench.runner import encode_prompt
from .drafters.base import Outcome
from .drafters.stand import Stand
from .shape import TreeShape

__all__ = ["calibrate", "calibration_template", "CALIBRATION_PRIOR", "PositionCounter"]

#: Rank prior for the calibration template: chain-heavy, so it reaches depth 20 within 625 nodes.
CALIBRATION_PRIOR = (0.85, 0.07, 0.03, 0.02, 0.01, 0.01, 0.005, 0.005)


def calibration_template(nodes: int = 625, max_depth: int = 20, k: int = 8) -> list[tuple[int, ...]]:
    """The ``nodes`` rank paths with the highest prior (:data:`CALIBRATION_PRIOR`), at most
    ``max_depth`` deep, parents first."""
    prior = CALIBRATION_PRIOR[:k]
    heap: list[tuple[float, tuple[int, ...]]] = [(-pr, (r,)) for r, pr in enumerate(prior)]
    heapq.heapify(heap)
    out: list[tuple[int, ...]] = []
    while heap and len(out) < nodes:
        neg, p = heapq.heappop(heap)
        out.append(p)
        if len(p) < max_depth:
            for r, pr in enumerate(prior):
                heapq.heappush(heap, (neg * pr, p + (r,)))
    out.sort(key=len)
    return out


class PositionCounter(Stand):
    """STAND filling a fixed shape (the calibration template) that counts, per position, the
    steps whose accepted path went through it.

    Attributes:
        position_hits: ``(len(shape) + 1,)`` accepted steps per position (0 = the root).
        position_steps: steps counted (those that verified this drafter's tree unchanged).
    """

    def __init__(self, shape, **kwargs) -> None:
        super().__init__(shape=shape, **kwargs)
        self.position_hits = np.zeros(len(self._tpl_parent), np.int64)
        self.position_steps = 0

    def observe(self, outcome: Outcome) -> None:
        # The draft is redone from the same context before learning changes the table, so it is
        # the tree this drafter proposed; a step that verified another tree is not counted.
        mine, position = self.shape_draft(outcome.context)
        tree = outcome.tree
        if len(mine) == len(tree) and np.array_equal(mine.tokens, tree.tokens):
            self.position_steps += 1
            self.position_hits[position[np.asarray(outcome.accepted)]] += 1
        super().observe(outcome)


def calibrate(model, tok, prompts: list, budgets: dict[str, int], max_new_tokens: int = 64, nodes: int = 625,
              max_depth: int = 20, meta: dict | None = None, progress: bool = True) -> dict[str, TreeShape]:
    """Learn tree shapes for several node budgets from one calibration run.

    Drafts with STAND filling a ``nodes``-node template (greedy decoding, the table warm across
    prompts), records which template positions each step accepted, and returns one
    :class:`TreeShape` per entry of ``budgets`` (name -> node budget).

    Args:
        model, tok: a loaded causal LM and its tokenizer.
        prompts: :class:`~retrodraft.bench.data.Prompt` objects (their first turn is used).
    """
    from tqdm.auto import tqdm

    template = calibration_template(nodes, max_depth)
    counter = PositionCounter(template)
    assistant = RetroDraft(drafters=[counter], sizing="fixed", budget=len(template))
    t0 = time.time()
    for p in tqdm(prompts, desc="calibrate", unit="prompt", disable=not progress):
        ids = encode_prompt(tok, p, [], p.turns[0])
        model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, assistant=assistant,
                       pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    info = dict(meta or {}, template_nodes=len(template), template_depth=max_depth, prompts=len(prompts),
                max_new_tokens=max_new_tokens, seconds=round(time.time() - t0, 1),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return {name: TreeShape.from_counts(template, counter.position_hits, counter.position_steps, b, info)
            for name, b in budgets.items()}
