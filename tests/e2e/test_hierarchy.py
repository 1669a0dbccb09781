"""Hierarchical models on real processes: local modelers model their domains in detail,
an enterprise modeler sees the remote domain as one object (its domain agent's
collective activity), reuses the local sub-models and scores only inter-domain pairs."""

from __future__ import annotations

from modeler import interface
from tests.cluster import Cluster
from tests.e2e.scenario import fill, two_domains

HOSTS = {"a1": {"domain": "A"}, "b1": {"domain": "B"}}


def latest_head(ref) -> dict:
    return ref.query("versions_list")[-1]


def run(c, ref) -> dict:
    before = ref.query("status")["latest"] or 0
    ref.configure("run")
    st = c.wait(lambda: (s := ref.query("status"))["latest"] == before + 1 and s
                or (s["job"].get("state") == "failed" and s), timeout=90)
    assert st["job"]["state"] == "done", st["job"]
    return latest_head(ref)


def test_enterprise_modeler_reuses_sub_models(tmp_path):
    sc = two_domains()
    a = {k: s for k, s in sc.series.items() if k.startswith("a/")}
    b = {k: s for k, s in sc.series.items() if k.startswith("b/")}
    with Cluster(tmp_path, HOSTS, call_timeout=30.0) as c:
        c.create("a1", "recorder", "rec-a", store=fill(tmp_path / "a.db", a))
        c.create("b1", "recorder", "rec-b", store=fill(tmp_path / "b.db", b))
        c.create("b1", "domain", "dom-b", sources=["rec-b"], label="B")
        c.create("a1", "modeler", "mod-a", sources=["rec-a"], window=900.0, http=None)
        c.create("b1", "modeler", "mod-b", sources=["rec-b"], window=900.0, http=None)
        c.create("a1", "modeler", "ent", window=900.0, http=None, submodels=["mod-a", "mod-b"],
                 sources=["rec-a", {"agent": "dom-b", "objects": ["B/*"]}])
        mod_a, mod_b, ent = c.ref("mod-a", 30), c.ref("mod-b", 30), c.ref("ent", 30)
        n_a = len(a)
        # before the local modelers have a model, the enterprise modeler scores everything
        first = run(c, ent)
        assert first["info"]["submodels_missing"] == ["mod-a", "mod-b"]
        assert first["info"]["pairs_scored"] == (n_a + 1) * n_a

        head_a, head_b = run(c, mod_a), run(c, mod_b)
        head = run(c, ent)
        assert head["info"]["submodels_missing"] == []
        assert head_a["info"]["pairs_scored"] == n_a * (n_a - 1)
        assert head["info"]["objects_by_source"] == {"dom-b": ["B/cpu"], "rec-a": sorted(a)}
        # only pairs across domains reach the network: A's objects with B, both orders
        assert head["info"]["candidate_pairs"] == (n_a + 1) * n_a
        assert head["info"]["pairs_scored"] == 2 * n_a
        assert head["info"]["submodels"] == {"mod-a": head_a["version"], "mod-b": head_b["version"]}
        assert head["sources"] == ["rec-a", "dom-b", "mod-a", "mod-b"]

        whole = interface.from_json(ent.query("model")["model"])
        for name, ref in (("mod-a", mod_a), ("mod-b", mod_b)):
            sub = interface.from_json(ref.query("model")["model"])
            assert sub.number_of_edges() > 0, name  # something to reuse
            assert set(sub) <= set(whole)
            for x, y, conf in sub.edges(data="confidence"):
                assert whole.edges[x, y]["confidence"] == conf
                assert whole.edges[x, y]["submodel"] == name
        cross = [(x, y) for x, y, d in whole.edges(data=True) if "submodel" not in d]
        assert all("B/cpu" in (x, y) for x, y in cross)  # the only edges it computed itself
        assert "B/cpu" in whole and whole.number_of_nodes() == len(a) + len(b) + 1
        # the header counts the objects modeled here apart from the whole model's nodes
        assert head["info"]["objects"] == n_a + 1
        assert (head["info"]["nodes"], head["info"]["edges"]) == (whole.number_of_nodes(), whole.number_of_edges())
        print("inter-domain edges:", cross, "truth:", [e for e in sc.truth if e[0][0] != e[1][0]])
