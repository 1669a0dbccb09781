"""The dependency modeler: ``fit`` on labelled recordings, ``predict`` a ``networkx.DiGraph``.

An edge ``A -> B`` means *A depends on B* (A calls B).  Each edge carries

* ``confidence``: probability that A and B depend on each other in some direction;
* ``direction_confidence``: probability that it is A that depends on B, given that they
  are dependent (near 0.5 where activity cannot tell, e.g. a caller that forwards every
  request: the two activities are then the same up to noise);
* ``probability``: their product, the probability that A depends on B;
* ``strength``: share of the variance of the two activities that moves together;
* ``evidence``: what the edge rests on, ``activity`` and/or ``connection``.

The decision threshold comes from the calibrated probabilities themselves (the cut that
maximises the expected F1, see :func:`f1_cut`), never from the truth of the data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import networkx as nx
import numpy as np

from masa.activity import ActivityError, Series
from modeler import evidence
from modeler.features import (
    FEATURE_NAMES,
    all_pairs,
    first_order_partial,
    pair_features,
    prepare,
    screen,
)
from modeler.grid import align
from modeler.network import PairNetwork

Recording = tuple[Mapping[str, Series], Iterable[tuple[str, str]]]

#: Up to this many objects every pair goes to the network; above, screening first.
SCREEN_ABOVE = 60


@dataclass
class PairScores:
    """Scores of every examined ordered pair, before the decision."""

    names: list[str]
    pairs: np.ndarray  # (P, 2) indices, both orders present
    adjacency: np.ndarray  # P(i, j dependent in some direction)
    direction: np.ndarray  # P(i depends on j | dependent)
    strength: np.ndarray
    n_candidates: int  # ordered pairs before screening
    r: np.ndarray | None = None  # burst correlation at the best lag, all objects
    n_bins: int = 0
    observed_bins: int = 0  # median per object of bins resting on its own samples

    def matrix(self, values: np.ndarray) -> np.ndarray:
        """``values`` per examined ordered pair as an N x N matrix (0 where not examined)."""
        out = np.zeros((len(self.names), len(self.names)))
        out[self.pairs[:, 0], self.pairs[:, 1]] = values
        return out


#: keep(names, pairs) -> bool mask of the ordered pairs worth scoring
PairFilter = Callable[[list[str], np.ndarray], np.ndarray]


@dataclass
class Candidates:
    """The pairs to score and their features, with the whole-grid context the decision uses."""

    names: list[str]
    pairs: np.ndarray  # (P, 2) indices into names; both orders of every pair present
    features: np.ndarray  # (P, F)
    strength: np.ndarray  # (P,) shared variance at the best lag
    n_candidates: int  # ordered pairs of the whole grid, before screening or filtering
    t0: float
    t1: float
    r_burst: np.ndarray | None = None  # (N, N) burst correlation at the best lag, all objects
    n_bins: int = 0
    observed_bins: int = 0


def combine(cand: Candidates, proba: np.ndarray) -> PairScores:
    """Network output (none, forward, backward per ordered pair) -> pair scores, the two
    orders of each pair averaged so that the answer does not depend on the order."""
    pairs = cand.pairs.reshape(-1, 2)
    if len(pairs) == 0:
        return PairScores(cand.names, pairs, np.zeros(0), np.zeros(0), cand.strength,
                          cand.n_candidates, cand.r_burst, cand.n_bins, cand.observed_bins)
    pos = {(int(i), int(j)): k for k, (i, j) in enumerate(pairs)}
    swap = np.array([pos[(int(j), int(i))] for i, j in pairs], dtype=np.intp)
    none = 0.5 * (proba[:, 0] + proba[swap, 0])
    fwd = 0.5 * (proba[:, 1] + proba[swap, 2])
    bwd = 0.5 * (proba[:, 2] + proba[swap, 1])
    direction = fwd / np.maximum(fwd + bwd, 1e-12)
    return PairScores(cand.names, pairs, 1.0 - none, direction, cand.strength, cand.n_candidates,
                      cand.r_burst, cand.n_bins, cand.observed_bins)


def labels_for(names: list[str], pairs: np.ndarray, truth: Iterable[tuple[str, str]]) -> np.ndarray:
    """Class per ordered pair: 0 none, 1 first depends on second, 2 the reverse."""
    idx = {n: k for k, n in enumerate(names)}
    edges = {(idx[a], idx[b]) for a, b in truth if a in idx and b in idx and a != b}
    fwd = np.array([(int(i), int(j)) in edges for i, j in pairs], dtype=bool)
    bwd = np.array([(int(j), int(i)) in edges for i, j in pairs], dtype=bool)
    y = np.zeros(len(pairs), dtype=int)
    y[bwd] = 2
    y[fwd] = 1  # a mutual dependency counts as forward for both orders
    return y


def recording_features(series: Mapping[str, Series], truth: Iterable[tuple[str, str]],
                       step: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and screening scores of every ordered pair of one recording."""
    grid = align(series, step)
    prep = prepare(grid)
    pairs = all_pairs(prep.n)
    x = pair_features(prep, pairs)
    y = labels_for(grid.names, pairs, list(truth))
    s = prep.screen_score()[pairs[:, 0], pairs[:, 1]]
    return x, y, s


