"""A refused reconfiguration changes nothing, not even after the host is killed: real
processes, a procfs collector, a domain agent over it, a recorder."""

import pytest

from masa.errors import BadRequest, MasaError
from tests.cluster import Cluster, attempt, wait


@pytest.fixture(scope="module")
def domain(tmp_path_factory):
    """b1: a collector and a domain agent over it (domain B); r1: a recorder and an echo."""
    hosts = {"b1": {"domain": "B"}, "r1": {"domain": "A"}}
    with Cluster(tmp_path_factory.mktemp("masa"), hosts) as c:
        c.create("b1", "collector", "col", interval=0.3, per_process="none")
        c.create("b1", "domain", "dom", sources=["col"], members=["*/cpu"], max_lag=20.0)
        c.create("r1", "recorder", "rec")
        c.create("r1", "echo", "plain")
        c.wait(lambda: c.ref("dom").query("catalog"), timeout=20)
        yield c


def settings(c, name):
    return c.ref(name).query("describe")["settings"]


def answer(fn, timeout=20.0):
    """The first answer of ``fn()`` (it may fail while a restarted host comes back)."""
    return wait(lambda: (r := attempt(fn)) is not None and [r], timeout)[0]


def restart_host(c, host, name):
    """kill -9 the host, start it again and wait until ``name`` answers from its checkpoint."""
    c.kill(host)
    c.restart(host)
    return answer(lambda: settings(c, name), timeout=30)


def test_a_refused_step_leaves_the_domain_agent_as_it_was_also_after_a_crash(domain):
    c = domain
    dom = c.ref("dom")
    before = settings(c, "dom")
    with pytest.raises(MasaError, match="bogus"):
        dom.configure("reconfigure", steps=[{"step": "bogus"}])
    with pytest.raises(MasaError, match="bogus"):  # several keys: none of them applied
        dom.configure("reconfigure", max_lag=5.0, steps=[{"step": "bogus"}])
    assert settings(c, "dom") == before
    assert dom.query("catalog")[0]["object"] == "B/cpu"  # still answers
    assert dom.query("report", objects=["B/cpu"], since=0)["series"]
    # a good change afterwards is checkpointed: with the refused ones undone
    assert dom.configure("reconfigure", cache_retain=1800.0)["cache_retain"] == 1800.0
    after = restart_host(c, "b1", "dom")
    assert after == {**before, "cache_retain": 1800.0}
    c.wait(lambda: attempt(lambda: dom.query("catalog")), timeout=20)


def test_a_negative_max_lag_is_refused_by_a_domain_agent(domain):
    c = domain
    before = settings(c, "dom")
    for bad in (-3, 0, "soon"):
        with pytest.raises(BadRequest, match="max_lag must be a positive number"):
            c.ref("dom").configure("reconfigure", max_lag=bad)
    with pytest.raises(BadRequest, match="members must be a list"):
        c.ref("dom").configure("reconfigure", members="b1/cpu")
    for bad in ("a/b", "B*", "", None, 5):  # a label is one name segment: LABEL/UNIT
        with pytest.raises(BadRequest, match="label must be one non-empty name"):
            c.ref("dom").configure("reconfigure", label=bad)
    with pytest.raises(MasaError, match="label must be one non-empty name"):
        c.create("b1", "domain", "dom-bad", sources=["col"], label="east/rack1")
    assert settings(c, "dom") == before
    assert c.ref("dom").configure("reconfigure", max_lag=12.5)["max_lag"] == 12.5


def test_a_refused_collector_interval_stays_refused_after_a_crash(domain):
    c = domain
    col = c.ref("col")
    interval = col.query("status")["interval"]
    with pytest.raises(BadRequest, match="interval"):
        col.configure("reconfigure", interval=-1)
    assert col.query("status")["interval"] == interval
    col.configure("reconfigure", retention=1800.0)  # a checkpoint after the refused change
    restart_host(c, "b1", "col")
    assert answer(lambda: col.query("status"))["interval"] == interval


def test_a_configure_op_that_fails_halfway_leaves_no_trace_in_the_state(domain):
    """``subscribe_to`` keeps the subscription before asking the source; the source (an
    echo agent) has no ``subscribe``: the failed op must not leave a dangling entry, in
    the running agent nor in its checkpoint."""
    c = domain
    rec = c.ref("rec")
    with pytest.raises(MasaError, match="no query operation 'subscribe'"):
        rec.configure("subscribe_to", request="r-bad", source="plain")
    assert rec.query("subscriptions_status") == {}
    rec.configure("reconfigure", retention=1800.0)  # a checkpoint after the failed op
    restart_host(c, "r1", "rec")
    assert answer(lambda: rec.query("subscriptions_status")) == {}
