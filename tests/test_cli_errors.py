"""Every command with bad input: one line on stderr, exit status 2, nothing written.

Bad input is caught before any model or tokenizer loads: argparse ``type=`` functions check
types and ranges, and each command checks its paths, names and output folder first. ``CASES``
is the table of ``(command, bad input, argv, what the line must say)``.
"""

from __future__ import annotations

import os
import sys

import pytest

from retrodraft import cli

# {tmp}: the work folder; {file}: a regular file in it; {half}: a folder holding only a partial index;
# {model}: a folder that looks like a model (config.json) but is never loaded.
CASES = [
    # command, bad input, argv, expected fragment of the one line
    ("(none)", "no command", [], "required: COMMAND"),
    ("(none)", "unknown command", ["frobnicate"], "invalid choice"),
    ("models", "no action", ["models"], "required: ACTION"),
    ("models fetch", "missing NAME", ["models", "fetch"], "required: NAME"),
    ("models fetch", "unknown model", ["models", "fetch", "llama-9000"], "unknown model 'llama-9000'"),
    ("models fetch", "cache folder under a file", ["models", "fetch", "smollm2-135m", "--force"], "Not a directory"),
    ("models path", "unknown model", ["models", "path", "nope"], "unknown model 'nope'"),
    ("models list", "unknown option", ["models", "list", "--bogus"], "unrecognized arguments: --bogus"),
    ("demo", "--max-new-tokens 0", ["demo", "--max-new-tokens", "0"], "expected an integer >= 1, got 0"),
    ("demo", "--max-new-tokens abc", ["demo", "--max-new-tokens", "abc"], "got 'abc'"),
    ("demo", "model folder missing", ["demo", "--model", "{tmp}/no-model"], "not a local transformers model folder"),
    ("bench", "--per-category 0", ["bench", "--per-category", "0"], "--per-category: expected an integer >= 1"),
    ("bench", "--humaneval x", ["bench", "--humaneval", "x"], "--humaneval: expected an integer >= 1, got 'x'"),
    ("bench", "--sweep 4,x", ["bench", "--sweep", "4,x"], "--sweep: expected an integer from 0 to 1024, got 'x'"),
    ("bench", "--sweep 2000", ["bench", "--sweep", "2000"], "got 2000"),
    ("bench", "--max-new-tokens -3", ["bench", "--max-new-tokens", "-3"], "expected an integer >= 1, got -3"),
    ("bench", "--threads 0", ["bench", "--threads", "0"], "--threads: expected an integer >= 1"),
    ("bench", "--temperature -1", ["bench", "--temperature", "-1"], "expected a number >= 0"),
    ("bench", "--temperature nan", ["bench", "--temperature", "nan"], "expected a number >= 0"),
    ("bench", "--dtype int8", ["bench", "--dtype", "int8"], "invalid choice: 'int8'"),
    ("bench", "unknown suite", ["bench", "--suite", "nope", "--out", "{tmp}/b"], "unknown suite 'nope'"),
    ("bench", "unknown method", ["bench", "--methods", "greedy,nope", "--out", "{tmp}/b"], "unknown method 'nope'"),
    ("bench", "bad method budget", ["bench", "--methods", "retrodraft:default@x", "--out", "{tmp}/b"], "bad budget"),
    ("bench", "assisted, no --draft-model", ["bench", "--methods", "assisted", "--out", "{tmp}/b"], "--draft-model"),
    ("bench", "--index missing", ["bench", "--index", "{tmp}/no-index", "--out", "{tmp}/b"], "no index at"),
    ("bench", "--index incomplete", ["bench", "--index", "{half}", "--out", "{tmp}/b"], "not a complete"),
    ("bench", "model missing", ["bench", "--model", "{tmp}/no-model", "--out", "{tmp}/b"], "unknown model"),
    ("bench", "--out is a file", ["bench", "--out", "{file}"], "is a file; give a folder path"),
    ("bench", "--out under a file", ["bench", "--out", "{file}/sub"], "is a file, not a folder"),
    ("calibrate", "--prompts 0", ["calibrate", "--prompts", "0"], "--prompts: expected an integer >= 1"),
    ("calibrate", "--nodes 0", ["calibrate", "--nodes", "0"], "--nodes: expected an integer from 1 to 4096"),
    ("calibrate", "--depth x", ["calibrate", "--depth", "x"], "--depth: expected an integer from 1 to 256"),
    ("calibrate", "bad --budgets", ["calibrate", "--budgets", "gpu=x"], "bad --budgets item 'gpu=x'"),
    ("calibrate", "unknown suite", ["calibrate", "--suite", "nope"], "unknown suite 'nope'"),
    ("calibrate", "--out under a file", ["calibrate", "--suite", "qa", "--out", "{file}/x"], "is a file, not a folder"),
    ("calibrate", "model missing", ["calibrate", "--suite", "qa", "--model", "{tmp}/m"], "unknown model"),
    ("cost", "--sizes a,b", ["cost", "--sizes", "a,b"], "--sizes: expected an integer from 1 to 1024, got 'a'"),
    ("cost", "--sizes 1,2000", ["cost", "--sizes", "1,2000"], "got 2000"),
    ("cost", "--past 0", ["cost", "--past", "0"], "--past: expected an integer from 2 to 100000"),
    ("cost", "--threads -1", ["cost", "--threads", "-1"], "--threads: expected an integer >= 1"),
    ("cost", "--plot is a folder", ["cost", "--plot", "{tmp}"], "is a folder; give a file path"),
    ("cost", "--plot under a file", ["cost", "--plot", "{file}/c.png"], "is a file, not a folder"),
    ("cost", "model missing", ["cost", "--model", "{tmp}/no-model"], "unknown model"),
    ("index", "no action", ["index"], "required: COMMAND"),
    ("index build", "no arguments", ["index", "build"], "required: SOURCE, --tokenizer, --out"),
    ("index build", "--workers 0", ["index", "build", "{tmp}", "--tokenizer", "t", "--out", "{tmp}/i", "--workers", "0"],
     "--workers: expected an integer from 1 to 1024, got 0"),
    ("index build", "--workers abc", ["index", "build", "{tmp}", "--tokenizer", "t", "--out", "{tmp}/i", "--workers",
                                      "abc"], "got 'abc'"),
    ("index build", "--shard-tokens 10", ["index", "build", "{tmp}", "--tokenizer", "t", "--out", "{tmp}/i",
                                          "--shard-tokens", "10"], "--shard-tokens: expected an integer >= 1000"),
    ("index build", "source missing", ["index", "build", "{tmp}/nope", "--tokenizer", "char", "--out", "{tmp}/i"],
     "does not exist"),
    ("index build", "glob matching nothing", ["index", "build", "{tmp}/*.zzz", "--tokenizer", "char", "--out",
                                              "{tmp}/i"], "matches no file"),
    ("index build", "sources without text", ["index", "build", "{tmp}/bin", "--tokenizer", "char", "--out", "{tmp}/i",
                                             "-q"],
     "no text to index"),
    ("index build", "tokenizer missing", ["index", "build", "{file}", "--tokenizer", "{tmp}/no-tok", "--out",
                                          "{tmp}/i"], "unknown model"),
    ("index build", "--out under a file", ["index", "build", "{file}", "--tokenizer", "t", "--out", "{file}/i"],
     "is a file, not a folder"),
    ("index build", "--out exists", ["index", "build", "{file}", "--tokenizer", "t", "--out", "{half}"],
     "already exists; pass --force"),
    ("index info", "missing folder", ["index", "info", "{tmp}/nope"], "no index at"),
    ("index info", "a file", ["index", "info", "{file}"], "is a file, not an index folder"),
    ("index info", "partial index", ["index", "info", "{half}"], "not a complete retrodraft index"),
    ("index verify", "missing folder", ["index", "verify", "{tmp}/nope"], "no index at"),
    ("index query", "missing text", ["index", "query", "{half}"], "required: text"),
    ("index query", "--depth 0", ["index", "query", "{half}", "x", "--depth", "0"], "--depth: expected an integer"),
    ("index query", "--max-matches x", ["index", "query", "{half}", "x", "--max-matches", "x"], "got 'x'"),
    ("index query", "--top -1", ["index", "query", "{half}", "x", "--top", "-1"], "--top: expected an integer >= 1"),
    ("index query", "missing folder", ["index", "query", "{tmp}/nope", "x"], "no index at"),
]

