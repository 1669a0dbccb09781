"""Connection evidence through the live system, on real processes over loopback.

Two real processes hold a TCP connection (``cx-front`` calls ``cx-back``); collectors on
two agent hosts meter them, a mediator and a domain agent stand in front, and modelers
pull activity *and* connection evidence through the collection query interface only.
A third source serves activity but has no ``connections`` operation at all.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from masa.activity import Series
from masa.agent import Agent, query
from masa.errors import UnknownOperation
from modeler import interface
from probes.connections import endpoint, namespace_scope
from tests.cluster import Cluster
from tests.e2e.scenario import finished

#: the two peers: the server burns CPU per request, the client sends bursts of them
PEER = r"""
import ctypes, random, socket, sys, time
role, name = sys.argv[1], sys.argv[2]
ctypes.CDLL(None).prctl(15, name.encode(), 0, 0, 0)  # PR_SET_NAME: what procfs meters

def burn(s):
    end = time.thread_time() + s
    while time.thread_time() < end:
        pass

if role == "server":
    srv = socket.create_server(("127.0.0.1", 0))
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    for _line in conn.makefile("rb"):
        burn(0.004)
        conn.sendall(b"k\n")
else:
    conn = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    replies = conn.makefile("rb")
    rnd = random.Random(7)
    while True:
        t = time.time()
        for _ in range(rnd.choice([0, 0, 20, 60])):  # requests this second: bursty
            burn(0.002)
            conn.sendall(b"x\n")
            replies.readline()
        time.sleep(max(0.0, 1.0 - (time.time() - t)))
"""


class ActivityOnlySource(Agent):
    """A source of the collection interface without connection evidence (an agent
    written before the operation existed, or another vendor's): catalog and report."""

    @query
    def catalog(self) -> list[dict]:
        return [{"object": "old/load", "unit": "cpu"}]

    @query
    def report(self, objects: list[str] | None = None, since: float = 0.0, until: float | None = None) -> dict:
        end = time.time() if until is None else float(until)
        t = [float(x) for x in range(int(max(since, end - 120.0)), int(end))]
        values = [0.05 + 0.04 * ((int(x) * 7919) % 13) / 13 for x in t]  # unrelated to the peers
        s = Series("old/load", "cpu", t, [a + 1.0 for a in t], values)
        return {"series": [s.to_wire()], "until": end}


def pairs(answer: dict) -> tuple[set, set]:
    return {(o, ep) for o, ep, _n in answer["edges"]}, {tuple(e) for e in answer["listening"]}


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("conn"), {"h1": {"domain": "A"}, "h2": {"domain": "D"}},
                call_timeout=30.0, kinds=(f"activity-only={__name__}:ActivityOnlySource",))
    server = subprocess.Popen([sys.executable, "-c", PEER, "server", "cx-back"], stdout=subprocess.PIPE, text=True)
    client = None
    try:
        port = int(server.stdout.readline())
        client = subprocess.Popen([sys.executable, "-c", PEER, "client", "cx-front", str(port)])
        with c:
            common = {"interval": 0.25, "per_process": "name", "connections_every": 1.0}
            c.create("h1", "collector", "col-1", match="^cx-(front|back)$", **common)
            c.create("h1", "mediator", "med", sources=["col-1"])
            c.create("h2", "collector", "col-2", match="^cx-back$", **common)
            c.create("h2", "domain", "dom", sources=["col-2"], label="D", members=["h2/proc/*"])
            c.create("h2", "activity-only", "old")
            yield c, port
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait(10)


def test_collector_reports_the_connection_by_object_names(flow):
    c, port = flow
    col = c.ref("col-1", timeout=20)
    back = endpoint("127.0.0.1", port, namespace_scope())  # this machine's loopback
    got = c.wait(lambda: (a := col.query("connections")) and
                 ("h1/proc/cx-front", back) in pairs(a)[0] and (back, "h1/proc/cx-back") in pairs(a)[1] and a,
                 timeout=90, every=0.5)
    edges, _ = pairs(got)
    # the server's accepted socket is no edge (only callers report theirs): cx-back calls nobody
    assert not any(o == "h1/proc/cx-back" for o, _ep in edges)
    assert {"h1/proc/cx-front", "h1/proc/cx-back"} <= set(got["watched"])
    assert dict(((o, ep), n) for o, ep, n in got["edges"])[("h1/proc/cx-front", back)] >= 1
    assert got["until"] is not None and got["until"] > time.time() - 60
    # they are the objects the same collector reports activity for
    catalog = {e["object"] for e in col.query("catalog")}
    assert {"h1/proc/cx-front", "h1/proc/cx-back"} <= catalog
    # a later `since` leaves out what was last seen before it, and objects select
    assert col.query("connections", since=time.time() + 3600)["edges"] == []
    only = col.query("connections", objects=["*/cx-back"])
    assert pairs(only)[0] == set() and (back, "h1/proc/cx-back") in pairs(only)[1]


