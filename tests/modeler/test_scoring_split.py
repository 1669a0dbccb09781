"""The modeler's scoring split (features here, network elsewhere, decision here) gives
exactly the model of the one-process estimator, with and without screening, and a pair
filter removes pairs without disturbing the others' symmetry."""

import numpy as np

from modeler.agents import scoring
from modeler.estimator import SCREEN_ABOVE, DependencyModeler
from modeler.simulator import random_topology, simulate


def scenario(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return simulate(random_topology(rng, n, "tree"), 300, 1.0, rng=rng, background=2)


def split_predict(model, series, keep=None):
    job = scoring.make_job(model, series, keep)
    proba = np.concatenate([model.network_.predict_proba(job.features[a:a + 7])
                            for a in range(0, len(job.features), 7)])  # batched, like a pool
    return job, scoring.decide(model, scoring.combine(job, proba))


def test_split_equals_predict_small_and_screened():
    model = DependencyModeler.default()
    for n, seed in ((6, 1), (SCREEN_ABOVE + 4, 2)):
        series = scenario(n, seed).series
        job, g = split_predict(model, series)
        local = model.predict(series)
        assert sorted(g.edges(data=True)) == sorted(local.edges(data=True))
        assert g.graph == local.graph
        if len(series) > SCREEN_ABOVE:
            assert len(job.pairs) < job.n_candidates  # screening happened


def test_pair_filter_and_network_ident():
    model = DependencyModeler.default()
    series = scenario(8, 3).series
    group = {name: name in ("svc0", "svc1", "svc2") for name in series}

    def keep(names, pairs):
        inside = np.array([group[n] for n in names])
        return ~(inside[pairs[:, 0]] & inside[pairs[:, 1]])

    job, g = split_predict(model, series, keep)
    names = job.names
    kept = {(names[i], names[j]) for i, j in job.pairs}
    assert not any(group[a] and group[b] for a, b in kept)
    assert all((b, a) in kept for a, b in kept)  # both orders survive together
    assert len(kept) == len(series) * (len(series) - 1) - 3 * 2
    assert not any(group[a] and group[b] for a, b in g.edges)
    assert model.network_.ident == DependencyModeler.default().network_.ident
    x = np.arange(12.0).reshape(4, 3)
    assert np.array_equal(scoring.from_bytes(scoring.to_bytes(x), 3), x)


def test_public_three_steps_equal_predict_with_connections():
    """candidates -> network -> combine -> decide is predict, connection evidence included."""
    model = DependencyModeler.default()
    sc = scenario(7, 4)
    conn = {tuple(e): 3.0 for e in sc.truth[:2]}
    cand = model.candidates(sc.series)
    assert cand.features.shape == (len(cand.pairs), len(model.network_.feature_names))
    g = model.decide(model.combine(cand, model.network_.predict_proba(cand.features)), conn)
    local = model.predict(sc.series, conn)
    assert sorted(g.edges(data=True)) == sorted(local.edges(data=True))
    for a, b in conn:
        assert g.has_edge(a, b) and "connection" in g.edges[a, b]["evidence"]
