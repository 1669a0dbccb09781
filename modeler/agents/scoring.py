"""Scoring split in three: the modeler turns activity into pair features, neural agents
turn features into probabilities, the modeler turns probabilities into a model.

The three steps are the estimator's public API (:meth:`DependencyModeler.candidates`,
the network's ``predict_proba``, :meth:`DependencyModeler.combine` and
:meth:`DependencyModeler.decide`); the middle one is the only one worth spreading over
hosts (it needs the network and is independent per pair).  This module names them for
the modeler agent and adds what a pool needs on the wire (a network id, bytes).
``tests/modeler/test_scoring_split.py`` pins that the split gives exactly the graph
``DependencyModeler.predict`` gives.
"""

from __future__ import annotations

from collections.abc import Mapping

import networkx as nx
import numpy as np

from masa.activity import Series
from modeler.estimator import Candidates, DependencyModeler, PairFilter, PairScores
from modeler.estimator import combine as _combine

#: What the modeler keeps while neural agents score ``job.features``.
Job = Candidates

__all__ = ["Job", "PairFilter", "combine", "decide", "from_bytes", "make_job", "to_bytes"]


def make_job(model: DependencyModeler, series: Mapping[str, Series],
             keep: PairFilter | None = None) -> Job:
    """Features of the pairs the core would score (after its screening), minus the
    pairs ``keep`` rules out (an enterprise modeler's intra-domain pairs)."""
    return model.candidates(series, keep)


def combine(job: Job, proba: np.ndarray) -> PairScores:
    """Probabilities of both orders averaged, exactly as ``score_pairs`` does."""
    return _combine(job, proba)


def decide(model: DependencyModeler, scores: PairScores,
           connections: Mapping[tuple[str, str], float] | None = None) -> nx.DiGraph:
    """The core's own decision (threshold, pruning, direction, edge attributes)."""
    return model.decide(scores, connections)


def to_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def from_bytes(data: bytes, cols: int) -> np.ndarray:
    a = np.frombuffer(data, dtype="<f8")
    if cols <= 0 or len(a) % cols:
        raise ValueError(f"{len(a)} values do not make rows of {cols}")
    return a.reshape(-1, cols)
