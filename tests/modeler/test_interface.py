"""The dependency-model interface on hand-made graphs whose answers are known."""

import json
import math

import networkx as nx
import pytest

from masa.errors import BadRequest
from modeler import interface as mi


def model() -> nx.DiGraph:
    # web -> app -> db, web -> cache, batch -> db ; "A -> B": A depends on B
    g = nx.DiGraph()
    g.add_edge("web", "app", confidence=0.9)
    g.add_edge("app", "db", confidence=0.8)
    g.add_edge("web", "cache", confidence=0.3)
    g.add_edge("batch", "db", confidence=0.6)
    g.add_edge("web", "db", confidence=0.5)
    g.add_node("lonely")
    return g


def test_direct_dependencies_and_dependants():
    g = model()
    assert [e["target"] for e in mi.dependencies(g, "web")] == ["app", "db", "cache"]
    assert [e["source"] for e in mi.dependants(g, "db")] == ["app", "batch", "web"]
    assert [e["target"] for e in mi.dependencies(g, "web", min_confidence=0.5)] == ["app", "db"]
    assert mi.dependencies(g, "lonely") == [] and mi.dependants(g, "web") == []
    with pytest.raises(BadRequest, match="unknown object 'nope'"):
        mi.dependencies(g, "nope")


def test_impact_set_is_everything_that_transitively_depends():
    g = model()
    hit = {e["object"]: e for e in mi.impact_set(g, "db")}
    assert set(hit) == {"app", "batch", "web"}
    assert hit["app"]["distance"] == 1 and hit["web"]["distance"] == 1
    # web reaches db directly (0.5) or through app (0.9 * 0.8 = 0.72): the stronger chain counts
    assert hit["web"]["confidence"] == pytest.approx(0.72)
    assert mi.impact_set(g, "web") == []
    assert {e["object"] for e in mi.impact_set(g, "db", min_confidence=0.55)} == {"app", "batch", "web"}
    assert {e["object"] for e in mi.impact_set(g, "cache", min_confidence=0.5)} == set()


def test_path_is_the_most_confident_chain():
    g = model()
    p = mi.path(g, "web", "db")
    assert p["path"] == ["web", "app", "db"] and p["confidence"] == pytest.approx(0.72)
    assert [e["confidence"] for e in p["edges"]] == [0.9, 0.8]
    assert mi.path(g, "db", "web") is None  # dependency is directed
    assert mi.path(g, "web", "db", min_confidence=0.85) is None


def test_diff_between_versions():
    old, new = model(), model()
    new.remove_edge("web", "cache")
    new.add_edge("batch", "cache", confidence=0.7)
    new.edges["app", "db"]["confidence"] = 0.82  # within tolerance: not news
    new.edges["batch", "db"]["confidence"] = 0.9
    new.remove_node("lonely")
    d = mi.diff(old, new)
    assert d["removed_objects"] == ["lonely"] and d["added_objects"] == []
    assert [(e["source"], e["target"]) for e in d["added_edges"]] == [("batch", "cache")]
    assert [(e["source"], e["target"]) for e in d["removed_edges"]] == [("web", "cache")]
    assert d["changed_edges"] == [{"source": "batch", "target": "db", "before": 0.6, "after": 0.9}]
    assert mi.diff(old, old) == {"added_objects": [], "removed_objects": [], "added_edges": [],
                                 "removed_edges": [], "changed_edges": []}


def test_renderings_round_trip():
    g = model()
    back = mi.from_json(json.loads(mi.render(g, "json")))
    assert set(back.edges) == set(g.edges) and set(back) == set(g)
    assert back.edges["web", "app"]["confidence"] == 0.9
    assert mi.from_json(json.loads(json.dumps(mi.whole(g)))).edges["app", "db"]["confidence"] == 0.8
    gml = mi.render(g, "graphml")
    assert "<graphml" in gml and "confidence" in gml
    assert set(nx.parse_graphml(gml).edges) == set(g.edges)
    dot = mi.render(g, "dot")
    assert '"web" -> "app"' in dot and 'label=0.9' in dot
    with pytest.raises(BadRequest, match="unknown format"):
        mi.render(g, "png")
    g.add_node("bell\x07")  # XML cannot hold it: a clear refusal, not a broken file
    with pytest.raises(BadRequest, match="U\\+0007, which GraphML"):
        mi.render(g, "graphml")
    g.remove_node("bell\x07")
    s = mi.summary(g)
    assert s["objects"] == 6 and s["edges"] == 5
    assert s["mean_confidence"] == pytest.approx((0.9 + 0.8 + 0.3 + 0.6 + 0.5) / 5)
    assert not math.isnan(s["mean_confidence"])
