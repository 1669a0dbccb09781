"""Collector agents on real processes: reports, standing requests, buffering, restarts."""

import subprocess
import sys
import time

import numpy as np
import pytest

from masa.activity import Series
from masa.errors import BadRequest, MasaError
from tests.cluster import ROOT, Cluster

BUSY = "import time\nwhile True:\n    t = time.time()\n    while time.time() - t < 1.0: pass\n    time.sleep(1.0)\n"


def series(answer):
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def test_report_sees_a_busy_process_and_refreshes_cheaply(pair):
    child = subprocess.Popen([sys.executable, "-c", BUSY + "# masa-busy-marker"])
    try:
        pair.create("b1", "collector", "busy-col", interval=0.5, match="masa-busy-marker", per_process="pid")
        col = pair.ref("busy-col")
        first = pair.wait(lambda: (r := col.query("report", objects=["*/proc/*"])) and
                          sum(len(s) for s in series(r).values()) >= 8 and r, timeout=20)
        s = next(iter(series(first).values()))
        assert str(child.pid) in s.object
        # busy 1 s, idle 1 s: both phases appear (how much CPU "busy" gets depends on
        # what else runs on this shared machine, so the test compares the two phases)
        assert s.value.min() < 0.02 and s.value.max() > 0.05
        # a refreshed report returns only what is new since the last one
        time.sleep(1.2)
        again = series(col.query("report", objects=["*/proc/*"], since=first["until"]))
        new = next(iter(again.values()))
        assert len(new) >= 1 and new.end[0] > first["until"] and new.start[0] >= s.end[-1] - 1e-6
    finally:
        child.kill()


def test_standing_request_pushes_only_matching_samples(pair):
    # a process busy 1 s, idle 1 s: its idle samples read 0 and fail the predicate
    child = subprocess.Popen([sys.executable, "-c", BUSY + "# masa-hot-marker"])
    try:
        pair.create("b1", "collector", "col-a", interval=0.25, match="masa-hot-marker", per_process="pid")
        pair.create("b2", "recorder", "rec-a")
        rec = pair.ref("rec-a")
        rec.configure("subscribe_to", request="hot", source="col-a", objects=["*/proc/*"],
                      predicates=["*/proc/* > 0.01", "*/proc/* <= 1e9"])
        start = rec.query("subscriptions_status")["hot"]["until"]
        # long enough for two busy and two idle phases to have passed the source
        pair.wait(lambda: rec.query("subscriptions_status")["hot"]["until"] >= start + 4.5, timeout=30)
        got = series(rec.query("report"))
        (obj,) = got
        assert obj.startswith("b1/proc/") and obj.endswith(f"/{child.pid}")
        ours = got[obj]
        theirs = series(pair.ref("col-a").query("report", objects=[obj], since=ours.start[0] + 1e-6,
                                                 until=ours.end[-1]))[obj]
        hot = theirs.value > 0.01
        assert hot.sum() >= 2 and (~hot).sum() >= 2  # the collector holds both kinds
        # exactly the collector's samples that match, none of the others
        np.testing.assert_array_equal(ours.end, theirs.end[hot])
        np.testing.assert_array_equal(ours.value, theirs.value[hot])
        assert "hot" in pair.ref("col-a").query("status")["requests"]
        assert rec.configure("unsubscribe", request="hot") is True
        assert "hot" not in pair.ref("col-a").query("status")["requests"]
    finally:
        child.kill()
        child.wait(10)


def test_bad_requests_are_refused_clearly(pair):
    pair.create("b1", "collector", "col-bad", interval=1.0, per_process="none")
    col = pair.ref("col-bad")
    with pytest.raises(BadRequest, match="bad predicate"):
        col.query("subscribe", request="x", subscriber="nobody", predicates=["cpu is hot"])
    with pytest.raises(BadRequest, match="predicates are a list of strings"):  # not read char by char
        col.query("subscribe", request="x", subscriber="nobody", predicates="*/cpu > 0.2")
    with pytest.raises(BadRequest, match="objects must be a list"):
        col.query("report", objects="b1/cpu")
    with pytest.raises(BadRequest, match="interval"):
        pair.create("b1", "collector", "col-bad2", interval=0)
    with pytest.raises(BadRequest, match="interval"):
        col.configure("reconfigure", interval="fast")
    with pytest.raises(MasaError, match="unknown probe 'telepathy'"):
        pair.create("b1", "collector", "col-bad3", probe="telepathy")


