"""Training corpora and the recipe behind the shipped default network (``masa train``).

Simulated scenarios give volume and variety (shapes, loads, steps, metrics); recorded
testbed directories (``activity.csv`` + ``truth.json``) can be added so that what the
simulator teaches is anchored on real processes.
"""

from __future__ import annotations

import datetime
import hashlib
import platform
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import scipy
import sklearn

from masa import __version__
from masa.activity import read_csv, span
from masa.progress import Progress
from modeler import estimator, features, grid, simulator
from modeler.estimator import DependencyModeler, Recording, check_truth, recording_features
from modeler.export import read_json
from modeler.network import PairNetwork
from modeler.simulator import random_scenario

Block = tuple[np.ndarray, np.ndarray, np.ndarray]

#: How many times the windows of a real recording are counted next to the simulated ones.
REAL_WEIGHT = 3


def read_recording(directory: str | Path) -> tuple[dict, list[tuple[str, str]]]:
    """A recorded directory: ``activity.csv`` and ``truth.json`` (``{"edges": [...]}``)."""
    directory = Path(directory)
    series = read_csv(directory / "activity.csv")
    truth = read_truth(directory / "truth.json")
    return series, check_truth(truth, series)


def read_truth(path: str | Path) -> list[list[str]]:
    data = read_json(path)
    edges = data.get("edges") if isinstance(data, dict) else None
    if not isinstance(edges, list):
        raise ValueError(f"{path}: expected a JSON object with an 'edges' list")
    return edges


def _blocks_tag() -> str:
    digest = hashlib.sha256()
    for module in (simulator, grid, features, estimator):  # estimator: recording_features, labels
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:10]


def simulated_blocks(n: int, seed: int = 0, tick: Callable[[], None] | None = None,
                     cache: str | Path | None = None) -> list[Block]:
    """Feature blocks of ``n`` random simulated scenarios.

    With ``cache`` (a directory) the blocks are kept in a plain ``.npz`` named by seed,
    count and a hash of the code that makes them (simulator, grid, features, labels), so a
    retraining with other network settings does not simulate again, and a change of the
    simulator or the features never reads stale blocks."""
    path = None
    if cache is not None:
        tag = _blocks_tag()
        path = Path(cache) / f"sim-seed{seed}-n{n}-{tag}.npz"
        if path.exists():
            return load_blocks(path)
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        sc = random_scenario(rng)
        out.append(recording_features(sc.series, sc.truth))
        if tick:
            tick()
    if path is not None:
        save_blocks(path, out)
    return out


def save_blocks(path: str | Path, blocks: list[Block]) -> None:
    """Feature blocks as one plain ``.npz`` (no pickle): the rows of all blocks and each
    block's length, so they are read back as the same blocks."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=np.concatenate([b[0] for b in blocks]), y=np.concatenate([b[1] for b in blocks]),
             s=np.concatenate([b[2] for b in blocks]), lengths=np.array([len(b[1]) for b in blocks]))


def load_blocks(path: str | Path) -> list[Block]:
    with np.load(path, allow_pickle=False) as data:
        cuts = np.cumsum(data["lengths"])[:-1]
        return list(zip(np.split(data["x"], cuts), np.split(data["y"], cuts),
                        np.split(data["s"], cuts), strict=True))


def recorded_blocks(recordings: Iterable[Recording], windows: int = 8, seed: int = 0,
                    tick: Callable[[], None] | None = None) -> list[Block]:
    """Feature blocks of real recordings (:func:`read_recording`): the whole recording plus
    random windows of it at 1 s and 2 s steps, so a few minutes of real processes weigh
    enough next to the simulated volume."""
    rng = np.random.default_rng(seed)
    out = []
    for series, truth in recordings:
        out.append(recording_features(series, truth))
        t0, t1 = span(series.values())
        for _ in range(windows):
            step = float(rng.choice([1.0, 2.0]))
            length = rng.uniform(min(150 * step, t1 - t0) * 0.9, t1 - t0)
            a = rng.uniform(t0, t1 - length)
            part = {k: s.window(a, a + length) for k, s in series.items()}
            out.append(recording_features(part, truth, step))
        if tick:
            tick()
    return out


def fingerprint(directory: str | Path) -> str:
    """Short hash of a recording's activity and truth: two recordings of one topology
    (a re-recording, another load) are told apart in a network's provenance."""
    digest = hashlib.sha256()
    for name in ("activity.csv", "truth.json"):
        digest.update((Path(directory) / name).read_bytes())
    return digest.hexdigest()[:12]


