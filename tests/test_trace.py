import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import retrodraft  # noqa: F401  (installs the generate hook)
from helpers import OracleDrafter, RandomDrafter, tiny_model
from retrodraft import RetroDraft, cli, models
from retrodraft.trace import BONUS, ONE_TOKEN, PREFILL, Trace, write_html
from retrodraft.trace_page import token_texts
from retrodraft.tree import DraftTree

VOCAB = 96


# ---------------------------------------------------------------- provenance in the tree
def _origin(tree: DraftTree, path: list[int]) -> int:
    for i in range(1, len(tree)):
        if tree.tokens[tree.path_to(i)[1:]].tolist() == path:
            return int(tree.origins[i])
    raise KeyError(path)


def test_tagged_marks_draft_nodes_and_leaves_the_root_and_the_original():
    t = DraftTree.from_paths(1, [[2, 3], [4]])
    tagged = t.tagged(0b100)
    assert tagged.origins.tolist() == [0, 4, 4, 4]
    assert t.origins.tolist() == [0, 0, 0, 0]
    assert tagged.tagged(1).origins.tolist() == [0, 5, 5, 5]
    with pytest.raises(ValueError, match="32 bits"):
        t.tagged(1 << 32)


def test_merge_ors_the_drafters_of_shared_prefixes():
    a = DraftTree.from_paths(1, [[2, 3]], scores=[[0.9, 0.5]]).tagged(1)
    b = DraftTree.from_paths(1, [[2, 4], [5]], scores=[[0.6, 0.4], [0.3]]).tagged(2)
    m = a.merge(b)
    assert m.origins[0] == 0
    assert _origin(m, [2]) == 3  # both proposed it
    assert _origin(m, [2, 3]) == 1 and _origin(m, [2, 4]) == 2 and _origin(m, [5]) == 2


def test_prune_and_select_carry_origins():
    a = DraftTree.from_paths(0, [[1, 2, 3]], scores=[[0.9, 0.8, 0.1]]).tagged(1)
    b = DraftTree.from_paths(0, [[1, 2], [4, 5]], scores=[[0.9, 0.8], [0.7, 0.6]]).tagged(2)
    p = a.merge(b).prune(3)
    assert sorted(p.paths()) == [[1, 2], [4]]
    assert _origin(p, [1]) == 3 and _origin(p, [1, 2]) == 3 and _origin(p, [4]) == 2


def test_folded_duplicates_or_their_origins():
    t = DraftTree.from_arrays([5, 7, 7, 1], [-1, 0, 0, 2], origins=[0, 1, 4, 8])
    assert t.tokens.tolist() == [5, 7, 1]
    assert t.origins.tolist() == [0, 5, 8]


def test_unknown_origins_default_to_zero_and_bad_shapes_are_refused():
    t = DraftTree(np.array([3, 4]), np.array([-1, 0], np.int32), np.array([0, 1], np.int32), np.ones(2, np.float32))
    assert t.origins.dtype == np.uint32 and t.origins.tolist() == [0, 0]
    with pytest.raises(ValueError, match="origins must have shape"):
        DraftTree(t.tokens, t.parents, t.depths, t.scores, origins=np.zeros(3))


@st.composite
def _trees(draw, root=0):
    n = draw(st.integers(1, 25))
    parents = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, n)]
    tokens = [root] + [draw(st.integers(0, 4)) for _ in range(1, n)]
    scores = [1.0] + [draw(st.floats(0.01, 1.0)) for _ in range(n - 1)]
    return DraftTree.from_arrays(tokens, parents, scores)


@settings(max_examples=120, deadline=None)
@given(_trees(), _trees(), st.integers(0, 30))
def test_every_node_knows_exactly_which_trees_had_its_path(a, b, budget):
    def paths(t):
        return {tuple(t.tokens[t.path_to(i)[1:]].tolist()) for i in range(1, len(t))}

    in_a, in_b = paths(a), paths(b)
    m = a.tagged(1).merge(b.tagged(2)).prune(budget)
    for i in range(1, len(m)):
        path = tuple(m.tokens[m.path_to(i)[1:]].tolist())
        assert int(m.origins[i]) == (path in in_a) * 1 + (path in in_b) * 2


# ---------------------------------------------------------------- the recorder
def _generate(assistant, max_new_tokens=40, seed=3):
    model = tiny_model("llama", vocab=VOCAB, seed=seed)
    ids = torch.tensor([[1, 5, 9, 5, 9, 5, 9, 12, 30, 5, 9]])
    ref = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    if assistant is None:
        return ids, ref, None
    for d in assistant.drafters:
        if isinstance(d, OracleDrafter):
            d.reference, d.prompt_len = ref[0, ids.shape[1]:].tolist(), ids.shape[1]
    out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, assistant=assistant)
    return ids, ref, out


def _traced(trace=True, **kw):
    drafters = [OracleDrafter([], 0, VOCAB, seed=1, miss_every=3), RandomDrafter(VOCAB, seed=2)]
    return RetroDraft(drafters=drafters, budget=8, trace=trace, **kw)


def test_tracing_is_off_by_default_and_start_trace_turns_it_on():
    a = RetroDraft()
    assert a.trace is None
    t = a.start_trace()
    assert isinstance(t, Trace) and a.trace is t


