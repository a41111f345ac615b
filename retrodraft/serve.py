"""retrodraft behind ``transformers serve``: the ``generate`` an exported folder hands to transformers.

``transformers serve DIR --trust-remote-code`` loads a folder written by ``retrodraft export``;
transformers then replaces the model's ``generate`` by the folder's
``custom_generate/generate.py``, which re-exports :func:`generate` below, and the server calls it
once per request (one inference thread per model) with the request's ``generation_config``, a
``streamer`` when streaming, and the ``tokenizer``.

Every request to one served folder shares one :class:`~retrodraft.RetroDraft`, so what its
drafters learn accumulates. Its options are the ``retrodraft`` entry of the folder's
``generation_config.json`` (see :data:`FOLDER_KEYS`); a request may override :data:`REQUEST_KEYS`
through the ``generation_config`` it sends. With a ``state`` folder configured, the learnt state is
loaded when the server starts, saved every ``save_every`` requests and at shutdown. Each request
logs one line: ``retrodraft request=3 tokens=64 steps=12 mat=5.33 wall_s=1.20 reused=812`` (``reused``:
prompt positions taken from the prefix cache, the KV of earlier requests, instead of prefilled).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .assistant import RetroDraft
from .errors import ConfigError
from .generate import _ORIGINAL_GENERATE
from .generate import generate as retrodraft_generate
from .state import MANIFEST

__all__ = ["generate", "check_server", "FOLDER_KEYS", "REQUEST_KEYS", "EXPORT_MARKER"]

#: Keys of the ``retrodraft`` entry of an exported folder's generation config.
FOLDER_KEYS = ("drafters", "index", "sizing", "budget", "state", "save_every", "prefix_cache")
#: Keys a request may change for itself (``enabled: false`` decodes that request without drafting).
REQUEST_KEYS = ("sizing", "budget", "enabled")
#: First line of an exported ``custom_generate/generate.py`` (how ``export --force`` recognizes one).
EXPORT_MARKER = '"""retrodraft speculative decoding for this model folder'

log = logging.getLogger(__name__)
if not log.handlers:  # transformers serve configures only its own loggers
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(_handler)
    log.setLevel(logging.INFO)
    log.propagate = False

_SERVED: dict[str, "_Served"] = {}
_GUARD = threading.Lock()


def generate(*args: Any, model, **kwargs: Any):
    """``model.generate(**kwargs)`` for a served model: drafts with the folder's shared assistant.

    Called by transformers as ``functools.partial(generate, model=model)``; takes and returns
    what ``model.generate`` does.
    """
    config = kwargs.get("generation_config")
    if config is not None and getattr(config, "cache_implementation", None) == "static":
        raise ConfigError("retrodraft cannot draft into a static cache (transformers serve --compile); serve without "
                          "--compile.")
    folder_options = _options(model.generation_config)
    overrides = {k: v for k, v in _options(config).items() if folder_options.get(k) != v} if config is not None else {}
    unknown = sorted(set(overrides) - set(REQUEST_KEYS))
    if unknown:
        raise ConfigError(f"a request may set only {', '.join(REQUEST_KEYS)} in its retrodraft options, not "
                          f"{', '.join(unknown)} (those are set when the folder is exported).")
    if overrides.get("enabled", True) is False:
        return _ORIGINAL_GENERATE(model, *args, **kwargs)
    served = _served_for(model.name_or_path, folder_options, kwargs.get("tokenizer"))
    sized = {}
    if "sizing" in overrides or "budget" in overrides:
        sized = {"sizing": overrides.get("sizing", folder_options.get("sizing")), "budget": overrides.get("budget")}
    with served.assistant.options(**sized):  # holds the assistant's lock until the request is logged
        out = retrodraft_generate(model, *args, assistant=served.assistant, **kwargs)
        served.finished()
    return out


def check_server(argv: list[str] | None = None) -> None:
    """Run when ``transformers serve`` loads an exported folder: refuse the server options that
    bypass ``generate`` (``--continuous-batching``) or need a static cache (``--compile``), and
    load the folder's saved state now, so a bad one stops the server at start."""
    argv = list(sys.argv if argv is None else argv)
    if "serve" not in argv[1:3] or "transformers" not in os.path.basename(argv[0]):
        return
    for flag, why in (("--continuous-batching", "continuous batching never calls generate, so nothing would be "
                                                "drafted"),
                      ("--compile", "it decodes into a static cache, which tree verification cannot compact")):
        if flag in argv:
            msg = f"retrodraft: error: serve this folder without {flag}: {why}."
            log.error(msg)
            raise ConfigError(msg)
    for arg in argv[2:]:
        folder = Path(arg)
        if (folder / "custom_generate" / "generate.py").is_file() and (folder / "generation_config.json").is_file():
            from transformers import GenerationConfig

            options = _options(GenerationConfig.from_pretrained(folder))
            if options.get("state"):
                _served_for(str(folder), options, None)


