"""`masa infer` / `masa evaluate` round trip and their errors on bad input."""

import json

import numpy as np
import pytest
import sklearn
from click.testing import CliRunner

from masa.activity import write_csv
from masa.cli import main
from modeler.simulator import random_topology, simulate


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    d = tmp_path_factory.mktemp("rec")
    rng = np.random.default_rng(7)
    sc = simulate(random_topology(rng, 5, "shared_db"), seconds=600, step=1.0, rng=rng, background=2)
    write_csv(d / "activity.csv", sc.series.values())
    (d / "truth.json").write_text(json.dumps({"edges": [list(e) for e in sc.truth]}))
    with (d / "connections.csv").open("w") as f:
        f.write("source,target,count\n" + "".join(f"{a},{b},3\n" for a, b in sc.truth))
    return d


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_infer_then_evaluate_round_trip(recording, tmp_path):
    out = tmp_path / "model.json"
    r = invoke("infer", recording / "activity.csv", "--out", out)
    assert r.exit_code == 0, r.output
    model = json.loads(out.read_text())
    assert model["directed"] is True
    assert {n["id"] for n in model["nodes"]} >= {"svc0", "bg0"}
    for e in model["edges"]:
        assert 0.0 <= e["confidence"] <= 1.0 and 0.5 <= e["direction_confidence"] <= 1.0
        assert e["evidence"]
    r = invoke("evaluate", out, recording / "truth.json", "--json")
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    assert set(scores) >= {"precision", "recall", "f1", "skeleton_f1", "shd"}


def test_connections_make_the_model_exact_and_say_so(recording, tmp_path):
    out = tmp_path / "model.json"
    r = invoke("infer", recording / "activity.csv", "--out", out,
               "--connections", recording / "connections.csv")
    assert r.exit_code == 0, r.output
    r = invoke("evaluate", out, recording / "truth.json", "--json")
    assert json.loads(r.output)["f1"] == 1.0
    edges = json.loads(out.read_text())["edges"]
    assert all("connection" in e["evidence"] for e in edges)


@pytest.mark.parametrize("fmt", ["graphml", "dot"])
def test_other_formats_are_readable_by_networkx(recording, tmp_path, fmt):
    import networkx as nx

    out = tmp_path / f"model.{fmt}"
    assert invoke("infer", recording / "activity.csv", "--out", out).exit_code == 0
    if fmt == "graphml":
        g = nx.read_graphml(out)
    else:
        import pydot

        g = nx.nx_pydot.from_pydot(pydot.graph_from_dot_file(str(out))[0])
    assert g.number_of_nodes() >= 5


