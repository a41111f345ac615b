"""``retrodraft index ...``: results on good input, one clear line and exit 2 on bad input."""

import json

import pytest

from retrodraft import models
from retrodraft.cli import main


@pytest.fixture(scope="module")
def tokenizer_name():
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("needs the SmolLM2 tokenizer: run `retrodraft models fetch smollm2-135m`")
    return "smollm2-135m"


@pytest.fixture
def built(tmp_path, tokenizer_name, capsys):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.py").write_text("def add(a, b):\n    return a + b\n\ndef mul(a, b):\n    return a * b\n")
    (src / "bad.py").write_bytes(b"\xff\xfe\xfa not utf8")
    out = tmp_path / "idx"
    assert main(["index", "build", str(src), "--tokenizer", tokenizer_name, "--out", str(out), "-q",
                 "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "tokens/s" in text and "skipped 1 unreadable" in text
    return out


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


def test_info_query_verify(built, capsys):
    assert main(["index", "info", str(built)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["stats"]["files"] == 1 and info["tokenizer"]["fingerprint"]
    assert main(["index", "query", str(built), "def add(a, b):\n    return a"]) == 0
    out = capsys.readouterr().out
    assert "longest match" in out and "+ b" in out
    assert main(["index", "verify", str(built)]) == 0
    assert "ok: 2 files" in capsys.readouterr().out


def test_missing_source(tmp_path, tokenizer_name, capsys):
    code = main(["index", "build", str(tmp_path / "nope"), "--tokenizer", tokenizer_name, "--out",
                 str(tmp_path / "x"), "-q"])
    assert code == 2 and "does not exist" in _err(capsys)


def test_another_tokenizer_is_refused(built, capsys):
    h = json.loads((built / "header.json").read_text())
    h["tokenizer"]["fingerprint"] = "0123456789abcdef"
    (built / "header.json").write_text(json.dumps(h))
    assert main(["index", "query", str(built), "def add"]) == 2
    err = _err(capsys)
    assert "0123456789abcdef" in err and "fingerprint" in err


def test_corrupted_and_future_indexes(built, capsys):
    h = json.loads((built / "header.json").read_text())
    sa = built / h["shards"][0]["files"]["sa"]["name"]
    data = bytearray(sa.read_bytes())
    data[-1] ^= 0xFF
    sa.write_bytes(bytes(data))
    assert main(["index", "verify", str(built)]) == 2 and "checksum" in _err(capsys)
    h["version"] = 7
    (built / "header.json").write_text(json.dumps(h))
    assert main(["index", "info", str(built)]) == 2 and "newer retrodraft" in _err(capsys)


def test_incomplete_index(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    assert main(["index", "info", str(tmp_path / "half")]) == 2 and "not a complete" in _err(capsys)
