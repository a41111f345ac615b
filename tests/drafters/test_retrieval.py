import numpy as np
import pytest
import torch

from helpers import tiny_model
from retrodraft import RetroDraft
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


def test_drafts_what_followed_the_longest_suffix_in_the_datastore():
    d = Retrieval(min_len=1, depth=3)
    d.add_documents([[1, 2, 3, 4, 5], [9, 2, 3, 7, 8], [2, 3, 4, 6]])
    d.begin(np.array([0]), 300)
    tree = d.propose(np.array([5, 2, 3]), 10)
    # "2 3" is followed by 4 (twice) and 7 (once): 4 scores higher
    assert sorted(tree.paths()) == [[4, 5], [4, 6], [7, 8]]
    s = {tuple(tree.tokens[tree.path_to(i)[1:]].tolist()): tree.scores[i] for i in range(1, len(tree))}
    assert s[(4,)] > s[(7,)]
    longer = d.propose(np.array([1, 2, 3]), 10)  # "1 2 3" matches one document only
    assert longer.paths() == [[4, 5]]


def test_prompt_is_a_datastore_too():
    d = Retrieval(min_len=2)
    d.begin(np.array([7, 8, 9, 10, 7, 8]), 300)
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
