import numpy as np
import pytest
import torch

from helpers import RandomDrafter, outcome, tiny_model
from retrodraft import ConfigError, RetroDraft
from retrodraft.assistant import BUDGET_PRESETS, DEFAULT_BUDGET, MAX_BUDGET, Stats
from retrodraft.drafters.base import Request
from retrodraft.drafters.stand import Stand
from retrodraft.errors import StateError
from retrodraft.tree import DraftTree


@pytest.mark.parametrize("budget", [-1, MAX_BUDGET + 1, 2.5, "big", True])
def test_out_of_range_budgets_are_refused(budget):
    with pytest.raises(ConfigError, match="budget must be"):
        RetroDraft(budget=budget)


def test_unknown_drafter_names_are_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown drafter 'medusa'.*lookup.*recycling"):
        RetroDraft(drafters=["medusa"])


def test_no_drafters_is_refused():
    with pytest.raises(ConfigError, match="at least one drafter"):
        RetroDraft(drafters=[])


def test_default_is_history_recycling_and_lookup_with_auto_sizing():
    a = RetroDraft()
    assert [d.name for d in a.drafters] == ["history", "recycling", "lookup"]
    assert a.sizing == "auto" and a.budget == DEFAULT_BUDGET and a.budget_for(tiny_model("llama")) == DEFAULT_BUDGET


def test_budget_is_a_node_cap_and_sizing_the_policy():
    assert (RetroDraft(budget=8).sizing, RetroDraft(budget=8).budget) == ("fixed", 8)
    capped = RetroDraft(sizing="auto", budget=12)
    assert capped.sizing == "auto" and capped.budget_for(tiny_model("llama")) == 12
    with pytest.raises(ConfigError, match="needs budget"):
        RetroDraft(sizing="fixed")
    with pytest.raises(ConfigError, match="sizing must be"):
        RetroDraft(sizing="greedy")
    with pytest.raises(ConfigError, match="BUDGET_PRESETS"):
        RetroDraft(sizing="preset", budget=4)


def test_mean_accepted_is_the_mean_committed():
    stats = Stats(committed=[1, 3])
    assert stats.mean_accepted == stats.mean_committed == 2.0


def test_preset_budget_follows_device_and_dtype():
    a = RetroDraft(sizing="preset")
    assert a.budget_for(tiny_model("llama")) == BUDGET_PRESETS["cpu-float32"]
    assert a.budget_for(tiny_model("llama", dtype=torch.bfloat16)) == BUDGET_PRESETS["cpu-bfloat16"]


class Fixed(RandomDrafter):
    def __init__(self, paths, scores):
        self.paths_, self.scores_ = paths, scores

    def propose(self, context, budget):
        return DraftTree.from_paths(int(context[-1]), self.paths_, self.scores_)


def test_draft_fuses_drafters_and_keeps_the_best_within_budget():
    a = RetroDraft(drafters=[Fixed([[1, 2, 3]], [[0.9, 0.8, 0.2]]), Fixed([[1, 4], [5]], [[0.7, 0.6], [0.5]])], budget=4)
    tree = a.draft(np.array([9, 0]), budget=4)
    assert tree.root == 0
    assert sorted(tree.paths()) == [[1, 2], [1, 4], [5]]


def test_draft_respects_max_depth():
    a = RetroDraft(drafters=[Fixed([[1, 2, 3]], [[0.9, 0.8, 0.7]])], budget=10)
    assert a.draft(np.array([0]), 10, max_depth=2).paths() == [[1, 2]]
    assert len(a.draft(np.array([0]), 10, max_depth=0)) == 1


def test_sampled_drafts_are_kept_only_in_an_unfused_tree():
    stand = Stand(max_order=1, k=4, seed=0)
    logits = torch.zeros(1, 8)
    logits[0, 3], logits[0, 4] = 2.0, 1.0
    stand.observe(outcome([5], DraftTree.root_only(5), [0], logits))
    stand.begin(Request(np.array([5]), 8, temperature=1.0))
    alone = RetroDraft(drafters=[stand], budget=4)
    assert alone.draft(np.array([5]), 4).proposals
    fused = RetroDraft(drafters=[stand, Fixed([[7]], [[0.1]])], budget=4)
    tree = fused.draft(np.array([5]), 4)
    assert len(tree) > 2 and not tree.proposals


