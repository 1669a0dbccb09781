"""A domain agent killed (kill -9 of its host) and restarted while a standing request
runs through it: the stream above resumes with every collective segment exactly once."""

import time

from agents.domain_join import reference_join
from tests.agents.mediation_helpers import assert_same_samples, recorded, series, taken, window
from tests.cluster import Cluster


def test_domain_agent_killed_and_restarted_mid_stream(tmp_path):
    hosts = {"b1": {"domain": "B"}, "b2": {"domain": "B"}, "d1": {"domain": "B"}, "m1": {"domain": "A"}}
    with Cluster(tmp_path, hosts, heartbeat=0.5) as c:
        c.create("b1", "collector", "col1", interval=0.3, per_process="none")
        c.create("b2", "collector", "col2", interval=0.5, per_process="none")
        c.create("d1", "domain", "dom", sources=["col1", "col2"], members=["*/cpu"])
        c.create("m1", "mediator", "med", sources=["dom"])
        c.create("m1", "recorder", "top")
        top = c.ref("top", timeout=20)
        top.configure("subscribe_to", request="collective", source="med")
        c.wait(lambda: taken(c, "top", "collective") >= 4, timeout=30)
        c.kill("d1")
        time.sleep(2.0)  # the collectors keep metering; the mediator's batches stall
        before = recorded(c, "top", "B/cpu").end[-1]
        c.restart("d1")  # the domain agent returns from its checkpoint and its store
        c.wait(lambda: recorded(c, "top", "B/cpu").end[-1] > before + 3.0, timeout=40)
        got = recorded(c, "top", "B/cpu")
        first, until = got.start[0], got.end[-1]
        direct = [series(c.ref(col).query("report", objects=[obj], since=first - 30, until=until + 5))[obj]
                  for obj, col in (("b1/cpu", "col1"), ("b2/cpu", "col2"))]
        want = window(reference_join(direct, "B/cpu", "cpu"), first - 1e-9, until)
        assert len(want) > 20
        assert_same_samples(got, want, rtol=1e-12)  # across the outage: none lost, none twice
        assert c.ref("dom").query("status")["host"] == "d1"
