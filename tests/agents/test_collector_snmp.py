"""A collector agent polling a real snmpd (net-snmp), as it would poll a router."""

import time

import pytest

from masa.activity import Series
from tests.probes.snmp_agents import COMMUNITY
from tests.probes.traffic import through_loopback

pytestmark = pytest.mark.snmpd


def test_snmp_collector_streams_interface_traffic_to_a_recorder(pair, snmpd):
    pair.create("b1", "collector", "router1", probe="snmp", target=snmpd.target,
                community=COMMUNITY, label="router1", interval=0.5)
    pair.create("b2", "recorder", "noc")
    col, noc = pair.ref("router1"), pair.ref("noc")
    catalog = pair.wait(lambda: (c := col.query("catalog")) and len(c) >= 3 and c, timeout=30)
    names = {c["object"] for c in catalog}
    assert any(n.startswith("router1/if/") and n.endswith("/in") for n in names)
    assert any(c["unit"] == "B/s" for c in catalog)
    noc.configure("subscribe_to", request="links", source="router1", objects=["router1/if/*"])
    # traffic on loopback, which snmpd's IF-MIB counts like any interface
    deadline = time.time() + 30
    got = {}
    while time.time() < deadline:
        through_loopback(20, 50_000)  # 1 MB through lo per round
        time.sleep(0.5)
        got = {w["object"]: Series.from_wire(w) for w in noc.query("report")["series"]}
        lo = got.get("router1/if/lo/in")
        if lo is not None and len(lo) >= 6 and (lo.value * (lo.end - lo.start)).sum() >= 1_000_000:
            break
    assert got and all(name.startswith("router1/if/") for name in got)
    lo = got["router1/if/lo/in"]
    assert len(lo) >= 6, lo
    # the traffic sent meanwhile reached the recorder as a rate on lo
    assert (lo.value * (lo.end - lo.start)).sum() >= 1_000_000, lo.value
    for s in got.values():
        assert s.unit == "B/s" and (s.value >= 0).all()
        assert (s.end > s.start).all()
    # SNMP sees no processes: no connection evidence, and saying so is not an error
    assert col.query("connections") == {"edges": [], "listening": [], "watched": [], "until": None}
    with pytest.raises(Exception, match="target"):
        pair.create("b1", "collector", "router-bad", probe="snmp")
