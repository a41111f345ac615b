"""The token store of an index shard: a token stream and its suffix array.

Lookups (``retrodraft.index.corpus``, the retrieval drafter's per-request datastore) need only
this; building whole indexes lives in :mod:`retrodraft.index.build`.

The suffix array comes from libdivsufsort (``pydivsufsort``). Its byte-string sort is far faster
than its integer one, so each token is written as 3 big-endian bytes (separator = 0xFFFFFF, the
largest): byte order of aligned suffixes is then token order, and the token-level suffix array
is the byte-level one restricted to positions divisible by 3.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

__all__ = ["suffix_array"]


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """``(n,)`` suffix array of an int32 token stream (-1 separators sort last)."""
    try:
        from pydivsufsort import divsufsort
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("corpus indexes need pydivsufsort, which is not installed: "
                                  "pip install 'retrodraft[index]'", name=e.name) from None

    t = np.where(tokens < 0, 0xFFFFFF, tokens).astype(np.uint32)
    if t.size and int(t.max()) > 0xFFFFFF:
        raise ConfigError("token ids above 2^24 are not supported by the index format.")
    b = np.empty((t.size, 3), np.uint8)
    b[:, 0] = t >> 16
    b[:, 1] = (t >> 8) & 0xFF
    b[:, 2] = t & 0xFF
    sa = divsufsort(b.reshape(-1))
    sa = sa[sa % 3 == 0] // 3
    return sa.astype(np.int32 if tokens.size < 2**31 else np.int64)
