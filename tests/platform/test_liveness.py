"""Heartbeats and the node list; the watchdog; supervision by ``masa up``."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from masa import admin
from masa.config import Settings
from masa.errors import MasaError, QueryTimeout
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

        c.restart("h2")
        nodes = c.wait(lambda: c.nodes()["masa.host.h2"]["status"] == "up" and c.nodes())
        # the host restored its agent from its checkpoint and re-registered it
        c.wait(lambda: c.nodes()["masa.agent.e-h2"]["status"] == "up")
        assert c.ref("e-h2").query("echo")["host"] == "h2"
        assert nodes["masa.host.h2"]["info"]["agents"] >= 0


def test_failing_task_is_logged_and_stuck_handler_restarts_agent_from_last_state(cluster):
    cluster.create("h1", "flaky", "flaky1")
    flaky = cluster.ref("flaky1")
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


def test_masa_up_restarts_a_killed_host(tmp_path):
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
    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "s3",
           "MASA_HEARTBEAT": "0.5", "PYTHONPATH": str(ROOT)}
    up = subprocess.Popen([sys.executable, "-m", "masa", "up", str(topo)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    settings = replace(Settings(home=tmp_path, secret=b"s3"), ns_port=port)

    def pid():
        return attempt(lambda: admin.host_call(settings, "u2", "info")["pid"])

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
