"""Saved assistant state: what the drafters and the tree sizer learnt, kept across restarts.

A state is a folder::

    STATE/
        state.json                 written last: format, version, tokenizer fingerprint and, per
                                   drafter, its JSON fields and its arrays (file, dtype, shape,
                                   bytes, sha256); the manifest carries its own sha256 too
        0-recycling-succ.npy       one plain array per file, np.save(allow_pickle=False)
        ...
        sizer-hits.npy             the tree sizer's calibration (sizing="auto")

Each drafter exposes its learnt state as ``state() -> {name: ndarray | JSON value}`` and takes it
back with ``load_state(d)`` (see :class:`~retrodraft.drafters.base.Drafter`); the tree sizer does
the same. This module only writes, checks and reads those, for a list of drafters and an optional
sizer: it knows nothing of the assistant, which wraps it (:meth:`retrodraft.RetroDraft.save`,
:meth:`retrodraft.RetroDraft.load`). Saving writes a
temporary sibling folder and renames it into place, so a crash mid-save leaves the previous state
whole. Loading checks everything before any drafter changes: the format version, the manifest's
checksum, the tokenizer fingerprint (vocabulary and special tokens, as for corpus indexes), every
file's size and sha256, every array's dtype and shape. Whatever fails is refused with one
:class:`~retrodraft.errors.StateError` line. No pickle is ever written or read.

Example::

    assistant.save("state/", tokenizer)                  # after some generate calls
    assistant = RetroDraft.load("state/", tokenizer)     # in a new process: warm from the start

    save("state/", tokenizer, drafters, sizer)           # the same, without an assistant
    restore("state/", tokenizer, [history], partial=True)  # only the saved "history" entry
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import ConfigError, StateError
from .index.format import sha256_file, tokenizer_fingerprint

if TYPE_CHECKING:
    from .drafters.base import Drafter
    from .sizing import TreeSizer

__all__ = ["FORMAT", "VERSION", "MANIFEST", "save", "restore", "read_manifest", "verify", "fingerprint"]

FORMAT = "retrodraft-state"
VERSION = 1
MANIFEST = "state.json"
MAX_MANIFEST_BYTES = 4 << 20  # a real manifest is a few KB
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def fingerprint(tokenizer) -> str:
    """The tokenizer fingerprint a state is tied to (a tokenizer, a processor holding one, or an
    already computed fingerprint string)."""
    if isinstance(tokenizer, str):
        return tokenizer
    tok = tokenizer if hasattr(tokenizer, "get_vocab") else getattr(tokenizer, "tokenizer", None)
    if tok is None or not hasattr(tok, "get_vocab"):
        raise ConfigError(f"a state is tied to a tokenizer: pass the model's tokenizer, got "
                          f"{type(tokenizer).__name__}.")
    return tokenizer_fingerprint(tok)


# ---------------------------------------------------------------------- saving
def save(path: str | os.PathLike, tokenizer, drafters: "Sequence[Drafter]", sizer: "TreeSizer | None" = None) -> Path:
    """Write what ``drafters`` (and ``sizer``) learnt to the folder ``path`` (replacing a state saved there).

    Args:
        path: the state folder; its parent is created. An existing folder that is not a
            retrodraft state is never overwritten.
        tokenizer: the model's tokenizer (its fingerprint is recorded and checked on load).
        drafters: saved in order, each as its ``state()``.
        sizer: a tree sizer whose ``state()`` is saved too (its calibration), or None.

    Returns:
        ``path``.
    """
    path = Path(path)
    fp = fingerprint(tokenizer)
    if path.exists() and not _replaceable(path):
        raise StateError(f"{path} exists and is not a retrodraft state; save to another path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        entries = [_write_entry(tmp, f"{i}-{d.name}", d.name, d.state()) for i, d in enumerate(drafters)]
        sizer_entry = None if sizer is None else _write_entry(tmp, "sizer", "sizer", sizer.state())
        manifest = {"format": FORMAT, "version": VERSION, "tokenizer": {"fingerprint": fp},
                    "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "drafters": entries, "sizer": sizer_entry}
        manifest["sha256"] = _manifest_digest(manifest)
        with open(tmp / MANIFEST, "w") as f:
            json.dump(manifest, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        _swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_entry(folder: Path, prefix: str, name: str, state: dict) -> dict:
    """Write one drafter's (or the sizer's) arrays; return its manifest entry."""
    fields, arrays = {}, {}
    for key, value in state.items():
        if not _NAME.fullmatch(key):
            raise StateError(f"{name}: state key {key!r} is not a plain name.")
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise StateError(f"{name}: array {key!r} holds Python objects; only plain arrays can be saved.")
            file = f"{prefix}-{key}.npy"
            with open(folder / file, "wb") as f:
                np.save(f, np.ascontiguousarray(value), allow_pickle=False)
            arrays[key] = {"file": file, "dtype": value.dtype.str, "shape": list(value.shape),
                           "bytes": (folder / file).stat().st_size, "sha256": sha256_file(folder / file)}
        else:
            fields[key] = _jsonable(value, f"{name}.{key}")
    return {"name": name, "fields": fields, "arrays": arrays}


def _jsonable(value, where: str):
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise StateError(f"{where} is neither an array nor a JSON value ({type(value).__name__}).") from None
    return value


def _manifest_digest(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _replaceable(path: Path) -> bool:
    """True for an empty folder or a folder holding a retrodraft state (ours to overwrite)."""
    if not path.is_dir():
        return False
    if not any(path.iterdir()):
        return True
    try:
        head = json.loads((path / MANIFEST).read_text()[:MAX_MANIFEST_BYTES])
    except (OSError, ValueError):
        return False
    return isinstance(head, dict) and head.get("format") == FORMAT


def _swap_in(tmp: Path, path: Path) -> None:
    """Rename ``tmp`` to ``path``; an old ``path`` is moved aside first and deleted after."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(path, old)
    os.rename(tmp, path)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------- loading
