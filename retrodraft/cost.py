"""What a tree pass costs on this device: seconds per forward pass of ``T`` new tokens after ``L`` cached ones.

Speculative decoding's speedup is roughly *tokens committed per step / cost of the step*. The
cost of a step depends on the model, the device, the dtype and the thread count: a CPU pays for
every extra token of a pass, a GPU verifies tens of tokens for about the price of one. It also
depends on the context: every token of a pass attends to all ``L`` cached positions, so at 10,000
tokens a step costs several times what it costs at 256, and the price of each extra node grows too.
:class:`CostModel` measures that surface at a few context lengths (timed passes, cached on disk per
model + device + dtype + threads) and interpolates between them;
:class:`~retrodraft.sizing.TreeSizer` uses it to choose each step's tree size at the current length.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .paths import cost_dir, write_json_atomic
from .tree import DraftTree

__all__ = ["CostModel", "DEFAULT_SIZES", "DEFAULT_CONTEXTS", "cost_dir", "cpu_name", "model_key"]

log = logging.getLogger(__name__)

#: Tokens per pass measured by default (the root counts: T=1 is plain decoding).
DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
#: Context lengths (cached positions before the pass) measured by default; those the model's
#: position limit cannot hold are left out.
DEFAULT_CONTEXTS: tuple[int, ...] = (256, 1024, 4096, 8192)
#: Beyond this context a curve is measured with fewer sizes and one repeat: each pass costs more
#: there, and the shape of the curve changes slowly with the context.
_LONG = 1024
_LONG_SIZES = (1, 8, 32)
#: The context a format-1 curve (one length, before contexts were recorded) was measured at.
_FORMAT1_CONTEXT = 256
_FORMAT = 2


def cpu_name() -> str:
    """This machine's CPU model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def model_key(model: torch.nn.Module) -> str:
    """A file-name-safe key for ``model`` on its device, dtype and thread count: the model's
    folder name (for people) and :func:`_cost_key` (what the cost depends on)."""
    name = Path(str(getattr(model.config, "_name_or_path", "") or type(model).__name__)).name or "model"
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    return f"{slug}-{_cost_key(model)}"


def _cost_key(model: torch.nn.Module) -> str:
    """What a pass's cost depends on: the architecture config hashed (not the weights: the cost
    does not depend on their values, so two checkpoints of one architecture share a curve), the
    device, dtype and thread count."""
    device = next(model.parameters()).device
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    arch = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    dev = hashlib.sha256(_device_name(device).encode()).hexdigest()[:8]
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    dtype = str(model.dtype).replace("torch.", "")
    return f"{arch}-{device.type}{dev}-{dtype}-t{threads}"


def _cached_curve(model: torch.nn.Module) -> Path:
    """The cache file of ``model``'s key, or a curve cached under another name with the same
    :func:`_cost_key` (an exported or renamed copy of a model costs what the original costs, so
    it must not pay a new measurement)."""
    path = cost_dir() / f"{model_key(model)}.json"
    if path.is_file():
        return path
    same = sorted(cost_dir().glob(f"*-{_cost_key(model)}.json")) if cost_dir().is_dir() else []
    return same[0] if same else path