class Ending(RandomDrafter):
    """Counts begin() / end() calls; raises from propose() when told to."""

    def __init__(self, vocab=96, fail_after=None):
        super().__init__(vocab)
        self.begun = self.ended = self.proposed = 0
        self.fail_after = fail_after

    def begin(self, request):
        self.begun += 1

    def propose(self, context, budget):
        self.proposed += 1
        if self.fail_after is not None and self.proposed > self.fail_after:
            raise RuntimeError("drafter failed")
        return super().propose(context, budget)

    def end(self):
        self.ended += 1


def test_end_is_called_exactly_once_per_call_also_when_generation_raises():
    model = tiny_model("llama")
    ids = torch.randint(3, 96, (1, 10), generator=torch.Generator().manual_seed(2))
    d = Ending()
    a = RetroDraft(drafters=[d], budget=4)
    model.generate(ids, max_new_tokens=8, do_sample=False, assistant=a)
    assert (d.begun, d.ended) == (1, 1)
    model.generate(ids, max_new_tokens=8, do_sample=False, assistant=a)
    assert (d.begun, d.ended) == (2, 2)
    failing = Ending(fail_after=1)
    b = RetroDraft(drafters=[failing], budget=4)
    with pytest.raises(RuntimeError, match="drafter failed"):
        model.generate(ids, max_new_tokens=8, do_sample=False, assistant=b)
    assert (failing.begun, failing.ended) == (1, 1)
    b.end()  # a second end() of the same call is a no-op
    assert failing.ended == 1


def test_a_drafter_whose_begin_raises_still_ends_the_ones_begun():
    class Refusing(Ending):
        def begin(self, request):
            raise RuntimeError("refused")

    first, second = Ending(), Refusing()
    a = RetroDraft(drafters=[first, second], budget=4)
    with pytest.raises(RuntimeError, match="refused"):
        a.begin(Request(np.array([1, 2]), 96))
    assert (first.begun, first.ended, second.ended) == (1, 1, 0)


def test_options_override_for_the_block_and_restore_after():
    a = RetroDraft()
    with a.options(budget=8):
        assert (a.sizing, a.budget) == ("fixed", 8)
        with a.options(sizing="auto", budget=12):
            assert (a.sizing, a.budget) == ("auto", 12)
        assert (a.sizing, a.budget) == ("fixed", 8)
    assert (a.sizing, a.budget) == ("auto", DEFAULT_BUDGET)
    with pytest.raises(ConfigError, match="budget must be"):
        a.options(budget=MAX_BUDGET + 1)  # refused when called, before any block runs
    with pytest.raises(ConfigError, match="sizing must be"):
        a.options(sizing="greedy")
    assert (a.sizing, a.budget) == ("auto", DEFAULT_BUDGET)


def test_options_hold_the_lock_so_other_threads_wait():
    import threading

    a = RetroDraft()
    seen = []
    with a.options(budget=4):
        t = threading.Thread(target=lambda: seen.append(a.lock.acquire(timeout=0.05)))
        t.start()
        t.join()
    assert seen == [False]
    assert a.lock.acquire(timeout=1)
    a.lock.release()


def test_documents_reach_the_drafters_that_read_them_for_the_block_only():
    a = RetroDraft(drafters=["lookup", "retrieval"], budget=8)
    retrieval = a.drafters[1]
    with a.options(documents=[[1, 2, 3, 4, 5], [9, 2, 3, 7, 8]]):
        a.begin(Request(np.array([0]), 300))
    a.end()
    assert sorted(retrieval.propose(np.array([2, 3]), 8).paths()) == [[4, 5], [7, 8]]
    a.begin(Request(np.array([0]), 300))  # no documents outside the block
    assert retrieval.propose(np.array([2, 3]), 8).paths() == []
    with pytest.raises(ConfigError, match="read documents"):
        RetroDraft(drafters=["lookup"]).options(documents=[[1, 2]])
    with pytest.raises(ConfigError, match="token ids"):
        a.options(documents=[[1, -2]])


def test_capabilities_are_declared_not_probed():
    a = RetroDraft(drafters=["recycling", "lookup", "retrieval"])
    assert a.drafters[2].estimator is a.drafters[0]  # the drafter that declares estimates_next_token
    lookup = a.drafters[1]
    assert not lookup.fills_shape and not lookup.estimates_next_token
    assert lookup.next_token_estimate(np.array([1]), np.array([2])) is None
    with pytest.raises(NotImplementedError, match="does not fill a tree shape"):
        lookup.use_shape([(0,)])
    r = RandomDrafter(10)
    assert r.state() == {}
    r.load_state({})  # nothing learnt, nothing to load
    with pytest.raises(StateError, match="learns nothing"):
        r.load_state({"x": np.zeros(2)})
