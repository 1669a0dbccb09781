"""A mediator (or domain agent) with a source that is dead, gone, dropped or added, on
real processes: ``subscribe`` is answered while a source is dead, the streams from the
live ones run meanwhile, the dead one's stream opens when it is back, from where the
request began, and no handler overruns into the host's watchdog.  A source dropped by
``reconfigure`` no longer holds the stream up, and is told to quit once it is back; one
added gets streams from the position reached above.  No timing thresholds: the machine is
shared; every wait is bounded generously and the checks are on samples and states."""

import time

from agents.domain_join import reference_join
from tests.agents.mediation_helpers import assert_same_samples, recorded, restarts, series, window
from tests.cluster import Cluster, attempt

HOSTS = {"b1": {"domain": "B"}, "b2": {"domain": "B"}, "m1": {"domain": "A"}, "r1": {"domain": "A"}}


def start(c, sources=("col1", "col2"), kind="mediator", **settings):
    c.create("b1", "collector", "col1", interval=0.3, per_process="none")
    c.create("b2", "collector", "col2", interval=0.5, per_process="none")
    c.create("m1", kind, "med", sources=list(sources), **settings)
    c.create("r1", "recorder", "top")
    wanted = {"b1/cpu"} if kind == "domain" else {f"b{s[-1]}/cpu" for s in sources}
    c.wait(lambda: wanted <= {e["object"] for e in c.ref("med").query("members" if kind == "domain" else "catalog")},
           timeout=30)


def requests_at(c, source):
    """The standing requests ``source`` serves (None while it does not answer)."""
    return attempt(lambda: c.ref(source, timeout=5).query("status")["requests"])


def status(c):
    return c.ref("med").query("status")


def same_as_collector(c, obj, col, since):
    """What the subscriber holds of ``obj`` after ``since`` is exactly its collector's."""
    got = recorded(c, "top", obj)
    until = float(got.end[-1])
    want = window(series(c.ref(col).query("report", objects=[obj], since=since - 60, until=until))[obj],
                  since, until)
    assert len(want) > 3, obj
    assert_same_samples(window(got, since, until), want)


def test_subscribe_with_a_dead_source_is_answered_and_loses_nothing_when_it_returns(tmp_path):
    with Cluster(tmp_path, HOSTS) as c:
        start(c)
        c.kill("b2")  # col2's name still points at its dead host
        # answered within the recorder's own call timeout: before, the mediator's handler
        # waited on col2 until the caller gave up, and the watchdog restarted it
        c.ref("top").configure("subscribe_to", request="r", source="med")
        subscribed = time.time()
        assert c.ref("top").query("subscriptions_status")["r"]["source"] == "med"
        assert status(c)["requests"] == ["r"]  # one request, known on both sides
        # the live source's stream opens while col2 is down, and col2 is said to be down
        c.wait(lambda: "med:r@col1" in (requests_at(c, "col1") or []), timeout=30)
        c.wait(lambda: "col2" in status(c)["unreachable"], timeout=30)
        assert "med:r@col2" in status(c)["below"]  # kept, to be sent when col2 answers
        c.restart("b2")
        # col2 gets the request from the mediator's own resubscribe task, and nothing else
        c.wait(lambda: requests_at(c, "col2") == ["med:r@col2"], timeout=60)
        c.wait(lambda: "col2" not in status(c)["unreachable"] and not status(c)["unsent"], timeout=60)
        c.wait(lambda: len(recorded(c, "top", "b2/cpu")) >= 6 and
               recorded(c, "top", "b1/cpu").end[-1] > recorded(c, "top", "b2/cpu").end[0] + 2, timeout=60)
        # from where the request began: nothing lost, nothing twice, from either source
        same_as_collector(c, "b1/cpu", "col1", subscribed)
        same_as_collector(c, "b2/cpu", "col2", subscribed)
        # quitting with a dead source: the live one is told at once, the dead one is owed it
        c.kill("b2")
        assert c.ref("top").configure("unsubscribe", request="r") is True
        assert status(c)["requests"] == [] and status(c)["below"] == {}
        c.wait(lambda: requests_at(c, "col1") == [], timeout=30)
        c.wait(lambda: status(c)["quitting"] == ["med:r@col2"], timeout=30)
        assert restarts(c, "m1", "med") == 0


