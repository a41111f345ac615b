"""Traces: what every verification step of one ``generate`` call drafted, accepted and committed.

A :class:`Trace` is an opt-in recorder on the assistant (``RetroDraft(trace=True)`` or
``assistant.start_trace()``). Per step it keeps the verified tree (tokens, parents, and each
node's ``origins`` - the drafters that proposed it), the accepted path and the committed tokens,
as a :class:`StepRecord`. :meth:`Trace.sources` says where every generated token came from, and
:func:`write_html` renders the call as one self-contained page (see :mod:`retrodraft.trace_page`).

Example::

    assistant = RetroDraft(trace=True)
    model.generate(ids, assistant=assistant, max_new_tokens=64)
    assistant.trace.to_html(tokenizer)      # or write_html(assistant.trace, tokenizer, "t.html")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    from .drafters.base import Outcome

__all__ = ["Trace", "StepRecord", "TokenSource", "write_html", "PREFILL", "BONUS", "ONE_TOKEN"]

#: Source of the prefill's token: the model's choice after the prompt, before any step.
PREFILL = "prefill"
#: Source of the model's own token that ends a step which accepted at least one draft token.
BONUS = "bonus"
#: Source of the only token of a step that accepted no draft (none proposed, or all rejected).
ONE_TOKEN = "one-token step"


class Decoder(Protocol):
    def decode(self, ids: list[int]) -> str: ...


@dataclass(frozen=True)
class StepRecord:
    """One verification step.

    Attributes:
        tokens: ``(n,)`` int64 token ids of the verified tree; ``tokens[0]`` is the root.
        parents: ``(n,)`` int32 parent indices, ``-1`` for the root.
        origins: ``(n,)`` uint32 bitmask of the drafters that proposed each node (bit ``i`` =
            ``Trace.drafters[i]``); 0 for the root.
        accepted: ``(m,)`` int64 node indices of the accepted path, root first.
        committed: ``(c,)`` int64 token ids this step appended to the output.
    """

    tokens: np.ndarray
    parents: np.ndarray
    origins: np.ndarray
    accepted: np.ndarray
    committed: np.ndarray

    @property
    def tree_size(self) -> int:
        """Nodes verified, root included (as in ``Stats.tree_sizes``)."""
        return int(self.tokens.shape[0])


@dataclass(frozen=True)
class TokenSource:
    """Where one generated token came from.

    Attributes:
        token: the token id.
        step: index into ``Trace.steps`` of the step that committed it, ``-1`` for the prefill.
        source: a drafter name (the first in drafter order that proposed it), :data:`BONUS`,
            :data:`ONE_TOKEN` or :data:`PREFILL`.
        drafters: every drafter that proposed it (empty unless drafted).
    """

    token: int
    step: int
    source: str
    drafters: tuple[str, ...] = ()


@dataclass
class Trace:
    """The per-step record of the assistant's most recent ``generate`` call.

    Attributes:
        drafters: drafter names; bit ``i`` of a node's origins is ``drafters[i]``.
        prompt: ``(prompt_len,)`` int64 prompt ids.
        first_token: the prefill's token (None until the first step shows it).
        steps: one :class:`StepRecord` per verification step.
    """

    drafters: list[str] = field(default_factory=list)
    prompt: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    first_token: int | None = None
    steps: list[StepRecord] = field(default_factory=list)

    def begin(self, prompt: np.ndarray, drafters: Sequence[str]) -> None:
        """Forget the previous call and start recording one for ``prompt``."""
        self.drafters = list(drafters)
        self.prompt = np.asarray(prompt, dtype=np.int64).copy()
        self.first_token = None
        self.steps = []

    def record(self, outcome: "Outcome") -> None:
        """Append one step (called by the assistant after every verification)."""
        if self.first_token is None and outcome.context.shape[0] > self.prompt.shape[0]:
            self.first_token = int(outcome.context[self.prompt.shape[0]])
        t = outcome.tree
        self.steps.append(StepRecord(
            t.tokens.copy(), t.parents.copy(), t.origins.copy(),
            np.asarray(outcome.accepted, dtype=np.int64).copy(), np.asarray(outcome.committed, dtype=np.int64).copy(),
        ))

    # ------------------------------------------------------------------ reading
    def names(self, mask: int) -> tuple[str, ...]:
        """Drafter names whose bits are set in ``mask``, in drafter order."""
        return tuple(n for i, n in enumerate(self.drafters) if mask >> i & 1)

    @property
    def generated(self) -> np.ndarray:
        """``(new_tokens,)`` int64: the prefill's token, then every step's committed tokens."""
        first = [] if self.first_token is None else [self.first_token]
        return np.concatenate([np.asarray(first, dtype=np.int64)] + [s.committed for s in self.steps])

    def sources(self) -> list[TokenSource]:
        """One :class:`TokenSource` per generated token, in output order.

        Committed token ``j`` of a step is the accepted node ``accepted[j + 1]`` while ``j + 1 <
        len(accepted)`` (a draft, attributed to the drafters that proposed that node); the one
        after the accepted drafts is the model's own (the bonus token, or the single token of a
        step that accepted nothing).
        """
        out = [] if self.first_token is None else [TokenSource(self.first_token, -1, PREFILL)]
        for k, s in enumerate(self.steps):
            drafted = s.accepted.shape[0] - 1
            for j, tok in enumerate(s.committed.tolist()):
                if j < drafted:
                    names = self.names(int(s.origins[s.accepted[j + 1]]))
                    out.append(TokenSource(tok, k, names[0] if names else "unknown drafter", names))
                else:
                    out.append(TokenSource(tok, k, BONUS if drafted > 0 else ONE_TOKEN))
        return out

    def categories(self) -> list[str]:
        """Every source a token can have in this trace, legend order: drafters, then the model's."""
        return [*self.drafters, BONUS, ONE_TOKEN, PREFILL]

    def as_dict(self) -> dict:
        """Plain JSON-ready lists, for saving or embedding."""
        return {
            "drafters": self.drafters,
            "prompt": self.prompt.tolist(),
            "first_token": self.first_token,
            "steps": [{"tokens": s.tokens.tolist(), "parents": s.parents.tolist(), "origins": s.origins.tolist(),
                       "accepted": s.accepted.tolist(), "committed": s.committed.tolist()} for s in self.steps],
        }

    def to_html(self, tokenizer: Decoder | None = None, title: str = "retrodraft trace") -> str:
        """The trace as one self-contained HTML page (see :func:`write_html`)."""
        from .trace_page import render

        return render(self, tokenizer, title=title)


def write_html(trace: Trace, tokenizer: Decoder | None, path: str | Path, title: str = "retrodraft trace") -> Path:
    """Write ``trace`` as one self-contained HTML page and return its path.

    The page shows the output text with every token coloured by its source (each drafter, the
    bonus token, a one-token step), the step and tree size on hover, a legend, and a per-step
    chart of tree size against tokens committed. ``tokenizer`` (anything with ``decode``) turns
    ids into text; without one, tokens show as ``[id]``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(trace.to_html(tokenizer, title=title), encoding="utf-8")
    return path
