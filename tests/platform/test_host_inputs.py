"""What a host takes from its callers: answers over the message limit, malformed agents
and migration packages, copies of agents that run elsewhere, odd timeouts, names
registered without metadata.  Against real processes (name server and hosts)."""

from __future__ import annotations

import math
import random
import time

import msgpack
import Pyro5.serializers
import pytest

from masa import admin, naming
from masa.errors import (
    AgentExists,
    AgentNotFound,
    BadRequest,
    MasaError,
    PayloadTooLarge,
    QueryTimeout,
    UnknownOperation,
)
from masa.host import _hand_over, size_bounds
from masa.naming import NameService
from masa.security import Proxy
from masa.store import Store
from tests.cluster import Cluster, wait

MiB = 1 << 20


def _agent(cluster, host: str, name: str) -> dict:
    return next(a for a in cluster.host(host, "agents") if a["name"] == name)


def _package(name: str, **kw) -> dict:
    return {"kind": "echo", "name": name, "domain": "A", "state": {}, "source": "h1", **kw}


# -- A: answers over MASA_MAX_MESSAGE --------------------------------------------------------

def test_answer_over_the_message_limit_is_refused_at_once_and_the_handler_runs_once(cluster):
    cluster.create("h1", "echo", "bigmouth")
    ref = cluster.ref("bigmouth", timeout=30)
    chunk = "y" * (6 * MiB)
    for i in range(3):  # 18 MiB in its inbox: its answer to `received` cannot be sent
        ref.query("inbox", task=f"t{i}", source="me", result=chunk)
    before = _agent(cluster, "h1", "bigmouth")
    with pytest.raises(PayloadTooLarge, match=r"bigmouth\.received is (at least )?\d+ bytes"):
        cluster.ref("bigmouth", timeout=5).query("received")
    after = _agent(cluster, "h1", "bigmouth")
    # once, refused: not an answer (queries) but an error, and never retried
    assert after["queries"] == before["queries"]
    assert after["errors"] == before["errors"] + 1
    assert ref.query("echo", payload="small")["n"] == 1  # the agent is fine
    cluster.host("h1", "terminate", "bigmouth")


def test_a_peer_not_found_inside_a_handler_is_the_handlers_failure_not_a_retry(cluster):
    """A relay whose next agent does not exist: its handler raises AgentNotFound about
    *that* peer.  Passed through as such, the caller's reference would take it for news
    about the relay itself, look the relay up again and run its handler once more on
    every retry until its own deadline (a configure op too)."""
    cluster.create("h1", "relay", "lost-relay", next="nobody-home")
    before = _agent(cluster, "h1", "lost-relay")
    with pytest.raises(MasaError, match=r"lost-relay\.chain failed: AgentNotFound: .*nobody-home") as err:
        cluster.ref("lost-relay", timeout=60).query("chain", payload=1)
    assert not isinstance(err.value, AgentNotFound)
    assert _agent(cluster, "h1", "lost-relay")["errors"] == before["errors"] + 1  # ran once
    cluster.host("h1", "terminate", "lost-relay")


def test_answer_near_the_limit_is_measured_exactly_and_sent(cluster):
    """Non-ASCII text may take up to 4 bytes a character: its bound is not clearly under
    the limit, so the host encodes it to know, and sends it."""
    cluster.create("h1", "echo", "wordy")
    ref = cluster.ref("wordy", timeout=30)
    text = "é" * (5 * MiB)  # 10 MiB in UTF-8, bounded by 20 MiB
    ref.query("inbox", task="t", source="me", result=text)
    assert ref.query("received")["me/t"]["last"] == text
    cluster.host("h1", "terminate", "wordy")


def test_answers_of_many_items_are_measured_by_encoding_and_arrive_intact(cluster):
    """Beyond a few hundred items the host measures an answer by encoding it, and sends
    those very bytes (the hand-over): what arrives must be the answer, every time."""
    cluster.create("h1", "echo", "many")
    ref = cluster.ref("many", timeout=30)
    catalog = [{"object": f"h1/proc/app{i}/cpu", "unit": "cpu"} for i in range(5000)]
    ref.query("inbox", task="t", source="me", result=catalog)
    for _ in range(3):
        assert ref.query("received") == {"me/t": {"count": 1, "last": catalog}}
        assert ref.query("echo", payload=[1, 2])["payload"] == [1, 2]  # small, bounded by shape
    cluster.host("h1", "terminate", "many")