@dataclass
class CostModel:
    """Seconds per forward pass as a function of the tokens in it and of the context before it.

    Attributes:
        sizes: ``(k,)`` ascending token counts measured, starting at 1.
        seconds: ``(k,)`` median seconds of one pass of that many tokens at the first context.
        key: the model/device/dtype/threads key it was measured for ("" if synthetic).
        device: the device name, for reports.
        contexts: ``(m,)`` ascending context lengths measured (default: one, unknown, length).
        grid: ``(m, k)`` seconds at each context and size (row 0 is ``seconds``); ``None``
            for a one-context curve.
    """

    sizes: np.ndarray
    seconds: np.ndarray
    key: str = ""
    device: str = ""
    contexts: np.ndarray | None = None
    grid: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.sizes = np.asarray(self.sizes, dtype=np.float64)
        self.seconds = np.asarray(self.seconds, dtype=np.float64)
        if self.sizes.ndim != 1 or self.sizes.shape != self.seconds.shape or self.sizes.size < 2:
            raise ConfigError("a cost model needs at least two (size, seconds) points of equal length.")
        if self.sizes[0] != 1 or np.any(np.diff(self.sizes) <= 0) or np.any(self.seconds <= 0):
            raise ConfigError("cost model sizes must start at 1 and ascend, with positive seconds.")
        if self.grid is None:
            self.contexts = np.array([_FORMAT1_CONTEXT if self.contexts is None else self.contexts[0]], np.float64)
            self.grid = self.seconds[None, :]
            return
        self.contexts = np.asarray(self.contexts, dtype=np.float64)
        self.grid = np.asarray(self.grid, dtype=np.float64)
        m = self.contexts.shape[0] if self.contexts.ndim == 1 else -1
        if m < 1 or self.grid.shape != (m, self.sizes.size) or np.any(np.diff(self.contexts) <= 0) \
                or np.any(self.contexts < 0) or np.any(self.grid <= 0) or not np.array_equal(self.grid[0], self.seconds):
            raise ConfigError("a cost model's contexts must ascend, with an (contexts, sizes) grid of positive "
                              "seconds whose first row is its seconds.")

    @property
    def max_tokens(self) -> int:
        """The largest pass measured; trees are never chosen beyond it."""
        return int(self.sizes[-1])

    def seconds_for(self, tokens: np.ndarray | int, context: int | None = None) -> np.ndarray:
        """Interpolated seconds for passes of ``tokens`` tokens (array or scalar) after
        ``context`` cached positions (default: the first context measured)."""
        return np.interp(np.asarray(tokens, dtype=np.float64), self.sizes, self.at_context(context))

    def relative(self, tokens: np.ndarray | int, context: int | None = None) -> np.ndarray:
        """Cost relative to a one-token pass (plain decoding) at the same context."""
        row = self.at_context(context)
        return np.interp(np.asarray(tokens, dtype=np.float64), self.sizes, row) / row[0]

    def at_context(self, context: int | None) -> np.ndarray:
        """``(k,)`` seconds per size after ``context`` cached positions: linear between the
        measured contexts, flat below the first, and extended along the last two beyond the
        last (attention reads every cached position, so cost keeps growing about linearly)."""
        c, g = self.contexts, self.grid
        if context is None or c.size == 1 or context <= c[0]:
            return g[0]
        if context >= c[-1]:
            slope = np.maximum((g[-1] - g[-2]) / (c[-1] - c[-2]), 0.0)
            return g[-1] + slope * (float(context) - c[-1])
        i = int(np.searchsorted(c, context))
        w = (float(context) - c[i - 1]) / (c[i] - c[i - 1])
        return g[i - 1] * (1.0 - w) + g[i] * w

    # ------------------------------------------------------------------ measuring
    @classmethod
    @torch.no_grad()
    def measure(cls, model: torch.nn.Module, sizes: tuple[int, ...] = DEFAULT_SIZES, past_len: int | None = None,
                repeats: int = 3, contexts: tuple[int, ...] = DEFAULT_CONTEXTS) -> "CostModel":
        """Time ``repeats`` passes of each size after each context length (sizes interleaved,
        so drift and contention spread over all of them; one warm-up round at the first context).

        The passes are chains with the tree-attention mask the verifier uses, so the figure
        includes mask handling; the cache is cropped back after each pass and grown from one
        context to the next, so the prefixes are prefilled once. Contexts beyond 1,024 time
        fewer sizes (1, 8, 32 and the largest; the others interpolated) once each. Contexts the
        model's position limit cannot hold with the largest pass are left out.

        Args:
            past_len: measure this one context only (the former single-length curve).
        """
        from transformers import DynamicCache

        from .verify import tree_forward

        sizes = tuple(sorted({int(s) for s in sizes} | {1}))
        contexts = _usable_contexts(model, (past_len,) if past_len is not None else contexts, sizes[-1])
        device = next(model.parameters()).device
        vocab = model.config.get_text_config().vocab_size
        gen = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, vocab, (1, contexts[-1]), generator=gen).to(device)
        cache = DynamicCache(config=model.config)
        grid, cached = [], 0
        for j, context in enumerate(contexts):
            past = context - 1  # the root, prefix[context - 1], is what each timed pass starts from
            if past > cached:
                model(input_ids=prefix[:, cached:past], cache=cache, use_cache=True)
                cached = past
            root = int(prefix[0, past])
            long = context > _LONG
            timed = tuple(t for t in sizes if not long or t in _LONG_SIZES or t == sizes[-1])
            trees = {t: DraftTree.from_paths(root, [torch.randint(0, vocab, (t - 1,), generator=gen).tolist()])
                     if t > 1 else DraftTree.root_only(root) for t in timed}
            times: dict[int, list[float]] = {t: [] for t in timed}
            warmup = 1 if j == 0 else 0
            for rep in range((1 if long else repeats) + warmup):
                for t in (timed if rep % 2 == 0 else timed[::-1]):
                    _sync(device)
                    t0 = time.perf_counter()
                    tree_forward(model, trees[t], cache, past)
                    _sync(device)
                    if rep >= warmup:
                        times[t].append(time.perf_counter() - t0)
                    cache.crop(-t)  # drop this pass: back to the prefix
            medians = np.array([float(np.median(times[t])) for t in timed])
            grid.append(np.interp(np.array(sizes, np.float64), np.array(timed, np.float64), medians))
        grid = np.array(grid)
        return cls(np.array(sizes), grid[0], model_key(model), _device_name(device),
                   contexts=np.array(contexts), grid=grid)

    @classmethod
    def for_model(cls, model: torch.nn.Module, refresh: bool = False, **measure_kwargs) -> "CostModel":
        """The cached curve for ``model`` on its device, dtype and threads; measured (and
        cached) on first use or when ``refresh``."""
        key = model_key(model)
        path = cost_dir() / f"{key}.json"
        found = _cached_curve(model)
        if not refresh and found.is_file():
            try:
                cm = cls.load(found)
                cm.key = key  # a curve shared under another name is this model's now
                wanted = _usable_contexts(model, measure_kwargs.get("contexts", DEFAULT_CONTEXTS), cm.max_tokens)
                if "past_len" in measure_kwargs or len(wanted) == 1 or cm.contexts.size > 1:
                    return cm
                log.info("the cached cost curve %s was measured at one context length; measuring it at %s", found,
                         wanted)
            except (ConfigError, OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable cost cache %s (%s); measuring again", found, e)
        log.info("measuring the cost of tree passes for this model/device/dtype (once, cached in %s)", path.parent)
        cm = cls.measure(model, **measure_kwargs)
        try:
            cm.save(path)
        except OSError as e:
            log.warning("could not cache the cost curve at %s: %s", path, e)
        return cm

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        return {"format": _FORMAT, "key": self.key, "device": self.device, "sizes": self.sizes.astype(int).tolist(),
                "seconds": self.seconds.tolist(), "contexts": self.contexts.astype(int).tolist(),
                "grid": self.grid.tolist()}

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename)."""
        write_json_atomic(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CostModel":
        """Read a curve saved by :meth:`save`; a format-1 file (one context, before contexts were
        recorded) loads as a curve at 256 cached positions, the length it was measured at."""
        d = json.loads(Path(path).read_text())
        if d.get("format") == 1:
            return cls(np.array(d["sizes"]), np.array(d["seconds"]), d.get("key", ""), d.get("device", ""))
        if d.get("format") != _FORMAT:
            raise ConfigError(f"{path}: cost curve format {d.get('format')!r}, expected 1 or {_FORMAT}.")
        return cls(np.array(d["sizes"]), np.array(d["seconds"]), d.get("key", ""), d.get("device", ""),
                   contexts=np.array(d["contexts"]), grid=np.array(d["grid"]))


def _usable_contexts(model: torch.nn.Module, contexts, largest_pass: int) -> tuple[int, ...]:
    """``contexts`` (ascending, >= 2) that fit the model's positions with a pass of ``largest_pass``
    tokens after them; the shortest asked for (clipped to fit) when none does."""
    limit = getattr(model.config.get_text_config(), "max_position_embeddings", None) or 1 << 30
    room = max(2, int(limit) - int(largest_pass))
    asked = sorted({max(2, int(c)) for c in contexts})
    return tuple(c for c in asked if c <= room) or (min(asked[0], room),)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)

