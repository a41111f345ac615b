"""Where retrodraft keeps files on disk, and how it writes them. Imports nothing of retrodraft.

Everything lives under one cache folder, ``$RETRODRAFT_CACHE`` or ``~/.cache/retrodraft``::

    <cache>/models/<name>/     converted models (:mod:`retrodraft.models`)
    <cache>/cost/<key>.json    measured cost curves (:mod:`retrodraft.cost`; ``$RETRODRAFT_COST_CACHE``)
    <cache>/shapes/<name>.json calibrated tree shapes (:mod:`retrodraft.calibrate`)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["CACHE_ENV", "COST_ENV", "cache_root", "cost_dir", "shapes_dir", "write_json_atomic"]

CACHE_ENV = "RETRODRAFT_CACHE"
COST_ENV = "RETRODRAFT_COST_CACHE"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$RETRODRAFT_CACHE``, else ``~/.cache/retrodraft``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "retrodraft"


def cost_dir() -> Path:
    """Where measured cost curves live: ``$RETRODRAFT_COST_CACHE``, else ``<cache>/cost``."""
    env = os.environ.get(COST_ENV)
    return Path(env).expanduser() if env else cache_root() / "cost"


def shapes_dir() -> Path:
    """Where ``retrodraft calibrate`` saves tree shapes by default: ``<cache>/shapes``."""
    return cache_root() / "shapes"


def write_json_atomic(path: str | os.PathLike, data: Any, indent: int | None = 1) -> Path:
    """Write ``data`` as JSON to ``path`` so that readers see the old file or the new one, never
    a half-written one (a temporary file in the same folder, then a rename). Creates the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(data, indent=indent))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
