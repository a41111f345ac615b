"""An opened corpus index: memory-mapped shards queried together.

Opening reads only the header and maps the shard files, so a multi-gigabyte index opens in
milliseconds and costs no memory until lookups touch it; one opened index can serve any number
of drafters and requests (it is read-only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import IndexFormatError, IndexMismatchError
from .format import SEPARATOR, read_header, sha256_file, shard_file, tokenizer_fingerprint
from .search import continuations, count_trie, longest_match

__all__ = ["CorpusIndex", "Retrieved", "retrieve"]


@dataclass
class Retrieved:
    """What the index knows about a context.

    Attributes:
        match_len: tokens of the context's longest suffix found in the corpus (0: none).
        occurrences: how many times that suffix occurs, over all shards.
        tokens / parents / counts: a trie of the continuations (root = the context's last token),
            ``counts[i]`` the sampled occurrences continuing through node ``i``.
    """

    match_len: int
    occurrences: int
    tokens: np.ndarray
    parents: np.ndarray
    counts: np.ndarray


def retrieve(shards, context: np.ndarray, max_len: int = 16, min_len: int = 1, depth: int = 8,
             max_matches: int = 64) -> Retrieved:
    """Continuations of the longest suffix of ``context`` found in any of ``shards``.

    Args:
        shards: ``(tokens, suffix_array)`` pairs (memory maps or in-memory arrays).
        context: ``(n,)`` token ids; the last one is the trie's root.
        max_len / min_len: suffix lengths tried, longest first.
        depth: continuation length.
        max_matches: occurrences sampled per shard (evenly over the match range); each sampled
            continuation weighs (occurrences / sampled), so counts estimate the full corpus.
    """
    ctx = np.ascontiguousarray(np.asarray(context, np.int64)[-max_len:]).astype(np.int32)
    best, found = 0, []
    for tok, sa in shards:
        length, lo, hi = longest_match(tok, sa, ctx, min_len)
        if length == 0:
            continue
        if length > best:
            best, found = length, []
        if length == best:
            found.append((tok, sa, lo, hi))
    root = int(ctx[-1]) if len(ctx) else -1
    if best == 0:
        return Retrieved(0, 0, np.array([root]), np.array([-1]), np.array([0.0]))
    conts = [continuations(tok, sa, lo, hi, best, depth, max_matches) for tok, sa, lo, hi in found]
    weights = [np.full(len(c), (hi - lo) / max(len(c), 1)) for c, (_, _, lo, hi) in zip(conts, found)]
    tokens, parents, counts = count_trie(np.concatenate(conts), np.concatenate(weights), root)
    return Retrieved(best, int(sum(hi - lo for _, _, lo, hi in found)), tokens, parents, counts)


class CorpusIndex:
    """A suffix-array index over a tokenized corpus (see :mod:`retrodraft.index.format`).

    Args:
        path: the index folder.
        verify: recompute every shard checksum and check every value's range now (slow on big
            indexes; ``retrodraft index verify`` does the same). Without it, the header's fields,
            file names, sizes, dtypes and shapes are still checked; lookups never read outside
            the arrays whatever their contents.
    """

    def __init__(self, path: str | Path, verify: bool = False) -> None:
        self.path = Path(path)
        self.header = read_header(self.path)
        self.shards: list[tuple[np.ndarray, np.ndarray]] = []
        for shard in self.header["shards"]:
            tok = self._map(shard, "tokens")
            sa = self._map(shard, "sa")
            if tok.shape != (shard["tokens"],) or sa.shape != tok.shape:
                raise IndexFormatError(f"{self.path}: shard {shard['name']} has the wrong length (truncated?); "
                                       "rebuild the index.")
            self.shards.append((tok, sa))
        if verify:
            self.verify()

    def _map(self, shard: dict, kind: str) -> np.ndarray:
        f = shard_file(self.path, shard["files"][kind]["name"])
        if not f.is_file():
            raise IndexFormatError(f"{self.path}: shard file {f.name} is missing; rebuild the index.")
        if f.stat().st_size != shard["files"][kind]["bytes"]:
            raise IndexFormatError(f"{self.path}: {f.name} is {f.stat().st_size} bytes, the header says "
                                   f"{shard['files'][kind]['bytes']} (truncated or corrupted); rebuild the index.")
        try:
            arr = np.lib.format.open_memmap(f, mode="r")
        except (ValueError, OSError, EOFError) as e:
            raise IndexFormatError(f"{self.path}: {f.name} is not a readable array ({e}); rebuild the index.") from None
        allowed = (np.dtype(np.int32),) if kind == "tokens" else (np.dtype(np.int32), np.dtype(np.int64))
        if arr.ndim != 1 or arr.dtype not in allowed or not arr.dtype.isnative:
            raise IndexFormatError(f"{self.path}: {f.name} holds a {arr.dtype} array of shape {arr.shape}, not the "
                                   f"1-D {' or '.join(map(str, allowed))} the format needs; rebuild the index.")
        return arr

    # ------------------------------------------------------------------ facts
    @property
    def fingerprint(self) -> str:
        return self.header["tokenizer"]["fingerprint"]

    @property
    def n_tokens(self) -> int:
        return int(sum(s["tokens"] for s in self.header["shards"]))

    def check_tokenizer(self, tokenizer) -> None:
        """Refuse a tokenizer whose ids differ from the index's."""
        fp = tokenizer_fingerprint(tokenizer)
        if fp != self.fingerprint:
            raise IndexMismatchError(
                f"index {self.path} was built with tokenizer {self.header['tokenizer'].get('name')!r} "
                f"(fingerprint {self.fingerprint}), but the model's tokenizer "
                f"{getattr(tokenizer, 'name_or_path', '?')!r} has fingerprint {fp}; rebuild the index with "
                f"--tokenizer set to the model.")

    def verify(self) -> list[str]:
        """Recompute every shard file's sha256 and check the arrays' values (token ids below the
        vocabulary size, suffix-array entries inside the stream); raise on the first fault, else
        return the names checked."""
        checked = []
        vocab = self.header["tokenizer"].get("vocab_size")
        for shard, (tok, sa) in zip(self.header["shards"], self.shards):
            for kind in ("tokens", "sa"):
                meta = shard["files"][kind]
                got = sha256_file(shard_file(self.path, meta["name"]))
                if got != meta["sha256"]:
                    raise IndexFormatError(f"{self.path}: {meta['name']} fails its checksum (sha256 {got[:12]}..., "
                                           f"header {meta['sha256'][:12]}...): corrupted; rebuild the index.")
                checked.append(meta["name"])
            lo, hi = _value_range(tok)
            if lo < SEPARATOR or (isinstance(vocab, int) and hi >= vocab):
                raise IndexFormatError(f"{self.path}: shard {shard['name']} holds token ids from {lo} to {hi}, outside "
                                       f"the tokenizer's 0..{vocab}; rebuild the index.")
            lo, hi = _value_range(sa)
            if len(sa) and (lo < 0 or hi >= len(sa)):
                raise IndexFormatError(f"{self.path}: shard {shard['name']}'s suffix array points outside its "
                                       f"{len(sa)} tokens ({lo}..{hi}); rebuild the index.")
        return checked

    # ------------------------------------------------------------------ lookups
    def query(self, context: np.ndarray, max_len: int = 16, min_len: int = 1, depth: int = 8,
              max_matches: int = 64) -> Retrieved:
        """Continuations of the longest suffix of ``context`` found in any shard.

        Args:
            context: ``(n,)`` token ids; the last one is the trie's root.
            max_len / min_len: suffix lengths tried, longest first.
            depth: continuation length.
            max_matches: occurrences sampled per shard (evenly over the match range).
        """
        return retrieve(self.shards, context, max_len, min_len, depth, max_matches)

    def info(self) -> dict:
        """The header's facts, for ``retrodraft index info``."""
        h = self.header
        return {"path": str(self.path), "version": h["version"], "tokenizer": h["tokenizer"], "stats": h["stats"],
                "shards": [{"name": s["name"], "tokens": s["tokens"]} for s in h["shards"]]}


def _value_range(arr: np.ndarray, chunk: int = 1 << 24) -> tuple[int, int]:
    """``(min, max)`` of a possibly memory-mapped array, read in chunks; ``(0, -1)`` when empty."""
    if not len(arr):
        return 0, -1
    lo, hi = None, None
    for i in range(0, len(arr), chunk):
        block = np.asarray(arr[i:i + chunk])
        bl, bh = int(block.min()), int(block.max())
        lo, hi = bl if lo is None else min(lo, bl), bh if hi is None else max(hi, bh)
    return lo, hi
