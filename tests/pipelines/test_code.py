import numpy as np
import pytest
import torch

from retrodraft import RetroDraft, models
from retrodraft.drafters.base import Request
from retrodraft.pipelines.code import build_code_index, code_assistant, stdlib_path


def test_stdlib_is_on_disk():
    assert (stdlib_path() / "os.py").is_file()


def test_completion_drafting_from_an_indexed_code_base_is_exact(tmp_path):
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("run `retrodraft models fetch smollm2-135m`")
    src = tmp_path / "repo"
    src.mkdir()
    for name in ("bisect.py", "heapq.py", "textwrap.py"):
        (src / name).write_text((stdlib_path() / name).read_text())
    (src / "test").mkdir()
    (src / "test" / "test_x.py").write_text("excluded = True\n")
    h = build_code_index("smollm2-135m", tmp_path / "idx", sources=[str(src)], progress=False, workers=1)
    assert h["stats"]["files"] == 3  # tests excluded
    model, tok = models.load("smollm2-135m")
    stub = 'def insort_right(a, x, lo=0, hi=None, *, key=None):\n    """Insert item x in list a, and keep it sorted'
    ids = tok(stub, return_tensors="pt").input_ids
    ref = model.generate(ids, max_new_tokens=48, do_sample=False)
    a = code_assistant(tmp_path / "idx", budget=8)  # a fixed budget: this checks the drafting, not the sizing
    assert torch.equal(model.generate(ids, max_new_tokens=48, do_sample=False, assistant=a), ref)
    assert a.stats.mean_accepted > 1.5


def _repo(tmp_path):
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "io.py").write_text(
        "def parse_header(line, sep=':'):\n    key, _, value = line.partition(sep)\n    return key.strip(), value\n\n"
        "class Frobnicator:\n    def frobnicate(self, level):\n        return level * 2\n")
    (src / "pkg" / "broken.py").write_text("def oops(:\n")
    (src / "tests").mkdir()
    (src / "tests" / "test_io.py").write_text("def test_parse_header_helper():\n    pass\n")
    return src


def test_symbol_table_finds_whole_identifiers_in_a_prompt(tmp_path):
    from retrodraft.pipelines.code import SymbolTable

    table = SymbolTable.from_sources([_repo(tmp_path)])
    assert sorted(s.name for s in table.symbols) == ["Frobnicator", "frobnicate", "parse_header"]  # tests, broken skipped
    text = "h = parse_headers(x)  # not it\nk, v = parse_header(line)\nf = Frobnicator()\nfrobnicated = 1\n"
    found = table.mentioned(text)
    assert [s.name for s in found] == ["parse_header", "Frobnicator"]
    assert found[0].source.startswith("def parse_header(line, sep=':'):")
    assert table.mentioned(text, limit=1)[0].name == "parse_header"
    assert SymbolTable([]).mentioned(text) == []


def test_symbol_context_feeds_the_retrieval_datastore(tmp_path):
    from retrodraft.errors import ConfigError
    from retrodraft.pipelines.code import SymbolTable, symbol_context

    class Chars:  # one token per character
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": [ord(c) for c in text]}

    table = SymbolTable.from_sources([_repo(tmp_path)])
    a = code_assistant()
    added, documents = symbol_context(table, "use parse_header here", Chars())
    assert [s.name for s in added] == ["parse_header"]
    retrieval = a.drafters[2]
    with a.options(documents=documents):
        a.begin(Request(np.array([1]), 300))
    ctx = np.array([ord(c) for c in "key, _, value = line."])
    tree = retrieval.propose(ctx, 8)
    assert "".join(map(chr, tree.paths()[0])) == "partitio"  # depth 8
    with pytest.raises(ConfigError, match="retrieval"):
        RetroDraft(drafters=["lookup"]).options(documents=documents)
