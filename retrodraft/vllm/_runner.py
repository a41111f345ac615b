"""The one place that reads vLLM internals: which request each batch row holds.

A custom proposer gets token ids per batch row, but no request ids and no end-of-request
signal, while rows are reused and compacted between steps. vLLM's model runner knows both: its
persistent batch (``runner.input_batch.req_ids``, one id per row) and its live requests
(``runner.requests``, a dict whose entries are removed when a request finishes). The runner calls
``drafter.load_model(model)`` on itself, so the proposer finds it as the caller's ``self``.

Tested with vLLM 0.32.x (:data:`TESTED`); with any other version :func:`attach` returns None
and the proposer falls back to content matching (:mod:`retrodraft.vllm.rows`), which it logs.
tests/vllm/test_runner.py fails loudly when these attributes change.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["TESTED", "RunnerView", "attach", "version_supported"]

#: vLLM versions whose runner internals this module was checked against (prefix match).
TESTED = ("0.32.",)


def version_supported(version: str) -> bool:
    """True when ``version`` (``vllm.__version__``) is one this adapter was tested with."""
    return any(version.startswith(v) for v in TESTED)


class RunnerView:
    """Read-only view of the runner's request bookkeeping.

    Args:
        runner: vLLM's (GPU or CPU) model runner, holding ``input_batch`` and ``requests``.
    """

    def __init__(self, runner: Any) -> None:
        self._runner = runner
        # The state objects behind the keys handed out, until the runner drops them: while held,
        # no new request's state can reuse an address (the id in a key).
        self._hold: dict[Any, Any] = {}

    def row_keys(self, n_rows: int) -> list[Any] | None:
        """One key per batch row, ``(request id, its state object)`` so a request aborted and
        resubmitted under the same id is a new one; None for an empty row, or when the batch
        does not have ``n_rows`` rows (then the caller falls back)."""
        ids = self._runner.input_batch.req_ids
        if len(ids) < n_rows:
            return None
        reqs = self._runner.requests
        out = []
        for rid in ids[:n_rows]:
            state = reqs.get(rid) if rid is not None else None
            key = None if state is None else (rid, id(state))
            if key is not None:
                self._hold[key] = state
            out.append(key)
        return out

    def live(self) -> set[Any]:
        """Keys of every request the runner still holds (running, or paused out of the batch);
        call once per step, after :meth:`row_keys`."""
        keys = {(rid, id(state)) for rid, state in self._runner.requests.items()}
        self._hold = {k: v for k, v in self._hold.items() if k in keys}
        return keys


def attach(proposer: Any, depth: int = 2) -> RunnerView | None:
    """The runner that called ``proposer.load_model``, found ``depth`` frames up; None when the
    vLLM version is untested or the caller is not a runner owning this proposer."""
    try:
        import vllm
    except ImportError:
        return None
    if not version_supported(getattr(vllm, "__version__", "")):
        return None
    frame = sys._getframe(depth)
    runner = frame.f_locals.get("self")
    if runner is None or getattr(runner, "drafter", None) is not proposer:
        return None
    if not hasattr(runner, "input_batch") or not isinstance(getattr(runner, "requests", None), dict):
        return None
    return RunnerView(runner)