def provenance(n_simulated: int, seed: int, members: int, recordings: Iterable[str | Path],
               **settings: object) -> str:
    """What a network was trained on, as the command that retrains it (plus each
    recording's fingerprint, and any settings only the Python API has), so a shipped or
    shared network says where it came from."""
    recs = "".join(f" --recording {Path(d).name}#{fingerprint(d)}" for d in recordings)
    api = ", ".join(f"{k}={v!r}" for k, v in sorted(settings.items()))
    return (f"masa {__version__} train --scenarios {n_simulated} --seed {seed} --members {members}"
            + recs + (f" [train({api})]" if api else ""))


def libraries() -> str:
    """The numeric libraries a network was fitted with.  Training is deterministic for
    one set of them, but not across versions: features that differ in the 7th digit send
    the optimiser elsewhere (on validation one retrain moved skeleton F1 by 0.01 and
    directed F1 by 0.04), so reproducing a network means these versions too."""
    return (f"python {platform.python_version()}, numpy {np.__version__}, "
            f"scipy {scipy.__version__}, scikit-learn {sklearn.__version__}")


def _stage(progress: Progress | None, description: str, total: int) -> Callable[[], None] | None:
    if progress is None:
        return None
    progress.stage(description, total)
    return progress.advance


def training_blocks(n_simulated: int, seed: int, recordings: Iterable[str | Path] = (),
                    progress: Progress | None = None, real_weight: int = REAL_WEIGHT,
                    cache: str | Path | None = None) -> list[Block]:
    """The feature blocks :func:`train` fits on: simulated scenarios, then every recorded
    directory's windows ``real_weight`` times (benchmarks that compare classifiers fit
    them on exactly these)."""
    real = [read_recording(d) for d in recordings]  # a bad directory fails now, not after the simulation
    blocks = simulated_blocks(n_simulated, seed, _stage(progress, "simulating scenarios", n_simulated), cache)
    if real:
        blocks += real_weight * recorded_blocks(real, tick=_stage(progress, "recordings", len(real)))
    return blocks


def train(n_simulated: int = 1600, seed: int = 0, recordings: Iterable[str | Path] = (),
          progress: Progress | None = None, real_weight: int = REAL_WEIGHT,
          cache: str | Path | None = None, members: int = 1, **params) -> DependencyModeler:
    """Train a modeler on simulated scenarios plus recorded testbed directories.

    Real recordings are cut into windows and counted ``real_weight`` times: on held-out
    validation recordings this is what fixed the direction of chains that simulated data
    alone got backwards.  ``members`` > 1 trains an ensemble on the same data (seeds
    ``seed``, ``seed + 1``, ...) whose probabilities are averaged.  The network's
    ``meta`` records ``trained_on`` (:func:`provenance`), ``trained_with``
    (:func:`libraries`) and ``trained_at``."""
    recordings = [Path(d) for d in recordings]
    members = max(1, members)
    blocks = training_blocks(n_simulated, seed, recordings, progress, real_weight, cache)
    xs, ys, ss = (list(t) for t in zip(*blocks, strict=True))
    tick = _stage(progress, "fitting networks", members)
    models = []
    for k in range(members):  # an ensemble: the same data, other initialisations and calibration splits
        models.append(DependencyModeler(random_state=seed + k, **params).fit_features(xs, ys, ss))
        if tick:
            tick()
    model = models[0]
    model.network_ = PairNetwork.ensemble([m.network_ for m in models])
    settings = dict(params)  # what the command line cannot set
    if real_weight != REAL_WEIGHT:
        settings["real_weight"] = real_weight
    model.network_.meta.update(
        trained_on=provenance(n_simulated, seed, members, recordings, **settings),
        trained_with=libraries(),
        trained_at=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return model