TRACE_CASES = [
    ("trace", "no prompt", ["trace", "--out", "{tmp}/t.html"], "one of the arguments --prompt --file is required"),
    ("trace", "--prompt and --file", ["trace", "--prompt", "x", "--file", "{file}", "--out", "{tmp}/t.html"],
     "not allowed with argument"),
    ("trace", "no --out", ["trace", "--prompt", "x"], "required: --out"),
    ("trace", "--max-new-tokens 0", ["trace", "--prompt", "x", "--out", "{tmp}/t.html", "--max-new-tokens", "0"],
     "--max-new-tokens: expected an integer from 1"),
    ("trace", "--budget x", ["trace", "--prompt", "x", "--out", "{tmp}/t.html", "--budget", "x"],
     "--budget: expected an integer from 0 to 1024"),
    ("trace", "--sizing x", ["trace", "--prompt", "x", "--out", "{tmp}/t.html", "--sizing", "x"], "invalid choice"),
    ("trace", "--file missing", ["trace", "--file", "{tmp}/nope.txt", "--out", "{tmp}/t.html"], "nope.txt"),
    ("trace", "empty prompt", ["trace", "--prompt", "", "--out", "{tmp}/t.html"], "empty"),
    ("trace", "--out is a folder", ["trace", "--prompt", "x", "--model", "{model}", "--out", "{tmp}"],
     "is a folder; give a file path"),
    ("trace", "model missing", ["trace", "--prompt", "x", "--model", "{tmp}/m", "--out", "{tmp}/t.html"],
     "unknown model"),
]