def test_hand_over_sends_only_the_measured_answer():
    ser = Pyro5.serializers.MsgpackSerializer()
    answer, other = {"a": [1, 2, 3]}, {"b": "x"}
    _hand_over(ser, answer, b"measured")
    assert ser.dumps(other) == msgpack.packb(other, use_bin_type=True)  # not that answer
    assert ser.dumps(answer) == msgpack.packb(answer, use_bin_type=True)  # the pending one is gone
    _hand_over(ser, answer, b"measured")
    assert ser.dumps(answer) == b"measured"
    assert ser.dumps(answer) == msgpack.packb(answer, use_bin_type=True)  # once only


def test_admin_create_with_oversized_settings_says_payload_too_large(cluster):
    with pytest.raises(PayloadTooLarge, match="create 'big' on host 'h1'"):
        admin.create(cluster.settings, "h1", "echo", "big", {"pad": "z" * (17 * MiB)})
    assert "big" not in {a["name"] for a in cluster.host("h1", "agents")}


def test_size_bounds_hold_the_encoded_size():
    rng = random.Random(7)

    def value(depth: int):
        pick = rng.randrange(9 if depth < 4 else 6)
        if pick == 0:
            return rng.choice([None, True, False])
        if pick == 1:
            return rng.choice([0, -1, 127, 128, -33, 2**31, -(2**63), 2**64 - 1])
        if pick == 2:
            return rng.random() * 1e6
        if pick == 3:
            return "".join(rng.choices("ab\u00e9\u20ac\U0001F600", k=rng.randrange(3000)))
        if pick == 4:
            return "x" * rng.randrange(70000)
        if pick == 5:
            return bytes(rng.randrange(70000))
        if pick == 6:
            return [value(depth + 1) for _ in range(rng.randrange(20))]
        if pick == 7:
            return tuple(value(depth + 1) for _ in range(rng.randrange(20)))
        return {f"k{i}": value(depth + 1) for i in range(rng.randrange(20))}

    for _ in range(300):
        v = value(0)
        size = len(msgpack.packb(v, use_bin_type=True))
        lo, hi = size_bounds(v, 1 << 40)
        assert lo <= size and (hi is None or size <= hi)
    # what the host cannot bound cheaply: Pyro5's own conversions, many items, huge ints
    assert size_bounds({1, 2}, 100)[1] is None
    assert size_bounds(list(range(10)), 100, budget=5)[1] is None
    assert size_bounds(2**70, 100)[1] is None
    # a lower bound over the limit is final: no need to encode
    assert size_bounds(["x" * 200], 100)[0] > 100


# -- B: a package that would break the host's checkpoints ---------------------------------------

BAD_PACKAGES = [
    ("kind is a list", _package("x1", kind=["echo"]), "kind"),
    ("name is a list", _package(["a"]), "invalid agent name"),
    ("name with space and slash", _package("a b/../c"), "invalid agent name"),
    ("domain is a mapping", _package("x5", domain={"a": 1}), "domain"),
    ("domain is None", _package("x6", domain=None), "domain"),
    ("state is a string", _package("x7", state="oops"), "state"),
    ("settings is a string", _package("x4", state={"settings": "oops"}), "settings"),
    ("settings is a list", _package("x8", state={"settings": ["a"]}), "settings"),
    ("source is a list", _package("x9", source=["h1"]), "source host name"),
    ("no source", {k: v for k, v in _package("x10").items() if k != "source"}, "source"),
    ("not a mapping", ["echo", "x11"], "mapping"),
]


@pytest.mark.parametrize(("what", "package", "message"), BAD_PACKAGES, ids=[b[0] for b in BAD_PACKAGES])
def test_receive_refuses_malformed_packages_with_bad_request(cluster, what, package, message):
    with pytest.raises(BadRequest, match=message):
        cluster.host("h2", "receive", package)
    names = {a["name"] for a in cluster.host("h2", "agents")}
    assert not names & {"x1", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "a b/../c"}


