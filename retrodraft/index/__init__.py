"""Corpus indexes: token-level suffix arrays the retrieval drafter draws continuations from.

    from retrodraft.index import build_index, CorpusIndex
    build_index(["src/"], tokenizer, "indexes/mycode", include=["*.py"])
    idx = CorpusIndex("indexes/mycode")
    idx.query(context_ids)          # longest matching suffix, continuation trie with counts

The same is on the command line: ``retrodraft index build|info|query|verify``.
"""

from .build import build_index, suffix_array
from .corpus import CorpusIndex, Retrieved

__all__ = ["build_index", "suffix_array", "CorpusIndex", "Retrieved"]