def calibration_split(xs: list[np.ndarray], ys: list[np.ndarray],
                      random_state: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_cal, y_cal)`` from per-recording blocks: about one block in
    five, at least one, never all, calibrates instead of training, whole blocks only, so
    the temperature is measured on topologies the classifier did not see."""
    if len(xs) < 2:
        raise ValueError("training needs at least two recordings")
    rng = np.random.default_rng(random_state)
    cal = rng.random(len(xs)) < 0.2
    cal[rng.integers(len(xs))] = True
    if cal.all():
        cal[0] = False

    def part(blocks: list[np.ndarray], which: bool) -> np.ndarray:
        return np.concatenate([b for b, c in zip(blocks, cal, strict=True) if c == which])

    return part(xs, False), part(ys, False), part(xs, True), part(ys, True)


class DependencyModeler:
    """Neural dependency inference from activity series, in the style of scikit-learn."""

    def __init__(self, hidden: tuple[int, ...] = (96, 48), alpha: float = 1e-3,
                 step: float | None = None, threshold: float | str = "f1",
                 screen_recall: float = 0.99, prune: bool = True, random_state: int = 0) -> None:
        self.hidden = hidden
        self.alpha = alpha
        self.step = step
        self.threshold = threshold
        self.screen_recall = screen_recall
        self.prune = prune
        self.random_state = random_state
        self.network_: PairNetwork | None = None
        self.screen_threshold_: float = 0.0

    # -- training -------------------------------------------------------------------

    def fit(self, recordings: Iterable[Recording]) -> DependencyModeler:
        """Learn from recordings with known call graphs (simulated or testbed)."""
        xs, ys, ss = [], [], []
        for series, truth in recordings:
            x, y, s = recording_features(series, truth, self.step)
            xs.append(x)
            ys.append(y)
            ss.append(s)
        return self.fit_features(xs, ys, ss)

    def fit_features(self, xs: list[np.ndarray], ys: list[np.ndarray],
                     scores: list[np.ndarray]) -> DependencyModeler:
        """Train from per-recording feature blocks (lets ``masa train`` cache features).

        One recording in five, never split across, calibrates the temperature, so the
        calibration is measured on topologies the network did not see."""
        x_tr, y_tr, x_cal, y_cal = calibration_split(xs, ys, self.random_state)
        self.network_ = PairNetwork.train(
            x_tr, y_tr, x_cal, y_cal, hidden=self.hidden, alpha=self.alpha,
            random_state=self.random_state, feature_names=FEATURE_NAMES,
        )
        pos = np.concatenate([s[y > 0] for s, y in zip(scores, ys, strict=True)])
        self.screen_threshold_ = float(np.quantile(pos, 1 - self.screen_recall)) if len(pos) else 0.0
        self.network_.meta["screen_threshold"] = self.screen_threshold_
        return self

    # -- persistence ----------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        self._check()
        self.network_.save(path)

    @classmethod
    def load(cls, path: str | Path | None, **params) -> DependencyModeler:
        """A network trained with `masa train`; ``None``: the shipped one (:meth:`default`)."""
        if path is None:
            return cls.default(**params)
        net = PairNetwork.load(path)
        if net.feature_names != FEATURE_NAMES:
            raise ValueError(f"{path}: model was trained on other features; retrain with `masa train`")
        model = cls(**params)
        model.network_ = net
        model.screen_threshold_ = float(net.meta.get("screen_threshold", 0.0))
        return model

    @classmethod
    def default(cls, **params) -> DependencyModeler:
        """The network shipped inside the package (no download)."""
        ref = resources.files("modeler") / "data" / "default_network.npz"
        with resources.as_file(ref) as path:
            if not path.exists():
                raise FileNotFoundError("the default network is missing; run `masa train`")
            return cls.load(path, **params)

    def _check(self) -> None:
        if self.network_ is None:
            raise RuntimeError("this DependencyModeler is not fitted; call fit() or load()")

    # -- inference ------------------------------------------------------------------

    def candidates(self, series: Mapping[str, Series], keep: PairFilter | None = None) -> Candidates:
        """Step 1 of 3: align, screen and compute the features of the pairs worth scoring.

        ``keep(names, pairs) -> bool mask`` rules pairs out (e.g. pairs a sub-model already
        covers); both orders of a pair must be kept or dropped together."""
        grid = align(series, self.step)
        prep = prepare(grid)
        n = prep.n
        pairs = screen(prep, self.screen_threshold_) if n > SCREEN_ABOVE else all_pairs(n)
        if keep is not None and len(pairs):
            pairs = pairs[np.asarray(keep(grid.names, pairs), dtype=bool)]
        pairs = pairs.reshape(-1, 2)
        x = pair_features(prep, pairs) if len(pairs) else np.zeros((0, len(FEATURE_NAMES)))
        strength = prep.r_level[pairs[:, 0], pairs[:, 1]] ** 2 if len(pairs) else np.zeros(0)
        return Candidates(grid.names, pairs, x, strength, n * (n - 1), grid.t0,
                          grid.t0 + grid.n_bins * grid.step, prep.r_burst, grid.n_bins, grid.observed)

    def combine(self, cand: Candidates, proba: np.ndarray) -> PairScores:
        """Step 2 of 3 (after the network): calibrated class probabilities -> pair scores."""
        return combine(cand, proba)

    def score_pairs(self, series: Mapping[str, Series]) -> PairScores:
        """Calibrated probabilities for every examined ordered pair (steps 1 and 2)."""
        self._check()
        cand = self.candidates(series)
        return combine(cand, self.network_.predict_proba(cand.features))

    def predict_proba(self, series: Mapping[str, Series]) -> tuple[list[str], np.ndarray]:
        """Matrix ``P[i, j]``: probability that object i depends on object j."""
        sc = self.score_pairs(series)
        return sc.names, sc.matrix(sc.adjacency * sc.direction)

    def predict(self, series: Mapping[str, Series],
                connections: Mapping[tuple[str, str], float] | None = None) -> nx.DiGraph:
        """The dependency model of the recorded activity.

        With ``connections`` (``(source, target) -> count`` from the procfs probe) both
        kinds of evidence are combined and each edge names the ones it rests on."""
        return self.decide(self.score_pairs(series), connections)

    def decide(self, sc: PairScores,
               connections: Mapping[tuple[str, str], float] | None = None) -> nx.DiGraph:
        """Step 3 of 3: threshold (from the calibrated probabilities), pruning, direction,
        connection evidence; the model as a graph."""
        names = sc.names
        g = nx.DiGraph()
        g.add_nodes_from(names)
        g.graph.update(screened_pairs=int(sc.n_candidates - len(sc.pairs)),
                       candidate_pairs=int(sc.n_candidates), bins=int(sc.n_bins),
                       observed_bins=int(sc.observed_bins))
        if self.network_ is not None:  # which network decided, so a model can be reproduced
            g.graph.update(network=self.network_.ident,
                           trained_on=str(self.network_.meta.get("trained_on", "")))
        adj = {(names[i], names[j]): k for k, (i, j) in enumerate(sc.pairs)}
        conn = dict(connections or {})
        known = set(names)
        conn = {k: v for k, v in conn.items() if k[0] in known and k[1] in known and v > 0}
        candidates = set(adj)
        candidates.update(conn)
        posterior = {}
        for a, b in candidates:
            k = adj.get((a, b))
            p_act = float(sc.adjacency[k]) if k is not None else 0.0
            if connections is not None:
                p_act = evidence.combine(p_act, (a, b) in conn or (b, a) in conn)
            posterior[frozenset((a, b))] = p_act
        cut = self.threshold if self.threshold != "f1" else f1_cut(np.array(list(posterior.values())))
        g.graph["threshold"] = round(float(cut), 4)
        pruned: set[frozenset] = set()
        if self.prune and sc.r is not None:
            kept = {e: p for e, p in posterior.items() if p >= cut
                    and not any(x in conn for x in (tuple(e), tuple(e)[::-1]))}
            pruned = prune_indirect(kept, {e for e, p in posterior.items() if p >= cut}, sc.r,
                                    {n: i for i, n in enumerate(names)}, sc.n_bins)
        g.graph["pruned_indirect"] = len(pruned)
        done = set()
        for a, b in sorted(candidates):
            if (b, a) in done or (a, b) in done:
                continue
            done.add((a, b))
            k = adj.get((a, b))
            p_act = float(sc.adjacency[k]) if k is not None else 0.0
            d_act = float(sc.direction[k]) if k is not None else 0.5
            s = float(sc.strength[k]) if k is not None else 0.0
            ab, ba = (a, b) in conn, (b, a) in conn
            if connections is not None:
                p = evidence.combine(p_act, ab or ba)
                if ab and not ba:
                    d = evidence.DIRECTION_FROM_CONNECTION
                elif ba and not ab:
                    d = 1 - evidence.DIRECTION_FROM_CONNECTION
                else:
                    d = d_act
            else:
                p, d = p_act, d_act
            if p < cut or frozenset((a, b)) in pruned:
                continue
            kinds = (["activity"] if p_act >= cut else []) + (["connection"] if ab or ba else [])
            if ab and ba:
                pairs = [(a, b, d), (b, a, 1 - d)]
            else:
                pairs = [(a, b, d)] if d >= 0.5 else [(b, a, 1 - d)]
            for src, dst, dconf in pairs:
                g.add_edge(src, dst, confidence=round(p, 4), direction_confidence=round(dconf, 4),
                           probability=round(p * dconf, 4), strength=round(s, 4),
                           evidence=",".join(kinds) or "activity")
        return g


def f1_cut(p: np.ndarray) -> float:
    """Threshold that maximises the F1 score *expected* under calibrated probabilities.

    With calibrated ``p`` the expected number of true dependencies is ``sum(p)``; keeping
    the k most probable pairs is expected to find ``sum(top k)`` of them, so expected F1
    is about ``2 sum(top k) / (k + sum(p))``.  The data's own probabilities choose the
    cut; the truth never does.  Never below 0.2 nor above 0.5: a pair the model thinks
    more likely dependent than not is always kept."""
    if len(p) == 0:
        return 0.5
    q = np.sort(p)[::-1]
    gain = 2 * np.cumsum(q) / (np.arange(1, len(q) + 1) + q.sum())
    k = int(np.argmax(gain))
    return float(np.clip(q[k], 0.2, 0.5))


def prune_indirect(candidates: dict[frozenset, float], graph_edges: set[frozenset], r: np.ndarray,
                   index: dict[str, int], n_bins: int, z: float = 2.58) -> set[frozenset]:
    """Drop kept pairs that a common neighbour explains (the first level of PC).

    A pair ``i - j`` whose bursts are uncorrelated given some ``k`` that is itself kept
    as a neighbour of both is an indirect relation (chain ends ``A -> B -> C``) or two
    callees of one caller, so it goes, weakest pairs first.  Because ``k`` must still be
    a neighbour of both, a group of identical series (every request forwarded) keeps a
    path through it instead of vanishing; a ``k`` that is a near-copy of ``i`` or ``j``
    (correlation above 0.95) is no evidence either way and is not used.  The test is Fisher's z at 1 % on the number
    of bins: a fixed level, never tuned on the data's truth.  Pairs resting on an
    observed connection are never candidates."""
    if not candidates:
        return set()
    limit = float(np.tanh(z / np.sqrt(max(n_bins - 4, 1))))
    adj: dict[str, set[str]] = {}
    for e in graph_edges:
        a, b = tuple(e)
        adj.setdefault(a, set()).add(b)
        adj.setdefault(b, set()).add(a)
    removed = set()
    for e, _p in sorted(candidates.items(), key=lambda kv: kv[1]):
        a, b = tuple(e)
        i, j = index[a], index[b]
        for c in adj.get(a, set()) & adj.get(b, set()):
            k = index[c]
            rij, rik, rjk = r[i, j], r[i, k], r[j, k]
            if max(abs(rik), abs(rjk)) > 0.95:
                continue  # k is a near-copy of i or j: conditioning on it says nothing
            if first_order_partial(rij, rik, rjk) < limit:
                removed.add(e)
                adj[a].discard(b)
                adj[b].discard(a)
                break
    return removed


def check_truth(truth: Iterable, names: Iterable[str]) -> list[tuple[str, str]]:
    """Validate ``[[caller, callee], ...]`` against the objects of a recording."""
    out = []
    known = set(names)
    for e in truth:
        if not (isinstance(e, (list, tuple)) and len(e) == 2 and all(isinstance(v, str) for v in e)):
            raise ActivityError(f"a truth edge must be a pair of object names, got {e!r}")
        if e[0] in known and e[1] in known:
            out.append((e[0], e[1]))
    return out
