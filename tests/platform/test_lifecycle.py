"""MASIF lifecycle operations and delegated tasks across moves."""

import pytest

from masa.errors import AgentSuspended, BadRequest
from masa.host import next_beat
from tests.cluster import Cluster, attempt, wait


def test_suspend_resume_terminate(cluster):
    cluster.create("h2", "echo", "sleeper")
    ref = cluster.ref("sleeper", timeout=2)
    assert ref.query("echo")["n"] == 1
    cluster.host("h2", "suspend", "sleeper")
    with pytest.raises(AgentSuspended):
        ref.query("echo")
    assert {a["name"]: a["status"] for a in cluster.host("h2", "agents")}["sleeper"] == "suspended"
    cluster.host("h2", "resume", "sleeper")
    assert ref.query("echo")["n"] == 2  # nothing lost while suspended
    cluster.host("h2", "terminate", "sleeper")
    assert "sleeper" not in {a["name"] for a in cluster.host("h2", "agents")}
    with pytest.raises(Exception, match="not found|unreachable"):
        cluster.ref("sleeper", timeout=1).query("echo")


def test_delegated_task_pushes_results_and_moves_with_the_agent(cluster):
    cluster.create("h1", "echo", "worker")
    cluster.create("h2", "echo", "sink")
    worker = cluster.ref("worker")
    with pytest.raises(BadRequest, match="unknown query operation"):
        worker.configure("delegate", task="t", op="nope", every=1, to="sink", deliver="inbox")
    worker.configure("delegate", task="beat", op="ping", every=0.1, to="sink", deliver="inbox")
    sink = cluster.ref("sink")
    cluster.wait(lambda: sink.query("received").get("worker/beat", {}).get("count", 0) >= 3)
    cluster.move("worker", "h2")
    before = sink.query("received")["worker/beat"]["count"]
    cluster.wait(lambda: sink.query("received")["worker/beat"]["count"] >= before + 3)
    assert sink.query("received")["worker/beat"]["last"] == "worker"
    assert worker.query("delegated")["beat"]["to"] == "sink"
    assert worker.configure("undelegate", task="beat") is True
    assert worker.query("delegated") == {}


def test_redirect_is_followed_and_remembered(cluster):
    cluster.create("h1", "echo", "old-office", successor="new-office")
    cluster.create("h2", "echo", "new-office")
    ref = cluster.ref("old-office")
    assert ref.query("forward", payload=1)["agent"] == "new-office"
    assert ref.name == "new-office" and ref.redirected_from == ["old-office"]
    assert ref.query("echo")["agent"] == "new-office"  # remembered: asks new-office directly
    cluster.create("h1", "echo", "loop-a", successor="loop-b")
    cluster.create("h2", "echo", "loop-b", successor="loop-a")
    from masa.errors import Redirect

    with pytest.raises(Redirect, match="more than 8 redirects"):
        cluster.ref("loop-a").query("forward")


def test_agent_moves_itself(cluster):
    cluster.create("h1", "echo", "wanderer")
    ref = cluster.ref("wanderer")
    ref.query("echo")
    assert ref.configure("relocate", host="h2") == "h2"
    cluster.wait(lambda: cluster.where("wanderer") == "h2")
    answer = ref.query("echo")
    assert answer["host"] == "h2" and answer["n"] == 2


def test_periodic_tasks_skip_missed_beats_instead_of_bursting():
    # On time: the next beat.  After a stall of 5.5 periods: the next beat after now,
    # once, on the task's own phase; never "now" again, which a meter would turn into
    # a rate over a few milliseconds.
    assert next_beat(10.0, 1.0, 10.01) == 11.0
    assert next_beat(10.0, 1.0, 15.5) == 16.0
    assert next_beat(10.0, 0.5, 12.0) == 12.5
    assert next_beat(10.0, 2.0, 9.0) == 12.0  # woken early: still one period on


def test_a_suspend_is_kept_at_once_with_the_state_the_agent_left(tmp_path):
    """Killed right after the suspend, before the host's 5 s checkpoint round: the agent
    comes back suspended, and with the state it had when it was suspended."""
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "echo", "napper")
        ref = c.ref("napper", timeout=15)
        for _ in range(3):
            ref.query("echo")
        c.host("h1", "suspend", "napper")
        c.kill("h1")
        c.restart("h1")
        wait(lambda: attempt(lambda: {a["name"]: a["status"] for a in c.host("h1", "agents")}
                             ["napper"]) == "suspended")
        with pytest.raises(AgentSuspended):
            ref.query("echo")
        c.host("h1", "resume", "napper")
        assert ref.query("echo")["n"] == 4
