"""`masa infer` / `masa evaluate` round trip and their errors on bad input."""

import json

import numpy as np
import pytest
import sklearn
from click.testing import CliRunner

from masa.activity import Series, write_csv
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
    assert model["edges"], "no dependency found at all"
    for e in model["edges"]:
        assert 0.0 <= e["confidence"] <= 1.0 and 0.5 <= e["direction_confidence"] <= 1.0
        assert e["evidence"]
    r = invoke("evaluate", out, recording / "truth.json", "--json")
    assert r.exit_code == 0, r.output
    scores = json.loads(r.output)
    assert set(scores) >= {"precision", "recall", "f1", "skeleton_f1", "shd"}
    # the scores are those of the edges written, against the truth file (read back, not recomputed)
    edges = {(e["source"], e["target"]) for e in model["edges"]}
    truth = {tuple(e) for e in json.loads((recording / "truth.json").read_text())["edges"]}
    assert scores["predicted_edges"] == len(edges) and scores["true_edges"] == len(truth)
    assert scores["precision"] == pytest.approx(len(edges & truth) / len(edges))
    assert scores["recall"] == pytest.approx(len(edges & truth) / len(truth))
    undirected = {frozenset(e) for e in edges}
    assert scores["skeleton_recall"] == pytest.approx(len({frozenset(e) for e in truth} & undirected) / len(truth))


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
        g.graph = {k: v.strip('"') for k, v in g.graph["graph"].items()}
    assert g.number_of_nodes() >= 5
    # how the model was decided travels in every format, not only JSON
    assert 0 < float(g.graph["threshold"]) < 1 and int(g.graph["bins"]) > 0 and g.graph["network"]


def test_dot_escapes_a_backslash_in_a_name(tmp_path):
    """A name ending in a backslash ("web\\", a Windows path) must not escape its
    closing quote and leave the rest of the file inside one string."""
    import networkx as nx
    import pydot

    from modeler import export

    g = nx.DiGraph()
    g.add_edge("web\\", 'a"b\\', confidence=0.9)
    export.write(g, tmp_path / "m.dot")
    (dot,) = pydot.graph_from_dot_file(str(tmp_path / "m.dot"))
    assert [(e.get_source(), e.get_destination()) for e in dot.get_edges()] == [('"web\\\\"', '"a\\"b\\\\"')]


def test_graphml_refuses_a_control_character_before_the_work(recording, tmp_path):
    """XML 1.0 cannot hold U+0001 at all (not even as &#1;): refused, naming the object,
    before the model is built, instead of a file no reader parses."""
    from masa.activity import read_csv

    series = read_csv(recording / "activity.csv")
    series["web\x01"] = Series("web\x01", "", series["svc0"].start, series["svc0"].end, series.pop("svc0").value)
    write_csv(tmp_path / "ctl.csv", series.values())
    r = invoke("infer", tmp_path / "ctl.csv", "--out", tmp_path / "m.graphml")
    assert r.exit_code != 0 and "'web\\x01' holds the character U+0001, which GraphML" in r.output
    assert not (tmp_path / "m.graphml").exists()


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


@pytest.mark.parametrize("seconds", ["nan", "inf", "2"])
def test_scenario_refuses_a_collection_time_that_is_no_length(seconds, monkeypatch):
    from modeler import scenario

    monkeypatch.setattr(scenario, "run", lambda *a, **k: pytest.fail("the scenario started"))
    r = invoke("scenario", "--seconds", seconds)
    assert r.exit_code == 2 and "at least 5 s of activity are needed, and a finite time" in r.output


def test_evaluate_names_objects_as_its_scores_do_and_refuses_what_is_no_name(tmp_path):
    """Ids compare as strings in the scores, so in the note too (no "missing 1, 2" before
    an F1 of 1); null or a number is no object name, and a node needs an id."""
    model, truth = tmp_path / "m.json", tmp_path / "t.json"
    model.write_text(json.dumps({"nodes": [{"id": 1}, {"id": 2}], "edges": [{"source": 1, "target": 2}]}))
    truth.write_text(json.dumps({"edges": [["1", "2"]]}))
    r = invoke("evaluate", model, truth, "--json")
    assert r.exit_code == 0 and "note" not in r.stderr and json.loads(r.stdout)["f1"] == 1.0
    truth.write_text(json.dumps({"edges": [[None, "2"]]}))
    r = invoke("evaluate", model, truth)
    assert r.exit_code != 0 and "t.json: every edge must be [caller, callee], two object names, got [None, '2']" in r.output
    for nodes in ("ab", [1, 2], [{"id": "a"}, {"name": "b"}]):
        model.write_text(json.dumps({"nodes": nodes, "edges": []}))
        r = invoke("evaluate", model, truth)
        assert r.exit_code != 0 and "m.json: 'nodes' must be a list of objects with an \"id\", got" in r.output


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
    bins = json.loads(short.read_text())["graph"]["observed_bins"]
    assert 95 <= bins <= 101 < FEW_BINS
    assert f"rests on {bins} intervals" in r.stderr and "record longer" in r.stderr