def read_manifest(path: str | os.PathLike) -> dict:
    """The parsed ``state.json`` of ``path``, after checking it is a complete state this version reads."""
    path = Path(path)
    if not path.exists():
        raise StateError(f"no saved state at {path}.")
    if not path.is_dir():
        raise StateError(f"{path} is a file, not a retrodraft state folder.")
    file = path / MANIFEST
    if not file.is_file():
        raise StateError(f"{path} is not a complete retrodraft state (no {MANIFEST}): an interrupted save?")
    try:
        if file.stat().st_size > MAX_MANIFEST_BYTES:
            raise StateError(f"{file} is too large for a state manifest.")
        manifest = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise StateError(f"{file} is unreadable or corrupted ({e}).") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StateError(f"{file} is not a retrodraft state manifest.")
    version = manifest.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise StateError(f"{file} has an invalid format version {str(version)[:40]!r}.")
    if version > VERSION:
        raise StateError(f"{path} was saved by a newer retrodraft (state format {version}, this version reads up to "
                         f"{VERSION}); upgrade retrodraft.")
    if manifest.get("sha256") != _manifest_digest(manifest):
        raise StateError(f"{file} is corrupted (its checksum does not match).")
    tok = manifest.get("tokenizer")
    if not isinstance(tok, dict) or not isinstance(tok.get("fingerprint"), str):
        raise StateError(f"{file} lacks the tokenizer fingerprint.")
    entries = manifest.get("drafters")
    if not isinstance(entries, list) or not entries:
        raise StateError(f"{file} lists no drafters.")
    for entry in entries + ([manifest["sizer"]] if manifest.get("sizer") is not None else []):
        _check_entry(file, entry)
    return manifest


def _check_entry(file: Path, entry) -> None:
    if not (isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("fields"), dict)
            and isinstance(entry.get("arrays"), dict)):
        raise StateError(f"{file} has a malformed drafter entry.")
    for key, meta in entry["arrays"].items():
        ok = (isinstance(meta, dict) and isinstance(meta.get("file"), str) and _NAME.fullmatch(meta["file"])
              and isinstance(meta.get("sha256"), str) and _SHA256.fullmatch(meta["sha256"])
              and isinstance(meta.get("bytes"), int) and isinstance(meta.get("dtype"), str)
              and isinstance(meta.get("shape"), list) and all(isinstance(s, int) and s >= 0 for s in meta["shape"]))
        if not ok:
            raise StateError(f"{file}: {entry['name']} array {key!r} has a malformed or unsafe entry.")