BAD_CREATES = [
    ("kind is a list", (["echo"], "y1", {}), "kind"),
    ("name is a list", ("echo", ["y2"], {}), "invalid agent name"),
    ("name with a slash", ("echo", "y/3", {}), "invalid agent name"),
    ("settings is a list", ("echo", "y4", ["a"]), "settings"),
    ("settings is a string", ("echo", "y5", "oops"), "settings"),
    ("domain is a mapping", ("echo", "y6", {}, {"a": 1}), "domain"),
]


@pytest.mark.parametrize(("what", "args", "message"), BAD_CREATES, ids=[b[0] for b in BAD_CREATES])
def test_create_refuses_malformed_input_with_bad_request(cluster, what, args, message):
    with pytest.raises(BadRequest, match=message):
        cluster.host("h2", "create", *args)


def _nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def test_an_unsaveable_agent_state_does_not_stop_the_other_checkpoints_nor_the_host(tmp_path):
    """One agent whose state cannot be copied any more (a query op kept a value nested 600
    deep: msgpack passes it, a deep copy does not) keeps its last saved checkpoint, and its
    configure ops are refused saying so rather than answered and then lost.  The host's
    housekeeping goes on for the others: their checkpoints, their delegated tasks, the
    heartbeats that keep the host up in the node list."""
    with Cluster(tmp_path, {"h1": {}}, heartbeat=0.3) as c:
        c.create("h1", "echo", "keeper")
        c.create("h1", "echo", "poisoned")
        keeper, poisoned = c.ref("keeper"), c.ref("poisoned")
        poisoned.query("echo")
        poisoned.configure("load_state", size=3)  # checkpointed: answered=1
        poisoned.query("inbox", task="t", source="me", result=_nested(600))
        with pytest.raises(BadRequest, match="could not be checkpointed"):
            poisoned.configure("load_state", size=4)
        keeper.configure("delegate", task="tick", op="echo", every=0.2, to="keeper", deliver="inbox")
        time.sleep(6)  # past the host's 5 s checkpoint round, which meets the poisoned state
        assert c.host("h1", "info")["name"] == "h1"
        counts = [keeper.query("received")["keeper/tick"]["count"]]
        time.sleep(1.0)
        counts.append(keeper.query("received")["keeper/tick"]["count"])
        assert counts[1] > counts[0]  # its delegated task still runs
        nodes = c.nodes()
        assert nodes["masa.host.h1"]["status"] == nodes["masa.agent.keeper"]["status"] == "up"
        keeper.configure("undelegate", task="tick")
        time.sleep(0.3)  # a tick that had started runs out
        n = keeper.query("echo")["n"]
        assert keeper.configure("load_state", size=7) == 7  # a checkpoint
        c.kill("h1")
        c.restart("h1")
        assert keeper.query("echo")["n"] == n + 1
        assert poisoned.query("echo")["n"] == 2  # from its last checkpoint that could be saved
        assert poisoned.query("received") == {}


def test_store_keeps_saving_checkpoints_when_one_row_is_refused(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'host.db'}")

    def entry(name, state=b"s", **kw):
        return {"kind": "echo", "name": name, "domain": "A", "state": state, "suspended": False, **kw}

    assert store.save_checkpoints([entry("a"), entry("b"), entry("c")], 1.0) == {}
    failed = store.save_checkpoints([entry("a", b"new"), entry("b", domain={"a": 1})], 2.0, keep=["c"])
    assert list(failed) == ["b"]
    rows = {e["name"]: e["state"] for e in store.load_checkpoints()}
    assert rows == {"a": b"new", "b": b"s", "c": b"s"}  # b and c keep their last saved rows
    assert store.save_checkpoints([entry("a")], 3.0) == {}
    assert [e["name"] for e in store.load_checkpoints()] == ["a"]
    store.close()


# -- C: a second copy of an agent that runs elsewhere -------------------------------------------

def test_receive_refuses_a_copy_of_an_agent_running_on_another_host(cluster):
    cluster.create("h1", "echo", "dup")
    cluster.ref("dup").query("echo")
    for source in ("h2", "nowhere"):
        with pytest.raises(AgentExists, match="not at its package's source"):
            cluster.host("h2", "receive", _package("dup", state={"answered": 999}, source=source))
    assert "dup" not in {a["name"] for a in cluster.host("h2", "agents")}
    assert cluster.ref("dup").query("echo") == {"agent": "dup", "host": "h1", "n": 2, "payload": None}