BAD_GRID = {
    "stray_timestamp": ("time,object,value\n" + "".join(f"{t},a,{t % 3}\n{t},b,{t % 5}\n" for t in range(100, 150))
                        + "1000000,a,1\n", "stray timestamp"),
    "huge_value": ("time,object,value\n" + "".join(f"{t},a,{t % 3}\n{t},b,{t % 5}e160\n" for t in range(100, 150)),
                   "rescale the data"),
}


@pytest.mark.parametrize("case", sorted(BAD_GRID))
def test_infer_refuses_data_it_cannot_model_before_building_the_grid(tmp_path, case):
    """A stray row would ask for a grid of millions of bins (GiBs), values near 1e160
    overflow every square: both refused with the reason, nothing written."""
    text, message = BAD_GRID[case]
    (tmp_path / "a.csv").write_text(text)
    r = invoke("infer", tmp_path / "a.csv", "--out", tmp_path / "m.json")
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "m.json").exists()


def test_a_file_that_is_not_a_network_is_refused_as_such(recording, tmp_path):
    (tmp_path / "other.npz").write_bytes(b"")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for path in (recording / "truth.json", tmp_path / "other.npz"):
        r = invoke("infer", recording / "activity.csv", "--model", path, "--out", tmp_path / "m.json")
        assert r.exit_code != 0 and "not a network written by `masa train`" in r.output, r.output
        assert "pickle" not in r.output  # never a hint to load unsafely


def test_an_unwritable_output_fails_before_the_work(recording, tmp_path):
    r = invoke("train", "--scenarios", 400, "--out", tmp_path / "no" / "net.npz")
    assert r.exit_code != 0 and "does not exist" in r.output
    assert "simulating" not in r.stderr  # refused before an hour of training, not after
    r = invoke("infer", recording / "activity.csv", "--out", tmp_path / "no" / "m.json")
    assert r.exit_code != 0 and "does not exist" in r.output


def test_infer_says_what_in_its_input_will_mislead_it(recording, tmp_path):
    (tmp_path / "c.csv").write_text("source,target\nsvc0,nosuch\n")
    r = invoke("infer", recording / "activity.csv", "--connections", tmp_path / "c.csv", "--out", tmp_path / "m.json")
    assert r.exit_code == 0, r.output
    assert "names 1 object the activity does not hold (nosuch)" in r.stderr
    assert "joins no two objects" in r.stderr
    (tmp_path / "c.csv").write_text("source,target,count\nsvc0,svc1,-5\n")
    r = invoke("infer", recording / "activity.csv", "--connections", tmp_path / "c.csv", "--out", tmp_path / "m.json")
    assert r.exit_code != 0 and "c.csv:2: count must be" in r.output
    from masa.activity import read_csv

    series = read_csv(recording / "activity.csv")
    series["svc0"] = Series("svc0", "", series["svc0"].start, series["svc0"].end, -series["svc0"].value)
    write_csv(tmp_path / "neg.csv", series.values())
    r = invoke("infer", tmp_path / "neg.csv", "--out", tmp_path / "m.json")
    assert r.exit_code == 0 and "1 object with negative activity (svc0)" in r.stderr


def test_infer_notes_connections_never_seen_and_objects_never_recorded_together(recording):
    """Counts of 0 weigh against every pair as much as no pair at all; objects recorded
    at other times than the rest (a clock an hour off) give pairs that cannot be judged."""
    from masa.activity import read_csv
    from modeler.cli import input_notes

    series = read_csv(recording / "activity.csv")
    assert input_notes(series, {("svc0", "svc1"): 3.0}, "c.csv") == []
    (note,) = input_notes(series, {("svc0", "svc1"): 0.0}, "c.csv")
    assert note.startswith("c.csv has only counts of 0 between objects of the activity: every pair counts as watched")
    for name in ("svc1", "bg0"):
        s = series[name]
        series[name] = Series(name, "", s.start + 3600, s.end + 3600, s.value)
    (note,) = input_notes(series, None, None)
    assert note.startswith("2 objects (bg0, svc1) share no recorded time with bg1, svc0, svc2, ...: their pairs")