def _read_entry(path: Path, entry: dict) -> dict:
    """The state dict of one entry: its JSON fields and its arrays, each checked against the manifest."""
    state = dict(entry["fields"])
    for key, meta in entry["arrays"].items():
        file = path / meta["file"]
        try:
            data = file.read_bytes()
        except FileNotFoundError:
            raise StateError(f"{file} is missing: the state is incomplete.") from None
        if len(data) != meta["bytes"]:
            raise StateError(f"{file} is truncated or altered ({len(data):,} bytes, {meta['bytes']:,} were saved).")
        if hashlib.sha256(data).hexdigest() != meta["sha256"]:
            raise StateError(f"{file} is corrupted (sha256 mismatch).")
        try:
            a = np.load(io.BytesIO(data), allow_pickle=False)
        except ValueError as e:
            raise StateError(f"{file} is not a plain array ({e}).") from None
        if a.dtype.str != meta["dtype"] or list(a.shape) != meta["shape"]:
            raise StateError(f"{file} does not hold the {meta['dtype']} {meta['shape']} array the manifest lists.")
        state[key] = a
    return state


def verify(path: str | os.PathLike, tokenizer=None) -> dict:
    """Check a state completely (manifest, every checksum, and the tokenizer when given);
    return its manifest."""
    path = Path(path)
    manifest = read_manifest(path)
    if tokenizer is not None:
        _check_tokenizer(path, manifest, fingerprint(tokenizer))
    for entry in manifest["drafters"] + ([manifest["sizer"]] if manifest["sizer"] is not None else []):
        _read_entry(path, entry)
    return manifest


def _check_tokenizer(path: Path, manifest: dict, fp: str) -> None:
    saved = manifest["tokenizer"]["fingerprint"]
    if saved != fp:
        raise StateError(f"{path} was saved for another tokenizer (fingerprint {saved}, this model's is {fp}); it "
                         "cannot be used with this model.")


def restore(path: str | os.PathLike, tokenizer, drafters: "Sequence[Drafter]", *, partial: bool = False) -> dict | None:
    """Load the drafters' state saved at ``path``; return the saved tree-sizer state (or None).

    Args:
        path: a state folder written by :func:`save`.
        tokenizer: the model's tokenizer; a state saved for another one is refused.
        drafters: the drafters to load into. Without ``partial`` they must be the saved ones
            (same names, in order, constructed with the same table sizes).
        partial: load only the saved entries whose names match ``drafters`` (the first unused
            entry of each name, in order) and ignore the rest; a drafter without a saved entry is
            left as it is.

    Everything is read and checked before any drafter changes; if a drafter then refuses its
    part, every given drafter is reset (cold) and the error raised.
    """
    path = Path(path)
    manifest = read_manifest(path)
    _check_tokenizer(path, manifest, fingerprint(tokenizer))
    entries = manifest["drafters"]
    saved = [e["name"] for e in entries]
    have = [d.name for d in drafters]
    if partial:
        pairs, used = [], set()
        for d in drafters:
            j = next((j for j, name in enumerate(saved) if name == d.name and j not in used), None)
            if j is not None:
                used.add(j)
                pairs.append((d, entries[j]))
    elif saved != have:
        raise StateError(f"{path} holds the state of drafters {saved}, these drafters are {have}; load it with "
                         f"RetroDraft.load(path, tokenizer) or RetroDraft(drafters={saved}).")
    else:
        pairs = list(zip(drafters, entries))
    states = [(d, _read_entry(path, e)) for d, e in pairs]
    sizer = _read_entry(path, manifest["sizer"]) if manifest["sizer"] is not None else None
    try:
        for d, state in states:
            d.load_state(state)
    except BaseException:
        for d in drafters:
            d.reset()
        raise
    return sizer
