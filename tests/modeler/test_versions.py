"""Model versions in the store: numbering, provenance, diffs, two modelers side by side."""

import networkx as nx
import pytest

from masa.errors import BadRequest
from masa.store import Store
from modeler.versions import Provenance, Versions


def graph(*edges):
    g = nx.DiGraph()
    for a, b, c in edges:
        g.add_edge(a, b, confidence=c)
    return g


def test_versions_keep_provenance_and_diff(store_url):
    """On SQLite and on a real PostgreSQL server: a deployment spread over machines keeps
    its versions in one PostgreSQL database, so a modeler that moves finds them there."""
    url = store_url
    with Store(url) as store:
        v = Versions(store)
        with pytest.raises(BadRequest, match="no model yet"):
            v.get("mod")
        p = Provenance(["col-a", "dom-b"], 100.0, 400.0, "net-1", {"pairs_scored": 12})
        assert v.add("mod", graph(("a", "b", 0.9), ("b", "c", 0.7)), p) == 1
        assert v.add("other", graph(("x", "y", 0.5)), p) == 1  # numbering is per modeler
        assert v.add("mod", graph(("a", "b", 0.9), ("a", "c", 0.6)), p) == 2
        assert v.latest("mod") == 2
    with Store(url) as store:  # survives reopening: it is in the database, not in memory
        v = Versions(store)
        g, head = v.get("mod", 1)
        assert set(g.edges) == {("a", "b"), ("b", "c")} and g.edges["a", "b"]["confidence"] == 0.9
        assert head["sources"] == ["col-a", "dom-b"] and head["since"] == 100.0
        assert head["until"] == 400.0 and head["network"] == "net-1"
        assert head["info"] == {"pairs_scored": 12}
        assert [h["version"] for h in v.list("mod")] == [1, 2]
        d = v.diff("mod", 1)
        assert d["from"] == 1 and d["to"] == 2
        assert [(e["source"], e["target"]) for e in d["added_edges"]] == [("a", "c")]
        assert [(e["source"], e["target"]) for e in d["removed_edges"]] == [("b", "c")]
        with pytest.raises(BadRequest, match="no version 7"):
            v.get("mod", 7)
        for huge in (2**63, 2**64 - 1, -(2**63) - 1):  # beyond the database's 64-bit integers
            with pytest.raises(BadRequest, match=f"no version {huge}"):
                v.get("mod", huge)
            with pytest.raises(BadRequest, match=f"no version {huge}"):
                v.diff("mod", 1, huge)
