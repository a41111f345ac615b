"""What configures the proposer, checked in the caller's process and carried to vLLM's worker.

vLLM builds the proposer as ``cls(vllm_config)`` inside its worker process (started with spawn)
and its ``SpeculativeConfig`` refuses unknown keys, so the options travel in the only free-form
field it passes on: the dotted class path. ``speculative_config()`` encodes the options as hex
into the class name (``retrodraft.vllm.proposer.RetroDraft_7b22...``), and the proposer module
decodes such names on import (a module ``__getattr__``). No file or environment variable has to
reach the worker, and ``vllm serve --speculative-config '{...}'`` carries everything in one line.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from ..errors import ConfigError

__all__ = ["VllmOptions", "TOKEN_DRAFTERS", "encode", "decode", "CLASS_PREFIX"]

#: Drafters that need nothing but token ids (vLLM hands a custom proposer no logits).
TOKEN_DRAFTERS = ("history", "lookup", "retrieval")
CLASS_PREFIX = "RetroDraft_"
#: Ways to cut a row's fused tree to its chain (see ``VllmOptions.cut``).
CUTS = ("rate", "gain")


@dataclass(frozen=True)
class VllmOptions:
    """The proposer's settings.

    Attributes:
        drafters: names from :data:`TOKEN_DRAFTERS`, fused in this order.
        index: corpus index folders for ``retrieval``.
        state: a saved retrodraft state folder: its ``history`` entry is loaded at start (when
            the folder exists) and the memory is saved there every ``save_every`` finished
            requests and at shutdown.
        save_every: finished requests between saves of ``state``.
        stats: a JSON file the proposer rewrites when requests end (its counts, per request).
        nodes: draft-tree size asked of each drafter per row and step.
        min_score: what one drafted token adds to a step, as a fraction of a one-token step,
            with one row (Qwen2.5-Coder-1.5B bf16 on 2 CPU cores in vLLM: a step took 205-213 ms
            plus 5-9.5 ms per drafted token, fitted from the committed runs' decode seconds,
            steps and drafted counts, so 0.025-0.046; 0.05 errs towards drafting less; see
            docs/engines.md). With ``cut="rate"`` a token must beat it times the speed-up.
        batch_cost: added to ``min_score`` per further row in the step: verification gets
            compute-bound as the batch grows, so drafting turns down.
        batch_tokens: drafted tokens per step over the whole batch, at most.
        memory_mb: byte budget of the engine's shared history memory.
        cut: how a row's fused tree is cut to its chain. ``"rate"`` (default): scores
            calibrated per depth and scaled by the row's own recent acceptance, and a drafted
            token kept when its score beats its cost times the engine's recent speed-up
            (:class:`~retrodraft.vllm.chain.SpeedRate`): the chain maximises accepted tokens
            per unit of step time. ``"gain"``: the earlier cut (scores calibrated per score bin
            only, kept when above the cost).
    """

    drafters: tuple[str, ...] = ("history", "lookup")
    index: tuple[str, ...] = ()
    state: str | None = None
    save_every: int = 16
    stats: str | None = None
    nodes: int = 64
    min_score: float = 0.05
    batch_cost: float = 0.04
    batch_tokens: int = 64
    memory_mb: int = 256
    cut: str = "rate"
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.drafters:
            raise ConfigError("drafters must name at least one of: " + ", ".join(TOKEN_DRAFTERS) + ".")
        for name in self.drafters:
            if name not in TOKEN_DRAFTERS:
                raise ConfigError(f"drafter {name!r} cannot run inside vLLM (it gets no logits); use "
                                  f"{', '.join(TOKEN_DRAFTERS)}.")
        if len(set(self.drafters)) != len(self.drafters):
            raise ConfigError(f"drafters repeats a name: {list(self.drafters)}.")
        if self.index and "retrieval" not in self.drafters:
            raise ConfigError("index= feeds the 'retrieval' drafter: add it to drafters.")
        for label, v, lo, hi in (("save_every", self.save_every, 1, 10**9), ("nodes", self.nodes, 1, 4096),
                                 ("batch_tokens", self.batch_tokens, 0, 1 << 20),
                                 ("memory_mb", self.memory_mb, 1, 1 << 20)):
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"{label} must be an integer from {lo} to {hi}, got {v!r}.")
        for label, v in (("min_score", self.min_score), ("batch_cost", self.batch_cost)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                raise ConfigError(f"{label} must be a number from 0 to 1, got {v!r}.")
        if self.cut not in CUTS:
            raise ConfigError(f"cut must be one of {', '.join(CUTS)}, got {self.cut!r}.")
        if self.extra:
            raise ConfigError(f"unknown option(s) {sorted(self.extra)}; known: "
                              f"{', '.join(f.name for f in fields(self) if f.name != 'extra')}.")

    @classmethod
    def from_dict(cls, d: dict) -> "VllmOptions":
        """Options from a plain dict (unknown keys refused with one line)."""
        if not isinstance(d, dict):
            raise ConfigError(f"options must be a dict, got {type(d).__name__}.")
        known = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        for key in ("drafters", "index"):
            if key in kw:
                v = kw[key]
                kw[key] = (v,) if isinstance(v, str) else tuple(v)
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d["drafters"], d["index"] = list(self.drafters), list(self.index)
        return d


def encode(options: VllmOptions) -> str:
    """The class name that carries ``options`` (only the ones differing from the defaults)."""
    default = VllmOptions().as_dict()
    diff = {k: v for k, v in options.as_dict().items() if v != default[k]}
    if not diff:
        return "RetroDraftProposer"
    return CLASS_PREFIX + json.dumps(diff, sort_keys=True, separators=(",", ":")).encode().hex()


def decode(name: str) -> VllmOptions:
    """The options carried by a class name made by :func:`encode`."""
    if name == "RetroDraftProposer":
        return VllmOptions()
    if not name.startswith(CLASS_PREFIX):
        raise ConfigError(f"{name!r} is not a retrodraft proposer class name.")
    try:
        d = json.loads(bytes.fromhex(name[len(CLASS_PREFIX):]).decode())
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{name!r} does not carry valid retrodraft options.") from None
    return VllmOptions.from_dict(d)