def test_mediator_gives_the_same_answer(flow):
    c, port = flow
    col, med = c.ref("col-1", timeout=20), c.ref("med", timeout=20)
    back = endpoint("127.0.0.1", port, namespace_scope())
    # evidence there is to pass on (this test may run first, before any sampling)
    c.wait(lambda: (a := pairs(col.query("connections"))) and ("h1/proc/cx-front", back) in a[0]
           and (back, "h1/proc/cx-back") in a[1], timeout=90, every=0.5)
    before = col.query("connections")
    through = med.query("connections")
    after = col.query("connections")
    assert ("h1/proc/cx-front", back) in pairs(through)[0] and (back, "h1/proc/cx-back") in pairs(through)[1]
    assert pairs(before) == pairs(through) == pairs(after)
    assert set(before["watched"]) == set(through["watched"])
    low = {(o, ep): n for o, ep, n in before["edges"]}
    high = {(o, ep): n for o, ep, n in after["edges"]}
    for o, ep, n in through["edges"]:  # counts grow while we ask; the mediator's lie between
        assert low[(o, ep)] <= n <= high[(o, ep)]


def test_domain_agent_names_members_evidence_as_its_collective_object(flow):
    c, port = flow
    dom = c.ref("dom", timeout=20)
    back = endpoint("127.0.0.1", port, namespace_scope())
    got = c.wait(lambda: (a := dom.query("connections")) and (back, "D/cpu") in pairs(a)[1] and a, timeout=90, every=0.5)
    assert all(obj.startswith("D/") for _ep, obj in got["listening"])  # default: the collective objects
    assert "D/cpu" in got["watched"]
    members = dom.query("connections", objects=["h2/proc/*"])
    assert (back, "h2/proc/cx-back") in pairs(members)[1]


def test_a_source_without_the_operation_is_refused_clearly(flow):
    c, _ = flow
    with pytest.raises(UnknownOperation):
        c.ref("old", timeout=20).query("connections")


def test_modeler_edges_rest_on_connection_evidence(flow):
    c, _ = flow
    col = c.ref("col-1", timeout=20)
    # enough activity for a model (the grid needs 8 bins of 1 s; give it a few times that)
    def span() -> float:
        got = [Series.from_wire(w) for w in col.query("report", objects=["h1/proc/cx-front"])["series"]]
        return max((float(s.end[-1] - s.start[0]) for s in got if len(s)), default=0.0)

    c.wait(lambda: span() > 25, timeout=120, every=1.0)
    c.create("h2", "modeler", "mod", sources=["med", "old"], window=120.0, http=None)
    c.create("h2", "modeler", "mod-d", sources=[{"agent": "col-1", "objects": ["h1/proc/cx-front"]},
                                                {"agent": "dom", "objects": ["D/*"]}], window=120.0, http=None)
    for name, (caller, callee) in (("mod", ("h1/proc/cx-front", "h1/proc/cx-back")),
                                   ("mod-d", ("h1/proc/cx-front", "D/cpu"))):
        mod = c.ref(name, timeout=90)
        assert mod.configure("run")["started"] is True
        c.wait(lambda mod=mod: finished(mod, 1), timeout=120, every=0.5)
        g = interface.from_json(mod.query("model")["model"])
        assert g.has_edge(caller, callee), (name, list(g.edges(data=True)))
        assert "connection" in g.edges[caller, callee]["evidence"].split(",")
        assert not g.has_edge(callee, caller)  # the connection says who calls whom
        info = mod.query("versions_list")[-1]["info"]["connections"]
        assert info["used"] is True and info["pairs"] >= 1
    # the source without the operation: its object is modeled from activity, nothing failed
    info = c.ref("mod", timeout=90).query("versions_list")[-1]["info"]
    assert info["connections"]["sources"] == {"med": "ok", "old": "unsupported"}
    assert "old/load" in info["objects_by_source"]["old"]
