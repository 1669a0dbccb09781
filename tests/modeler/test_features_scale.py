"""The fast paths for many objects give the values of the plain dense computations.

The shipped network was trained on the dense ones (sklearn's Ledoit-Wolf precision,
every third object visited per pair), so the fast paths must agree to rounding."""

import numpy as np
import pytest
from sklearn.covariance import LedoitWolf

from modeler import features
from modeler.features import (
    LowRankPartial,
    _best_lag,
    _collider,
    _lagged,
    _min_partial1,
    _neighbours,
    _partial,
    _partial_fast,
)
from modeler.grid import standardize


def dense_partial(x):
    """The former implementation: dense sklearn Ledoit-Wolf precision (pinvh of N x N)."""
    lw = LedoitWolf(assume_centered=True).fit(x.T)
    prec = lw.precision_
    d = np.sqrt(np.clip(np.diag(prec), 1e-12, None))
    pc = -prec / d[:, None] / d[None, :]
    np.fill_diagonal(pc, 1.0)
    r2 = np.clip(1.0 - 1.0 / np.clip(np.diag(lw.covariance_) * np.diag(prec), 1e-12, None), 0.0, 1.0)
    return np.clip(pc, -1.0, 1.0), r2


def dense_third_party(r, pairs, floor=0.0, copy_limit=np.inf):
    """The former implementation: every k visited for every pair."""
    n = r.shape[0]
    idx = np.arange(n)
    i, j = pairs[:, 0], pairs[:, 1]
    rij = r[i, j][:, None]
    rik, rjk = r[i], r[j]
    mask = (idx[None, :] == i[:, None]) | (idx[None, :] == j[:, None])
    pij_k = np.abs((rij - rik * rjk) / np.sqrt((1 - rik**2) * (1 - rjk**2)))
    pij_k[mask] = np.inf
    pij_k[np.maximum(np.abs(rik), np.abs(rjk)) < floor] = np.inf
    pij_k[np.maximum(np.abs(rik), np.abs(rjk)) > copy_limit] = np.inf
    mins = pij_k.min(axis=1)
    out_min = np.where(np.isfinite(mins), mins, np.abs(rij[:, 0]))
    col_j = np.abs((rik - rij * rjk) / np.sqrt((1 - rij**2) * (1 - rjk**2))) - 3 * np.abs(rik)
    col_i = np.abs((rjk - rij * rik) / np.sqrt((1 - rij**2) * (1 - rik**2))) - 3 * np.abs(rjk)
    col_j[mask] = -np.inf
    col_i[mask] = -np.inf
    return out_min, col_j.max(axis=1), col_i.max(axis=1)


def related(rng, n, t, factors=5):
    """Objects driven by a few shared factors plus noise, standardised; one constant."""
    load = rng.normal(0, 1, (n, factors)) * (rng.random((n, 1)) < 0.5)
    x = load @ rng.normal(0, 1, (factors, t)) + rng.gamma(1.0, 1.0, (n, t))
    x[3] = 2.0  # a constant object standardises to zeros
    return standardize(x)


@pytest.mark.parametrize("n, t", [(90, 40), (300, 120), (40, 90), (120, 300)])
def test_fast_partial_equals_dense_ledoit_wolf(n, t):
    x = related(np.random.default_rng(n + t), n, t)
    want_pc, want_r2 = dense_partial(x)
    pc, r2 = _partial_fast(x)
    # more objects than bins: Woodbury form, evaluated only where asked
    assert isinstance(pc, LowRankPartial) == (n > t)
    i, j = np.nonzero(np.ones((n, n), dtype=bool))
    got = pc[i, j].reshape(n, n)
    np.testing.assert_allclose(got, want_pc, rtol=0, atol=1e-9)
    np.testing.assert_allclose(r2, want_r2, rtol=0, atol=1e-9)
    assert np.abs(want_pc[~np.eye(n, dtype=bool)]).max() > 0.05  # not a trivial comparison


def test_partial_switches_to_the_fast_path_above_the_limit(monkeypatch):
    x = related(np.random.default_rng(7), 80, 30)
    monkeypatch.setattr(features, "FAST_PARTIAL_ABOVE", 50)
    pc, r2 = _partial(x)
    assert isinstance(pc, LowRankPartial)
    want_pc, want_r2 = dense_partial(x)
    np.testing.assert_allclose(pc[np.array([0, 5, 9]), np.array([1, 2, 9])],
                               want_pc[[0, 5, 9], [1, 2, 9]], rtol=0, atol=1e-9)
    np.testing.assert_allclose(r2, want_r2, rtol=0, atol=1e-9)


def correlations(rng, n, t, sparse):
    x = rng.normal(0, 1, (n, t))
    if sparse:  # chains and copies among a few objects, the rest unrelated
        for k in range(1, n, 3):
            x[k] += (0.8 if k % 2 else 5.0) * x[k - 1]
    else:  # a common trend correlates most pairs
        x += 0.6 * rng.normal(0, 1, t)
    return _best_lag(_lagged(standardize(x), 2))


