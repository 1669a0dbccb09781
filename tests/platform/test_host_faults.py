"""Faults of a host's surroundings: its state database deleted under it, moves whose commit
never came or came too late, a host killed while a configure call is under way.  Against
real processes (name server and hosts)."""

from __future__ import annotations

import shutil
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from masa import naming
from masa.errors import AgentExists, MoveFailed, OutcomeUnknown
from masa.naming import NameService
from masa.ref import AgentRef, _closed_by_peer
from masa.store import Store
from tests.cluster import Cluster, attempt, wait


def _agents(cluster, host: str) -> dict[str, dict]:
    return {a["name"]: a for a in cluster.host(host, "agents")}


def _package(name: str, source: str, kind: str = "echo", **state) -> dict:
    return {"kind": kind, "name": name, "domain": "A", "state": state, "source": source}


def _saved(db: Path) -> set[str]:
    """The agents whose checkpoints the host database at ``db`` holds now."""
    if not db.exists():
        return set()
    store = Store(f"sqlite:///{db}")
    try:
        return {e["name"] for e in store.load_checkpoints()}
    finally:
        store.close()


# -- 6: the state database deleted while the host runs ------------------------------------------

@pytest.mark.parametrize("remove", ["file", "folder"])
def test_a_deleted_state_database_is_made_again_and_a_restart_brings_every_agent_back(tmp_path, remove):
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "flaky", "keeper", tick_every=0.2)
        c.create("h1", "flaky", "sleeper")
        c.ref("keeper").configure("set_value", value=42)
        c.ref("sleeper").configure("set_value", value=7)
        c.host("h1", "suspend", "sleeper")
        db = tmp_path / "hosts" / "h1" / "host.db"
        assert _saved(db) == {"keeper", "sleeper"}
        if remove == "file":
            db.unlink()  # its -wal and -shm stay, as they would after an operator's rm
        else:
            shutil.rmtree(db.parent)
        # the next checkpoint round finds the file gone and writes every checkpoint anew
        wait(lambda: _saved(db) == {"keeper", "sleeper"})
        c.kill("h1")
        c.restart("h1")
        keeper = c.ref("keeper", timeout=15)
        assert keeper.query("get")["value"] == 42
        assert keeper.query("get")["starts"] == 2
        assert _agents(c, "h1")["sleeper"]["status"] == "suspended"
        c.host("h1", "resume", "sleeper")
        assert c.ref("sleeper").query("get")["value"] == 7
    assert "re-creating it" in (tmp_path / "logs" / "h1.log").read_text()


# -- 7a: a copy received earlier whose commit never came ---------------------------------------

def test_a_stale_received_copy_is_replaced_when_its_source_moves_the_agent_again(cluster):
    cluster.create("h1", "echo", "retried")
    cluster.ref("retried").query("echo")
    # h1 sent the agent to h2 once and never committed (its commit, then its abort, lost)
    cluster.host("h2", "receive", _package("retried", "h1", answered=999))
    moved = cluster.move("retried", "h2")  # h1 tries again: the stale copy gives way
    assert moved["to"] == "h2"
    assert cluster.ref("retried").query("echo") == {"agent": "retried", "host": "h2", "n": 2,
                                                    "payload": None}


def test_a_stale_received_copy_from_another_source_is_refused_saying_what_it_is(cluster):
    cluster.create("h1", "echo", "contested")
    cluster.host("h2", "receive", _package("contested", "h1"))
    with pytest.raises(AgentExists, match=r"h2' holds a copy of agent 'contested' received from 'h1' .*"
                                          r"not committed.*not from 'h3'"):
        cluster.host("h2", "receive", _package("contested", "h3"))
    # a package for a name that points at no host: the copy waits for its source's word
    cluster.host("h2", "receive", _package("nameless", "h1"))
    with pytest.raises(AgentExists, match="name points nowhere, not at 'h1'"):
        cluster.host("h2", "receive", _package("nameless", "h1"))
    # h1 holds neither and has no move of them under way: h2 drops both copies when it asks
    wait(lambda: attempt(lambda: cluster.host("h2", "receive", _package("nameless", "h1"))))
    assert cluster.move("contested", "h2")["to"] == "h2"
    assert cluster.ref("contested").query("echo")["host"] == "h2"


def test_an_uncommitted_copy_whose_name_points_at_it_starts_when_its_source_holds_nothing(cluster):
    """The source pointed the name at the copy and died before its commit: the copy is the
    agent now (the source, asked, holds nothing of it)."""
    uri = cluster.host("h2", "receive", _package("orphan", "h3", answered=7))
    _point(cluster, "orphan", uri, "h2", kind="echo")
    answer = cluster.ref("orphan", timeout=30).query("echo")  # waits at the gate until it starts
    assert answer == {"agent": "orphan", "host": "h2", "n": 8, "payload": None}


def test_a_copy_whose_source_kept_the_agent_is_dropped_and_the_name_pointed_back(cluster):
    """The source gave the move up after pointing the name at the target and could not
    point it back: the target, told by the source that it kept the agent, drops its copy
    and points the name at the source's."""
    cluster.create("h1", "echo", "homing")
    cluster.ref("homing").query("echo")
    uri = cluster.host("h2", "receive", _package("homing", "h1", answered=999))
    _point(cluster, "homing", uri, "h2", kind="echo")
    wait(lambda: cluster.where("homing") == "h1")
    assert cluster.ref("homing").query("echo") == {"agent": "homing", "host": "h1", "n": 2, "payload": None}


