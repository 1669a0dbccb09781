"""The pair network: storage without pickle, calibration, the shipped default."""

import json
from pathlib import Path

import numpy as np
import pytest

from masa.activity import write_csv
from modeler.estimator import DependencyModeler, calibration_split, labels_for
from modeler.features import FEATURE_NAMES
from modeler.network import PairNetwork, fit_temperature
from modeler.simulator import random_scenario


def test_labels_encode_direction():
    y = labels_for(["a", "b", "c"], np.array([[0, 1], [1, 0], [0, 2]]), [("a", "b")])
    assert y.tolist() == [1, 2, 0]


def test_save_load_round_trip_is_exact_and_pickle_free(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = np.where(x[:, 0] > 0.5, 1, np.where(x[:, 1] > 0.5, 2, 0))
    net = PairNetwork.train(x[:400], y[:400], x[400:], y[400:], hidden=(8,), feature_names=("a", "b", "c", "d"))
    net.save(tmp_path / "n.npz", screen_threshold=0.1)
    back = PairNetwork.load(tmp_path / "n.npz")
    np.testing.assert_allclose(back.predict_proba(x), net.predict_proba(x))
    assert back.meta["screen_threshold"] == pytest.approx(0.1)
    with np.load(tmp_path / "n.npz", allow_pickle=False) as data:  # would raise on object arrays
        assert "w0" in data.files
    # it learned something: better than always predicting the majority class
    acc = (net.predict_proba(x[400:]).argmax(axis=1) == y[400:]).mean()
    assert acc > max(np.bincount(y[400:])) / 200 + 0.1


def test_shipped_network_loads_and_matches_the_features():
    model = DependencyModeler.default()
    assert model.network_.feature_names == FEATURE_NAMES
    assert 0.2 < model.network_.temperature < 5


def test_shipped_network_separates_dependencies_on_a_simulated_recording():
    """Held-out simulated app with partial calls and independent clients."""
    rng = np.random.default_rng(123)
    sc = random_scenario(rng, step=1.0, metric="cpu", n_services=6, shape="shared_db", bins=900)
    names, p = DependencyModeler.default().predict_proba(sc.series)
    idx = {n: k for k, n in enumerate(names)}
    true = {(idx[a], idx[b]) for a, b in sc.truth}
    adj = p + p.T
    pos = [adj[i, j] for i, j in true]
    neg = [adj[i, j] for i in range(len(names)) for j in range(i + 1, len(names))
           if (i, j) not in true and (j, i) not in true]
    # most true pairs rank above most unrelated ones
    assert np.mean([a > b for a in pos for b in neg]) > 0.8


def test_unfitted_modeler_says_so():
    with pytest.raises(RuntimeError, match="not fitted"):
        DependencyModeler().predict({})


def test_training_cache_gives_the_same_blocks_without_simulating(tmp_path, monkeypatch):
    from modeler import training

    first = training.simulated_blocks(3, seed=5, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_simulation(*args, **kwargs):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(training, "random_scenario", no_simulation)
    again = training.simulated_blocks(3, seed=5, cache=tmp_path)
    assert len(again) == 3
    for a, b in zip(first, again, strict=True):
        for u, v in zip(a, b, strict=True):
            np.testing.assert_array_equal(u, v)


def test_a_changed_simulator_never_reads_stale_cached_blocks(tmp_path, monkeypatch):
    """Blocks are named by the code that made them: after an edit of the simulator (the
    feature names unchanged) the cache misses and simulates again."""
    from modeler import simulator, training

    training.simulated_blocks(1, seed=5, cache=tmp_path)
    edited = tmp_path / "simulator.py"
    edited.write_text(Path(simulator.__file__).read_text() + "\n# an edit\n")
    monkeypatch.setattr(simulator, "__file__", str(edited))
    training.simulated_blocks(1, seed=5, cache=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_an_ensemble_averages_its_members_and_survives_save_and_load(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 4))
    y = np.where(x[:, 0] > 0.5, 1, np.where(x[:, 1] > 0.5, 2, 0))
    nets = [PairNetwork.train(x[:400], y[:400], x[400:], y[400:], hidden=(8,), random_state=s,
                              feature_names=("a", "b", "c", "d")) for s in (0, 1, 2)]
    ens = PairNetwork.ensemble(nets)
    mean = sum(n.predict_proba(x) for n in nets) / 3
    np.testing.assert_allclose(ens.predict_proba(x), mean)
    ens.save(tmp_path / "e.npz")
    back = PairNetwork.load(tmp_path / "e.npz")
    assert len(back.members) == 2
    np.testing.assert_allclose(back.predict_proba(x), mean)
    assert back.ident == ens.ident != nets[0].ident
    with pytest.raises(ValueError):
        PairNetwork.ensemble([nets[0], PairNetwork(nets[1].mean, nets[1].scale, nets[1].weights,
                                                   nets[1].biases, feature_names=("z", "b", "c", "d"))])


def test_temperature_recovers_a_known_overconfidence():
    """Labels drawn from softmax(z), scored with logits 3z: the fitted temperature undoes the 3."""
    rng = np.random.default_rng(2)
    z = rng.normal(size=(20_000, 3)) * 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    y = (rng.random((len(p), 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    assert fit_temperature(3 * z, y) == pytest.approx(3.0, rel=0.1)
    assert fit_temperature(z, y) == pytest.approx(1.0, rel=0.1)


def test_calibration_takes_whole_recordings_never_all_of_them():
    for seed in range(40):
        for n in (2, 3, 10):
            xs = [np.full((k + 1, 2), k, float) for k in range(n)]  # block k: k + 1 rows of value k
            ys = [np.full(k + 1, k) for k in range(n)]
            x_tr, y_tr, x_cal, y_cal = calibration_split(xs, ys, seed)
            assert len(x_cal) and len(x_tr)
            train, cal = set(y_tr.tolist()), set(y_cal.tolist())
            assert not train & cal and train | cal == set(range(n))
            assert all(np.sum(y_cal == k) == k + 1 for k in cal)  # whole blocks
            np.testing.assert_array_equal(x_cal[:, 0], y_cal)
    xs = [np.zeros((1, 1))] * 2000
    ys = [np.arange(1) + k for k in range(2000)]
    first, again = calibration_split(xs, ys, 7)[3], calibration_split(xs, ys, 7)[3]
    np.testing.assert_array_equal(first, again)
    assert 0.15 < len(first) / 2000 < 0.25
    with pytest.raises(ValueError, match="at least two"):
        calibration_split(xs[:1], ys[:1], 0)


def test_training_blocks_count_each_recording_real_weight_times(tmp_path):
    from modeler import training

    sc = random_scenario(np.random.default_rng(4), step=0.5, n_services=5, bins=600)
    d = tmp_path / "rec"
    d.mkdir()
    write_csv(d / "activity.csv", sc.series.values())
    (d / "truth.json").write_text(json.dumps({"edges": [list(e) for e in sc.truth]}))
    blocks = training.training_blocks(2, 5, [d], real_weight=2)
    per_recording = 1 + 8  # the whole recording and its windows
    assert len(blocks) == 2 + 2 * per_recording
    np.testing.assert_array_equal(blocks[2][1], blocks[2 + per_recording][1])
    assert {int(v) for b in blocks[2:] for v in b[1]} == {0, 1, 2}
    with pytest.raises(ValueError):
        training.training_blocks(2, 5, [tmp_path / "missing"])