def test_trace_steps_match_the_stats_and_the_output():
    a = _traced()
    ids, ref, out = _generate(a)
    assert torch.equal(out, ref)  # tracing never changes the output
    tr, st_ = a.trace, a.stats
    assert tr.drafters == ["oracle", "random"]
    assert len(tr.steps) == st_.steps
    assert [s.tree_size for s in tr.steps] == st_.tree_sizes
    assert [len(s.committed) for s in tr.steps] == st_.committed
    assert 1 + sum(len(s.committed) for s in tr.steps) == st_.new_tokens
    assert tr.generated.tolist() == out[0, ids.shape[1]:].tolist()
    assert tr.prompt.tolist() == ids[0].tolist()
    for s in tr.steps:
        # the committed drafts are the accepted path's tokens, and every draft node has a drafter
        drafted = s.accepted[1:][: len(s.committed)]
        assert s.tokens[drafted].tolist() == s.committed[: len(drafted)].tolist()
        assert s.origins[0] == 0 and np.all(s.origins[1:] > 0) and np.all(s.origins < 4)


def test_sources_attribute_each_token():
    a = _traced()
    _generate(a)
    src = a.trace.sources()
    assert len(src) == a.stats.new_tokens
    assert src[0].source == PREFILL and src[0].step == -1
    kinds = {s.source for s in src}
    assert "oracle" in kinds and BONUS in kinds and ONE_TOKEN in kinds  # miss_every=3 forces rejections
    for s in src[1:]:
        step = a.trace.steps[s.step]
        if s.source in ("oracle", "random"):
            assert s.source == s.drafters[0]
        else:
            assert s.drafters == ()
            assert (s.source == BONUS) == (len(step.accepted) > 1)


def test_a_second_call_replaces_the_trace():
    a = _traced()
    _generate(a, max_new_tokens=30)
    first = len(a.trace.steps)
    _generate(a, max_new_tokens=8)
    assert len(a.trace.generated) == 8 and len(a.trace.steps) < first


def test_no_drafts_makes_one_token_steps():
    a = RetroDraft(drafters=["lookup"], budget=0, trace=True)
    _generate(a, max_new_tokens=6)
    assert [s.source for s in a.trace.sources()] == [PREFILL] + [ONE_TOKEN] * 5
    assert all(s.tree_size == 1 for s in a.trace.steps)


# ---------------------------------------------------------------- the page
class Words:
    """A stand-in tokenizer: token i reads 'wi '."""

    def decode(self, ids):
        return "".join(f"w{i} " for i in ids)


class Bytes:
    """A stand-in byte-level tokenizer: token i is byte i."""

    def decode(self, ids):
        return bytes(ids).decode("utf-8", errors="replace")


def test_token_texts_keep_multibyte_characters_whole():
    ids = list("aé€!".encode())
    texts = token_texts(ids, Bytes())
    assert len(texts) == len(ids)
    assert "".join(texts) == "aé€!"
    assert texts == ["a", "", "é", "", "", "€", "!"]
    assert token_texts([3, 4], None) == ["[3]", "[4]"]


def test_html_has_one_span_per_token_a_legend_and_one_bar_per_step(tmp_path):
    a = _traced()
    _generate(a)
    path = write_html(a.trace, Words(), tmp_path / "sub" / "trace.html")
    page = path.read_text()
    spans = re.findall(r'<span class="t( shared)?" style="background:[^"]*" data-step="(\d+)" data-tree="(\d+)" '
                       r'data-src="([^"]*)"', page)
    assert len(spans) == a.stats.new_tokens
    src = a.trace.sources()
    assert [s[3] for s in spans] == [s.source for s in src]
    assert [int(s[1]) for s in spans] == [s.step + 1 for s in src]
    assert [int(s[2]) for s in spans[1:]] == [a.trace.steps[s.step].tree_size for s in src[1:]]
    assert page.count('<g class="step"') == a.stats.steps
    for name in ("oracle", "random", "bonus", "one-token step", "prefill"):
        assert f'<li class="key" data-src="{name}">' in page
    # legend counts are the numbers of tokens of each source
    oracle = sum(s.source == "oracle" for s in src)
    assert re.search(rf'data-src="oracle">.*?</span>oracle <b>{oracle}</b>', page)
    # self-contained: no external stylesheet, script, image or font
    assert not re.search(r"<link|<img|\ssrc=|url\(|@import", page)
    assert re.findall(r"https?://[^\s\"']+", page) == ["http://www.w3.org/2000/svg"]
    assert "w5 w9 " in page  # prompt text through the tokenizer
    assert a.trace.to_html(Words()) == page


def test_html_escapes_token_text(tmp_path):
    class Evil:
        def decode(self, ids):
            return "".join("<script>alert(1)</script>" if i == 9 else "&" for i in ids)

    a = RetroDraft(drafters=["lookup"], budget=4, trace=True)
    _generate(a, max_new_tokens=6)
    page = a.trace.to_html(Evil())
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


# ---------------------------------------------------------------- the command
def test_trace_command_needs_a_prompt_and_an_out(capsys):
    assert cli.main(["trace", "--out", "x.html"]) == 2
    assert "--prompt" in capsys.readouterr().err
    assert cli.main(["trace", "--prompt", "x", "--file", "f", "--out", "x.html"]) == 2
    assert cli.main(["trace", "--prompt", "x", "--out", "x.html", "--budget", "lots"]) == 2


def test_trace_command_on_a_missing_file_is_one_line(tmp_path, capsys):
    assert cli.main(["trace", "--file", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "t.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("retrodraft: error:") and err.count("\n") == 1


@pytest.mark.model
def test_trace_command_writes_the_page_for_a_real_model(tmp_path, capsys):
    if models.cached_path("smollm2-135m") is None:
        pytest.skip("SmolLM2-135M is not cached: run `retrodraft models fetch smollm2-135m`")
    out = tmp_path / "trace.html"
    code = cli.main(["trace", "--model", "smollm2-135m", "--prompt", "def add(a, b):\n    return a + b\n\n\ndef sub(",
                     "--max-new-tokens", "24", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    n = int(printed.split()[0])
    page = out.read_text()
    assert page.count('<span class="t') == n
    assert "recycling" in page and "lookup" in page and "def sub(" in page