# -- 7b: a commit the source gave up on --------------------------------------------------------

def test_a_committed_copy_whose_source_took_the_agent_back_is_dropped(cluster):
    """The source's commit call timed out after the target had started the agent; the
    source pointed the name back and its abort was lost.  The target asks the source,
    which kept the agent: its copy goes, and no second copy keeps running."""
    cluster.create("h1", "flaky", "twice", tick_every=0.2)
    cluster.ref("twice").configure("set_value", value=3)
    home_uri = str(_lookup(cluster, "twice"))
    uri = cluster.host("h2", "receive", _package("twice", "h1", kind="flaky", value=3,
                                                 settings={"tick_every": 0.2}))
    _point(cluster, "twice", uri, "h2")
    cluster.host("h2", "commit", "twice", "h1")
    assert "twice" in _agents(cluster, "h2")
    _point(cluster, "twice", home_uri, "h1")  # the source's point-back; no abort comes
    wait(lambda: "twice" not in _agents(cluster, "h2"))
    assert cluster.ref("twice").query("get")["value"] == 3
    assert cluster.where("twice") == "h1"


def test_an_abort_during_a_slow_commit_drops_the_copy_once_it_has_arrived(tmp_path):
    """The source's commit call times out while the agent is still arriving at the target
    (a slow ``after_move``): the source keeps the agent and aborts.  The target stops its
    copy only once the arrival has ended, so nothing the arrival opened stays behind, and
    the failed move is not counted as one that came in."""
    trace = tmp_path / "trace"
    with Cluster(tmp_path, {"h1": {}, "h2": {}}, call_timeout=1.0) as c:
        c.create("h1", "flaky", "slowcomer", arrival_delay=3.0, trace=str(trace))
        c.ref("slowcomer").configure("set_value", value=5)
        with pytest.raises(MoveFailed):
            c.move("slowcomer", "h2")
        assert c.where("slowcomer") == "h1"
        assert c.ref("slowcomer").query("get")["value"] == 5
        wait(lambda: "h2 stopped" in trace.read_text())
        at_h2 = [line for line in trace.read_text().splitlines() if line.startswith("h2")]
        assert at_h2 == ["h2 arrived", "h2 stopped"]
        assert c.host("h2", "info")["moves"]["in"] == 0
        assert "slowcomer" not in _agents(c, "h2")


def _lookup(cluster, name: str):
    ns = NameService(cluster.settings)
    try:
        return ns.lookup(naming.agent_name(name), wait=0)
    finally:
        ns.close()


def _point(cluster, name: str, uri: str, host: str, kind: str = "flaky") -> None:
    """Register ``name`` at ``uri`` as a host does (a move's step, done by hand)."""
    ns = NameService(cluster.settings)
    try:
        ns.register(naming.agent_name(name), uri, naming.tags(kind=kind, domain="A", host=host)
                    | {"masa:agent"})
    finally:
        ns.close()


# -- 7c: a configure call whose host dies under it ---------------------------------------------

def test_a_configure_call_cut_off_mid_call_is_not_sent_again(tmp_path):
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "flaky", "victim")
        ref = c.ref("victim", timeout=60)
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["answer"] = ref.configure("slow_set", value=9, seconds=5)
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        watcher = c.ref("victim")
        wait(lambda: watcher.query("get")["value"] == 9)  # the handler is running
        c.kill("h1")
        c.restart("h1")
        caller.join(90)
        assert isinstance(outcome.get("error"), OutcomeUnknown), outcome
        assert "victim.slow_set" in str(outcome["error"])
        assert "may or may not have taken effect" in str(outcome["error"])
        # the restarted agent came from its last checkpoint: the cut-off call never ran again
        assert watcher.query("get")["value"] == 0
        # a configure whose kept connection the dead host left behind was not sent: it is
        # sent to the restarted host (nothing had gone out)
        assert ref.configure("set_value", value=4) == 4
        c.kill("h1")
        c.restart("h1")
        assert ref.configure("set_value", value=6) == 6
        assert watcher.query("get")["value"] == 6


def test_a_query_cut_off_mid_call_is_sent_again_after_the_restart(tmp_path):
    trace = tmp_path / "trace"
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "flaky", "reader", trace=str(trace))
        ref = c.ref("reader", timeout=60)
        outcome: dict = {}

        def call() -> None:
            try:
                outcome["answer"] = ref.query("slow_read", seconds=1.0)
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        caller = threading.Thread(target=call)
        caller.start()
        wait(lambda: trace.exists() and "h1 reading" in trace.read_text())
        c.kill("h1")
        c.restart("h1")
        caller.join(90)
        assert outcome == {"answer": "read"}
        assert trace.read_text().splitlines().count("h1 reading") == 2


def test_a_configure_call_over_a_connection_the_host_closed_as_idle_is_sent(tmp_path):
    with Cluster(tmp_path, {"h1": {}}, idle_timeout=0.5) as c:
        c.create("h1", "flaky", "idler")
        # a client that takes the connection for fresh however long it was idle: only what
        # it finds on the connection tells it the host closed it
        ref = AgentRef("idler", replace(c.settings, idle_timeout=3600.0))
        assert ref.configure("set_value", value=1) == 1
        conn = ref._local.proxy._pyroConnection
        wait(lambda: _closed_by_peer(conn.sock))  # the host closed it as idle
        assert ref.configure("set_value", value=2) == 2
        assert ref.query("get")["value"] == 2
