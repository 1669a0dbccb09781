"""The exact domain join: union of intervals, rates summed where they overlap, gaps out."""

import random

import numpy as np
import pytest

from agents.domain_join import join, join_counts, merge, reference_join
from masa.activity import Series


def S(obj, rows):
    a = np.array(rows, dtype=float).reshape(-1, 3)
    return Series(obj, "cpu", a[:, 0], a[:, 1], a[:, 2])


def rows(s):
    return [(float(a), float(b), round(float(v), 12)) for a, b, v in zip(s.start, s.end, s.value, strict=True)]


def test_misaligned_intervals_and_a_gap_by_hand():
    a = S("h1/cpu", [(0, 10, 1), (10, 20, 2)])
    b = S("h2/cpu", [(5, 8, 10), (12, 30, 0.5)])
    c = S("h3/cpu", [(40, 50, 3)])
    out, count = join_counts([a, b, c], "B/cpu", "cpu")
    assert rows(out) == [(0, 5, 1), (5, 8, 11), (8, 10, 1), (10, 12, 2), (12, 20, 2.5),
                         (20, 30, 0.5), (40, 50, 3)]
    assert count.tolist() == [1, 2, 1, 1, 2, 1, 1]
    assert out.object == "B/cpu" and out.unit == "cpu"


def brute(series, t0, t1):
    """Rate sum on [t0, t1) the slow obvious way, or None if no member covers it."""
    total, hit = 0.0, False
    for s in series:
        for a, b, v in zip(s.start, s.end, s.value, strict=True):
            if a <= t0 and t1 <= b:
                total, hit = total + v, True
    return total if hit else None


def random_series(rng, obj, n, period, phase):
    t, out = phase, []
    for _ in range(n):
        length = period * rng.uniform(0.5, 1.5)
        if rng.random() < 0.15:
            t += length * rng.uniform(0.1, 3)  # a gap
        out.append((t, t + length, rng.uniform(0, 4)))
        t += length
    return S(obj, out)


@pytest.mark.parametrize("seed", range(5))
def test_random_members_match_brute_force_segment_by_segment(seed):
    rng = random.Random(seed)
    members = [random_series(rng, f"h{i}/cpu", 40, rng.choice([0.7, 1, 2.5]), rng.uniform(0, 3))
               for i in range(4)]
    out = join(members, "D/cpu", "cpu")
    bounds = sorted({x for s in members for x in (*s.start, *s.end)})
    expected = [(a, b, brute(members, a, b)) for a, b in zip(bounds, bounds[1:], strict=False)]
    expected = [(a, b, v) for a, b, v in expected if v is not None]
    assert [(a, b) for a, b, _ in expected] == [(a, b) for a, b, _ in rows(out)]
    np.testing.assert_allclose(out.value, [v for _, _, v in expected], rtol=1e-12, atol=1e-12)
    # the amount of activity is preserved everywhere, not just per segment
    probe = np.linspace(-1, bounds[-1] + 1, 97)
    np.testing.assert_allclose(out.integral(probe), sum(s.integral(probe) for s in members), rtol=1e-10)


def test_sweep_restarts_keep_long_series_exact():
    rng = np.random.default_rng(7)
    members = []
    for i in range(6):
        ends = np.cumsum(rng.uniform(0.5, 1.5, 20_000)) + i * 0.37
        starts = np.concatenate([[ends[0] - 1], ends[:-1]])
        values = rng.choice([1e6, 1e-3, 3.3], len(ends))  # magnitudes that make a running sum drift
        members.append(Series(f"m{i}", "B/s", starts, ends, values))
    fast = join(members, "D", "B/s")
    ref = reference_join(members, "D", "B/s")
    np.testing.assert_array_equal(fast.start, ref.start)
    # an unrestarted running sum is off by ~2e-7 here; restarts keep it ~1e-8
    np.testing.assert_allclose(fast.value, ref.value, rtol=0, atol=5e-8)
    small = join_counts(members, "D", "B/s", block=3)[0]
    np.testing.assert_allclose(small.value, ref.value, rtol=0, atol=5e-8)


def test_sub_epsilon_overlap_inside_one_member_is_not_counted_twice():
    a = Series("a", "cpu", np.array([0.0, 1.0 - 1e-10]), np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    out = join([a], "D")
    assert np.all(out.value == 1.0)
    assert out.integral(2.0)[0] == pytest.approx(2.0, abs=1e-12)  # twice would be 2 + 1e-10


def test_empty_members_and_no_members():
    assert len(join([], "D")) == 0
    assert rows(join([Series.empty("x"), S("y", [(1, 2, 5)])], "D")) == [(1, 2, 5)]


def test_merge_fills_gaps_and_drops_duplicates_and_overlaps():
    held = S("a", [(0, 1, 1), (3, 4, 1)])
    late = S("a", [(0, 1, 9), (1, 2, 2), (2.5, 3.5, 7), (5, 6, 3)])
    out = merge(held, late)
    assert rows(out) == [(0, 1, 1), (1, 2, 2), (3, 4, 1), (5, 6, 3)]
    assert rows(merge(S("a", []), late)) == rows(late)
    assert rows(merge(held, S("a", [(4, 5, 2)]))) == [(0, 1, 1), (3, 4, 1), (4, 5, 2)]
