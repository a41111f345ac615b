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

Index files are untrusted input: :func:`read_header` checks every field's type and range, and
shard file names must be plain names inside the folder (no ``..``, no absolute paths; a symlink
must not lead out of the folder), so a hostile header can neither make a lookup read outside
its arrays nor open files elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from ..errors import IndexFormatError
from ..paths import write_json_atomic

__all__ = ["FORMAT", "VERSION", "SEPARATOR", "HEADER", "tokenizer_fingerprint", "read_header", "write_header",
           "sha256_file", "shard_file"]

FORMAT = "retrodraft-corpus-index"
VERSION = 1
SEPARATOR = -1  # between documents in a token stream; never a real token
HEADER = "header.json"
#: Larger headers are refused unread (a real one is a few KB per thousand shards).
MAX_HEADER_BYTES = 64 << 20
#: Most tokens one shard may claim (the suffix array is int64 beyond 2^31).
MAX_SHARD_TOKENS = 1 << 40
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    write_json_atomic(Path(folder) / HEADER, header)


def read_header(folder: Path) -> dict:
    """The parsed header, after checking it is one this version can read."""
    folder = Path(folder)
    if not folder.exists():
        raise IndexFormatError(f"no index at {folder}; build one with: retrodraft index build SOURCE... --out {folder}")
    if not folder.is_dir():
        raise IndexFormatError(f"{folder} is a file, not an index folder.")
    path = folder / HEADER
    if not path.is_file():
        raise IndexFormatError(
            f"{folder} is not a complete retrodraft index (no {HEADER}): an interrupted build? Rebuild it.")
    path = shard_file(folder, HEADER)
    try:
        size = path.stat().st_size
        if size > MAX_HEADER_BYTES:
            raise IndexFormatError(f"{path} is {size:,} bytes, too large for an index header; rebuild the index.")
        header = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise IndexFormatError(f"{path} is unreadable or corrupted ({e}); rebuild the index.") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise IndexFormatError(f"{path} is not a retrodraft corpus index header.")
    version = header.get("version")
    if not isinstance(version, int) or version < 1:
        raise IndexFormatError(f"{path} has an invalid format version {version!r}.")
    if version > VERSION:
        raise IndexFormatError(
            f"{folder} was built by a newer retrodraft (index format {version}, this version reads up to "
            f"{VERSION}); upgrade retrodraft or rebuild the index.")
    for key, kind in (("tokenizer", dict), ("shards", list), ("stats", dict)):
        if not isinstance(header.get(key), kind):
            raise IndexFormatError(f"{path} lacks a valid {key!r} field; rebuild the index.")
    if not isinstance(header["tokenizer"].get("fingerprint"), str):
        raise IndexFormatError(f"{path} lacks the tokenizer fingerprint; rebuild the index.")
    for i, shard in enumerate(header["shards"]):
        _check_shard(path, i, shard)
    return header


def _is_int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _check_shard(path: Path, i: int, shard) -> None:
    """Refuse a shard entry with a missing field, a size out of range or an unsafe file name."""
    def bad(what: str) -> IndexFormatError:
        return IndexFormatError(f"{path}: shard {i} has {what}; rebuild the index.")

    if not isinstance(shard, dict) or not isinstance(shard.get("name"), str):
        raise bad("no name")
    if not _is_int(shard.get("tokens"), 0, MAX_SHARD_TOKENS):
        raise bad(f"a token count out of range ({str(shard.get('tokens'))[:40]})")
    files = shard.get("files")
    if not isinstance(files, dict):
        raise bad("no file list")
    for kind in ("tokens", "sa"):
        meta = files.get(kind)
        if not isinstance(meta, dict) or not isinstance(meta.get("name"), str):
            raise bad(f"no {kind} file")
        if not _FILE_NAME.fullmatch(meta["name"]):
            raise bad(f"an unsafe file name {meta['name'][:80]!r} (only plain names inside the index folder)")
        if not _is_int(meta.get("bytes"), 0, 16 * MAX_SHARD_TOKENS):
            raise bad(f"a {kind} file size out of range ({str(meta.get('bytes'))[:40]})")
        if not isinstance(meta.get("sha256"), str) or not _SHA256.fullmatch(meta["sha256"]):
            raise bad(f"a malformed {kind} checksum")


def shard_file(folder: Path, name: str) -> Path:
    """``folder / name``, refused when a symlink leads it out of ``folder``."""
    folder = Path(folder)
    f = folder / name
    try:
        inside = f.resolve().is_relative_to(folder.resolve())
    except (OSError, RuntimeError) as e:  # a symlink loop
        raise IndexFormatError(f"{f} cannot be resolved ({e}); rebuild the index.") from None
    if not inside:
        raise IndexFormatError(f"{f} is a symlink that leads out of the index folder; refused.")
    return f
