"""Exact interval arithmetic for collective activity: join many series into one.

A domain agent presents a whole domain (or a distributed application) as one object.
Its activity in any stretch of time is the sum of its members' activity there, and since
every sample is a rate over a half-open interval, the sum is exact without resampling:
cut time at every member's sample boundary, and on each elementary segment add the
rates of the members that cover it.  Segments no member covers are gaps, not idleness,
so they are left out rather than reported as zero.

The sum is computed by a sweep (sort all boundaries once, accumulate rate changes),
which is O(total samples · log) instead of O(members · segments).  A long running sum
in floating point drifts, so the sweep restarts every ``block`` boundaries from a value
computed directly (each member's covering sample looked up and added): the error stays
that of at most ``block`` additions whatever the length of the series.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from masa.activity import Series

#: Boundaries closer than this are one boundary, as in :class:`masa.activity.Series`.
EPS = 1e-9

#: Boundaries between two direct evaluations of the running sum (bounds its drift).
BLOCK = 1024


def _disjoint(s: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The series' arrays with the sub-``EPS`` overlaps that ``Series`` tolerates cut
    off, so that no member is ever counted twice on a sliver."""
    start, end, value = s.start, s.end, s.value
    if len(s) > 1 and np.any(start[1:] < end[:-1]):
        start = np.concatenate([start[:1], np.maximum(start[1:], end[:-1])])
        keep = end > start
        start, end, value = start[keep], end[keep], value[keep]
    return start, end, value


def rate_at(members: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
            t: np.ndarray) -> np.ndarray:
    """Sum of the members' rates in force at each time of ``t`` (directly, no sweep)."""
    total = np.zeros(len(t))
    for start, end, value in members:
        if not len(start):
            continue
        i = np.searchsorted(start, t, side="right") - 1
        j = np.clip(i, 0, len(start) - 1)
        total += np.where((i >= 0) & (end[j] > t), value[j], 0.0)
    return total


def join_counts(series: Sequence[Series], obj: str, unit: str = "",
                block: int = BLOCK) -> tuple[Series, np.ndarray]:
    """The collective series of ``series`` and, per segment, how many members cover it.

    Segments are cut at the union of all boundaries; a segment's rate is the sum of the
    rates of the members covering it; segments covered by none are omitted."""
    members = [_disjoint(s) for s in series if len(s)]
    if not members:
        return Series.empty(obj, unit), np.empty(0, dtype=np.int64)
    start = np.concatenate([m[0] for m in members])
    end = np.concatenate([m[1] for m in members])
    value = np.concatenate([m[2] for m in members])
    n = len(start)
    times = np.concatenate([start, end])
    order = np.argsort(times, kind="stable")
    t = times[order]
    dv = np.concatenate([value, -value])[order]
    dc = np.concatenate([np.ones(n, np.int64), -np.ones(n, np.int64)])[order]
    first = np.flatnonzero(np.concatenate([[True], t[1:] != t[:-1]]))
    breaks = t[first]
    count = np.cumsum(np.add.reduceat(dc, first))  # exact: integers
    steps = np.add.reduceat(dv, first)
    k = len(breaks)
    nblocks = -(-k // block)
    grid = np.zeros(nblocks * block)
    grid[:k] = steps
    grid = grid.reshape(nblocks, block)
    grid[:, 0] = rate_at(members, breaks[::block])
    rate = np.cumsum(grid, axis=1).ravel()[:k]
    covered = count[:-1] > 0
    return (Series(obj, unit, breaks[:-1][covered], breaks[1:][covered], rate[:-1][covered]),
            count[:-1][covered])


def join(series: Sequence[Series], obj: str, unit: str = "") -> Series:
    """Collective activity of ``series``: union of their intervals, rates summed where
    they overlap, gaps left out."""
    return join_counts(series, obj, unit)[0]


def merge(held: Series, late: Series) -> Series:
    """``held`` with the samples of ``late`` that fill its gaps (late arrivals, replays).

    Samples overlapping one already held are dropped: what was held may already have
    been passed on, and the same interval delivered twice is a duplicate, not more
    activity."""
    if not len(late):
        return held
    if not len(held):
        return late if late.object == held.object else Series(
            held.object, held.unit or late.unit, late.start, late.end, late.value)
    if late.start[0] >= held.end[-1] - EPS:  # the common case: a plain continuation
        return held.append(late)
    # the held sample starting before each late sample ends is the only one it can hit
    i = np.searchsorted(held.start, late.end - EPS, side="left") - 1
    j = np.clip(i, 0, len(held) - 1)
    clash = (i >= 0) & (held.end[j] > late.start + EPS)
    fresh = ~clash
    start = np.concatenate([held.start, late.start[fresh]])
    order = np.argsort(start, kind="stable")
    return Series(held.object, held.unit or late.unit, start[order],
                  np.concatenate([held.end, late.end[fresh]])[order],
                  np.concatenate([held.value, late.value[fresh]])[order])


def reference_join(series: Sequence[Series], obj: str, unit: str = "") -> Series:
    """The plain numpy way (every member looked up on every segment): the benchmark's
    named peer and the tests' independent check."""
    members = [_disjoint(s) for s in series if len(s)]
    if not members:
        return Series.empty(obj, unit)
    breaks = np.unique(np.concatenate([np.concatenate([m[0], m[1]]) for m in members]))
    a, b = breaks[:-1], breaks[1:]
    total = np.zeros(len(a))
    covered = np.zeros(len(a), dtype=bool)
    for start, end, value in members:
        i = np.searchsorted(start, a, side="right") - 1
        j = np.clip(i, 0, len(start) - 1)
        inside = (i >= 0) & (end[j] >= b)
        total += np.where(inside, value[j], 0.0)
        covered |= inside
    return Series(obj, unit, a[covered], b[covered], total[covered])
