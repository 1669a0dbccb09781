import numpy as np
import pytest

from masa.activity import ActivityError, Series
from modeler.grid import active, align, highpass


def test_series_with_different_phases_share_one_grid_exactly():
    a = Series.from_points("a", "cpu", np.arange(1.0, 101.0), np.full(100, 2.0))
    # b sampled every 0.5 s, offset by 0.25 s: same constant rate
    t = 0.25 + 0.5 * np.arange(1, 200)
    b = Series.from_points("b", "cpu", t, np.full(len(t), 2.0))
    g = align({"a": a, "b": b}, step=1.0)
    assert g.names == ["a", "b"]
    assert g.values.shape[0] == 2
    np.testing.assert_allclose(g.values[:, g.covered.all(axis=0)], 2.0)


def test_gaps_are_not_idleness():
    t = np.concatenate([np.arange(1.0, 51.0), np.arange(81.0, 131.0)])
    a = Series.from_points("a", "cpu", t, np.full(len(t), 3.0), first_interval=1.0)
    # from_points joins across the gap; cut the joining interval out explicitly
    keep = (a.end - a.start) <= 1.0
    a = Series("a", "cpu", a.start[keep], a.end[keep], a.value[keep])
    b = Series.from_points("b", "cpu", np.arange(1.0, 131.0), np.ones(130))
    g = align({"a": a, "b": b}, step=1.0)
    row = g.names.index("a")
    assert not g.covered[row, 60:70].any()
    np.testing.assert_allclose(g.values[row, 60:70], 3.0)  # filled with the median, not 0


def test_a_single_object_is_refused_with_a_clear_message():
    a = Series.from_points("a", "cpu", np.arange(1.0, 100.0), np.ones(99))
    with pytest.raises(ActivityError, match="at least two objects"):
        align({"a": a})


def test_highpass_removes_a_slow_trend_but_keeps_bursts():
    t = np.arange(2000)
    trend = np.sin(2 * np.pi * t / 1000)
    burst = np.zeros(2000)
    burst[::97] = 1.0
    hp = highpass((trend + burst)[None])[0]
    assert abs(np.corrcoef(hp, trend)[0, 1]) < 0.05
    assert np.corrcoef(hp, burst)[0, 1] > 0.9


def test_relevant_intervals_follow_activity_above_the_baseline():
    x = np.full((1, 100), 0.05)
    x[0, 40:50] = 1.0
    mask = active(x)[0]
    assert mask[40:50].all() and not mask[:40].any() and not mask[50:].any()