def test_subscribe_with_a_source_whose_name_is_gone_opens_it_when_it_is_back(tmp_path):
    with Cluster(tmp_path, HOSTS) as c:
        start(c)
        c.host("b2", "terminate", "col2")  # its name is gone from the name server
        c.ref("top").configure("subscribe_to", request="r", source="med")
        c.wait(lambda: "med:r@col1" in (requests_at(c, "col1") or []), timeout=30)
        c.wait(lambda: "col2" in status(c)["unreachable"], timeout=30)
        c.ref("med").query("catalog")  # answered from what col2 offered last, without waiting on it
        c.create("b2", "collector", "col2", interval=0.5, per_process="none")
        c.wait(lambda: requests_at(c, "col2") == ["med:r@col2"], timeout=60)
        c.wait(lambda: len(recorded(c, "top", "b2/cpu")) >= 4, timeout=60)
        assert restarts(c, "m1", "med") == 0


def test_dropping_a_dead_source_lets_the_stream_up_move_on_and_quits_it_when_back(tmp_path):
    with Cluster(tmp_path, HOSTS) as c:
        start(c)
        c.ref("top").configure("subscribe_to", request="r", source="med")
        c.wait(lambda: len(recorded(c, "top", "b2/cpu")) >= 3 and len(recorded(c, "top", "b1/cpu")) >= 3,
               timeout=30)
        c.kill("b2")
        assert c.ref("med").configure("reconfigure", sources=["col1"])["sources"] == ["col1"]
        dropped = time.time()
        st = status(c)
        assert [s["source"] for s in st["below"].values()] == ["col1"]  # col2's stream forgotten at once
        assert st["quitting"] == ["med:r@col2"]  # its quit is owed until col2 answers
        # the stream up no longer waits for a source that will not move: it goes on, whole
        c.wait(lambda: recorded(c, "top", "b1/cpu").end[-1] > dropped + 3, timeout=30)
        same_as_collector(c, "b1/cpu", "col1", dropped - 1)
        assert all(e["object"].startswith("b1/") for e in c.ref("med").query("catalog"))
        # col2 back (from its checkpoint, with the request): its batches are refused here
        # and it is told to quit; neither breaks the stream that goes on
        c.restart("b2")
        c.wait(lambda: requests_at(c, "col2") == [], timeout=60)
        c.wait(lambda: status(c)["quitting"] == [], timeout=60)
        back = time.time()
        c.wait(lambda: recorded(c, "top", "b1/cpu").end[-1] > back + 2, timeout=30)
        same_as_collector(c, "b1/cpu", "col1", dropped - 1)
        assert restarts(c, "m1", "med") == 0


def test_adding_a_source_opens_its_streams_from_the_position_reached_above(tmp_path):
    with Cluster(tmp_path, HOSTS) as c:
        start(c, sources=("col1",))
        c.ref("top").configure("subscribe_to", request="r", source="med")
        c.wait(lambda: len(recorded(c, "top", "b1/cpu")) >= 3, timeout=30)
        c.ref("med").configure("reconfigure", sources=["col1", "col2"])
        # the position the subscriber had reached by then (the request's, at the mediator,
        # was no further): col2's samples must all come up from there on
        reached = c.ref("top").query("subscriptions_status")["r"]["until"]
        assert sorted(s["source"] for s in status(c)["below"].values()) == ["col1", "col2"]
        c.wait(lambda: len(recorded(c, "top", "b2/cpu")) >= 6, timeout=60)
        same_as_collector(c, "b2/cpu", "col2", reached)
        same_as_collector(c, "b1/cpu", "col1", reached)
        assert restarts(c, "m1", "med") == 0


def test_changing_a_domain_agents_members_changes_its_streams_below(tmp_path):
    with Cluster(tmp_path, HOSTS) as c:
        start(c, kind="domain", members=["b1/cpu"], label="B")
        c.ref("top").configure("subscribe_to", request="c", source="med")
        c.wait(lambda: len(recorded(c, "top", "B/cpu")) >= 3, timeout=30)
        c.ref("med").configure("reconfigure", members=["b1/cpu", "b2/cpu"])
        # at once, not when the subscriber above happens to send its request again
        assert all(s["objects"] == ["b1/cpu", "b2/cpu"] for s in status(c)["below"].values())
        c.wait(lambda: not status(c)["unsent"], timeout=30)
        since = status(c)["below"]["med:c@col2"]["until"]  # b2/cpu comes from here on
        c.wait(lambda: recorded(c, "top", "B/cpu").end[-1] > since + 4, timeout=60)
        got = recorded(c, "top", "B/cpu")
        until = float(got.end[-1])
        direct = [series(c.ref(col).query("report", objects=[obj], since=since - 60, until=until + 5))[obj]
                  for obj, col in (("b1/cpu", "col1"), ("b2/cpu", "col2"))]
        want = window(reference_join(direct, "B/cpu", "cpu"), since, until)
        assert len(want) > 5
        assert_same_samples(window(got, since, until), want, rtol=1e-12)  # both members, exactly
        assert restarts(c, "m1", "med") == 0
