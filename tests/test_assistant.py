import warnings

import numpy as np
import pytest
import torch

from helpers import OracleDrafter, RandomDrafter, outcome, tiny_model
from retrodraft import ConfigError, RetroDraft
from retrodraft.assistant import AUTO_MAX_NODES, BUDGET_PRESETS, MAX_BUDGET, Stats
from retrodraft.drafters.base import Request
from retrodraft.drafters.stand import Stand
from retrodraft.shape import TreeShape
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
    assert a.sizing == "auto" and a.budget == AUTO_MAX_NODES and a.budget_for(tiny_model("llama")) == AUTO_MAX_NODES


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


@pytest.mark.parametrize("old, sizing", [("auto", "auto"), ("preset", "preset")])
def test_old_budget_policies_still_work_with_a_warning(old, sizing):
    with pytest.warns(DeprecationWarning, match="sizing"):
        a = RetroDraft(budget=old)
    assert a.sizing == sizing


def test_old_spellings_warn_and_keep_working():
    shape = TreeShape([(0,), (1,)])
    with pytest.warns(DeprecationWarning, match="shape="):
        a = RetroDraft(drafters=["recycling"], tree=shape)
    assert a.shape is shape
    with pytest.warns(DeprecationWarning, match="max_nodes"):
        b = RetroDraft(max_nodes=5)
    assert b.sizing == "auto" and b.budget == 5
    stats = Stats(committed=[1, 3])
    with pytest.warns(DeprecationWarning, match="committed"):
        assert stats.accepted == [1, 3]
    assert stats.mean_accepted == stats.mean_committed == 2.0


def test_preset_budget_follows_device_and_dtype():
    a = RetroDraft(sizing="preset")
    assert a.budget_for(tiny_model("llama")) == BUDGET_PRESETS["cpu-float32"]
    assert a.budget_for(tiny_model("llama", dtype=torch.bfloat16)) == BUDGET_PRESETS["cpu-bfloat16"]


@pytest.mark.parametrize("max_nodes", [0, MAX_BUDGET + 1, 3.0, True])
def test_out_of_range_max_nodes_are_refused(max_nodes):
    with pytest.raises(ConfigError, match="max_nodes must be"):
        RetroDraft(max_nodes=max_nodes)


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


class OldStyle(OracleDrafter):
    """A user drafter written against the old interface."""

    def begin(self, prompt, vocab_size):
        self.began = (len(prompt), vocab_size, self.sampling_temperature)

    def observe(self, tree, accepted, logits):
        self.seen = getattr(self, "seen", 0) + 1
        assert logits.shape == (len(tree), 96)


def test_a_drafter_with_the_old_interface_still_works_with_a_warning():
    model = tiny_model("llama")
    ids = torch.randint(3, 96, (1, 12), generator=torch.Generator().manual_seed(1))
    ref = model.generate(ids, max_new_tokens=20, do_sample=False)
    d = OldStyle(ref[0, 12:].tolist(), 12, 96)
    with pytest.warns(DeprecationWarning, match="old"):
        a = RetroDraft(drafters=[d, "recycling"], budget=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the warning came once, at construction
        out = model.generate(ids, max_new_tokens=20, do_sample=False, assistant=a)
    assert torch.equal(out, ref)
    assert d.began == (12, 96, None) and d.seen == a.stats.steps