@pytest.mark.parametrize("sparse", [True, False])
def test_first_order_minimum_and_colliders_equal_the_dense_scan(sparse):
    rng = np.random.default_rng(3)
    n, t = 150, 400
    r = correlations(rng, n, t, sparse)
    floor = 4.0 / np.sqrt(t)
    assert (_neighbours(r, floor) is not None) == sparse
    pairs = np.column_stack(np.nonzero(~np.eye(n, dtype=bool)))[rng.choice(n * (n - 1), 3000, replace=False)]
    pairs = np.concatenate([pairs, [[0, 1], [1, 0], [2, 5]]])
    want_min, want_cj, want_ci = dense_third_party(r, pairs, floor)
    want_nocopy, _, _ = dense_third_party(r, pairs, floor, copy_limit=0.97)
    got_min, got_nocopy = _min_partial1(r, pairs, floor, (np.inf, 0.97), _neighbours(r, floor))
    np.testing.assert_allclose(got_min, want_min, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_nocopy, want_nocopy, rtol=0, atol=1e-12)
    if sparse:
        assert not np.array_equal(want_min, want_nocopy)  # the copies matter here
    # the dense scan and the neighbour lists agree with each other too
    (dense_min,) = _min_partial1(r, pairs, floor, neighbours=None)
    np.testing.assert_allclose(dense_min, want_min, rtol=0, atol=1e-12)
    got_cj, got_ci = _collider(r, pairs)
    np.testing.assert_allclose(got_cj, want_cj, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got_ci, want_ci, rtol=0, atol=1e-12)


def test_best_lag_equals_the_stacked_argmax():
    x = standardize(np.random.default_rng(5).normal(0, 1, (40, 200)))
    lagged = _lagged(x, 3)
    stack = np.stack(lagged + [m.T for m in lagged[1:]])
    pick = np.abs(stack).argmax(axis=0)
    want = np.clip(np.take_along_axis(stack, pick[None], axis=0)[0], -0.999, 0.999)
    np.testing.assert_array_equal(_best_lag(lagged), want)


@pytest.mark.parametrize("n, t", [(90, 40), (40, 90)])
def test_shrinkage_equals_sklearn(n, t):
    from sklearn.covariance import ledoit_wolf_shrinkage

    from modeler.features import _lw_shrinkage

    x = related(np.random.default_rng(n * t), n, t)
    gram = x.T @ x if n > t else x @ x.T
    want = ledoit_wolf_shrinkage(x.T, assume_centered=True)
    assert 0.0 < want < 1.0
    assert _lw_shrinkage(x, gram) == pytest.approx(want, rel=1e-12, abs=0)


def test_pair_batches_stay_within_the_series_budget_and_change_no_bit(monkeypatch):
    """Per-pair series gathers (pairs x bins) are bounded by batching the pairs, so 60
    objects at many bins need no gigabytes; the features are those of one big batch."""
    from modeler.grid import align
    from modeler.simulator import random_topology, simulate

    rng = np.random.default_rng(3)
    sc = simulate(random_topology(rng, 6, "chain"), seconds=600, step=1.0, rng=rng, background=2)
    prep = features.prepare(align(sc.series))
    pairs = features.all_pairs(prep.n)
    whole = features._pair_features(prep, pairs)
    sizes = []
    inner = features._pair_features
    monkeypatch.setattr(features, "_pair_features", lambda p, q: sizes.append(len(q)) or inner(p, q))
    monkeypatch.setattr(features, "SERIES_ELEMENTS", 7 * prep.grid.n_bins)
    batched = features.pair_features(prep, pairs)
    assert max(sizes) == 7 and sum(sizes) == len(pairs)
    assert np.array_equal(batched, whole)


def test_copula_correlations_per_pair_equal_the_matrices(monkeypatch):
    """Above FAST_PARTIAL_ABOVE objects the information-theoretic features read the lagged
    copula correlations per pair instead of from N x N matrices; every column agrees."""
    from modeler.grid import align
    from modeler.simulator import random_topology, simulate

    rng = np.random.default_rng(5)
    sc = simulate(random_topology(rng, 8, "fanout"), seconds=400, step=0.5, rng=rng, background=4)
    pairs = features.all_pairs(len(sc.series))
    monkeypatch.setattr(features, "FAST_PARTIAL_ABOVE", 10_000)
    dense_prep = features.prepare(align(sc.series, 1.0))
    assert dense_prep.copula_corr.dense is not None and dense_prep.copula_corr.auto.shape[1] == 3
    dense = features._it_features(dense_prep, pairs)
    monkeypatch.setattr(features, "FAST_PARTIAL_ABOVE", 2)
    sparse_prep = features.prepare(align(sc.series, 1.0))
    assert sparse_prep.copula_corr.dense is None
    sparse = features._it_features(sparse_prep, pairs)
    assert np.abs(dense).max() > 0.05  # the columns carry something to compare
    np.testing.assert_allclose(sparse, dense, rtol=0, atol=1e-10)