# ---------------------------------------------------------------------- one folder's assistant
def _options(config) -> dict:
    options = getattr(config, "retrodraft", None) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"the retrodraft generation option must be a dict, got {type(options).__name__}.")
    return options


def _served_for(folder: str, options: dict, tokenizer) -> "_Served":
    key = os.path.realpath(folder)
    with _GUARD:
        served = _SERVED.get(key)
        if served is None:
            served = _SERVED[key] = _Served(Path(folder), options, tokenizer)
    return served


class _Served:
    """The assistant shared by every request to one folder, and its saved state."""

    def __init__(self, folder: Path, options: dict, tokenizer) -> None:
        unknown = sorted(set(options) - set(FOLDER_KEYS))
        if unknown:
            raise ConfigError(f"unknown retrodraft options {unknown} in {folder}/generation_config.json; known: "
                              f"{', '.join(FOLDER_KEYS)}.")
        self.folder = folder
        index = options.get("index")
        kwargs = {"drafters": options.get("drafters"), "sizing": options.get("sizing"),
                  "budget": options.get("budget"), "index": [str(folder / p) for p in index] if index else None}
        if options.get("prefix_cache") is not None:
            kwargs["prefix_cache"] = options["prefix_cache"]
        self.save_every = int(options.get("save_every", 0) or 0)
        self.state = folder / options["state"] if options.get("state") else None
        self.requests = self.unsaved = 0
        self._tokenizer = None
        if self.state is None:
            self.assistant = RetroDraft(**kwargs)
            return
        self._tokenizer = tokenizer if tokenizer is not None else _folder_tokenizer(folder)
        if (self.state / MANIFEST).is_file() or (self.state.exists() and any(self.state.iterdir())):
            self.assistant = RetroDraft.load(self.state, self._tokenizer, **kwargs)
            log.info("retrodraft: loaded the saved state %s", self.state)
        else:
            self.assistant = RetroDraft(**kwargs)
            log.info("retrodraft: no saved state at %s yet; starting cold", self.state)
        atexit.register(self.save, "shutdown")
        _save_on_signals()

    def finished(self) -> None:
        """Log the request just decoded; save the state every ``save_every`` requests."""
        self.requests += 1
        self.unsaved += 1
        s = self.assistant.stats
        log.info("retrodraft request=%d tokens=%d steps=%d mat=%.2f wall_s=%.2f reused=%d", self.requests,
                 s.new_tokens, s.steps, s.mean_accepted, s.wall_s, s.prefix_reused)
        if self.state is not None and self.save_every and self.unsaved >= self.save_every:
            self.save("every %d requests" % self.save_every)

    def save(self, why: str) -> None:
        """Save the state (never raises: a failed save is logged and serving goes on)."""
        if self.state is None or not self.unsaved:
            return
        lock = self.assistant.lock
        if not lock.acquire(timeout=60):
            log.warning("retrodraft: state not saved (%s): a request kept the assistant busy", why)
            return
        try:
            self.assistant.save(self.state, self._tokenizer)
            self.unsaved = 0
            log.info("retrodraft: saved the state to %s (%s)", self.state, why)
        except Exception as e:  # a full disk must not take the server down
            log.warning("retrodraft: could not save the state to %s: %s", self.state, e)
        finally:
            lock.release()


_SIGNALS_HOOKED = False


def _save_on_signals() -> None:
    """Save every served state on SIGTERM / SIGINT, then let the signal do what it did before.

    uvicorn shuts down on these signals and then re-raises them with the handlers it found, so a
    process stopped this way exits without running ``atexit``; a handler installed now (before
    the server starts) is what it finds.
    """
    global _SIGNALS_HOOKED
    if _SIGNALS_HOOKED or threading.current_thread() is not threading.main_thread():
        return
    _SIGNALS_HOOKED = True
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            for served in list(_SERVED.values()):
                served.save("shutdown")
            if callable(previous):
                previous(signum, frame)
            else:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
                signal.raise_signal(signum)

        signal.signal(sig, handler)


def _folder_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)