def test_commit_refuses_a_copy_whose_name_does_not_point_at_the_target(cluster):
    """A package that names the right source passes receive (a move looks like that), but
    a move points the name at the target before committing; nobody did, so no copy."""
    cluster.create("h1", "echo", "dup3")
    cluster.host("h2", "receive", _package("dup3", state={"answered": 999}, source="h1"))
    with pytest.raises(AgentExists, match="points at"):
        cluster.host("h2", "commit", "dup3", "h1")
    assert "dup3" not in {a["name"] for a in cluster.host("h2", "agents")}
    assert cluster.where("dup3") == "h1"
    assert cluster.ref("dup3").query("echo")["n"] == 1


def test_terminate_removes_the_name_only_if_it_points_at_this_host(cluster):
    cluster.create("h1", "echo", "real")
    cluster.create("h2", "echo", "stray")
    ns = NameService(cluster.settings)
    try:
        real_uri, meta = ns.lookup_meta(naming.agent_name("real"))
        # the name "stray" now sends callers to a copy on another host
        ns.register(naming.agent_name("stray"), real_uri, naming.tags(**meta) | {"masa:agent"})
        cluster.host("h2", "terminate", "stray")
        assert str(ns.lookup(naming.agent_name("stray"), wait=0)) == str(real_uri)
        # its own registration is removed as before
        cluster.host("h1", "terminate", "real")
        assert "real" not in admin.find_agents(cluster.settings)
    finally:
        ns.close()


def test_moves_still_go_back_and_forth(cluster):
    cluster.create("h1", "echo", "shuttle")
    for i, target in enumerate(["h2", "h1", "h2"], start=1):
        assert cluster.move("shuttle", target)["to"] == target
        assert cluster.ref("shuttle").query("echo") == {"agent": "shuttle", "host": target, "n": i,
                                                         "payload": None}
    cluster.host("h2", "clone", "shuttle", "shuttle2", "h1")
    assert cluster.ref("shuttle2").query("echo")["host"] == "h1"


# -- D: timeouts that would switch the watchdog off ----------------------------------------------

def test_a_non_finite_or_negative_timeout_does_not_switch_the_watchdog_off(tmp_path):
    with Cluster(tmp_path, {"h1": {}}, call_timeout=1.0) as c:  # watchdog floor: 1 s
        c.create("h1", "echo", "sleepy")
        ns = NameService(c.settings)
        uri = ns.lookup(naming.agent_name("sleepy"))
        ns.close()
        for restarts, timeout in enumerate([math.nan, math.inf, -1.0], start=1):
            with Proxy(uri, c.settings.secret, timeout=20) as p, \
                    pytest.raises(QueryTimeout, match="agent restarted"):
                p.invoke("query", "sleep", {"seconds": 3}, timeout)
            assert _agent(c, "h1", "sleepy")["restarts"] == restarts, timeout


# -- E: names registered without metadata ----------------------------------------------------------

def test_a_name_registered_without_metadata_does_not_break_listing_agents(cluster):
    cluster.create("h1", "echo", "tagged")
    ns = NameService(cluster.settings)
    try:
        ns._call("register", naming.agent_name("bare"), "PYRO:masa.agent.bare@127.0.0.1:1")
        found = admin.find_agents(cluster.settings)
        assert found["bare"] == ("PYRO:masa.agent.bare@127.0.0.1:1", {})
        assert found["tagged"][1]["host"] == "h1"
        assert "tagged" in admin.find_agents(cluster.settings, kind="echo")
    finally:
        ns.remove(naming.agent_name("bare"))
        ns.close()


# -- D: calls that used to break a host while answering "ok" ------------------------------------

@pytest.mark.parametrize("name", ["masa.agent.victim", "masa.host.h1", "x\ny", "x\u00a0y", "x\x00y", "n" * 129])
def test_names_that_would_pass_for_another_object_or_break_an_address_are_refused(cluster, name):
    """``masa.agent.victim`` is agent victim's own object id: created on victim's host it
    used to replace victim's servant, so every caller of victim reached the newcomer."""
    cluster.create("h1", "echo", "victim")
    cluster.ref("victim").query("echo")
    with pytest.raises(BadRequest, match="invalid agent name"):
        cluster.host("h1", "create", "echo", name, {})
    assert cluster.ref("victim").query("echo") == {"agent": "victim", "host": "h1", "n": 2, "payload": None}
    cluster.host("h1", "terminate", "victim")


