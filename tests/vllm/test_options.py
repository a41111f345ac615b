"""Options are checked in the caller's process and survive the trip through the class name."""

import json

import pytest

from retrodraft.errors import ConfigError
from retrodraft.vllm import serve_command, speculative_config
from retrodraft.vllm.options import VllmOptions, decode, encode
from retrodraft.vllm import proposer


def test_defaults_use_the_plain_class():
    spec = speculative_config()
    assert spec == {"method": "custom_class", "model": "retrodraft.vllm.proposer.RetroDraftProposer",
                    "num_speculative_tokens": 16}


def test_options_round_trip_through_the_class_name(tmp_path):
    spec = speculative_config(drafters=["lookup"], num_speculative_tokens=8, stats=tmp_path / "s.json",
                              min_score=0.3, batch_tokens=32)
    name = spec["model"].rsplit(".", 1)[1]
    assert name.isidentifier() and spec["num_speculative_tokens"] == 8
    cls = getattr(proposer, name)
    assert cls.options == VllmOptions(drafters=("lookup",), stats=str(tmp_path / "s.json"), min_score=0.3,
                                      batch_tokens=32)
    assert issubclass(cls, proposer.RetroDraftProposer) and getattr(proposer, name) is cls
    assert decode(encode(cls.options)) == cls.options


@pytest.mark.parametrize("kwargs, words", [
    ({"drafters": ["recycling"]}, "cannot run inside vLLM"),
    ({"drafters": ["lookup", "lookup"]}, "repeats"),
    ({"num_speculative_tokens": 0}, "num_speculative_tokens"),
    ({"min_score": 2}, "min_score"),
    ({"cut": "sum"}, "cut must be one of"),
    ({"colour": "red"}, "unknown option"),
    ({"state": "somewhere"}, "pass model="),
])
def test_a_bad_option_is_one_line(kwargs, words):
    with pytest.raises(ConfigError) as e:
        speculative_config(**kwargs)
    assert words in str(e.value) and "\n" not in str(e.value)


def test_a_forged_class_name_is_refused():
    with pytest.raises(ConfigError):
        decode("RetroDraft_zz")
    with pytest.raises(AttributeError):
        getattr(proposer, "Nothing")


def test_the_serve_line_carries_the_config():
    line = serve_command("org/model", drafters=["history"], num_speculative_tokens=4)
    assert serve_command("m", cpu_build=True).startswith("python -m vllm.entrypoints.openai.api_server --model m ")
    assert line.startswith("vllm serve org/model --speculative-config '")
    spec = json.loads(line.split("--speculative-config ", 1)[1].strip("'"))
    assert spec == speculative_config(drafters=["history"], num_speculative_tokens=4)


def test_the_readme_shows_the_server_lines_as_serve_command_prints_them():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert serve_command("MODEL") + "\n" in readme
    assert serve_command("MODEL", cpu_build=True) + "\n" in readme
