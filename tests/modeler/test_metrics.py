import networkx as nx
import pytest

from modeler.metrics import evaluate, shd

TRUE = [("a", "b"), ("b", "c"), ("d", "c")]


def test_perfect_model_scores_one():
    s = evaluate(nx.DiGraph(TRUE), TRUE)
    assert s["f1"] == s["skeleton_f1"] == 1.0 and s["shd"] == 0


def test_reversed_edge_counts_for_skeleton_but_not_direction():
    pred = [("b", "a"), ("b", "c"), ("d", "c")]
    s = evaluate(pred, TRUE)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == pytest.approx(2 / 3)
    assert s["skeleton_f1"] == 1.0
    assert s["shd"] == 1


def test_missing_extra_and_reversed_each_cost_one():
    pred = [("b", "a"), ("a", "c")]  # reversed a-b, extra a-c, missing b-c and d-c
    assert shd(pred, TRUE) == 4
    s = evaluate(pred, TRUE)
    assert s["f1"] == 0.0
    assert s["skeleton_precision"] == 0.5 and s["skeleton_recall"] == pytest.approx(1 / 3)


def test_empty_model_scores_zero_not_nan():
    s = evaluate([], TRUE)
    assert s["f1"] == 0.0 and s["skeleton_f1"] == 0.0 and s["shd"] == 3
