"""How likely a copy keeps agreeing: the match-length confidence that copying drafters share.

A drafter that copies what followed an earlier occurrence of the context (prompt lookup, the
history drafter's trie and copy pointer) scores each copied token by how many tokens already agree.
"""

from __future__ import annotations

import numpy as np

__all__ = ["confidence"]


def confidence(length: np.ndarray | int, floor: float = 0.33, ceil: float = 0.97, rate: float = 0.68) -> np.ndarray:
    """Estimated probability that the next token repeats, after ``length`` tokens agreed.

    ``ceil - (ceil - floor) * rate ** (length - 1)``: ``floor`` after one agreeing token, rising
    towards ``ceil``; 0 for ``length < 1``. The defaults are fitted to how often greedy outputs
    keep repeating an earlier occurrence after ``length`` agreeing tokens.

    Shapes: ``length`` any shape; the result float64 of the same shape.
    """
    length = np.asarray(length, dtype=np.float64)
    return np.where(length >= 1, ceil - (ceil - floor) * rate ** (length - 1), 0.0)