@pytest.mark.parametrize(("what", "value"), [
    ("a Pyro5 proxy", {"__class__": "Pyro5.client.Proxy", "state": ["PYRO:x@127.0.0.1:9", [], [], [], {}, "msgpack"]}),
    ("a Pyro5 daemon", {"__class__": "Pyro5.server.Daemon", "state": {}}),
    ("an exception", {"__class__": "builtins.ValueError", "__exception__": True, "args": ["x"], "attributes": {}}),
    ("an integer beyond 64 bits", 2**70),
    ("a complex number", 1 + 2j),
])
def test_a_call_carries_plain_data_only(cluster, what, value):
    """Pyro5's decoder rebuilds objects it knows from mappings that name them: a proxy put
    into an agent's state connected, at the next snapshot, wherever its sender chose."""
    cluster.create("h1", "echo", "plain")
    ref = cluster.ref("plain")
    with pytest.raises(BadRequest, match="plain data only"):
        ref.configure("reconfigure", peer={"nested": [value]})
    with pytest.raises(BadRequest, match="plain data only"):
        ref.query("inbox", task="t", source="me", result=value)
    assert ref.query("received") == {}
    assert ref.query("describe")["settings"] == {}
    assert ref.query("echo", payload={"fine": [1, 2.5, "x", b"y", None]})["payload"] == {"fine": [1, 2.5, "x", b"y", None]}
    cluster.host("h1", "terminate", "plain")


def test_an_error_that_quotes_a_huge_argument_is_cut_and_the_handler_runs_once(cluster):
    """An error bigger than a message used to be dropped by Pyro5 with the connection;
    the caller took that for a dead host and called again until its deadline."""
    cluster.create("h1", "echo", "quoter")
    before = _agent(cluster, "h1", "quoter")
    big = "9" * 300_000 + "x"
    with pytest.raises(MasaError, match="ValueError") as err:
        cluster.ref("quoter", timeout=20).query("sleep", seconds=big)
    assert len(str(err.value)) < 2200 and "more characters" in str(err.value)
    with pytest.raises(UnknownOperation) as err:
        cluster.ref("quoter", timeout=20).query("o" * 300_000)
    assert len(str(err.value)) < 2200
    after = _agent(cluster, "h1", "quoter")
    assert after["errors"] == before["errors"] + 1  # the handler ran once; the unknown op never
    cluster.host("h1", "terminate", "quoter")


@pytest.mark.parametrize("task", [7, 1.5, None, True, ""])
def test_delegate_takes_a_task_name_only(cluster, task):
    """A task of another type became a map key no checkpoint could be read back with: the
    next restart of the host restored none of its agents."""
    cluster.create("h1", "echo", "deleg")
    with pytest.raises(BadRequest, match="task is a name"):
        cluster.ref("deleg").configure("delegate", task=task, op="echo", every=60, to="deleg", deliver="inbox")
    assert cluster.ref("deleg").query("delegated") == {}
    cluster.host("h1", "terminate", "deleg")


def test_one_unreadable_checkpoint_costs_that_agent_only_and_is_kept(tmp_path):
    with Cluster(tmp_path, {"h1": {}}) as c:
        for name in ("keep1", "keep2", "victim"):
            c.create("h1", "echo", name)
            c.ref(name).query("echo")
            c.ref(name).configure("load_state", size=1)  # a checkpoint: answered=1
        c.kill("h1")
        store = Store(f"sqlite:///{tmp_path / 'hosts' / 'h1' / 'host.db'}")
        rows = store.load_checkpoints()
        for row in rows:  # what an older masa let in: a map key that is no string
            if row["name"] == "victim":
                row["state"] = msgpack.packb({"settings": {}, "delegated": {7: {}}})
        assert store.save_checkpoints(rows, time.time()) == {}
        store.close()
        c.restart("h1")
        assert c.ref("keep1").query("echo")["n"] == 2  # waits for the host to be back
        assert sorted(a["name"] for a in c.host("h1", "agents")) == ["keep1", "keep2"]
        c.ref("keep2").configure("load_state", size=1)  # a save of the host's checkpoints
        store = Store(f"sqlite:///{tmp_path / 'hosts' / 'h1' / 'host.db'}")
        assert "victim" in {r["name"] for r in store.load_checkpoints()}  # kept for its owner to look at
        store.close()


