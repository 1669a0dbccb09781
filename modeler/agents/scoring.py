"""Scoring split in two: the modeler turns activity into pair features, neural agents
turn features into probabilities, the modeler turns probabilities into a model.

:meth:`modeler.estimator.DependencyModeler.score_pairs` does all three in one process.
The middle step is the only one worth spreading over hosts (it is the one that needs the
network and is independent per pair), so this module reproduces the first and last step
from the core's public pieces (``align``, ``prepare``, ``screen``, ``pair_features``) and
reuses the core's decision.  ``tests/modeler/test_scoring_split.py`` pins that the split
gives exactly the graph ``DependencyModeler.predict`` gives.

What the core could offer instead (wanted): ``DependencyModeler.candidates(series) ->
(prepared, pairs)``, ``DependencyModeler.combine(prepared, pairs, proba) -> PairScores``
and a public ``decide(scores, connections)``; then this adapter shrinks to nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import networkx as nx
import numpy as np

from masa.activity import Series
from modeler.estimator import SCREEN_ABOVE, DependencyModeler, PairScores
from modeler.features import all_pairs, pair_features, prepare, screen
from modeler.grid import align
from modeler.network import PairNetwork

#: keep(names, pairs) -> bool mask of the ordered pairs worth scoring
PairFilter = Callable[[list[str], np.ndarray], np.ndarray]


@dataclass
class Job:
    """Everything the modeler keeps while neural agents score ``features``."""

    names: list[str]
    pairs: np.ndarray  # (P, 2) indices into names; both orders of every pair present
    features: np.ndarray  # (P, F) float64
    strength: np.ndarray  # (P,)
    n_candidates: int  # ordered pairs of the whole grid, before screening or filtering
    t0: float
    t1: float
    r_burst: np.ndarray | None = None  # (N, N) burst correlation at the best lag, all objects
    n_bins: int = 0


def network_id(net: PairNetwork) -> str:
    """A content hash of the network: what a model version names as its network, and
    what a pool checks so that one model is never scored by two different networks."""
    h = hashlib.sha256()
    for a in [net.mean, net.scale, *net.weights, *net.biases, np.array(net.temperature)]:
        h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
    return h.hexdigest()[:16]


def make_job(model: DependencyModeler, series: Mapping[str, Series],
             keep: PairFilter | None = None) -> Job:
    """Features of the pairs the core would score (after its screening), minus the
    pairs ``keep`` rules out (an enterprise modeler's intra-domain pairs)."""
    grid = align(series, model.step)
    prep = prepare(grid)
    n = prep.n
    pairs = screen(prep, model.screen_threshold_) if n > SCREEN_ABOVE else all_pairs(n)
    if keep is not None and len(pairs):
        pairs = pairs[np.asarray(keep(grid.names, pairs), dtype=bool)]
    x = pair_features(prep, pairs) if len(pairs) else np.zeros((0, 0))
    strength = prep.r_level[pairs[:, 0], pairs[:, 1]] ** 2 if len(pairs) else np.zeros(0)
    return Job(grid.names, pairs, x, strength, n * (n - 1), grid.t0, grid.t0 + grid.n_bins * grid.step,
               prep.r_burst, grid.n_bins)


def _scores(job: Job, adjacency: np.ndarray, direction: np.ndarray) -> PairScores:
    """PairScores with whatever whole-grid context this version of the core's decision
    uses (the core is being extended while this adapter exists: pass what it asks for)."""
    have = {f.name for f in fields(PairScores)}
    extra = {k: v for k, v in (("r", job.r_burst), ("n_bins", job.n_bins)) if k in have}
    return PairScores(job.names, job.pairs, adjacency, direction, job.strength, job.n_candidates, **extra)


def combine(job: Job, proba: np.ndarray) -> PairScores:
    """Probabilities of both orders averaged, exactly as ``score_pairs`` does, so the
    answer does not depend on which order a pair was listed in."""
    if len(job.pairs) == 0:
        job.pairs = job.pairs.reshape(0, 2)
        return _scores(job, np.zeros(0), np.zeros(0))
    pos = {(int(i), int(j)): k for k, (i, j) in enumerate(job.pairs)}
    swap = np.array([pos[(int(j), int(i))] for i, j in job.pairs], dtype=np.intp)
    none = 0.5 * (proba[:, 0] + proba[swap, 0])
    fwd = 0.5 * (proba[:, 1] + proba[swap, 2])
    bwd = 0.5 * (proba[:, 2] + proba[swap, 1])
    direction = fwd / np.maximum(fwd + bwd, 1e-12)
    return _scores(job, 1.0 - none, direction)


def decide(model: DependencyModeler, scores: PairScores,
           connections: Mapping[tuple[str, str], float] | None = None) -> nx.DiGraph:
    """The core's own decision (threshold, direction, edge attributes)."""
    return model._decide(scores, connections)  # noqa: SLF001 - see the module docstring


def to_bytes(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def from_bytes(data: bytes, cols: int) -> np.ndarray:
    a = np.frombuffer(data, dtype="<f8")
    if cols <= 0 or len(a) % cols:
        raise ValueError(f"{len(a)} values do not make rows of {cols}")
    return a.reshape(-1, cols)
