"""On-disk layout of a corpus index, and the checks that make a bad one fail loudly.

An index is a folder::

    indexes/NAME/
        header.json               written last: its presence marks a complete index
        shard-00000.tokens.npy    (n,) int32 token stream; documents separated by SEPARATOR
        shard-00000.sa.npy        (n,) int32/int64 suffix array of that stream
        ...

``header.json`` holds the format version, the tokenizer fingerprint, corpus statistics and, per
shard, its token count and the sha256 of both files. A build writes into a temporary sibling
folder and renames it into place at the very end, so an interrupted build never leaves a folder
that looks complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import IndexFormatError

__all__ = ["FORMAT", "VERSION", "SEPARATOR", "HEADER", "tokenizer_fingerprint", "read_header", "write_header",
           "sha256_file"]

FORMAT = "retrodraft-corpus-index"
VERSION = 1
SEPARATOR = -1  # between documents in a token stream; never a real token
HEADER = "header.json"


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 (hex, first 16 chars) of the vocabulary and the special tokens.

    Two tokenizers with the same fingerprint map text to the same ids, which is all an index
    needs; the tokenizer's name or file layout does not matter.
    """
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    special = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    blob = json.dumps({"vocab": vocab, "special": special}, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_header(folder: Path, header: dict) -> None:
    tmp = folder / (HEADER + ".tmp")
    tmp.write_text(json.dumps(header, indent=1))
    tmp.replace(folder / HEADER)


def read_header(folder: Path) -> dict:
    """The parsed header, after checking it is one this version can read."""
    folder = Path(folder)
    if not folder.exists():
        raise IndexFormatError(f"no index at {folder}; build one with: retrodraft index build SOURCE... --out {folder}")
    path = folder / HEADER
    if not path.is_file():
        raise IndexFormatError(
            f"{folder} is not a complete retrodraft index (no {HEADER}): an interrupted build? Rebuild it.")
    try:
        header = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise IndexFormatError(f"{path} is corrupted ({e}); rebuild the index.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a retrodraft corpus index header.")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"{path} has an invalid format version {version!r}.")
    if version > VERSION:
        raise IndexFormatError(
            f"{folder} was built by a newer retrodraft (index format {version}, this version reads up to "
            f"{VERSION}); upgrade retrodraft or rebuild the index.")
    for key in ("tokenizer", "shards", "stats"):
        if key not in header:
            raise IndexFormatError(f"{path} lacks the {key!r} field; rebuild the index.")
    return header
