"""retrodraft.cli: help texts, one-line errors with exit 2, no tracebacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retrodraft import cli


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RETRODRAFT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("argv", [
    [], ["models"], ["models", "list"], ["models", "fetch"], ["models", "path"], ["demo"],
])
def test_help_for_every_command(argv, capsys):
    assert cli.main([*argv, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: retrodraft")
    assert "example" in out or argv == ["models", "list"]


@pytest.mark.parametrize("command", ["trace", "export"])
def test_drafters_help_names_the_library_default(command, capsys):
    from retrodraft.assistant import DEFAULT_DRAFTERS

    assert cli.main([command, "--help"]) == 0
    assert f"(default: {','.join(DEFAULT_DRAFTERS)}," in " ".join(capsys.readouterr().out.split())


def test_no_command_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert capsys.readouterr().err == ("retrodraft: error: the following arguments are required: COMMAND "
                                       "(see: retrodraft --help)\n")


def test_models_list(empty_cache, capsys):
    assert cli.main(["models", "list"]) == 0
    out = capsys.readouterr().out
    for name in ("smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"):
        assert name in out
    assert "not cached" in out
    assert str(empty_cache) in out


def test_fetch_unknown_model_is_one_line_exit_2(capsys):
    assert cli.main(["models", "fetch", "llama-9000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retrodraft: error: unknown model 'llama-9000'")
    assert "smollm2-135m" in err
    assert "Traceback" not in err


def test_path_of_uncached_model_says_how_to_fetch(empty_cache, capsys):
    assert cli.main(["models", "path", "smollm2-135m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retrodraft: error:")
    assert "retrodraft models fetch smollm2-135m" in err


def test_path_of_cached_model(empty_cache, capsys):
    folder = empty_cache / "models" / "smollm2-135m"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    assert cli.main(["models", "path", "smollm2-135m"]) == 0
    assert capsys.readouterr().out.strip() == str(folder)


def test_demo_of_uncached_model_exits_2(empty_cache, capsys):
    assert cli.main(["demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retrodraft: error:") and "Traceback" not in err


def test_keyboard_interrupt_exits_130_quietly(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_models_list", interrupted)
    assert cli.main(["models", "list"]) == 130
    assert "Traceback" not in capsys.readouterr().err


def test_module_entry_point_has_no_traceback(empty_cache):
    # a real process, as a user runs it
    r = subprocess.run([sys.executable, "-m", "retrodraft.cli", "models", "path", "nope"],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.startswith("retrodraft: error: unknown model 'nope'")
    assert "Traceback" not in r.stderr
