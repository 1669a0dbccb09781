"""A short real testbed recording: service processes on loopback, metered by procfs."""

import json
import sys

import pytest

from masa.activity import read_csv
from modeler import evidence
from modeler.estimator import DependencyModeler
from modeler.metrics import evaluate
from modeler.testbed import TopologyError, load_topology, record

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("tb")
    info = record(load_topology("chain"), 50, out, interval=0.5, seed=3)
    return out, info


def test_recording_writes_activity_truth_and_connections(chain):
    out, info = chain
    series = read_csv(out / "activity.csv")
    assert {"web", "app", "db", "bg0", "bg1"} <= set(series)
    assert all(len(s) >= 80 for s in series.values())  # ~100 samples at 0.5 s
    truth = json.loads((out / "truth.json").read_text())["edges"]
    assert sorted(map(tuple, truth)) == [("app", "db"), ("web", "app")]
    # the procfs probe saw exactly the calls of the call graph
    assert set(evidence.read_connections(out / "connections.csv")) == {("web", "app"), ("app", "db")}


def test_shipped_network_classifies_the_recording(chain):
    out, _ = chain
    series = read_csv(out / "activity.csv")
    truth = [tuple(e) for e in json.loads((out / "truth.json").read_text())["edges"]]
    model = DependencyModeler.default()
    names, p = model.predict_proba(series)
    adj = p + p.T
    idx = {n: k for k, n in enumerate(names)}
    true_scores = [adj[idx[a], idx[b]] for a, b in truth]
    others = [adj[i, j] for i in range(len(names)) for j in range(i + 1, len(names))
              if (names[i], names[j]) not in truth and (names[j], names[i]) not in truth]
    # both true dependencies are more probable than any unrelated pair
    assert min(true_scores) > max(others)
    conn = evidence.read_connections(out / "connections.csv")
    g = model.predict(series, conn)
    assert evaluate(g, truth)["f1"] == 1.0
    assert all("connection" in g.edges[e]["evidence"] for e in g.edges)


def test_custom_topologies_are_validated(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text(json.dumps({"services": {"a": {"calls": {"b": 1.0}}}}))
    with pytest.raises(TopologyError, match="unknown service 'b'"):
        load_topology(str(bad))
    with pytest.raises(TopologyError, match="neither a built-in"):
        load_topology(str(tmp_path / "missing.json"))
    bad.write_text(json.dumps({"services": {"a": {"calls": {"a": 2}}}}))
    with pytest.raises(TopologyError, match="probability"):
        load_topology(str(bad))
