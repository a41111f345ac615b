"""``numba.njit`` with an on-disk cache that a stale index cannot break.

Every hot loop of retrodraft is a numba kernel compiled with ``cache=True``: compiled once, kept
in ``__pycache__`` (or ``$NUMBA_CACHE_DIR``) and loaded on later imports. numba keeps one index
file per kernel holding the *pickled* argument types of every compiled signature, and it unpickles
that index before it checks whether the index is still fresh. When a type the signatures name has
moved since (``retrodraft.memory.Arrays`` became ``retrodraft.automaton.Arrays``), unpickling
raises ``AttributeError: Can't get attribute 'Arrays' ...`` from the first call of the kernel, and
again from every later one. :func:`njit` treats such an index the way numba treats one from
another numba version: as empty, so the kernel is compiled again and the index rewritten.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numba
from numba.core.caching import IndexDataCacheFile

__all__ = ["njit"]

log = logging.getLogger(__name__)


class _TolerantIndex(IndexDataCacheFile):
    """An index file whose unreadable content means "nothing cached" rather than an error."""

    def _load_index(self) -> dict:
        try:
            return super()._load_index()
        except Exception as e:  # unpickling runs arbitrary constructors: types moved, renamed, truncated file
            log.info("numba cache index %s is unreadable (%s: %s); compiling again", self._index_path,
                     type(e).__name__, e)
            return {}


def _tolerant(dispatcher):
    cache_file = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
    if type(cache_file) is IndexDataCacheFile:  # another numba layout: keep numba's own behaviour
        cache_file.__class__ = _TolerantIndex
    return dispatcher


def njit(fn: Callable | None = None, **options: Any):
    """``numba.njit(cache=True, **options)`` whose cache index, when it cannot be read (a stale
    ``__pycache__`` whose pickled types moved), is ignored and rewritten instead of raising.

    Use as ``@njit`` or ``@njit(inline="always")``.
    """
    if fn is None:
        return lambda f: _tolerant(numba.njit(cache=True, **options)(f))
    return _tolerant(numba.njit(cache=True, **options)(fn))
