"""Helpers shared by the mediation tests (real processes)."""

from __future__ import annotations

import numpy as np

from masa.activity import Series


def series(answer: dict) -> dict[str, Series]:
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def window(s: Series, since: float, until: float) -> Series:
    k = (s.end > since) & (s.end <= until)
    return Series(s.object, s.unit, s.start[k], s.end[k], s.value[k])


def assert_same_samples(got: Series, want: Series, rtol: float = 0.0) -> None:
    """Same intervals exactly; values equal (or within ``rtol``); none twice."""
    have, need = set(zip(got.start, got.end, strict=True)), set(zip(want.start, want.end, strict=True))
    t0 = min(want.start[0] if len(want) else 0, got.start[0] if len(got) else 0)
    assert have == need, (f"{want.object}: missing {sorted((a - t0, b - t0) for a, b in need - have)}, "
                          f"extra {sorted((a - t0, b - t0) for a, b in have - need)} of {len(want)}")
    np.testing.assert_array_equal(got.start, want.start)
    np.testing.assert_array_equal(got.end, want.end)
    if rtol:
        np.testing.assert_allclose(got.value, want.value, rtol=rtol, atol=1e-12)
    else:
        np.testing.assert_array_equal(got.value, want.value)
    assert np.all(np.diff(got.start) > 0), "a sample arrived twice"


def gaps(s: Series, tol: float = 1e-6) -> int:
    return int(np.sum(s.start[1:] > s.end[:-1] + tol))


def recorded(cluster, recorder: str, obj: str) -> Series:
    """What a recorder holds of ``obj`` (empty before anything arrived)."""
    return series(cluster.ref(recorder).query("report", objects=[obj])).get(obj) or Series.empty(obj)


def taken(cluster, recorder: str, request: str) -> int:
    return cluster.ref(recorder).query("subscriptions_status")[request]["seq"]


def restarts(cluster, host: str, agent: str) -> int:
    """How often ``host``'s watchdog restarted ``agent`` (a handler that overran)."""
    return next(a for a in cluster.host(host, "agents") if a["name"] == agent)["restarts"]