def test_nothing_lost_when_the_subscriber_dies_and_returns(tmp_path):
    with Cluster(tmp_path, {"c1": {}, "c2": {}}, heartbeat=0.5) as c:
        c.create("c1", "collector", "col", interval=0.2, per_process="none")
        c.create("c2", "recorder", "rec")
        # generous: on a loaded machine a killed host takes a while to restart its agents
        rec = c.ref("rec", timeout=45)
        rec.configure("subscribe_to", request="all-cpu", source="col", objects=["c1/cpu"])
        c.wait(lambda: rec.query("subscriptions_status")["all-cpu"]["seq"] >= 3, timeout=20)
        c.kill("c2")  # kill -9 the subscriber's host; the collector keeps metering
        c.wait(lambda: c.ref("col").query("status")["delivery_errors"] >= 2, timeout=20)
        time.sleep(1.0)  # more samples pile up in the collector's store meanwhile
        c.restart("c2")  # the recorder comes back from its checkpoint and re-subscribes
        c.wait(lambda: rec.query("status")["complete_until"] > time.time() - 1.0, timeout=60)
        got = series(rec.query("report"))["c1/cpu"]
        full = series(c.ref("col").query("report", objects=["c1/cpu"], since=got.start[0] + 1e-6,
                                         until=got.end[-1]))["c1/cpu"]
        # every sample the collector took while the subscriber was down arrived, once
        np.testing.assert_array_equal(got.start, full.start)
        np.testing.assert_array_equal(got.value, full.value)
        assert np.all(np.diff(got.start) > 0)
        assert got.end[-1] - got.start[0] > 4.0

        # now the source's host dies: the collector comes back from its checkpoint with
        # the standing request and the stream resumes where it stopped (metering has a
        # gap while nobody meters, but nothing metered is lost or doubled)
        seq_before = rec.query("subscriptions_status")["all-cpu"]["seq"]
        c.kill("c1")
        c.restart("c1")
        c.wait(lambda: rec.query("subscriptions_status")["all-cpu"]["seq"] >= seq_before + 3, timeout=60)
        after = series(rec.query("report"))["c1/cpu"]
        held = series(c.ref("col").query("report", objects=["c1/cpu"], since=got.end[-1] + 1e-6,
                                         until=after.end[-1]))["c1/cpu"]
        tail = after.since(got.end[-1] + 1e-6)
        np.testing.assert_array_equal(tail.start, held.start)
        assert np.all(np.diff(after.start) > 0)


def test_external_probe_read_by_a_remote_collector(pair, tmp_path):
    env = pair.settings.child_env()
    probe = subprocess.Popen([sys.executable, "-m", "masa", "probe", "edge1", "--label", "router1"],
                             env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pair.create("b2", "collector", "col-remote", probe="remote", source="edge1", interval=0.5)
        col = pair.ref("col-remote")
        got = pair.wait(lambda: (r := series(col.query("report"))) and "router1/cpu" in r and r, timeout=20)
        assert all(name.startswith("router1/") for name in got)
        assert got["router1/cpu"].value.min() >= 0
        # an external probe meters no sockets: no connection evidence, answered empty
        assert col.query("connections") == {"edges": [], "listening": [], "watched": [], "until": None}
    finally:
        probe.terminate()
        probe.wait(10)


def test_reconfigure_sampling_interval_at_run_time(pair):
    pair.create("b2", "collector", "col-rc", interval=1.0, per_process="none")
    col = pair.ref("col-rc")

    def spacing(since):
        s = series(col.query("report", objects=["b2/cpu"], since=since)).get("b2/cpu")
        return (s, float(sorted(s.end - s.start)[len(s) // 2])) if s is not None and len(s) >= 4 else None

    slow, step = pair.wait(lambda: spacing(0.0), timeout=20)
    assert step > 0.7
    settings = col.configure("reconfigure", interval=0.2)
    assert settings["interval"] == 0.2 and settings["probe"] == "procfs"
    after = slow.end[-1] + 0.5
    _, fast_step = pair.wait(lambda: spacing(after), timeout=20)
    assert fast_step < 0.5
