"""``masa scenario --short`` as a user runs it: a subprocess starting real hosts, services,
agents (and snmpd when installed), printing the model and its comparison with the truth,
writing model files, and leaving no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

from modeler import export
from modeler.scenario_netns import Netns, NetnsUnavailable
from probes.snmpd import snmpd_path
from tests.cluster import ROOT


def leftovers(marker: str) -> list[str]:
    """Processes whose command line or environment mentions ``marker`` (this run's
    temporary directory: hosts carry it in MASA_HOME, services and snmpd in argv)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        for part in ("cmdline", "environ"):
            try:
                data = Path(f"/proc/{pid}/{part}").read_bytes()
            except OSError:
                continue
            if marker.encode() in data:
                found.append(f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes()[:200]!r}")
                break
    return found


def netns_available() -> bool:
    try:
        net = Netns(["probe"])
        net.up()
        net.down()
        return True
    except (NetnsUnavailable, OSError):
        return False


@pytest.mark.parametrize("mode", ["loopback", "netns"])
def test_scenario_short(tmp_path, mode):
    if mode == "netns" and not netns_available():
        pytest.skip("network namespaces cannot be created here (needs root and iproute2)")
    work = tmp_path / "tmp"
    work.mkdir()
    out = tmp_path / "out"
    env = {**os.environ, "TMPDIR": str(work), "COLUMNS": "200",
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("MASA_NS", None)
    extra = ["--netns"] if mode == "netns" else []
    run = subprocess.run([sys.executable, "-m", "masa", "scenario", "--short", "--out", str(out), *extra],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=240)
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "compared with the known truth" in run.stdout
    assert "precision" in run.stdout and "recall" in run.stdout

    for fmt in ("json", "graphml", "dot"):
        assert (out / f"model.{fmt}").stat().st_size > 0
        assert (out / f"domain-a.{fmt}").stat().st_size > 0
    g = export.read_model(out / "model.json")
    assert nx.read_graphml(out / "model.graphml").number_of_nodes() == g.number_of_nodes()
    assert len(nx.nx_pydot.read_dot(out / "model.dot")) == g.number_of_nodes()

    summary = json.loads((out / "summary.json").read_text())
    seen = summary["objects_by_source"]
    assert seen["dom-b"] == ["B/cpu"]  # domain B as one object, through its domain agent
    assert "srv/proc/c-auth" in seen["col-srv"]
    assert {"a1/proc/a-web", "a2/proc/a-app", "a3/proc/a-db"} <= set(seen["med-a"])
    assert set(g) == {o for objs in seen.values() for o in objs}
    assert set(summary["metrics"]) >= {"precision", "recall", "f1"}
    # domain A's own detailed model was reused by the enterprise model as a sub-model
    assert summary["submodels"] == {"mod-a": 1}
    g_a = export.read_model(out / "domain-a.json")
    assert set(g_a) <= set(seen["med-a"]) and set(g_a.edges) <= set(g.edges)
    if snmpd_path() is None:
        # CI installs snmpd: there, a scenario without its router is a missing install step
        assert os.environ.get("MASA_REQUIRE_ALL") != "1", "snmpd is not installed: the router part was not checked"
        print("NOTICE: snmpd is not installed: the router (SNMP) part was not checked")
        assert summary["router"] is False and "snmpd is not installed" in run.stdout
    else:
        assert summary["router"] is True
        assert "router/cpu" in seen["router"] or any(o.startswith("router/if/") for o in seen["router"])

    assert leftovers(str(work)) == []
    if mode == "netns":
        net = summary["netns"]
        assert len(set(net["addresses"].values())) == len(net["addresses"])  # real distinct addresses
        left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert not any(ns in left for ns in net["namespaces"].values())
        bridge = subprocess.run(["ip", "link", "show", net["bridge"]], capture_output=True, text=True)
        assert bridge.returncode != 0  # removed
