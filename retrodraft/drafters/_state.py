"""Checks shared by the drafters' ``load_state``: a saved array must fit the drafter it is loaded into.

A drafter's ``state()`` returns plain numpy arrays and JSON values; :mod:`retrodraft.state` writes
and checksums them. These helpers refuse, with one clear line, an array whose dtype or shape does
not match what this drafter (as constructed) holds, instead of letting numba index out of bounds.
"""

from __future__ import annotations

import numpy as np

from ..errors import StateError

__all__ = ["expect_array", "expect_int"]


def expect_array(d: dict, key: str, dtype, shape: tuple[int | None, ...], who: str, hint: str = "") -> np.ndarray:
    """``d[key]`` as a C-contiguous array of ``dtype`` and ``shape`` (None: any length).

    Raises:
        StateError: missing, another dtype, or another shape (``hint`` says how to construct the
            drafter so that it fits).
    """
    a = d.get(key)
    if not isinstance(a, np.ndarray):
        raise StateError(f"the saved {who} state lacks the {key!r} array.")
    if a.dtype != np.dtype(dtype) or a.ndim != len(shape) or any(
            want is not None and got != want for got, want in zip(a.shape, shape)):
        want = "x".join("*" if s is None else str(s) for s in shape)
        raise StateError(f"the saved {who} {key!r} is {a.dtype} {'x'.join(map(str, a.shape))}, this drafter holds "
                         f"{np.dtype(dtype)} {want}{'; ' + hint if hint else ''}.")
    return np.ascontiguousarray(a)


def expect_int(d: dict, key: str, who: str, lo: int = 0) -> int:
    """``d[key]`` as an int >= ``lo``."""
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise StateError(f"the saved {who} state has an invalid {key!r} ({str(v)[:40]}).")
    return v


_TABLE = ("keys", "tok", "w", "stamp", "count")


def table_state(table) -> dict:
    """An :class:`~retrodraft.drafters._ngram.NgramTable`'s arrays and clock, for ``state()``."""
    return {**{name: getattr(table, name) for name in _TABLE}, "now": int(table.now)}


def load_table_state(table, d: dict, who: str) -> None:
    """Copy saved table arrays into ``table`` in place (its shape must match: same ``k`` and
    ``max_bytes`` as when it was saved)."""
    hint = f"construct it with the k and max_bytes it was saved with ({table.slots} slots here)"
    arrays = {name: expect_array(d, name, getattr(table, name).dtype, getattr(table, name).shape, who, hint)
              for name in _TABLE}
    if (arrays["tok"] < -1).any():
        raise StateError(f"the saved {who} table holds invalid token ids.")
    now = expect_int(d, "now", who)
    for name, a in arrays.items():
        getattr(table, name)[...] = a
    table.now = now