def test_infer_notes_activity_too_small_to_be_told_from_constant(recording):
    """The statistics' floors are absolute: values of 1e-12 gave an empty model, silently."""
    from masa.activity import read_csv
    from modeler.cli import input_notes

    series = read_csv(recording / "activity.csv")
    s = series["svc1"]
    series["svc1"] = Series("svc1", "", s.start, s.end, s.value * 1e-12)
    (note,) = input_notes(series, None, None)
    assert note.startswith("1 object whose activity never reaches 1e-06 (svc1): the model takes so little")


def test_a_finer_grid_than_the_samples_adds_no_evidence(recording, tmp_path):
    """`bins` counts grid intervals; the short-data note counts the ones resting on samples,
    so asking for a finer step cannot talk the note away."""
    out = tmp_path / "m.json"
    r = invoke("infer", recording / "activity.csv", "--step", 0.1, "--out", out)  # 1 s samples
    graph = json.loads(out.read_text())["graph"]
    assert r.exit_code == 0 and graph["bins"] >= 6000 and graph["observed_bins"] == 600


def test_the_socket_log_of_masa_collect_is_connection_evidence(tmp_path):
    """One `masa collect procfs --connections` session gives both inputs of `masa infer`:
    a real client process connected to a real server process, resolved to their objects."""
    import subprocess
    import sys
    from pathlib import Path

    from masa.activity import read_csv
    from modeler import evidence

    server = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time\ns=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); s.settimeout(30)\n"
         "print(s.getsockname()[1], flush=True); c, _ = s.accept(); print('accepted', flush=True)\n"
         "t = time.time()\nwhile time.time() - t < 30: sum(range(20000))", "masa-conn-test"],
        stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    client = subprocess.Popen(
        [sys.executable, "-c", f"import socket,time\nc=socket.create_connection(('127.0.0.1', {port})); t=time.time()\n"
         "while time.time() - t < 30: sum(range(20000))", "masa-conn-test"])
    try:
        assert server.stdout.readline().strip() == "accepted"  # connected before the recording starts
        act, conns = tmp_path / "a.csv", tmp_path / "c.csv"
        run = subprocess.run(
            [str(Path(sys.executable).with_name("masa")), "collect", "procfs", "--match", "masa-conn-test",
             "--per-process", "pid", "--label", "h", "--interval", "0.25", "--seconds", "3", "--out", str(act),
             "--connections", str(conns), "--connections-every", "1"], capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, run.stderr
        series = read_csv(act)
        found = evidence.read_connections(conns, series)
        caller = next(o for o in series if o.endswith(f"/{client.pid}"))
        callee = next(o for o in series if o.endswith(f"/{server.pid}"))
        assert set(found) == {(caller, callee)} and found[(caller, callee)] >= 1
        r = invoke("infer", act, "--connections", conns, "--step", 0.25, "--out", tmp_path / "m.json")
        assert r.exit_code == 0, r.output
        edges = json.loads((tmp_path / "m.json").read_text())["edges"]
        assert any(e["source"] == caller and e["target"] == callee and "connection" in e["evidence"] for e in edges)
    finally:
        for p in (client, server):
            p.kill()
            p.wait()


def test_the_python_api_example_in_the_docs_runs_as_written(monkeypatch, capsys):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    doc = (root / "docs" / "MODELING.md").read_text()
    code = re.search(r"### Python API\n\n```python\n(.*?)```", doc, re.S).group(1)
    monkeypatch.chdir(root)
    exec(compile(code, "MODELING.md", "exec"), {})
    scores = eval(capsys.readouterr().out.strip(), {"np": np})  # the dict the example prints
    assert set(scores) >= {"precision", "recall", "f1", "skeleton_f1", "shd"}


def test_a_network_of_another_format_version_says_so(recording, tmp_path):
    from pathlib import Path

    import modeler

    shipped = Path(modeler.__file__).parent / "data" / "default_network.npz"
    with np.load(shipped, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["format_version"] = np.array(999)
    np.savez(tmp_path / "future.npz", **arrays)
    r = invoke("infer", recording / "activity.csv", "--model", tmp_path / "future.npz", "--out", tmp_path / "m.json")
    assert r.exit_code != 0 and "model format 999, this masa reads" in r.output
