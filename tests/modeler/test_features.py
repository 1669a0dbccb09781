"""Pair features on constructed series whose answers are known."""

import numpy as np
import pytest

from masa.activity import Series
from modeler.features import FEATURE_NAMES, pair_features, prepare
from modeler.grid import align

F = {name: k for k, name in enumerate(FEATURE_NAMES)}


def bursty(rng, n):
    """Independent bursty activity (log-normal AR), like a client population."""
    e = rng.normal(0, 1, n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = 0.7 * x[t - 1] + e[t]
    return np.exp(x)


def grid_of(arrays, step=1.0):
    series = {
        name: Series.from_points(name, "cpu", step * np.arange(1, len(v) + 1), v)
        for name, v in arrays.items()
    }
    return prepare(align(series, step))


def feat(prep, a, b, name):
    idx = {n: k for k, n in enumerate(prep.grid.names)}
    return pair_features(prep, np.array([[idx[a], idx[b]]]))[0, F[name]]


def test_shifted_copy_is_found_at_its_lag_not_at_lag_zero():
    rng = np.random.default_rng(0)
    x = rng.gamma(1.0, 1.0, 2000)  # white: no correlation except at the true shift
    y = np.roll(x, 2) + 0.1 * rng.random(2000)
    prep = grid_of({"a": x, "b": y, "c": rng.random(2000)})
    assert feat(prep, "a", "b", "corr_burst_lag0") < 0.2
    assert feat(prep, "a", "b", "corr_burst_maxlag") > 0.9
    assert abs(feat(prep, "a", "c", "corr_burst_maxlag")) < 0.15


def test_siblings_lose_their_association_given_the_common_caller():
    rng = np.random.default_rng(1)
    front = bursty(rng, 3000)
    left = 0.5 * front + 0.3 * bursty(rng, 3000)
    right = 0.7 * front + 0.3 * bursty(rng, 3000)
    prep = grid_of({"front": front, "left": left, "right": right})
    assert feat(prep, "left", "right", "corr_level_maxlag") > 0.4
    sib = feat(prep, "left", "right", "min_partial1")
    parent = feat(prep, "front", "left", "min_partial1")
    assert sib < 0.15 < parent


def test_chain_ends_are_separated_by_the_middle():
    rng = np.random.default_rng(2)
    a = bursty(rng, 3000)
    b = a + 0.8 * bursty(rng, 3000)
    c = b + 0.8 * bursty(rng, 3000)
    prep = grid_of({"a": a, "b": b, "c": c})
    assert feat(prep, "a", "c", "min_partial1") < 0.1
    assert feat(prep, "a", "b", "min_partial1") > 0.3
    assert feat(prep, "b", "c", "min_partial1") > 0.3


def test_collider_evidence_points_at_the_shared_callee():
    rng = np.random.default_rng(3)
    c1, c2 = bursty(rng, 3000), bursty(rng, 3000)
    db = c1 + c2 + 0.2 * bursty(rng, 3000)
    prep = grid_of({"c1": c1, "c2": c2, "db": db})
    # c1 depends on db: the callee is the collider of two independent callers
    assert feat(prep, "c1", "db", "collider_at_dst") > 0.3
    assert feat(prep, "c1", "db", "collider_at_src") < 0.1


def test_coactivity_is_asymmetric_for_a_partial_caller():
    rng = np.random.default_rng(4)
    n = 3000
    caller = (rng.random(n) < 0.2) * rng.gamma(2, 1, n)
    other = (rng.random(n) < 0.2) * rng.gamma(2, 1, n)
    callee = caller + other
    prep = grid_of({"caller": caller, "callee": callee, "other": other})
    # whenever the caller works the callee works, not the other way round
    forward = feat(prep, "caller", "callee", "coactive_dst_given_src")
    backward = feat(prep, "caller", "callee", "coactive_src_given_dst")
    assert forward > 0.8 and backward < forward - 0.2


def test_features_are_scale_free():
    rng = np.random.default_rng(5)
    a = bursty(rng, 1000)
    b = a + bursty(rng, 1000)
    p1 = grid_of({"a": a, "b": b, "c": bursty(rng, 1000)})
    rng = np.random.default_rng(5)
    a = bursty(rng, 1000)
    b = a + bursty(rng, 1000)
    p2 = grid_of({"a": 1000 * a, "b": 1000 * b, "c": 1000 * bursty(rng, 1000)})
    pairs = np.array([[0, 1], [1, 2], [2, 0]])
    np.testing.assert_allclose(pair_features(p1, pairs), pair_features(p2, pairs), atol=1e-6)


@pytest.mark.parametrize("n_bins", [5])
def test_too_short_recordings_are_refused(n_bins):
    from masa.activity import ActivityError

    with pytest.raises(ActivityError, match="too short"):
        grid_of({"a": np.ones(n_bins), "b": np.ones(n_bins)})


def test_size_features_stay_in_the_range_the_network_was_trained_on():
    """Beyond it the MLP extrapolates: at 1,000 objects that once sank skeleton F1 to 0.1."""
    from modeler.features import LOG_OBJECTS_RANGE

    rng = np.random.default_rng(6)
    prep = grid_of({f"o{k}": bursty(rng, 200) for k in range(80)})
    x = pair_features(prep, np.array([[0, 1]]))
    assert x[0, F["log_objects"]] == LOG_OBJECTS_RANGE[1]


def test_second_order_separates_a_pair_joined_by_two_paths():
    """gw -> api -> store and gw -> auth -> store: gw and store are joined by two paths,
    so no single middle object explains them; both middles together do."""
    rng = np.random.default_rng(7)
    n = 4000
    gw = bursty(rng, n)
    api = 0.8 * gw + 0.6 * bursty(rng, n)
    auth = 0.5 * gw + 0.6 * bursty(rng, n)
    store = api + auth + 0.6 * bursty(rng, n)
    prep = grid_of({"gw": gw, "api": api, "auth": auth, "store": store, "bg": bursty(rng, n)})
    assert feat(prep, "gw", "store", "min_partial1") > 0.15
    assert feat(prep, "gw", "store", "min_partial2") < 0.06
    assert feat(prep, "api", "store", "min_partial2") > 0.3  # a real edge stays


def test_copies_are_counted_and_never_explain_their_twin_away():
    """A fan-out group whose members one request touches together are copies of each
    other: a copy of the callee must not explain the caller's edge to it away."""
    rng = np.random.default_rng(8)
    n = 3000
    front = bursty(rng, n)
    group = 0.6 * front + 0.5 * bursty(rng, n)
    prep = grid_of({"front": front, "g1": group, "g2": group * 1.001 + 1e-3 * rng.random(n),
                    "other": bursty(rng, n)})
    assert feat(prep, "front", "g1", "min_partial1") < 0.1  # g2 explains it: no evidence
    assert feat(prep, "front", "g1", "min_partial1_nocopy") > 0.3
    assert feat(prep, "front", "g1", "copies_dst") == pytest.approx(np.log(2))
    assert feat(prep, "front", "g1", "copies_src") == 0.0
