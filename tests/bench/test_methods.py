import pytest

from retrodraft.bench.methods import make_method
from retrodraft.errors import ConfigError


def test_method_names_set_drafters_options_and_budget():
    m = make_method("retrodraft:recycling+retrieval[miss=1;depth=4]@8")
    a = m.assistant
    assert a.budget == 8 and [d.name for d in a.drafters] == ["recycling", "retrieval"]
    assert a.drafters[1].miss == 1.0 and a.drafters[1].depth == 4
    assert a.drafters[1].estimator is a.drafters[0]
    assert make_method("retrodraft:default").assistant.sizing == "auto"
    assert make_method("retrodraft:default").assistant.prefix_cache is not None  # reuse is the default
    off = make_method("retrodraft:lookup@auto16/noreuse").assistant
    assert off.prefix_cache is None and off.budget == 16 and [d.name for d in off.drafters] == ["lookup"]


@pytest.mark.parametrize("name, match", [
    ("retrodraft:retrieval[miss=high]", "values must be numbers"),
    ("retrodraft:retrieval[miss]", "expected key=value"),
    ("retrodraft:retrieval[colour=1]", "bad drafter option"),
    ("retrodraft:retrieval[miss=1", "expected name"),
    ("retrodraft:default@x", "bad budget"),
    ("medusa", "unknown method"),
    ("retrodraft:default/reuse", "only /option is /noreuse"),
])
def test_bad_method_names_are_refused(name, match):
    with pytest.raises(ConfigError, match=match):
        make_method(name)
