"""``retrodraft export``: a model folder that ``transformers serve --trust-remote-code`` serves with retrodraft.

The folder written::

    OUT/
        config.json, model.safetensors, tokenizer.json, ...   linked (or copied) from the model
        generation_config.json     the model's, plus a "retrodraft" entry: drafters, index, sizing,
                                   budget, state, save_every, prefix_cache (see retrodraft.serve)
        custom_generate/
            generate.py            re-exports retrodraft.serve.generate
            requirements.txt       retrodraft, checked by transformers when the folder is loaded

Serve it with ``transformers serve OUT --trust-remote-code`` (transformers runs
``custom_generate/generate.py`` only with that flag; without it the folder serves plain decoding).
Everything is checked before anything is written (drafter options, indexes against the model's
tokenizer, a saved state against the drafters and the tokenizer), and the folder is written
under a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

from . import __version__
from .errors import ConfigError, ModelNotFoundError
from .serve import EXPORT_MARKER

__all__ = ["export"]

_GENERATE_PY = EXPORT_MARKER + ''' (written by `retrodraft export`).

Serve with:  transformers serve <this folder> --trust-remote-code
The drafter options are the "retrodraft" entry of ../generation_config.json.
"""

from retrodraft.serve import check_server, generate  # noqa: F401  (transformers looks up `generate`)

check_server()  # refuses --continuous-batching / --compile; loads the saved state at server start
'''
# The model folder's own files that the export writes itself (or leaves out).
_OWN = {"generation_config.json", "custom_generate", "retrodraft-model.json"}


def export(model: str | os.PathLike, out: str | os.PathLike, *, drafters: Sequence[str] | None = None,
           index: Sequence[str | os.PathLike] | None = None, state: str | os.PathLike | None = None,
           sizing: str | None = None, budget: int | None = None, save_every: int = 16, copy: bool = False,
           force: bool = False, prefix_cache: int | None = None) -> Path:
    """Write a folder that ``transformers serve OUT --trust-remote-code`` serves with retrodraft.

    Args:
        model: an embedded model name (``retrodraft models list``) or a local transformers folder.
        out: the folder to write; an existing one is replaced only with ``force`` (and only if
            it is an earlier export or empty).
        drafters / index / sizing / budget: as for :class:`~retrodraft.RetroDraft`.
        state: a state folder: loaded when the server starts (if it exists), saved every
            ``save_every`` requests (0: only at shutdown) and at shutdown. A relative path is
            kept relative to ``out`` when it lies inside it.
        copy: copy the model's files instead of symlinking them.
        prefix_cache: bytes of KV the server keeps from earlier requests (a resent conversation
            prefills only its new part); default: :class:`~retrodraft.RetroDraft`'s default,
            ``0`` turns it off.

    Returns:
        ``out``.
    """
    src = _model_folder(model)
    out = Path(out).expanduser()
    if isinstance(save_every, bool) or not isinstance(save_every, int) or save_every < 0:
        raise ConfigError(f"save_every must be a whole number of requests (0: only at shutdown), got {save_every!r}.")
    options = _options(src, out, drafters, index, state, sizing, budget, save_every)
    if prefix_cache is not None:
        from .prefix_cache import check_prefix_cache_bytes

        options["prefix_cache"] = check_prefix_cache_bytes(prefix_cache)
    _check_out(out, force)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the served folder is an ordinary one
        for entry in sorted(src.iterdir()):
            if entry.name in _OWN or entry.name.startswith("."):
                continue
            if copy:
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, tmp / entry.name)
            else:
                os.symlink(entry.resolve(), tmp / entry.name)
        config = _generation_config(src)
        config.retrodraft = options
        config._from_model_config = False  # else transformers drops the entry when it reads the file
        config.save_pretrained(tmp)
        (tmp / "custom_generate").mkdir()
        (tmp / "custom_generate" / "generate.py").write_text(_GENERATE_PY)
        (tmp / "custom_generate" / "requirements.txt").write_text(f"retrodraft>={__version__}\n")
        if out.exists():
            kept = options.get("state")
            if kept and not Path(kept).is_absolute() and (out / kept).exists():
                (tmp / kept).parent.mkdir(parents=True, exist_ok=True)
                os.rename(out / kept, tmp / kept)  # a state kept inside the folder outlives the re-export
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _model_folder(model: str | os.PathLike) -> Path:
    from . import models

    if str(model) in models.REGISTRY:
        path = models.cached_path(str(model))
        if path is None:
            raise ModelNotFoundError(f"model {str(model)!r} is not fetched yet; fetch it with: retrodraft models fetch "
                                     f"{model}")
        return path
    path = Path(model).expanduser()
    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"unknown model {str(model)!r}: not an embedded model name "
                                 f"({', '.join(models.REGISTRY)}) and not a local transformers model folder.")
    return path


def _options(src: Path, out: Path, drafters, index, state, sizing, budget, save_every) -> dict:
    """The ``retrodraft`` generation option, after checking it the way the server will use it."""
    from transformers import AutoTokenizer

    from .assistant import RetroDraft

    if isinstance(index, (str, os.PathLike)):
        index = [index]
    index = [str(Path(p).expanduser().resolve()) for p in index] if index else None
    drafters = list(drafters) if drafters else None
    assistant = RetroDraft(drafters=drafters, sizing=sizing, budget=budget, index=index)
    tokenizer = AutoTokenizer.from_pretrained(src)
    for d in assistant.drafters:
        d.check_tokenizer(tokenizer)
    options = {"drafters": [d.name for d in assistant.drafters], "sizing": assistant.sizing, "save_every": save_every}
    if budget is not None:
        options["budget"] = assistant.budget
    if index:
        options["index"] = index
    if state is not None:
        state = Path(state).expanduser().resolve()
        if state.exists():
            assistant.load_state(state, tokenizer)  # refuses a state these drafters or this tokenizer cannot take
        inside = state.is_relative_to(out.expanduser().resolve())
        options["state"] = str(state.relative_to(out.expanduser().resolve())) if inside else str(state)
    return options


def _check_out(out: Path, force: bool) -> None:
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"{out} is a file; choose another --out folder.")
    if not any(out.iterdir()):
        return
    marker = out / "custom_generate" / "generate.py"
    ours = marker.is_file() and marker.read_text().startswith(EXPORT_MARKER)
    if not ours:
        raise ConfigError(f"{out} exists and is not a retrodraft export; choose another --out folder.")
    if not force:
        raise ConfigError(f"{out} already holds an export; pass --force to replace it.")


def _generation_config(src: Path):
    from transformers import AutoConfig, GenerationConfig

    try:
        return GenerationConfig.from_pretrained(src)
    except OSError:  # no generation_config.json: the defaults transformers derives from config.json
        return GenerationConfig.from_model_config(AutoConfig.from_pretrained(src))