def test_a_refused_change_takes_back_what_it_had_put_into_effect(tmp_path):
    """A configure whose answer is too large is rolled back; the agent's periodic task,
    re-armed by the change with a period of an hour, follows the settings back to 0.1 s."""
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "flaky", "ticker", tick_every=0.1)
        ref = c.ref("ticker", timeout=60)
        ref.configure("reconfigure", pad_a="p" * (6 * MiB))
        ref.configure("reconfigure", pad_b="p" * (6 * MiB))
        with pytest.raises(PayloadTooLarge):  # its answer, all settings, is 18 MiB
            ref.configure("reconfigure", tick_every=3600, pad_c="p" * (6 * MiB))
        settings = ref.query("describe")["settings"]
        assert settings["tick_every"] == 0.1 and "pad_c" not in settings
        first = ref.query("get")["ticks"]
        assert wait(lambda: ref.query("get")["ticks"] >= first + 5, timeout=10)


def test_a_period_that_is_no_positive_number_is_refused_and_a_tiny_one_kept_at_the_tick(tmp_path):
    """A period of 1e-310 s made the next beat infinite, and the exception ended the thread
    that runs every agent's tasks, the watchdog, checkpoints and heartbeats of the host."""
    with Cluster(tmp_path, {"h1": {}}, heartbeat=0.3) as c:
        c.create("h1", "flaky", "tiny", tick_every=1e-310)
        ref = c.ref("tiny")
        time.sleep(1.0)
        ticks = ref.query("get")["ticks"]
        assert 5 <= ticks <= 1.2 / 0.05  # every tick of the host's scheduler at most
        with pytest.raises(MasaError, match="period"):
            ref.configure("reconfigure", tick_every=float("nan"))
        assert ref.query("describe")["settings"]["tick_every"] == 1e-310
        time.sleep(1.0)
        assert c.nodes()["masa.host.h1"]["status"] == "up"
        assert ref.query("get")["ticks"] > ticks


def test_a_failing_configure_op_takes_back_only_its_own_changes(cluster):
    """A configure op is rolled back to the state before it.  Another configure op
    answered meanwhile (a management tool's 'stop' while a slow 'pool_grow' failed) was
    taken back with it; configure ops of one agent now run one at a time."""
    import threading

    cluster.create("h1", "flaky", "serial", tick_every=3600)
    ref = cluster.ref("serial", timeout=20)
    failed = []
    slow = threading.Thread(target=lambda: failed.append(_raises(lambda: cluster.ref("serial", timeout=20)
                                                                 .configure("slow_fail", seconds=1.0))))
    slow.start()
    time.sleep(0.3)  # the slow op runs (value -1), then this one is acknowledged
    assert ref.configure("set_value", value=5) == 5
    slow.join()
    assert failed == ["refused after a while"]
    assert ref.query("get")["value"] == 5  # acknowledged, and still in force
    cluster.host("h1", "terminate", "serial")


def test_a_call_timeout_a_socket_cannot_take_is_refused_at_once(cluster):
    """9e9 s and more overflow a socket's timeout; Pyro5 reports that as a failed
    connection, which the reference retried until a deadline centuries away."""
    cluster.create("h1", "echo", "patient")
    for timeout in (1e10, float("nan"), -1.0):
        ref = cluster.ref("patient")
        with pytest.raises(BadRequest, match="timeout is a number of seconds"):
            ref.query("echo", timeout=timeout)
        assert ref.retries == 0  # refused before any attempt, not retried
    assert cluster.ref("patient").query("echo", timeout=86400)["n"] == 1
    cluster.host("h1", "terminate", "patient")


def _raises(fn) -> str | None:
    try:
        fn()
    except MasaError as exc:
        return str(exc).rsplit(": ", 1)[-1]
    return None
