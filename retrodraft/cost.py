"""What a tree costs on this device, and how big a tree pays: the per-step size choice.

Speculative decoding's speedup is roughly *tokens committed per step / cost of the step*. The
numerator grows with the tree, with diminishing returns; the denominator depends on the device:
on the 2-core CPU of ../shared/MODELS.md a 16-token float32 pass costs ~2x one token, a bfloat16
one ~1.3x (AMX), and on a GPU ~1x up to 64 tokens. So the right tree size is a property of the
model, the device, the dtype - and of how confident the drafters are *this step*: a long prompt
lookup match deserves a deep chain, free-form prose deserves no draft at all.

:class:`CostModel` measures seconds per forward pass of ``T`` new tokens (a few passes, cached on
disk per model + device + dtype + threads). :class:`TreeSizer` turns the drafters' node scores into
calibrated acceptance probabilities (learnt online from which nodes were accepted) and each step
picks the number of nodes ``n`` that maximizes expected tokens per second::

    rate(n) = (1 + sum of the n best nodes' acceptance probabilities) / seconds(1 + n)

``n = 0`` is plain decoding, so a tree is verified only when its expected rate beats it.
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
from .tree import DraftTree

__all__ = ["CostModel", "TreeSizer", "DEFAULT_SIZES", "cost_dir"]

log = logging.getLogger(__name__)

#: Tokens per pass measured by default (the root counts: T=1 is plain decoding).
DEFAULT_SIZES: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
_FORMAT = 1


def cost_dir() -> Path:
    """Where measured cost curves live: ``$RETRODRAFT_COST_CACHE``, else ``<retrodraft cache>/cost``."""
    env = os.environ.get("RETRODRAFT_COST_CACHE")
    if env:
        return Path(env).expanduser()
    from .models import cache_root

    return cache_root() / "cost"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def model_key(model: torch.nn.Module) -> str:
    """A file-name-safe key for ``model`` on its device, dtype and thread count.

    The model part hashes the architecture config (not the weights: the cost of a pass does
    not depend on their values), so two checkpoints of one architecture share a curve.
    """
    device = next(model.parameters()).device
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    arch = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    name = Path(str(getattr(model.config, "_name_or_path", "") or type(model).__name__)).name or "model"
    dev = hashlib.sha256(_device_name(device).encode()).hexdigest()[:8]
    threads = torch.get_num_threads() if device.type == "cpu" else 0
    dtype = str(model.dtype).replace("torch.", "")
    slug = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)
    return f"{slug}-{arch}-{device.type}{dev}-{dtype}-t{threads}"


@dataclass
class CostModel:
    """Seconds per forward pass as a function of the tokens in it.

    Attributes:
        sizes: ``(k,)`` ascending token counts measured, starting at 1.
        seconds: ``(k,)`` median seconds of one pass of that many tokens.
        key: the model/device/dtype/threads key it was measured for ("" if synthetic).
        device: the device name, for reports.
    """

    sizes: np.ndarray
    seconds: np.ndarray
    key: str = ""
    device: str = ""

    def __post_init__(self) -> None:
        self.sizes = np.asarray(self.sizes, dtype=np.float64)
        self.seconds = np.asarray(self.seconds, dtype=np.float64)
        if self.sizes.ndim != 1 or self.sizes.shape != self.seconds.shape or self.sizes.size < 2:
            raise ConfigError("a cost model needs at least two (size, seconds) points of equal length.")
        if self.sizes[0] != 1 or np.any(np.diff(self.sizes) <= 0) or np.any(self.seconds <= 0):
            raise ConfigError("cost model sizes must start at 1 and ascend, with positive seconds.")

    @property
    def max_tokens(self) -> int:
        """The largest pass measured; trees are never chosen beyond it."""
        return int(self.sizes[-1])

    def seconds_for(self, tokens: np.ndarray | int) -> np.ndarray:
        """Interpolated seconds for passes of ``tokens`` tokens (array or scalar)."""
        return np.interp(np.asarray(tokens, dtype=np.float64), self.sizes, self.seconds)

    def relative(self, tokens: np.ndarray | int) -> np.ndarray:
        """Cost relative to a one-token pass (plain decoding)."""
        return self.seconds_for(tokens) / self.seconds[0]

    # ------------------------------------------------------------------ measuring
    @classmethod
    @torch.no_grad()
    def measure(cls, model: torch.nn.Module, sizes: tuple[int, ...] = DEFAULT_SIZES, past_len: int = 256,
                repeats: int = 3) -> "CostModel":
        """Time ``repeats`` passes of each size after a ``past_len``-token prefix (sizes
        interleaved, so drift and contention spread over all of them; one warm-up pass each).

        The passes are chains with the tree-attention mask the verifier uses, so the figure
        includes mask handling; the cache is cropped back after each pass.
        """
        from transformers import DynamicCache

        from .verify import tree_forward

        sizes = tuple(sorted({int(s) for s in sizes} | {1}))
        device = next(model.parameters()).device
        vocab = model.config.get_text_config().vocab_size
        gen = torch.Generator().manual_seed(0)
        prefix = torch.randint(0, vocab, (1, past_len), generator=gen).to(device)
        past = past_len - 1  # the root, prefix[-1], is what each timed pass starts from
        cache = DynamicCache(config=model.config)
        model(input_ids=prefix[:, :past], cache=cache, use_cache=True)
        trees = {t: DraftTree.from_paths(int(prefix[0, -1]), [torch.randint(0, vocab, (t - 1,), generator=gen).tolist()])
                 if t > 1 else DraftTree.root_only(int(prefix[0, -1])) for t in sizes}
        times: dict[int, list[float]] = {t: [] for t in sizes}
        for rep in range(repeats + 1):
            for t in (sizes if rep % 2 == 0 else sizes[::-1]):
                _sync(device)
                t0 = time.perf_counter()
                tree_forward(model, trees[t], cache, past)
                _sync(device)
                if rep > 0:  # the first round warms up
                    times[t].append(time.perf_counter() - t0)
                cache.crop(-t)  # drop this pass: back to the prefix
        return cls(np.array(sizes), np.array([float(np.median(times[t])) for t in sizes]), model_key(model),
                   _device_name(device))

    @classmethod
    def for_model(cls, model: torch.nn.Module, refresh: bool = False, **measure_kwargs) -> "CostModel":
        """The cached curve for ``model`` on its device, dtype and threads; measured (and
        cached) on first use or when ``refresh``."""
        path = cost_dir() / f"{model_key(model)}.json"
        if not refresh and path.is_file():
            try:
                return cls.load(path)
            except (ConfigError, OSError, ValueError, KeyError) as e:
                log.warning("ignoring unreadable cost cache %s (%s); measuring again", path, e)
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
                "seconds": self.seconds.tolist()}

    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CostModel":
        d = json.loads(Path(path).read_text())
        if d.get("format") != _FORMAT:
            raise ConfigError(f"{path}: cost curve format {d.get('format')!r}, expected {_FORMAT}.")
        return cls(np.array(d["sizes"]), np.array(d["seconds"]), d.get("key", ""), d.get("device", ""))


class TreeSizer:
    """Chooses, each step, how many of a tree's best nodes to verify.

    A drafter's node score is its own estimate that the path to the node is accepted; the sizer
    recalibrates it against what actually happened (scores in ``bins`` equal-width bins, each
    bin's acceptance rate counted with ``prior`` pseudo-observations at the bin's centre, so the
    drafters are trusted until evidence says otherwise) and then maximizes expected tokens per
    second under the :class:`CostModel`.

    Args:
        cost: the device's cost curve.
        max_nodes: never more draft nodes than this (default: the largest measured pass - 1).
        bins / prior: calibration resolution and strength (pseudo-observations per bin) of
            the initial belief.
        trust: the initial belief is that a node scored ``s`` is accepted with probability
            ``trust * s``. Drafters are over-confident on a cold start over text they cannot
            predict, where every wasted node is paid for; 0.5 recovered most of that loss in
            ``benchmarks/cold_start.py`` without costing the prompts drafting does help.
    """

    def __init__(self, cost: CostModel, max_nodes: int | None = None, bins: int = 20, prior: float = 8.0,
                 trust: float = 0.5) -> None:
        self.cost = cost
        self.max_nodes = cost.max_tokens - 1 if max_nodes is None else min(int(max_nodes), cost.max_tokens - 1)
        self.bins = int(bins)
        centres = (np.arange(self.bins) + 0.5) / self.bins
        self._hits = centres * prior * trust
        self._seen = np.full(self.bins, float(prior))
        # seconds(1 + n) for every n the sizer may choose, computed once.
        self._seconds = cost.seconds_for(np.arange(1, self.max_nodes + 2))

    def _bin(self, scores: np.ndarray) -> np.ndarray:
        # The epsilon puts float32 and float64 copies of one score (0.9 -> 17.99999 vs 18) in one bin.
        return np.minimum((np.asarray(scores, np.float64) * self.bins + 1e-5).astype(np.int64), self.bins - 1)

    def calibrated(self, scores: np.ndarray) -> np.ndarray:
        """Acceptance probability of nodes with these drafter scores, ``(n,)`` -> ``(n,)``."""
        b = self._bin(scores)
        return self._hits[b] / self._seen[b]

    def choose(self, tree: DraftTree, limit: int | None = None) -> int:
        """Draft nodes to keep (0 = plain decoding) for the highest expected tokens per second,
        at most ``limit`` (and ``max_nodes``)."""
        cap = self.max_nodes if limit is None else min(self.max_nodes, int(limit))
        s = np.sort(tree.scores[1:])[::-1][:cap]
        if s.size == 0:
            return 0
        gain = np.concatenate([[1.0], 1.0 + np.cumsum(self.calibrated(s))])
        rate = gain / self._seconds[: gain.size]
        return int(np.argmax(rate))

    def observe(self, tree: DraftTree, accepted: np.ndarray) -> None:
        """Count, per score bin, which verified draft nodes were on the accepted path."""
        if len(tree) <= 1:
            return
        b = self._bin(tree.scores[1:])
        hit = np.zeros(len(tree), dtype=np.float64)
        hit[accepted] = 1.0
        np.add.at(self._seen, b, 1.0)
        np.add.at(self._hits, b, hit[1:])

    def expected_accepted(self, tree: DraftTree) -> float:
        """Calibrated expected tokens committed by verifying ``tree`` (bonus token included)."""
        return 1.0 + float(self.calibrated(tree.scores[1:]).sum())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
