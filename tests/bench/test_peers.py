"""The SuffixDecoding peer: skipped cleanly without arctic-inference, exact under retrodraft's
verifier with it."""

import sys

import numpy as np
import pytest
import torch

from helpers import tiny_model
from retrodraft import RetroDraft
from retrodraft.bench import bench
from retrodraft.bench.methods import make_method
from retrodraft.bench.peers import MethodUnavailable, suffix_available
from retrodraft.cli import main
from retrodraft.drafters.base import Outcome, Request
from retrodraft.errors import ConfigError
from retrodraft.tree import DraftTree

has_arctic = suffix_available() is None
needs_arctic = pytest.mark.skipif(not has_arctic, reason="arctic-inference not installed (benchmarks/install_arctic.sh)")


@pytest.fixture
def no_arctic(monkeypatch):
    """Make ``import arctic_inference...`` fail as if the package were not installed."""
    for mod in [m for m in sys.modules if m.startswith("arctic_inference")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "arctic_inference", None)


def test_without_arctic_the_method_says_how_to_install_it(no_arctic):
    assert "install_arctic.sh" in suffix_available()
    with pytest.raises(MethodUnavailable, match="install_arctic.sh"):
        make_method("suffix")


def test_without_arctic_bench_skips_the_peer_and_says_so(no_arctic, tiny_folder, tmp_path, capsys):
    out = tmp_path / "skip"
    code = main(["bench", "--model", str(tiny_folder), "--suite", "json", "--requests", "2", "--methods",
                 "greedy,suffix,retrodraft:lookup", "--max-new-tokens", "3", "--out", str(out), "-q", "--no-plots"])
    captured = capsys.readouterr()
    assert code == 0 and "skipping method 'suffix'" in captured.err and "Traceback" not in captured.err
    import json

    res = json.loads((out / "results.json").read_text())
    assert res["config"]["methods"] == ["greedy", "retrodraft:lookup"]
    assert {r["method"] for r in res["records"]} == {"greedy", "retrodraft:lookup"}
    assert "**Skipped** `suffix`" in (out / "report.md").read_text()


def test_bad_suffix_options_are_refused():
    with pytest.raises(ConfigError, match="bad drafter option 'colour'"):
        make_method("suffix[colour=1]")
    if has_arctic:
        with pytest.raises(ConfigError, match="bad budget"):
            make_method("suffix@many")


@needs_arctic
def test_method_names_set_the_published_defaults_and_options():
    m = make_method("suffix")
    (peer,) = m.assistant.drafters
    p = peer.params
    assert (p.max_tree_depth, p.max_cached_requests, p.max_spec_factor, p.max_spec_offset, p.min_token_prob,
            p.use_tree_spec, p.num_speculative_tokens) == (64, 100000, 1.0, 0.0, 0.1, False, 16)
    assert m.assistant.sizing == "fixed" and m.assistant.budget == 16
    m = make_method("suffix[tree=1;depth=32;min_prob=0.2]@8")
    p = m.assistant.drafters[0].params
    assert p.use_tree_spec and p.max_tree_depth == 32 and p.min_token_prob == 0.2 and m.assistant.budget == 8
    assert make_method("suffix@auto").assistant.sizing == "auto"


def _outcome(context, committed):
    context = np.asarray(context, dtype=np.int64)
    tree = DraftTree.root_only(int(context[-1]))
    return Outcome(context, tree, np.array([0]), np.asarray(committed, dtype=np.int64),
                   np.zeros((1, 0), np.int32), np.zeros((1, 0), np.float32))


@needs_arctic
def test_outputs_persist_across_requests_and_draft_from_the_global_tree():
    from retrodraft.bench.peers import SuffixDecodingPeer

    peer = SuffixDecodingPeer()
    peer.begin(Request(np.array([1, 2, 3]), 96))
    # the prefill chose 40 (context[-1]); the step committed 41, 42, 43
    peer.observe(_outcome([1, 2, 3, 40], [41, 42, 43]))
    peer.observe(_outcome([1, 2, 3, 40, 41, 42, 43], [44]))
    peer.begin(Request(np.array([9, 9]), 96))  # finalizes the first request; its response stays
    tree = peer.propose(np.array([9, 9, 5, 40, 41, 42]), budget=16)
    # matched [40, 41, 42] (3 tokens) -> at most 3 drafted: 43, 44, nothing after
    assert tree.tokens.tolist() == [42, 43, 44] and tree.parents.tolist() == [-1, 0, 1]
    assert tree.tokens.tolist() == peer.propose(np.array([9, 9, 5, 40, 41, 42]), 16).tokens.tolist()  # no side effects
    assert len(peer.propose(np.array([9, 9, 5, 40, 41, 42]), budget=1)) == 2
    peer.reset()
    peer.begin(Request(np.array([9, 9]), 96))
    assert len(peer.propose(np.array([9, 9, 5, 40, 41, 42]), budget=16)) == 1


@needs_arctic
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("tree", [False, True])
def test_peer_under_retrodraft_verifier_is_exact_and_learns_across_requests(arch, tree):
    from retrodraft.bench.peers import SuffixDecodingPeer, SuffixParams

    model = tiny_model(arch, seed=3)
    rng = np.random.default_rng(0)
    base = rng.integers(3, 90, size=20)
    prompts = [np.concatenate([base, rng.integers(3, 90, size=6)]) for _ in range(2)]
    prompts.append(prompts[0])  # asked again: its answer is in the global tree
    assistant = RetroDraft(drafters=[SuffixDecodingPeer(SuffixParams(use_tree_spec=tree))], budget=16)
    mats = []
    for p in prompts:
        ids = torch.tensor(p[None], dtype=torch.long)
        want = model.generate(ids, max_new_tokens=40, do_sample=False)
        got = model.generate(ids, max_new_tokens=40, do_sample=False, assistant=assistant)
        assert torch.equal(got, want)
        mats.append(assistant.stats.mean_committed)
    assert mats[2] > 4 and mats[2] > mats[0]
