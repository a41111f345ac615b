"""The runner adapter: request keys per row from a runner's bookkeeping, and its version gate."""

from types import SimpleNamespace

from retrodraft.vllm import _runner


class _Runner:
    """Stands for vLLM's model runner: it calls ``drafter.load_model`` on itself."""

    def __init__(self, drafter):
        self.drafter = drafter
        self.requests = {"a": object(), "b": object()}
        self.input_batch = SimpleNamespace(req_ids=["b", "a", None])

    def load_model(self):
        self.drafter.load_model(None)


class _Drafter:
    view = None

    def load_model(self, model):
        self.view = _runner.attach(self)


def test_rows_are_keyed_by_request_and_finished_requests_leave_the_live_set(monkeypatch):
    monkeypatch.setattr(_runner, "version_supported", lambda v: True)
    monkeypatch.setitem(__import__("sys").modules, "vllm", SimpleNamespace(__version__="0.32.0"))
    d = _Drafter()
    r = _Runner(d)
    r.load_model()
    assert d.view is not None
    keys = d.view.row_keys(3)
    assert [k and k[0] for k in keys] == ["b", "a", None]
    assert d.view.live() == {keys[0], keys[1]}
    r.requests["b"] = object()  # within one step, aborted and resubmitted under the same id: a new request
    assert d.view.row_keys(1)[0] != keys[0]
    del r.requests["b"]
    assert d.view.live() == {keys[1]}


def test_an_untested_version_or_a_stranger_caller_gives_no_view(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "vllm", SimpleNamespace(__version__="0.99.0"))
    d = _Drafter()
    _Runner(d).load_model()
    assert d.view is None
    monkeypatch.setitem(__import__("sys").modules, "vllm", SimpleNamespace(__version__="0.32.0"))
    d.load_model(None)  # called by no runner
    assert d.view is None
    assert _runner.version_supported("0.32.1") and not _runner.version_supported("0.33.0")
