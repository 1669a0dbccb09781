"""A modeler reading through a mediator one of whose sources is dead, on real processes:
the run is made from the live source's activity, in time, and its provenance names the
dead source (``info.sources_missing``, why in ``info.sources_unavailable``, and for the
connection evidence ``info.connections.sources_missing``) instead of failing or passing
for complete."""

import subprocess
import sys

from tests.cluster import ROOT, Cluster
from tests.e2e.scenario import fill, finished, two_domains

HOSTS = {"a1": {"domain": "A"}, "b1": {"domain": "B"}, "m1": {"domain": "A"}}
#: the platform's call timeout, above the modeler's own for a report (30 s): a mediator
#: that waited on its dead source this long made the modeler's run fail
CALL_TIMEOUT = 45.0


def run(c, mod, job: int) -> dict:
    assert mod.configure("run")["job"] == job
    c.wait(lambda: finished(mod, job), timeout=120, every=0.5)
    return mod.query("versions_list")[-1]["info"]


def test_a_run_through_a_mediator_with_a_dead_source_names_it_in_the_provenance(tmp_path):
    sc = two_domains()
    with Cluster(tmp_path, HOSTS, call_timeout=CALL_TIMEOUT) as c:
        for host, prefix in (("a1", "a/"), ("b1", "b/")):
            part = {o: s for o, s in sc.series.items() if o.startswith(prefix)}
            c.create(host, "recorder", f"rec-{prefix[0]}", store=fill(tmp_path / f"{prefix[0]}.db", part))
        c.create("m1", "mediator", "med", sources=["rec-a", "rec-b"])
        c.create("m1", "modeler", "mod", sources=["med"], window=900.0, http=None)
        mod = c.ref("mod", timeout=60)
        whole = run(c, mod, 1)
        assert whole["sources_missing"] == [] and whole["sources_unavailable"] == {}
        assert whole["connections"]["sources_missing"] == {}
        assert whole["objects"] == len(sc.series)
        c.kill("b1")  # rec-b's name still points at its dead host
        info = run(c, mod, 2)  # done, not failed
        assert info["sources_missing"] == ["rec-b"]
        assert info["sources_unavailable"]["rec-b"].startswith("med: ")
        assert list(info["connections"]["sources_missing"]) == ["rec-b"]
        assert info["connections"]["sources"] == {"med": "ok"}
        assert info["objects"] == len([o for o in sc.series if o.startswith("a/")])  # the live source's
        # and an operator reading the model is told what it lacks
        for args in (["show", "mod"], ["versions", "mod"]):
            out = subprocess.run([sys.executable, "-m", "masa", "model", *args], capture_output=True, text=True,
                                 cwd=ROOT, env=c.settings.child_env(), timeout=60, check=True).stdout
            assert "made without rec-b (med: " in out, out
