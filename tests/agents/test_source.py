"""The store-backed collection query interface on real processes: report paging,
delivery to many subscribers (some dead), predicates at the source and the requester, a
subscriber's host dying while it stores a batch."""

import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from agents.source import page
from masa.activity import Series
from tests.agents.source_kinds import PAGE
from tests.cluster import Cluster, attempt

FEEDER = "feeder=tests.agents.source_kinds:FeederAgent"
HOLDING = "holding=tests.agents.source_kinds:HoldingRecorderAgent"
SLOW = "slowrec=tests.agents.source_kinds:SlowRecorderAgent"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("masa"), {"s1": {"domain": "S"}, "s2": {"domain": "S"}}, kinds=(FEEDER, SLOW))
    with c:
        yield c


def series(answer):
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def test_page_cuts_only_between_end_times():
    rows = [(f"o{i}", "cpu", t - 1.0, float(t), 0.0) for t in (1, 2, 3) for i in range(3)]
    assert page(rows, 9.0, 9) == (rows, 9.0)  # under the cap: all, up to what was asked
    got, until = page(rows, 9.0, 4)  # the cap falls inside the second tick: cut before it
    assert until == 1.0 and sorted(got) == sorted(rows[:3])
    got, until = page(rows, 9.0, 2)  # one tick alone exceeds the cap: it comes whole
    assert until == 1.0 and sorted(got) == sorted(rows[:3])


def test_paging_through_a_report_delivers_every_sample_once(cluster):
    cluster.create("s1", "feeder", "feed-pages")
    feeder = cluster.ref("feed-pages")
    t0 = time.time() - 600
    rows = []
    for tick in range(12):  # every object sampled on the same ticks
        width = 3 * PAGE // 2 if tick == 5 else 37  # tick 5 alone is more than one page
        rows += [[f"n1/o{i:03d}", "cpu", t0 + tick, t0 + tick + 1, float(tick)] for i in range(width)]
    rows += [[f"x/other{i}", "cpu", t0 + tick, t0 + tick + 1, 0.0] for tick in range(12) for i in range(5)]
    assert feeder.query("feed", rows=rows) == len(rows)

    def page_through(objects):
        seen, since, pages = Counter(), 0.0, 0
        while pages < 100:
            answer = feeder.query("report", objects=objects, since=since)
            pages += 1
            for s in series(answer).values():
                seen.update((s.object, float(e)) for e in s.end)
            if answer["until"] <= since:
                return seen, pages
            since = answer["until"]
        raise AssertionError("paging did not end")

    wanted = [(r[0], float(r[3])) for r in rows if r[0].startswith("n1/")]
    for objects in (None, ["n1/*"]):
        seen, pages = page_through(objects)
        expect = wanted + ([(r[0], float(r[3])) for r in rows if r[0].startswith("x/")] if objects is None else [])
        assert sum(seen.values()) == len(expect) and set(seen) == set(expect)
        assert max(seen.values()) == 1  # nothing twice
        assert pages > 3  # it really was paged


def test_dead_subscribers_hold_up_no_healthy_one(cluster):
    cluster.create("s1", "collector", "col-many", interval=0.25, per_process="none")
    cluster.create("s2", "recorder", "rec-healthy")
    col, rec = cluster.ref("col-many"), cluster.ref("rec-healthy")
    rec.configure("subscribe_to", request="healthy", source="col-many", objects=["s1/cpu"])
    ghosts = [f"ghost-{i}" for i in range(5)]  # names no agent has
    for g in ghosts:
        col.query("subscribe", request=f"to-{g}", subscriber=g)
    cluster.wait(lambda: col.query("status")["delivery_errors"] >= len(ghosts), timeout=30)
    seq0 = rec.query("subscriptions_status")["healthy"]["seq"]
    errors0 = col.query("status")["delivery_errors"]
    batches = 12
    cluster.wait(lambda: rec.query("subscriptions_status")["healthy"]["seq"] >= seq0 + batches, timeout=60)
    status = col.query("status")
    # each batch to the healthy one is a delivery round; a dead subscriber is not tried on
    # every round but after a growing backoff, so far fewer attempts than rounds
    assert status["delivery_errors"] - errors0 <= len(ghosts) * batches // 2
    assert status["retrying"] == sorted(f"to-{g}" for g in ghosts)
    assert sorted(status["requests"]) == sorted(["healthy"] + [f"to-{g}" for g in ghosts])  # none dropped
    # what arrived is exactly what the collector has, nothing missing in between
    got = series(rec.query("report"))["s1/cpu"]
    full = series(col.query("report", objects=["s1/cpu"], since=got.start[0] + 1e-6, until=got.end[-1]))["s1/cpu"]
    np.testing.assert_array_equal(got.end, full.end)


