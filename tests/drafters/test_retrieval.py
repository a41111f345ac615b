import numpy as np
import pytest
import torch

from helpers import tiny_model
from retrodraft import RetroDraft
from helpers import outcome
from retrodraft.drafters.base import Request
from retrodraft.drafters.retrieval import Retrieval
from retrodraft.errors import ConfigError
from retrodraft.index import build_index


class _Tok:
    name_or_path = "ids"
    all_special_tokens: list = []

    def get_vocab(self):
        return {str(i): i for i in range(300)}

    def __len__(self):
        return 300

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[int(x) for x in t.split()] for t in texts]}


def _docs(*docs):
    return tuple(np.asarray(d, np.int64) for d in docs)


def test_drafts_what_followed_the_longest_suffix_in_the_datastore():
    d = Retrieval(min_len=1, depth=3)
    d.begin(Request(np.array([0]), 300, documents=_docs([1, 2, 3, 4, 5], [9, 2, 3, 7, 8], [2, 3, 4, 6])))
    tree = d.propose(np.array([5, 2, 3]), 10)
    # "2 3" is followed by 4 (twice) and 7 (once): 4 scores higher
    assert sorted(tree.paths()) == [[4, 5], [4, 6], [7, 8]]
    s = {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): tree.scores[i] for i in range(1, len(tree))}
    assert s[(4,)] > s[(7,)]
    longer = d.propose(np.array([1, 2, 3]), 10)  # "1 2 3" matches one document only
    assert longer.paths() == [[4, 5]]


def test_prompt_is_a_datastore_too():
    d = Retrieval(min_len=2)
    d.begin(Request(np.array([7, 8, 9, 10, 7, 8]), 300))
    assert d.propose(np.array([7, 8]), 4).paths() == [[9, 10, 7]]  # the last prompt token is the root


def test_generation_with_an_index_is_exact(tmp_path):
    model = tiny_model("llama", vocab=300)
    torch.manual_seed(0)
    ids = torch.randint(3, 300, (1, 12))
    ref = model.generate(ids, max_new_tokens=40, do_sample=False)
    corpus = tmp_path / "c.txt"
    corpus.write_text(" ".join(str(t) for t in ref[0].tolist()))  # the corpus already holds the answer
    build_index([str(corpus)], _Tok(), tmp_path / "idx", workers=1, progress=False)
    a = RetroDraft(drafters=["retrieval"], index=str(tmp_path / "idx"), budget=8)
    out = model.generate(ids, max_new_tokens=40, do_sample=False, assistant=a)
    assert torch.equal(out, ref)
    assert a.stats.mean_accepted > 4  # long accepted blocks: the corpus is right
    fused = RetroDraft(drafters=["recycling", "lookup", "retrieval"], index=str(tmp_path / "idx"), budget=8)
    assert torch.equal(model.generate(ids, max_new_tokens=40, do_sample=False, assistant=fused), ref)


def test_index_needs_the_retrieval_drafter():
    with pytest.raises(ConfigError, match="retrieval"):
        RetroDraft(drafters=["lookup"], index="anything")


class _Prior:
    """The model's recent top-k, as recycling would report it: known rows only."""

    def __init__(self, table):
        self.table = table  # {(parent, child): p}; parents absent from every key are unknown

    def next_token_estimate(self, parents, children):
        known = {p for p, _ in self.table}
        return np.array([self.table.get((int(p), int(c)), 0.0) if int(p) in known else np.nan
                         for p, c in zip(parents, children)], np.float32)


def _scores(tree):
    return {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): float(tree.scores[i]) for i in range(1, len(tree))}


def test_model_estimates_prune_what_the_model_would_not_say():
    d = Retrieval(min_len=1, depth=2, miss=0.25)
    d.begin(Request(np.array([0]), 300, documents=_docs([1, 2, 3, 4, 5], [9, 2, 3, 4, 6], [2, 3, 7, 8])))
    plain = _scores(d.propose(np.array([5, 2, 3]), 10))
    # The model's top-k after 3 holds 7 (p=0.6) but not 4; nothing is known after 4 or 7.
    d.use_estimator(_Prior({(3, 7): 0.6}))
    pruned = _scores(d.propose(np.array([5, 2, 3]), 10))
    assert plain[(4,)] > plain[(7,)] and pruned[(7,)] > pruned[(4,)]
    assert pruned[(4,)] == pytest.approx(plain[(4,)] * 0.25)
    assert pruned[(7,)] == pytest.approx((1 - (1 - 1 / 3) * (1 - 0.6)) * plain[(7,)] * 3, rel=1e-5)
    # Unknown rows leave the deeper step's count share alone.
    assert pruned[(4, 5)] / pruned[(4,)] == pytest.approx(plain[(4, 5)] / plain[(4,)])
    # miss=1 switches the pruning off.
    d.miss = 1.0
    assert _scores(d.propose(np.array([5, 2, 3]), 10)) == plain


def test_assistant_gives_retrieval_the_recycling_estimates():
    a = RetroDraft(drafters=["recycling", "lookup", "retrieval"])
    assert a.drafters[2].estimator is a.drafters[0]
    assert RetroDraft(drafters=["lookup", "retrieval"]).drafters[1].estimator is None


@pytest.mark.parametrize("miss", [-0.1, 1.5, "x", True])
def test_bad_miss_is_refused(miss):
    with pytest.raises(ConfigError, match="miss must be"):
        Retrieval(miss=miss)


def test_recycling_estimates_come_from_its_matrix():
    from retrodraft.drafters.recycling import TokenRecycling

    r = TokenRecycling(k=2)
    r.begin(Request(np.array([0]), 10))
    logits = torch.full((1, 10), -10.0)
    logits[0, 4], logits[0, 5] = 3.0, 2.0
    from retrodraft.tree import DraftTree

    r.observe(outcome([3], DraftTree.root_only(3), [0], logits))
    est = r.next_token_estimate(np.array([3, 3, 3, 8]), np.array([4, 5, 6, 4]))
    assert est[0] > est[1] > 0 and est[2] == 0 and np.isnan(est[3])
