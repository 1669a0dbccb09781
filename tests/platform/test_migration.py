"""Weak migration: queries keep flowing across moves; failed moves leave the agent home."""

import json
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from masa.errors import AgentExists, KindNotAllowed, MoveFailed, UnknownKind
from tests.cluster import ROOT, Cluster

QUERIER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from masa import config
    from masa.config import Settings
    from masa.ref import AgentRef
    settings = Settings(home=Path(sys.argv[1]), secret=sys.argv[2].encode(), ns_port=int(sys.argv[3]))
    config.apply(settings)
    ref = AgentRef("mover", settings, timeout=15)
    stop = Path(sys.argv[4])
    answered, failed, hosts, seen = 0, [], set(), []
    deadline = time.monotonic() + 120
    while not stop.exists() and time.monotonic() < deadline:
        try:
            r = ref.query("echo", payload=answered)
            answered += 1
            hosts.add(r["host"]); seen.append(r["n"])
        except Exception as exc:
            failed.append(repr(exc))
    print(json.dumps({"answered": answered, "failed": failed, "hosts": sorted(hosts),
                      "contiguous": seen == list(range(1, len(seen) + 1)), "last_n": seen[-1] if seen else 0,
                      "retries": ref.retries}))
""")


def test_fifty_moves_while_another_process_queries(cluster, tmp_path):
    cluster.create("h1", "echo", "mover")
    stop = tmp_path / "stop"
    proc = subprocess.Popen(
        [sys.executable, "-c", QUERIER, str(cluster.settings.home), cluster.settings.secret.decode(),
         str(cluster.settings.ns_port), str(stop)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        cluster.wait(lambda: cluster.ref("mover").query("describe") and True)
        hosts = ["h2", "h1"] * 25
        for target in hosts:
            moved = cluster.move("mover", target)
            assert moved["to"] == target
        assert cluster.where("mover") == "h1"
    finally:
        stop.touch()
        out, err = proc.communicate(timeout=60)
    report = json.loads(out)
    assert report["failed"] == [], err
    assert report["answered"] > 50
    assert report["hosts"] == ["h1", "h2"]
    # The counter lives in the agent's state and moved 50 times: every answer got the
    # next number, so no query was lost, answered twice, or answered by a stale copy.
    assert report["contiguous"]
    assert cluster.ref("mover").query("echo")["n"] == report["answered"] + 1


def test_move_to_host_that_refuses_the_kind_keeps_agent_at_source(cluster):
    cluster.create("h1", "echo", "homebody")
    cluster.ref("homebody").query("echo")
    with pytest.raises(MoveFailed, match="does not accept agents of kind 'echo'"):
        cluster.move("homebody", "h3")
    assert cluster.where("homebody") == "h1"
    answer = cluster.ref("homebody").query("echo")
    assert answer == {"agent": "homebody", "host": "h1", "n": 2, "payload": None}


def test_create_refuses_unknown_kind_disallowed_kind_and_duplicate_name(cluster):
    with pytest.raises(UnknownKind, match="unknown agent kind 'nonesuch'"):
        cluster.create("h1", "nonesuch", "x1")
    with pytest.raises(KindNotAllowed):
        cluster.create("h3", "echo", "x2")
    cluster.create("h1", "echo", "x3")
    with pytest.raises(AgentExists):
        cluster.create("h2", "echo", "x3")


def test_target_killed_mid_move_leaves_agent_alive_at_source(tmp_path):
    with Cluster(tmp_path, {"h1": {}, "h2": {}}) as c:
        c.create("h1", "echo", "slowpoke", arrival_delay=3.0)
        c.ref("slowpoke").configure("load_state", size=100_000)
        c.ref("slowpoke").query("echo")
        outcome = {}

        def do_move():
            try:
                outcome["ok"] = c.move("slowpoke", "h2")
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        mover = threading.Thread(target=do_move)
        mover.start()
        time.sleep(1.0)  # the target is now inside the agent's slow arrival
        c.kill("h2")
        mover.join(30)
        assert isinstance(outcome.get("error"), MoveFailed), outcome
        assert c.where("slowpoke") == "h1"
        answer = c.ref("slowpoke").query("echo")
        assert answer["host"] == "h1" and answer["n"] == 2  # state intact, still counting


def test_clone_copies_state_to_another_host(cluster):
    cluster.create("h1", "echo", "twin")
    cluster.ref("twin").query("echo")
    cluster.host("h1", "clone", "twin", "twin2", "h2")
    assert cluster.ref("twin2").query("echo") == {"agent": "twin2", "host": "h2", "n": 2, "payload": None}
    assert cluster.ref("twin").query("echo")["n"] == 2  # the original is untouched
