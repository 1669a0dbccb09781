"""The report cache: serves what it holds, fetches exactly the missing stretches."""

import numpy as np
import pytest

from agents.cache import Ranges, ReportCache
from masa.activity import Series


def source(obj, n=300, step=1.0, phase=0.0):
    ends = phase + step * np.arange(1, n + 1)
    return Series(obj, "cpu", ends - step, ends, np.sin(ends) + 2)


class Below:
    """A report source with data complete up to ``now``; logs every fetch."""

    def __init__(self, series, now):
        self.series = {s.object: s for s in series}
        self.now = now
        self.log = []

    def __call__(self, objects, since, until):
        self.log.append((tuple(objects), since, until))
        top = self.now if until is None else min(until, self.now)
        out = []
        for o in objects:
            s = self.series[o].since(since)
            keep = s.end <= top
            out.append(Series(o, s.unit, s.start[keep], s.end[keep], s.value[keep]))
        return out, top


def direct(s, since, until):
    k = (s.end > since) & (s.end <= until)
    return s.start[k], s.end[k], s.value[k]


def same(got, s, since, until):
    g = [x for x in got if x.object == s.object]
    assert len(g) <= 1
    g = g[0] if g else Series.empty(s.object)  # nothing in the window: no series
    for a, b in zip((g.start, g.end, g.value), direct(s, since, until), strict=True):
        np.testing.assert_array_equal(a, b)


def test_ranges_merge_missing_reach_cut():
    r = Ranges([(0, 10), (20, 30), (10, 12)])
    assert r.items == [(0, 12), (20, 30)]
    assert r.missing(5, 40) == [(12, 20), (30, 40)]
    assert r.missing(-5, 3) == [(-5, 0)]
    assert r.missing(21, 29) == []
    assert r.reach(5) == 12 and r.reach(12) == 12 and r.reach(25) == 30
    r.cut(22)
    assert r.items == [(22, 30)]


def test_repeated_and_overlapping_requests_fetch_only_the_missing_interval():
    a = source("h1/cpu")
    below = Below([a], now=250)
    cache = ReportCache()
    got, until = cache.report(["h1/cpu"], 0, 100, below)
    same(got, a, 0, 100)
    assert until == 100 and below.log == [(("h1/cpu",), 0, 100)]
    got, until = cache.report(["h1/cpu"], 10, 90, below)  # inside: a hit
    same(got, a, 10, 90)
    assert len(below.log) == 1 and cache.stats["hits"] == 1
    got, until = cache.report(["h1/cpu"], 50, 150, below)  # overlaps: only (100, 150] below
    same(got, a, 50, 150)
    assert below.log[-1] == (("h1/cpu",), 100, 150)
    got, until = cache.report(["h1/cpu"], 120, None, below)  # refresh to "latest"
    assert below.log[-1] == (("h1/cpu",), 150, None)
    assert until == 250
    same(got, a, 120, 250)


def test_objects_with_different_holdings_are_fetched_in_groups():
    a, b, c = source("a"), source("b", step=0.7, phase=0.3), source("c")
    below = Below([a, b, c], now=200)
    cache = ReportCache()
    cache.report(["a", "b"], 0, 100, below)
    below.log.clear()
    got, until = cache.report(["a", "b", "c"], 50, 120, below)
    assert sorted(below.log) == [(("a", "b"), 100, 120), (("c",), 50, 120)]
    for s in (a, b, c):
        same(got, s, 50, 120)


def test_a_short_answer_is_remembered_as_short():
    a = source("a")
    below = Below([a], now=120)
    cache = ReportCache()
    got, until = cache.report(["a"], 100, 150, below)
    assert until == 120
    same(got, a, 100, 120)
    below.now = 200
    got, until = cache.report(["a"], 100, 150, below)
    assert below.log[-1] == (("a",), 120, 150) and until == 150
    same(got, a, 100, 150)


def test_eviction_forgets_old_stretches_which_are_then_fetched_again():
    a = source("a", n=1000)
    below = Below([a], now=1000)
    cache = ReportCache(retain=100)
    cache.report(["a"], 0, 1000, below)
    assert len(cache.series["a"]) == 100
    got, _ = cache.report(["a"], 500, 600, below)
    assert below.log[-1] == (("a",), 500, 600)
    same(got, a, 500, 600)


@pytest.mark.parametrize("seed", range(3))
def test_random_request_sequences_always_answer_like_the_source(seed):
    rng = np.random.default_rng(seed)
    objs = [source(f"o{i}", n=400, step=float(rng.uniform(0.5, 2)), phase=float(rng.uniform(0, 1)))
            for i in range(3)]
    below = Below(objs, now=300)
    cache = ReportCache()
    for _ in range(40):
        chosen = sorted(rng.choice([s.object for s in objs], size=int(rng.integers(1, 4)), replace=False))
        since = float(rng.uniform(0, 280))
        until = float(since + rng.uniform(0, 50))
        got, answered = cache.report(list(chosen), since, until, below)
        assert answered == min(until, 300)
        for s in objs:
            if s.object in chosen:
                same(got, s, since, answered)
    fetched = sum(1 for _ in below.log)
    assert cache.stats["hits"] > 0 and fetched < 40 * 3
