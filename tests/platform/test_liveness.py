"""Heartbeats and the node list; the watchdog; supervision by ``masa up``."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import psutil
import pytest

from masa import admin
from masa.config import Settings
from masa.errors import BadRequest, MasaError, QueryTimeout
from masa.naming import NameService
from masa.ref import AgentRef
from masa.supervisor import free_port
from tests.cluster import ROOT, Cluster, attempt, wait


def test_killed_host_marked_down_within_two_heartbeats_and_up_after_restart(tmp_path):
    beat = 0.5
    with Cluster(tmp_path, {"h1": {}, "h2": {}}, heartbeat=beat) as c:
        c.create("h2", "echo", "e-h2")
        c.wait(lambda: c.nodes().get("masa.agent.e-h2", {}).get("status") == "up")
        c.kill("h2")
        killed = time.time()
        down = c.wait(lambda: c.nodes()["masa.host.h2"]["status"] == "down" and c.nodes(), every=0.02)
        host = down["masa.host.h2"]
        # "down" is stamped by the registry; it must come within two heartbeat intervals
        # of the last heartbeat the host sent.
        assert host["since"] - host["last_heartbeat"] <= 2 * beat
        assert host["since"] >= killed - beat
        assert down["masa.agent.e-h2"]["status"] == "down"
        assert c.nodes()["masa.host.h1"]["status"] == "up"
        # what is down may be forgotten (and comes back with a heartbeat); what is up not
        with pytest.raises(BadRequest, match="host 'h1' is up"):
            admin.forget(c.settings, "h1")
        assert admin.forget(c.settings, "e-h2") == "masa.agent.e-h2"
        assert "masa.agent.e-h2" not in c.nodes()

        c.restart("h2")
        c.wait(lambda: c.nodes()["masa.host.h2"]["status"] == "up")
        # the host restored its agent from its checkpoint and re-registered it
        nodes = c.wait(lambda: c.nodes().get("masa.agent.e-h2", {}).get("status") == "up" and c.nodes())
        assert c.ref("e-h2").query("echo")["host"] == "h2"
        assert nodes["masa.agent.e-h2"]["location"] == "masa.host.h2"
        # the heartbeat that brought the agent back counts it among the host's agents
        assert nodes["masa.host.h2"]["info"]["agents"] == 1


def test_failing_task_is_logged_and_stuck_handler_restarts_agent_from_last_state(tmp_path):
    # The watchdog's floor is the hosts' call timeout (2 s here): a handler stuck for 20 s
    # overruns it; the caller, with a shorter timeout of its own, gives up before that.
    with Cluster(tmp_path, {"h1": {}}, call_timeout=2.0) as cluster:
        cluster.create("h1", "flaky", "flaky1")
        flaky = cluster.ref("flaky1", timeout=10.0)
        flaky.configure("set_value", value=7)
        cluster.wait(lambda: flaky.query("get")["ticks"] >= 3)  # the task raises every time
        with pytest.raises(MasaError, match="handler failure"):
            flaky.query("boom")
        with pytest.raises(QueryTimeout):
            flaky.query("hang", seconds=20, timeout=1.0)
        after = cluster.wait(lambda: (r := flaky.query("get")) and r["starts"] == 2 and r)
        assert after["value"] == 7  # the restarted instance came from the last checkpoint
        stats = {a["name"]: a for a in cluster.host("h1", "agents")}["flaky1"]
        assert stats["restarts"] == 1 and stats["task_errors"] >= 3
        # a caller allowing more than the floor is waited for, and then it restarts too
        with pytest.raises(QueryTimeout):
            flaky.query("hang", seconds=20, timeout=3.0)
        cluster.wait(lambda: {a["name"]: a for a in cluster.host("h1", "agents")}["flaky1"]["restarts"] == 2)


def test_a_watchdog_restart_stops_the_stuck_instance_so_the_fresh_one_gets_its_port(tmp_path):
    """What a stuck instance holds (here a listening port, as a modeler's page) is let go
    for the instance that replaces it: the host stops the stuck one (``on_stop``)."""
    port = free_port()
    with Cluster(tmp_path, {"h1": {}}, call_timeout=2.0) as cluster:
        cluster.create("h1", "flaky", "holder", hold_port=port)
        holder = cluster.ref("holder", timeout=10.0)
        assert holder.query("holding") == "listening"
        with pytest.raises(QueryTimeout):
            holder.query("hang", seconds=30, timeout=1.0)  # stuck past the 2 s floor: restarted
        cluster.wait(lambda: holder.query("get")["starts"] == 2, timeout=20)
        assert holder.query("holding") == "listening"  # not "could not listen: address in use"


def test_a_caller_with_a_short_timeout_cannot_restart_a_slow_handlers_agent(cluster):
    """The caller's timeout ends the caller's wait; the watchdog's deadline is the host's
    (at least its call timeout, 10 s here), so a handler merely slower than an impatient
    caller finishes, and the agent keeps its state."""
    cluster.create("h1", "echo", "patient")
    echo = cluster.ref("patient")
    assert [echo.query("echo")["n"] for _ in range(3)] == [1, 2, 3]
    with pytest.raises(QueryTimeout):
        echo.query("sleep", seconds=1.0, timeout=0.1)

    def stats():
        return {a["name"]: a for a in cluster.host("h1", "agents")}["patient"]

    # the sleep either finishes (counted as a query) or the agent is restarted
    after = cluster.wait(lambda: (s := stats()) and (s["queries"] >= 4 or s["restarts"]) and s)
    assert after["restarts"] == 0
    assert echo.query("echo")["n"] == 4  # nothing lost: no restart from the checkpoint


def _up_topology(tmp_path):
    """A topology for ``masa up`` on a free port, its environment and client settings."""
    port = free_port()
    topo = tmp_path / "t.toml"
    topo.write_text(f"""
[nameserver]
address = "127.0.0.1:{port}"
[domains.A]
[hosts.u1]
domain = "A"
[hosts.u2]
domain = "A"
[agents.ue]
kind = "echo"
host = "u2"
""")
    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "liveness-secret",
           "MASA_HEARTBEAT": "0.5", "PYTHONPATH": str(ROOT)}
    return topo, env, replace(Settings(home=tmp_path, secret=b"liveness-secret"), ns_port=port)


def _masa_up(topo, env):
    return subprocess.Popen([sys.executable, "-m", "masa", "up", str(topo)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _host_pid(settings, host):
    return attempt(lambda: admin.host_call(settings, host, "info")["pid"])


def _running(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_masa_up_restarts_a_killed_host(tmp_path):
    topo, env, settings = _up_topology(tmp_path)
    up = _masa_up(topo, env)

    def pid():
        return _host_pid(settings, "u2")

    try:
        first = wait(pid, timeout=30)
        assert wait(lambda: attempt(lambda: AgentRef("ue", settings).query("echo")["host"])) == "u2"
        os.kill(first, signal.SIGKILL)
        second = wait(lambda: pid() not in (None, first) and pid(), timeout=30)
        assert second != first
        assert AgentRef("ue", settings).query("echo")["host"] == "u2"  # restored from checkpoint
    finally:
        up.terminate()
        _, err = up.communicate(timeout=20)
    assert "restarted u2" in err


def test_masa_up_stops_its_children_on_sighup(tmp_path):
    """An ssh session that closes sends SIGHUP: the supervisor must not leave the name
    server and hosts (in sessions of their own) running unsupervised."""
    topo, env, settings = _up_topology(tmp_path)
    up = _masa_up(topo, env)
    children = []
    try:
        wait(lambda: attempt(lambda: AgentRef("ue", settings).query("echo")), timeout=30)
        children = [p.pid for p in psutil.Process(up.pid).children()]
        assert len(children) == 3  # name server, u1, u2
        up.send_signal(signal.SIGHUP)
        _, err = up.communicate(timeout=30)
        assert up.returncode >= 0, err  # a clean exit, not death by the signal
        wait(lambda: not any(_running(pid) for pid in children), timeout=20)
    finally:
        if up.poll() is None:
            up.terminate()
            up.communicate(timeout=20)
        for pid in children:  # only if the supervisor failed to stop them
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()


def test_second_host_of_a_running_hosts_name_is_refused_and_changes_nothing(tmp_path):
    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "echo", "e1")
        before = c.host("h1", "info")
        ns = NameService(c.settings)
        names = ("masa.host.h1", "masa.agent.e1")
        registered = {n: str(ns.lookup(n)) for n in names}
        second = subprocess.Popen([sys.executable, "-m", "masa", "host", "h1"], env=c.settings.child_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            _, err = second.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            second.terminate()
            second.communicate(timeout=20)
            pytest.fail("a second host h1 kept running next to the first")
        assert second.returncode == 1
        assert f"masa: error: host 'h1' is already running at {before['address']}" in err
        assert {n: str(ns.lookup(n)) for n in names} == registered  # it registered nothing
        ns.close()
        assert c.ref("e1").query("echo")["host"] == "h1"
        assert c.host("h1", "info")["pid"] == before["pid"]
        # a stale registration (its host killed) is taken over: that is how a host comes back
        c.kill("h1")
        c.restart("h1")
        c.wait(lambda: attempt(lambda: c.host("h1", "info")["pid"] != before["pid"]))
        assert c.wait(lambda: attempt(lambda: c.ref("e1").query("echo")["host"])) == "h1"


def test_second_masa_up_on_a_taken_address_fails_and_leaves_the_first_alone(tmp_path):
    topo, env, settings = _up_topology(tmp_path)
    first = _masa_up(topo, env)
    try:
        pids = {h: wait(lambda h=h: _host_pid(settings, h), timeout=30) for h in ("u1", "u2")}
        wait(lambda: attempt(lambda: AgentRef("ue", settings).query("echo")), timeout=30)
        second = _masa_up(topo, env)
        try:
            _, err = second.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            second.terminate()  # stops whatever it started
            second.communicate(timeout=20)
            pytest.fail("a second masa up kept running on a taken name-server address")
        assert second.returncode == 1
        assert "name server on 127.0.0.1:" in err and "could not start" in err
        assert "Address already in use" in err and "Traceback" not in err
        assert {h: _host_pid(settings, h) for h in pids} == pids
        assert AgentRef("ue", settings).query("echo")["host"] == "u2"
        assert first.poll() is None
    finally:
        first.terminate()
        first.communicate(timeout=20)


def test_a_restarted_broker_asks_every_host_to_register_on_its_first_beat(tmp_path):
    """The node list is in a store and survives the broker; its name table does not.  A
    host whose beat reached a restarted broker before the sweeper marked it down was told
    "you were up" and never registered its names again."""
    from masa.nameserver import Registry
    from masa.store import Store

    store = Store(f"sqlite:///{tmp_path / 'nodes.db'}")
    beat = ("masa.host.h1", "A", "PYRO:masa.host.h1@127.0.0.1:1", {}, [])
    first = Registry(store, 1.0)
    assert first.heartbeat(*beat) is True  # unknown: register
    assert first.heartbeat(*beat) is False
    restarted = Registry(store, 1.0)  # the node row still says up
    assert restarted.heartbeat(*beat) is True
    assert restarted.heartbeat(*beat) is False
    store.close()


def test_the_node_list_file_deleted_under_the_broker_is_put_back_with_what_it_held(tmp_path):
    """The broker's node list is a SQLite file like a host's store: deleted under the
    running broker (an operator's clean-up), it is made again within a sweep, holding every
    node it held, instead of being gone at the broker's next start."""
    from masa.store import Store

    with Cluster(tmp_path, {"h1": {}}) as c:
        c.create("h1", "echo", "listed")
        c.wait(lambda: "masa.agent.listed" in c.nodes())
        db = tmp_path / "masa.db"
        db.unlink()
        c.wait(lambda: db.exists())

        def held() -> set[str]:
            store = Store(f"sqlite:///{db}")
            try:
                return {n["name"] for n in store.nodes()}
            finally:
                store.close()

        c.wait(lambda: {"masa.host.h1", "masa.agent.listed"} <= (attempt(held) or set()))
        assert {"masa.host.h1", "masa.agent.listed"} <= set(c.nodes())
    assert "the node list's file" in (tmp_path / "logs" / "ns.log").read_text()