EXPORT_CASES = [
    ("export", "no arguments", ["export"], "required: MODEL, --out"),
    ("export", "--save-every -1", ["export", "{model}", "--out", "{tmp}/e", "--save-every", "-1"],
     "--save-every: expected an integer >= 0"),
    ("export", "--budget x", ["export", "{model}", "--out", "{tmp}/e", "--budget", "x"], "--budget: expected an integer"),
    ("export", "model missing", ["export", "{tmp}/no-model", "--out", "{tmp}/e"], "no-model"),
    ("export", "--out under a file", ["export", "{model}", "--out", "{file}/e"], "f.txt"),
]

STATE_CASES = [
    ("state", "no action", ["state"], "required: ACTION"),
    ("state info", "missing PATH", ["state", "info"], "required: PATH"),
    ("state info", "missing folder", ["state", "info", "{tmp}/nope"], "nope"),
    ("state info", "not a state", ["state", "info", "{half}"], "half"),
]

_COMMANDS = set(cli.build_parser()._subparsers._group_actions[0].choices)
ALL_CASES = CASES + [c for group in (TRACE_CASES, EXPORT_CASES, STATE_CASES) for c in group
                     if c[0].split()[0] in _COMMANDS]


class CharTokenizer:
    """A tokenizer stand-in so `index build` cases run without a real one."""

    name_or_path = "char"
    all_special_tokens: list[str] = []

    def get_vocab(self):
        return {chr(i): i for i in range(256)}

    def __len__(self):
        return 256

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[ord(c) % 256 for c in t] for t in texts]}


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An empty work folder with a file, a binary-only folder and a partial index; the model
    cache under a regular file (nothing can be fetched into it)."""
    from retrodraft import models

    (tmp_path / "f.txt").write_text("def f(x):\n    return x\n")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "b.bin").write_bytes(b"\x00\x01")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "shard-00000.tokens.npy").write_bytes(b"")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # passes the name check; never loaded
    monkeypatch.setenv("RETRODRAFT_CACHE", str(tmp_path / "f.txt" / "cache"))
    real = models.load_tokenizer
    monkeypatch.setattr(models, "load_tokenizer", lambda name: CharTokenizer() if name == "char" else real(name))
    return tmp_path


def _snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


def _expand(argv, place):
    return [a.format(tmp=place, file=place / "f.txt", half=place / "half", model=place / "model") for a in argv]


@pytest.mark.parametrize("command,bad,argv,expect", ALL_CASES, ids=[f"{c[0]}: {c[1]}" for c in ALL_CASES])
def test_bad_input_is_one_line_exit_2_nothing_written(place, capsys, command, bad, argv, expect):
    before = _snapshot(place)
    assert cli.main(_expand(argv, place)) == 2
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith("retrodraft") and "error: " in err and "Traceback" not in err
    assert expect in err, err
    assert out == ""
    assert _snapshot(place) == before, "bad input must not write anything"


def test_every_command_is_covered():
    covered = {c[0].split()[0] for c in ALL_CASES}
    assert _COMMANDS <= covered, f"add cases for {_COMMANDS - covered}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads and writes through file permissions")
def test_unreadable_index_and_unwritable_out(place, capsys):
    idx = place / "half"
    (idx / "header.json").write_text("{}")
    (idx / "header.json").chmod(0)
    assert cli.main(["index", "info", str(idx)]) == 2
    assert "unreadable" in capsys.readouterr().err
    locked = place / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert cli.main(["index", "build", str(place / "f.txt"), "--tokenizer", "char", "--out",
                         str(locked / "i")]) == 2
        assert "is not writable" in capsys.readouterr().err
        assert cli.main(["bench", "--out", str(locked / "b")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


# ---------------------------------------------------------------- missing optional dependencies
@pytest.mark.parametrize("module,extra", sorted(cli.EXTRAS.items()))
def test_a_missing_optional_dependency_names_the_extra(monkeypatch, capsys, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails as if not installed

    def needs_it(args):
        __import__(module)

    monkeypatch.setattr(cli, "_cmd_models_list", needs_it)
    assert cli.main(["models", "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"retrodraft: error: this needs the optional package {module!r}, which is not installed: " \
                  f"pip install 'retrodraft[{extra}]'\n"


def test_index_build_without_pydivsufsort(place, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "pydivsufsort", None)
    argv = ["index", "build", str(place / "f.txt"), "--tokenizer", "char", "--out", str(place / "i"), "-q",
            "--workers", "1"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'retrodraft[index]'" in err
    assert not (place / "i").exists() and not list(place.glob(".i.partial-*"))


def test_the_library_names_the_extra_too(monkeypatch):
    from retrodraft.index import suffix_array

    monkeypatch.setitem(sys.modules, "pydivsufsort", None)
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'retrodraft\[index\]'"):
        suffix_array(__import__("numpy").arange(5, dtype="int32"))


def test_an_unexpected_exception_is_one_line_exit_1(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(cli, "_cmd_models_list", broken)
    monkeypatch.delenv("RETRODRAFT_DEBUG", raising=False)
    assert cli.main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: ZeroDivisionError" in err and "RETRODRAFT_DEBUG=1" in err
    monkeypatch.setenv("RETRODRAFT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["models", "list"])
