"""Tree shapes learnt from acceptance data (STAND's data-driven trees).

A shape is a set of rank paths (``(0, 1)`` = the second candidate of the first candidate of
the root, see :mod:`retrodraft.drafters._template`). :func:`calibrate` drafts with a very large
shape (625 nodes, 20 deep) on sample prompts, counts how often each position lies on the
accepted path, and keeps the ``budget`` most often accepted positions. A child is never accepted
more often than its parent, so the kept set is a connected subtree by construction.

Shapes are JSON files. ``RetroDraft(tree=NAME)`` finds NAME among the presets shipped in
``retrodraft/shapes/`` (``cpu-float32``, ``cpu-bfloat16``, ``gpu``), then among the shapes that
``retrodraft calibrate`` saved under ``$RETRODRAFT_CACHE/shapes/``; a path to a ``.json`` file works too.
"""

from __future__ import annotations

import heapq
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError

__all__ = ["TreeShape", "calibration_template", "calibrate", "shape_dirs", "PRESET_DIR"]

PRESET_DIR = Path(__file__).parent / "shapes"
#: Rank prior for the calibration template: chain-heavy, so it reaches depth 20 within 625 nodes.
CALIBRATION_PRIOR = (0.85, 0.07, 0.03, 0.02, 0.01, 0.01, 0.005, 0.005)


@dataclass
class TreeShape:
    """A calibrated tree shape.

    Attributes:
        paths: rank paths, parents before children.
        rates: per path, the share of verification steps whose accepted path went through it.
        meta: how it was made (command, model, dtype, prompts, steps, date).
    """

    paths: list[tuple[int, ...]]
    rates: list[float] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.paths)

    @property
    def expected_accepted(self) -> float:
        """Mean tokens per step this shape would have committed on the calibration data (bonus
        token included)."""
        return 1.0 + float(sum(self.rates))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        data = {"format": "retrodraft-tree-shape/1", "paths": [list(p) for p in self.paths], "rates": self.rates,
                "meta": self.meta}
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, name: str | Path) -> "TreeShape":
        """A shape by preset name, calibrated name, or path."""
        path = Path(name)
        if path.suffix != ".json" or not path.is_file():
            path = next((d / f"{name}.json" for d in shape_dirs() if (d / f"{name}.json").is_file()), None)
        if path is None:
            known = sorted({p.stem for d in shape_dirs() if d.is_dir() for p in d.glob("*.json")})
            raise ConfigError(f"no tree shape {str(name)!r}; known shapes: {', '.join(known) or 'none'} "
                              "(or pass a path to a .json file made by `retrodraft calibrate`).")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != "retrodraft-tree-shape/1":
                raise ValueError(f"unknown format {data.get('format')!r}")
            paths = [tuple(int(r) for r in p) for p in data["paths"]]
            seen = set()
            for p in paths:
                if not p or min(p) < 0 or (len(p) > 1 and p[:-1] not in seen):
                    raise ValueError(f"path {list(p)} is empty, negative or comes before its parent")
                seen.add(p)
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{path} is not a valid tree shape: {e}") from None
        return cls(paths, [float(x) for x in data.get("rates", [])], data.get("meta", {}))

    @classmethod
    def from_counts(cls, paths: list[tuple[int, ...]], hits: np.ndarray, steps: int, budget: int,
                    meta: dict | None = None) -> "TreeShape":
        """The ``budget`` most often accepted positions of a calibration template.

        Args:
            paths: the template's rank paths (position ``i + 1`` is ``paths[i]``; 0 is the root).
            hits: ``(len(paths) + 1,)`` how many steps accepted each position.
            steps: verification steps counted.
        """
        if steps <= 0:
            raise ConfigError("no verification step was recorded: nothing to calibrate from.")
        index = {p: i for i, p in enumerate(paths)}
        # Most hits first; a shorter path wins a tie, so parents always precede children.
        order = sorted(range(len(paths)), key=lambda i: (-hits[i + 1], len(paths[i]), i))
        chosen: list[tuple[int, ...]] = []
        kept: set[tuple[int, ...]] = set()
        for i in order:
            if len(chosen) >= budget:
                break
            p = paths[i]
            if len(p) > 1 and p[:-1] not in kept:
                continue  # cannot happen with consistent counts; guards hand-made input
            chosen.append(p)
            kept.add(p)
        chosen.sort(key=lambda p: (len(p), index[p]))
        rates = [float(hits[index[p] + 1]) / steps for p in chosen]
        return cls(chosen, rates, dict(meta or {}, budget=budget, steps=steps))


def shape_dirs() -> list[Path]:
    """Where names are looked up: the shipped presets, then calibrated shapes."""
    from .models import cache_root

    return [PRESET_DIR, cache_root() / "shapes"]


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

    from .assistant import RetroDraft
    from .bench.runner import _encode
    from .drafters.stand import Stand

    template = calibration_template(nodes, max_depth)
    stand = Stand(template=template)
    stand.record = True
    assistant = RetroDraft(drafters=[stand], budget=len(template))
    t0 = time.time()
    for p in tqdm(prompts, desc="calibrate", unit="prompt", disable=not progress):
        ids = _encode(tok, p, [], p.turns[0])
        model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, assistant=assistant,
                       pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    info = dict(meta or {}, template_nodes=len(template), template_depth=max_depth, prompts=len(prompts),
                max_new_tokens=max_new_tokens, seconds=round(time.time() - t0, 1),
                created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return {name: TreeShape.from_counts(template, stand.position_hits, stand.position_steps, b, info)
            for name, b in budgets.items()}
