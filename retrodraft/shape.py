"""Tree shapes: which rank paths a template-filling drafter drafts into (STAND's data-driven trees).

A shape is a set of rank paths (``(0, 1)`` = the second candidate of the first candidate of
the root, see :mod:`retrodraft.drafters._template`), learnt from acceptance data by
:func:`retrodraft.calibrate.calibrate`.

Shapes are JSON files. ``RetroDraft(shape=NAME)`` finds NAME among the presets shipped in
``retrodraft/shapes/`` (``cpu-float32``, ``cpu-bfloat16``, ``gpu``), then among the shapes that
``retrodraft calibrate`` saved under ``$RETRODRAFT_CACHE/shapes/``; a path to a ``.json`` file works too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .paths import shapes_dir, write_json_atomic

__all__ = ["TreeShape", "shape_dirs", "PRESET_DIR"]

PRESET_DIR = Path(__file__).parent / "shapes"


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
        data = {"format": "retrodraft-tree-shape/1", "paths": [list(p) for p in self.paths], "rates": self.rates,
                "meta": self.meta}
        return write_json_atomic(path, data)

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
    return [PRESET_DIR, shapes_dir()]