BAD = {
    "missing_columns": ("when,who,value\n1,a,1\n", "header must contain"),
    "non_numeric": ("time,object,value\n1,a,1\n2,a,lots\n", "value is not a number"),
    "nan": ("time,object,value\n1,a,1\n2,a,nan\n", "not finite"),
    "duplicate_times": ("time,object,value\n1,a,1\n1,a,2\n", "two samples at time 1"),
    "single_object": ("time,object,value\n" + "".join(f"{t},a,{t % 3}\n" for t in range(1, 50)),
                      "at least two objects"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_infer_explains_bad_input(tmp_path, case):
    text, message = BAD[case]
    (tmp_path / "a.csv").write_text(text)
    r = invoke("infer", tmp_path / "a.csv", "--out", tmp_path / "m.json")
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
    assert not (tmp_path / "m.json").exists()


def test_evaluate_explains_bad_model_and_truth(recording, tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    r = invoke("evaluate", tmp_path / "bad.json", recording / "truth.json")
    assert r.exit_code != 0 and "not JSON" in r.output
    (tmp_path / "model.json").write_text(json.dumps({"directed": True, "nodes": [], "edges": []}))
    (tmp_path / "truth.json").write_text(json.dumps({"edges": [["a"]]}))
    r = invoke("evaluate", tmp_path / "model.json", tmp_path / "truth.json")
    assert r.exit_code != 0 and "[caller, callee]" in r.output


def test_interval_layout_gives_the_same_model(recording, tmp_path):
    from masa.activity import read_csv
    from masa.activity import write_csv as write

    series = read_csv(recording / "activity.csv")
    write(tmp_path / "iv.csv", series.values(), layout="interval")
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert invoke("infer", recording / "activity.csv", "--out", a).exit_code == 0
    assert invoke("infer", tmp_path / "iv.csv", "--out", b).exit_code == 0
    edges = [sorted((e["source"], e["target"]) for e in json.loads(p.read_text())["edges"]) for p in (a, b)]
    assert edges[0] == edges[1]


def test_train_logs_its_stages_and_the_network_says_what_it_was_trained_on(recording, tmp_path):
    from masa import __version__
    from modeler.estimator import DependencyModeler
    from modeler.training import fingerprint

    net = tmp_path / "net.npz"
    r = invoke("train", "--scenarios", 3, "--members", 2, "--seed", 4, "--recording", recording,
               "--out", net)
    assert r.exit_code == 0, r.output
    log = r.stderr.splitlines()  # not a terminal: plain lines, one per stage and tenth
    for line in ("simulating scenarios: 0/3", "simulating scenarios: 3/3", "recordings: 100%",
                 "fitting networks: 1/2", "fitting networks: 2/2"):
        assert any(ln.startswith(line + " (") for ln in log), (line, log)
    meta = DependencyModeler.load(net).network_.meta
    assert meta["trained_on"] == (f"masa {__version__} train --scenarios 3 --seed 4 --members 2 "
                                  f"--recording {recording.name}#{fingerprint(recording)}")
    assert meta["trained_at"].startswith("20") and meta["trained_at"].endswith("Z")
    assert f"numpy {np.__version__}" in meta["trained_with"]  # a retrain matches these too
    assert f"scikit-learn {sklearn.__version__}" in meta["trained_with"]
    out = tmp_path / "m.json"
    assert invoke("infer", recording / "activity.csv", "--model", net, "--out", out).exit_code == 0
    model = json.loads(out.read_text())  # the model names the network that decided it
    assert model["graph"]["network"] == DependencyModeler.load(net).network_.ident
    assert model["graph"]["trained_on"] == meta["trained_on"]
    assert model["graph"]["network"] != DependencyModeler.default().network_.ident


def test_train_rejects_a_bad_recording_before_simulating(tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "activity.csv").write_text("time,object,value\n1,a,0.5\n")
    r = invoke("train", "--scenarios", 50, "--recording", tmp_path / "rec", "--out", tmp_path / "n.npz")
    assert r.exit_code != 0 and "truth.json" in r.output
    assert "simulating" not in r.output and not (tmp_path / "n.npz").exists()


def test_provenance_names_what_only_the_python_api_can_set(recording):
    from modeler.training import fingerprint, provenance

    line = provenance(3, 4, 1, [recording], hidden=(8,), real_weight=1)
    assert line.endswith(f"--members 1 --recording {recording.name}#{fingerprint(recording)} "
                         "[train(hidden=(8,), real_weight=1)]")
    assert "[" not in provenance(3, 4, 1, [recording])


def test_a_recording_s_fingerprint_follows_its_content(recording, tmp_path):
    from modeler.training import fingerprint

    copy = tmp_path / recording.name
    copy.mkdir()
    for name in ("activity.csv", "truth.json"):
        (copy / name).write_bytes((recording / name).read_bytes())
    assert fingerprint(copy) == fingerprint(recording)
    (copy / "truth.json").write_text('{"edges": []}')
    assert fingerprint(copy) != fingerprint(recording)


def test_the_model_says_how_much_activity_it_rests_on_and_infer_warns_when_little(recording, tmp_path):
    from masa.activity import read_csv
    from masa.activity import write_csv as write
    from modeler.cli import FEW_BINS

    full = tmp_path / "full.json"
    r = invoke("infer", recording / "activity.csv", "--out", full)
    assert r.exit_code == 0 and "note:" not in r.stderr
    assert json.loads(full.read_text())["graph"]["bins"] == 600  # 600 s on the data's 1 s grid

    series = read_csv(recording / "activity.csv")
    t0 = min(s.start[0] for s in series.values())
    write(tmp_path / "short.csv", [s.window(t0, t0 + 100) for s in series.values()])
    short = tmp_path / "short.json"
    r = invoke("infer", tmp_path / "short.csv", "--out", short)
    assert r.exit_code == 0, r.output
    bins = json.loads(short.read_text())["graph"]["bins"]
    assert 95 <= bins <= 101 < FEW_BINS
    assert f"rests on {bins} intervals" in r.stderr and "record longer" in r.stderr
