"""Saved assistant state: what the drafters and the tree sizer learnt, kept across restarts.

A state is a folder::

    STATE/
        state.json                 written last: format, version, tokenizer fingerprint and, per
                                   drafter, its JSON fields and its arrays (file, dtype, shape,
                                   bytes, sha256); the manifest carries its own sha256 too
        0-recycling-succ.npy       one plain array per file, np.save(allow_pickle=False)
        ...
        sizer-hits.npy             the tree sizer's calibration (budget="auto")

Each drafter exposes its learnt state as ``state() -> {name: ndarray | JSON value}`` and takes it
back with ``load_state(d)``; this module only writes, checks and reads those. Saving writes a
temporary sibling folder and renames it into place, so a crash mid-save leaves the previous state
whole. Loading checks everything before any drafter changes: the format version, the manifest's
checksum, the tokenizer fingerprint (vocabulary and special tokens, as for corpus indexes), every
file's size and sha256, every array's dtype and shape. Whatever fails is refused with one
:class:`~retrodraft.errors.StateError` line. No pickle is ever written or read.

Example::

    assistant.save("state/", tokenizer)                  # after some generate calls
    assistant = RetroDraft.load("state/", tokenizer)     # in a new process: warm from the start
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

import numpy as np

from .assistant import RetroDraft
from .cost import CostModel
from .errors import ConfigError, StateError
from .index.format import sha256_file, tokenizer_fingerprint
from .sizing import TreeSizer

__all__ = ["FORMAT", "VERSION", "MANIFEST", "save", "restore", "load", "read_manifest", "verify", "fingerprint"]

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
def save(assistant: RetroDraft, path: str | os.PathLike, tokenizer) -> Path:
    """Write ``assistant``'s learnt state to the folder ``path`` (replacing a state saved there).

    Args:
        assistant: the assistant to save (its drafters' ``state()`` and its tree sizer).
        path: the state folder; its parent is created. An existing folder that is not a
            retrodraft state is never overwritten.
        tokenizer: the model's tokenizer (its fingerprint is recorded and checked on load).

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
        entries = [_write_entry(tmp, f"{i}-{d.name}", d.name, _state_of(d)) for i, d in enumerate(assistant.drafters)]
        sizer = None
        if assistant.sizer is not None:
            sizer = _write_entry(tmp, "sizer", "sizer", assistant.sizer.state())
        manifest = {"format": FORMAT, "version": VERSION, "tokenizer": {"fingerprint": fp},
                    "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "drafters": entries, "sizer": sizer}
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


def _state_of(drafter) -> dict:
    get = getattr(drafter, "state", None)
    if get is None:
        raise StateError(f"drafter {drafter.name!r} ({type(drafter).__name__}) has no state() method: it cannot be "
                         "saved.")
    return get()


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


def restore(assistant: RetroDraft, path: str | os.PathLike, tokenizer) -> None:
    """Load the state at ``path`` into ``assistant``, whose drafters must be the saved ones (same
    names, in order, constructed with the same table sizes). On a refusal the assistant is left
    as it was when nothing had been read yet, or reset (cold) if a drafter refused its part."""
    path = Path(path)
    manifest = read_manifest(path)
    _check_tokenizer(path, manifest, fingerprint(tokenizer))
    saved = [e["name"] for e in manifest["drafters"]]
    have = [d.name for d in assistant.drafters]
    if saved != have:
        raise StateError(f"{path} holds the state of drafters {saved}, this assistant has {have}; load it with "
                         f"RetroDraft.load(path, tokenizer) or RetroDraft(drafters={saved}).")
    states = [_read_entry(path, e) for e in manifest["drafters"]]
    sizer = _read_entry(path, manifest["sizer"]) if manifest["sizer"] is not None else None
    try:
        for d, state in zip(assistant.drafters, states):
            d.load_state(state)
        if sizer is not None and assistant.sizing == "auto":
            assistant.sizer = _sizer_from(assistant, sizer)
    except BaseException:
        assistant.reset()
        raise


def _sizer_from(assistant: RetroDraft, state: dict) -> TreeSizer:
    """A tree sizer with the saved calibration, on the assistant's own cost curve if it has one,
    else on the curve the calibration was learnt under (replaced on a call with another model)."""
    cost = assistant.cost
    if cost is None:
        try:
            cost = CostModel(state["cost_sizes"], state["cost_seconds"], str(state.get("cost_key", "")),
                             str(state.get("cost_device", "")))
        except (KeyError, ConfigError, ValueError) as e:
            raise StateError(f"the saved tree-sizer cost curve is invalid ({e}).") from None
    hits = state.get("hits")
    bins = hits.shape[0] if isinstance(hits, np.ndarray) and hits.ndim == 1 and 1 <= hits.shape[0] <= 10_000 else 20
    sizer = TreeSizer(cost, max_nodes=assistant.budget, bins=bins)
    sizer.load_state(state)
    return sizer


def load(path: str | os.PathLike, tokenizer, **kwargs) -> RetroDraft:
    """A new :class:`RetroDraft` with the drafters saved at ``path`` and what they learnt.

    Args:
        path: a state folder written by :func:`save` / :meth:`RetroDraft.save`.
        tokenizer: the model's tokenizer; a state saved for another one is refused.
        kwargs: as for :class:`RetroDraft` (``sizing``, ``budget``, ``index``, ``cost``, ...); ``drafters``
            defaults to the saved drafter names (pass instances when they were constructed
            with non-default table sizes).
    """
    manifest = read_manifest(path)
    kwargs.setdefault("drafters", [e["name"] for e in manifest["drafters"]])
    assistant = RetroDraft(**kwargs)
    restore(assistant, path, tokenizer)
    return assistant
