"""Samples no meter can rightly give (NaN, infinite, a negative rate, an interval that
is no interval) dropped at the collector, whatever its meter: counted per object in its
``status``, logged once per object, never stored or passed on.  A real probe process
(served by :func:`probes.remote.serve`, speaking the wire form) feeds a remote collector
on a real host."""

from __future__ import annotations

import subprocess
import sys

import pytest

from agents.collector import unusable
from masa.activity import Series
from tests.cluster import ROOT, Cluster

# every sample() after the first: one row per case, times real, from the previous call
METER = r"""
import sys, time
from masa.config import Settings
from probes.remote import serve

NAN, INF = float("nan"), float("inf")

class Meter:
    def __init__(self):
        self.t, self.calls = None, 0

    def sample(self):
        now, t0, self.t = time.time(), self.t, time.time()
        self.calls += 1
        if t0 is None:
            return []
        return [("r/ok", "cpu", t0, now, 0.5), ("r/zero", "B/s", t0, now, 0.0),
                ("r/nan", "cpu", t0, now, NAN), ("r/inf", "B/s", t0, now, INF),
                ("r/-inf", "req/s", t0, now, -INF), ("r/neg", "req/s", t0, now, -1.0),
                ("r/nan-end", "cpu", t0, NAN, 0.5), ("r/backwards", "cpu", now, t0, 0.5),
                ("r/other", "degC", t0, now, -2.0),  # a unit whose values may be negative
                ("r/mixed", "cpu", t0, now, NAN if self.calls % 2 else 0.25)]

serve(sys.argv[1], Meter(), Settings.from_env())
"""
BAD = ["r/-inf", "r/backwards", "r/inf", "r/nan", "r/nan-end", "r/neg"]


def _series(answer: dict) -> dict[str, Series]:
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def test_a_probe_answering_nan_infinite_or_negative_rates_loses_only_those_samples(tmp_path):
    with Cluster(tmp_path, {"h1": {}}) as c:
        probe = subprocess.Popen([sys.executable, "-c", METER, "pgarbage"], env=c.settings.child_env(),
                                 cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            c.create("h1", "collector", "col-garbage", probe="remote", source="pgarbage", interval=0.2)
            col = c.ref("col-garbage", timeout=30)
            got = c.wait(lambda: (s := _series(col.query("report"))) and len(s.get("r/mixed", [])) >= 3 and s,
                         timeout=30)
            status = col.query("status")
        finally:
            probe.terminate()
            probe.wait(10)
        # the good samples of every tick are kept, a legitimate 0.0 among them
        assert sorted(got) == ["r/mixed", "r/ok", "r/other", "r/zero"]
        assert set(got["r/zero"].value) == {0.0} and set(got["r/ok"].value) == {0.5}
        assert set(got["r/mixed"].value) == {0.25} and set(got["r/other"].value) == {-2.0}
        assert len(got["r/ok"]) >= len(got["r/mixed"]) + 2  # every tick, not only the good ones
        assert sorted(o["object"] for o in col.query("catalog")) == sorted(got)
        discarded = status["discarded"]
        assert sorted(discarded) == sorted([*BAD, "r/mixed"])
        assert all(discarded[o] >= len(got["r/ok"]) - 1 for o in BAD)
        assert discarded["r/mixed"] >= len(got["r/mixed"]) - 1
        assert status["meter_errors"] == 0  # a tick with garbage in it is no failed sample
    log = (tmp_path / "logs" / "h1.log").read_text()
    for obj in [*BAD, "r/mixed"]:  # once per object, not once per sample
        assert log.count(f"dropped a sample of {obj} ") == 1, obj


@pytest.mark.parametrize(("row", "why"), [
    (("o", "cpu", 1.0, 2.0, float("nan")), "value nan is not finite"),
    (("o", "B/s", 1.0, 2.0, -0.5), "a negative rate (-0.5 B/s)"),
    (("o", "cpu", 1.0, float("inf"), 0.5), "interval [1.0, inf) is not a finite, forward interval"),
    (("o", "cpu", 2.0, 2.0, 0.5), "interval [2.0, 2.0) is not a finite, forward interval"),
    (("o", "cpu", 1.0, 2.0, "0.5"), "not (object, unit, start, end, value)"),
    (("o", "cpu", 1.0, 2.0, True), "not (object, unit, start, end, value)"),
    (("o", "cpu", 1.0, 2.0), "not (object, unit, start, end, value)"),
    ((None, "cpu", 1.0, 2.0, 0.5), "not (object, unit, start, end, value)"),
    ("ocpu", "not (object, unit, start, end, value)"),
])
def test_what_makes_a_row_unusable(row, why):
    assert why in unusable(row)


@pytest.mark.parametrize("row", [("o", "cpu", 1.0, 2.0, 0.0), ("o", "req/s", 1, 2, 0), ("o", "x", 1.0, 2.0, -3.0),
                                 ("o", "cpu", 1.0, 2.0, 1e300)])
def test_samples_are_usable(row):
    assert unusable(row) is None
