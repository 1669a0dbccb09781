"""Scores of a dependency model against a known call graph.

The usual definitions of causal-discovery benchmarks (as in RCAEval): directed
precision/recall/F1 over ordered edges, skeleton F1 over unordered pairs, and the
structural Hamming distance (one per missing, extra or reversed edge).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import combinations

import networkx as nx


def _edges(g: nx.DiGraph | Iterable[tuple[str, str]]) -> set[tuple[str, str]]:
    edges = g.edges() if isinstance(g, nx.Graph) else g
    return {(str(a), str(b)) for a, b in edges if a != b}


def _prf(tp: int, n_pred: int, n_true: int) -> tuple[float, float, float]:
    if tp == 0:
        return 0.0, 0.0, 0.0
    p, r = tp / n_pred, tp / n_true
    return p, r, 2 * p * r / (p + r)


def shd(pred: nx.DiGraph | Iterable[tuple[str, str]], true: nx.DiGraph | Iterable[tuple[str, str]]) -> int:
    """Structural Hamming distance: edge insertions, deletions and reversals needed."""
    p, t = _edges(pred), _edges(true)
    nodes = {v for e in p | t for v in e}
    dist = 0
    for a, b in combinations(sorted(nodes), 2):
        pa = ((a, b) in p, (b, a) in p)
        ta = ((a, b) in t, (b, a) in t)
        if pa != ta:
            dist += 1
    return dist


def evaluate(pred: nx.DiGraph | Iterable[tuple[str, str]],
             true: nx.DiGraph | Iterable[tuple[str, str]]) -> dict[str, float]:
    """Directed and skeleton precision/recall/F1 and SHD of ``pred`` against ``true``."""
    p, t = _edges(pred), _edges(true)
    dp, dr, df = _prf(len(p & t), len(p), len(t))
    ps = {frozenset(e) for e in p}
    ts = {frozenset(e) for e in t}
    sp, sr, sf = _prf(len(ps & ts), len(ps), len(ts))
    return {
        "precision": dp, "recall": dr, "f1": df,
        "skeleton_precision": sp, "skeleton_recall": sr, "skeleton_f1": sf,
        "shd": shd(p, t), "predicted_edges": len(p), "true_edges": len(t),
    }