def test_a_slow_subscriber_with_a_backlog_holds_up_no_other(cluster):
    """A subscriber that answers each batch only after a second, back from a 12-minute
    outage (12 batches to catch up), takes a batch per round: the quick subscriber of the
    same source goes on receiving while the slow one catches up, not after it."""
    cluster.create("s1", "collector", "col-rr", interval=0.25, per_process="none")
    cluster.create("s2", "recorder", "rec-quick")
    cluster.create("s2", "slowrec", "rec-slow", delay=1.0)
    quick, slow = cluster.ref("rec-quick"), cluster.ref("rec-slow")
    quick.configure("subscribe_to", request="quick", source="col-rr", objects=["s1/cpu"])
    cluster.wait(lambda: quick.query("subscriptions_status")["quick"]["seq"] >= 1, timeout=30)
    backlog = 12
    slow.query("open_from", request="slow", source="col-rr", since=time.time() - 60 * backlog)
    cluster.wait(lambda: slow.query("subscriptions_status")["slow"]["seq"] >= 1, timeout=30)
    advanced, seq = 0, quick.query("subscriptions_status")["quick"]["seq"]
    deadline = time.monotonic() + 120
    for _ in range(600):  # the backlog takes 12 s or more: polled, bounded in count and time
        if slow.query("subscriptions_status")["slow"]["seq"] >= backlog or time.monotonic() > deadline:
            break
        now = quick.query("subscriptions_status")["quick"]["seq"]
        advanced, seq = advanced + (now > seq), now
        time.sleep(0.2)
    assert slow.query("subscriptions_status")["slow"]["seq"] >= backlog
    assert advanced >= 2  # the quick one moved on (at least twice) while the backlog drained
    got = series(slow.query("report"))["s1/cpu"]  # and the slow one lost nothing on the way
    full = series(cluster.ref("col-rr").query("report", objects=["s1/cpu"], until=got.end[-1]))["s1/cpu"]
    np.testing.assert_array_equal(got.end, full.end)


def test_an_object_no_predicate_applies_to_passes_unfiltered(cluster):
    cluster.create("s1", "feeder", "feed-pred")
    cluster.create("s2", "recorder", "rec-pred")
    feeder, rec = cluster.ref("feed-pred"), cluster.ref("rec-pred")
    rec.configure("subscribe_to", request="hot", source="feed-pred", objects=["n1/cpu", "n1/app/py"],
                  predicates=["*/cpu > 0.5"])
    t0 = rec.query("subscriptions_status")["hot"]["until"]
    values = [0.1, 0.7, 0.3, 0.9, 0.6, 0.2]
    rows = [[obj, "cpu", t0 + 0.01 * k, t0 + 0.01 * (k + 1), v]
            for k, v in enumerate(values) for obj in ("n1/cpu", "n1/app/py", "n1/other")]
    feeder.query("feed", rows=rows)
    last = t0 + 0.01 * len(values)
    cluster.wait(lambda: rec.query("subscriptions_status")["hot"]["until"] >= last, timeout=30)
    # what the recorder holds once the batch is in (its report, not only its position)
    got = cluster.wait(lambda: (g := series(rec.query("report"))) and len(g.get("n1/app/py", [])) == len(values) and g,
                       timeout=30)
    assert sorted(got) == ["n1/app/py", "n1/cpu"]
    np.testing.assert_array_equal(got["n1/app/py"].value, values)  # no predicate applies: all
    np.testing.assert_array_equal(got["n1/cpu"].value, [v for v in values if v > 0.5])


def test_a_host_crash_while_a_batch_is_being_stored_loses_nothing(tmp_path):
    """The subscriber's host checkpoints the recorder while its store write of a batch
    stalls, then dies (kill -9).  The checkpoint must not hold a position past samples
    that never reached the store: the restored recorder resumes from it, and the source
    replays only what lies after it."""
    hold = tmp_path / "hold"
    c = Cluster(tmp_path / "masa", {"s1": {"domain": "S"}, "s2": {"domain": "S"}}, kinds=(FEEDER, HOLDING))
    with c:
        c.create("s1", "feeder", "feed-crash")
        c.create("s2", "holding", "rec-crash", hold=str(hold))
        feeder, rec = c.ref("feed-crash"), c.ref("rec-crash", timeout=20)
        rec.configure("subscribe_to", request="r", source="feed-crash")
        t0 = rec.query("subscriptions_status")["r"]["until"]
        values = [0.1, 0.2, 0.3, 0.4, 0.5]
        hold.touch()
        feeder.query("feed", rows=[["n1/cpu", "cpu", t0 + 0.01 * k, t0 + 0.01 * (k + 1), v]
                                   for k, v in enumerate(values)])
        c.wait(Path(f"{hold}.entered").exists, timeout=30)
        time.sleep(6.0)  # the host checkpoints its agents every 5 s
        c.kill("s2")
        hold.unlink()
        c.restart("s2")
        got = c.wait(lambda: (s := attempt(lambda: series(c.ref("rec-crash").query("report"))))
                     and len(s.get("n1/cpu", [])) == len(values) and s, timeout=40)
        np.testing.assert_array_equal(got["n1/cpu"].value, values)
