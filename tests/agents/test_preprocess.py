"""Pre-processing steps: exact, applied once, and the same however the data is windowed."""

import numpy as np
import pytest

from agents import preprocess as pp
from masa.activity import Series
from masa.errors import BadRequest


def raw(n=200, step=0.7, phase=0.13, seed=0):
    rng = np.random.default_rng(seed)
    ends = phase + np.cumsum(rng.uniform(0.6, 1.4, n) * step)
    starts = np.concatenate([[ends[0] - step], ends[:-1]])
    gap = (np.arange(n) % 37) == 5  # drop some samples: gaps
    return Series("h/cpu", "cpu", starts[~gap], ends[~gap], rng.uniform(0, 2, n)[~gap])


def test_resample_is_exact_and_skips_poorly_covered_bins():
    s = Series("a", "cpu", np.array([0.0, 1.5, 6.0]), np.array([1.5, 3.0, 9.0]), np.array([2.0, 4.0, 1.0]))
    out = pp.apply([pp.check({"step": "resample", "period": 2.0})], s)
    # bins [0,2) [2,4) [4,6) [6,8): [4,6) empty; [2,4) half covered (4 over [2,3)); the sample ends at 9
    assert out.start.tolist() == [0.0, 2.0, 6.0]
    np.testing.assert_allclose(out.value, [(2 * 1.5 + 4 * 0.5) / 2, 4.0, 1.0])


def test_normalise_filter_smooth():
    s = Series("a/cpu", "cpu", np.arange(4.0), np.arange(1.0, 5.0), np.array([1.0, 3.0, 5.0, 7.0]))
    assert pp.apply([pp.check({"step": "normalise", "scale": 2, "offset": 1})], s).value.tolist() == [0, 1, 2, 3]
    kept = pp.apply([pp.check({"step": "filter", "predicates": ["a/* > 2", "< 6"]})], s)
    assert kept.value.tolist() == [3.0, 5.0]
    assert len(pp.apply([pp.check({"step": "filter", "objects": ["b/*"]})], s)) == 0
    sm = pp.apply([pp.check({"step": "smooth", "window": 2})], s)
    assert sm.value.tolist() == [1.0, 2.0, 4.0, 6.0]  # the first has only itself as history


@pytest.mark.parametrize("steps", [
    [{"step": "resample", "period": 2.0}],
    [{"step": "smooth", "window": 3.0}],
    [{"step": "resample", "period": 1.5, "origin": 0.2}, {"step": "smooth", "window": 4.0},
     {"step": "normalise", "scale": 0.5}],
])
def test_windowed_batches_give_the_same_values_as_one_pass(steps):
    """A standing request computes batch after batch from a window with look-back; the
    result must equal processing everything at once (no sample lost, none changed)."""
    steps = [pp.check(s) for s in steps]
    s = raw()
    whole = pp.apply(steps, s)
    back = pp.lookback(steps)
    # batches end where the object's data ends (the mediator's horizon rule)
    cuts = np.concatenate([[s.start[0]], s.end[np.linspace(3, len(s) - 1, 22).astype(int)]])
    parts = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        window = s.since(a - back)
        window = Series(window.object, window.unit, *(x[window.end <= b] for x in (window.start, window.end, window.value)))
        out = pp.apply(steps, window)
        k = (out.end > a) & (out.end <= b)
        parts.append(out.start[k])
        parts.append(out.value[k])
    starts = np.concatenate(parts[0::2])
    values = np.concatenate(parts[1::2])
    k = whole.end > cuts[0]
    np.testing.assert_array_equal(starts, whole.start[k])
    np.testing.assert_allclose(values, whole.value[k], rtol=1e-12)


def test_tags_mark_steps_applied_below():
    a = {"step": "resample", "period": 5}
    b = {"step": "smooth", "window": 10}
    below = [pp.tag(a)]
    assert pp.tag({"step": "resample", "period": 5.0, "origin": 0}) == below[0]
    assert [x["step"] for x in pp.pending([pp.check(a), pp.check(b)], below)] == ["smooth"]
    assert pp.value_preserving([pp.check({"step": "filter", "predicates": ["> 1"]})])
    assert not pp.value_preserving([pp.check(a)])


@pytest.mark.parametrize("bad", [
    {"step": "resample"}, {"step": "resample", "period": 0}, {"step": "normalise", "scale": 0},
    {"step": "filter", "predicates": ["cpu is hot"]}, {"step": "smooth", "window": 1, "size": 3},
    {"step": "fft"}, "resample",
])
def test_bad_steps_are_refused(bad):
    with pytest.raises(BadRequest):
        pp.check(bad)
