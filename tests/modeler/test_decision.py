"""The decision step: threshold from calibrated probabilities, pruning of indirect pairs."""

import numpy as np

from modeler.estimator import f1_cut, prune_indirect

IDX = {"a": 0, "b": 1, "c": 2}


def pairs(*names):
    return {frozenset(p): 0.6 for p in names}


def test_f1_cut_keeps_likely_pairs_and_drops_unlikely_ones():
    p = np.array([0.9, 0.8, 0.45, 0.05, 0.02, 0.01])
    cut = f1_cut(p)
    assert 0.05 < cut <= 0.45
    assert 0.2 <= f1_cut(np.full(50, 0.01)) <= 0.5  # nothing likely: nothing is kept
    assert f1_cut(np.array([])) == 0.5


def test_chain_ends_are_pruned_given_the_middle():
    # a -> b -> c with independent noise: r_ac = r_ab * r_bc
    r = np.array([[1, 0.6, 0.36], [0.6, 1, 0.6], [0.36, 0.6, 1]])
    kept = pairs(("a", "b"), ("b", "c"), ("a", "c"))
    kept[frozenset(("a", "c"))] = 0.4
    removed = prune_indirect(kept, set(kept), r, IDX, n_bins=600)
    assert removed == {frozenset(("a", "c"))}


def test_a_real_triangle_is_kept():
    r = np.array([[1, 0.6, 0.7], [0.6, 1, 0.6], [0.7, 0.6, 1]])
    kept = pairs(("a", "b"), ("b", "c"), ("a", "c"))
    assert prune_indirect(kept, set(kept), r, IDX, n_bins=600) == set()


def test_near_copies_are_not_used_to_explain_each_other_away():
    r = np.array([[1, 0.99, 0.98], [0.99, 1, 0.99], [0.98, 0.99, 1]])
    kept = pairs(("a", "b"), ("b", "c"), ("a", "c"))
    assert prune_indirect(kept, set(kept), r, IDX, n_bins=600) == set()


def test_short_recordings_need_stronger_evidence_to_prune():
    r = np.array([[1, 0.6, 0.45], [0.6, 1, 0.6], [0.45, 0.6, 1]])  # r_ac.b ~ 0.14
    kept = pairs(("a", "b"), ("b", "c"), ("a", "c"))
    assert prune_indirect(kept, set(kept), r, IDX, n_bins=100) == {frozenset(("a", "c"))}
    assert prune_indirect(kept, set(kept), r, IDX, n_bins=5000) == set()
