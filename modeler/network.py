"""The pair classifier: a small MLP with temperature-calibrated probabilities.

Trained with scikit-learn, stored as plain arrays in ``.npz`` (no pickle, so loading a
model file cannot run code) and evaluated with numpy.  Three classes per ordered pair
``(i, j)``: no dependency, ``i`` depends on ``j``, ``j`` depends on ``i``.

Calibration matters because the decision threshold is fixed at probability 0.5: the
method picks its own threshold and never looks at the truth of the data it models.
A single temperature fitted on held-out topologies (Guo et al. 2017) keeps the ranking
of the network and corrects its over-confidence.
"""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler

FORMAT_VERSION = 1


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The one temperature that makes ``softmax(logits / T)`` most likely on ``y``: it keeps
    the ranking of any classifier and corrects only its over- or under-confidence, so
    classifiers compared on the same calibration split are compared on equal terms."""
    logits = np.asarray(logits, float)
    y = np.asarray(y, int)

    def nll(log_t: float) -> float:
        logp = log_softmax(logits / np.exp(log_t), axis=1)
        return -float(logp[np.arange(len(y)), y].mean())

    res = minimize_scalar(nll, bounds=(-3, 3), method="bounded")
    return float(np.exp(res.x))


class FormatVersionError(ValueError):
    """A network written by another format version of `masa train`."""


class PairNetwork:
    """Feature standardisation + MLP weights + temperature, evaluated in numpy."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, weights: list[np.ndarray],
                 biases: list[np.ndarray], temperature: float = 1.0,
                 feature_names: tuple[str, ...] = (), meta: dict | None = None) -> None:
        self.mean = np.asarray(mean, float)
        self.scale = np.asarray(scale, float)
        self.weights = [np.asarray(w, float) for w in weights]
        self.biases = [np.asarray(b, float) for b in biases]
        self.temperature = float(temperature)
        self.feature_names = tuple(feature_names)
        self.meta = dict(meta or {})
        #: further networks of an ensemble (same features, other seeds): their calibrated
        #: probabilities are averaged with this one's, which steadies what one training
        #: run's random initialisation and calibration split would decide alone
        self.members: list[PairNetwork] = []

    @property
    def ident(self) -> str:
        """A content hash of the weights (not the meta): what a model names as its network,
        and what a pool checks so that one model is never scored by two different networks."""
        h = hashlib.sha256()
        for m in [self, *self.members]:
            for a in [m.mean, m.scale, *m.weights, *m.biases, np.array(m.temperature)]:
                h.update(np.ascontiguousarray(a, dtype="<f8").tobytes())
        return h.hexdigest()[:16]

    @classmethod
    def ensemble(cls, nets: list[PairNetwork]) -> PairNetwork:
        """One network whose probabilities are the average of ``nets``'."""
        if not nets or any(n.feature_names != nets[0].feature_names for n in nets):
            raise ValueError("an ensemble needs networks trained on the same features")
        head = cls(nets[0].mean, nets[0].scale, nets[0].weights, nets[0].biases, nets[0].temperature,
                   nets[0].feature_names, nets[0].meta)
        head.members = [m for n in nets[1:] for m in [n, *n.members]] + list(nets[0].members)
        return head

    # -- training -------------------------------------------------------------------

    @classmethod
    def train(cls, x: np.ndarray, y: np.ndarray, x_cal: np.ndarray, y_cal: np.ndarray, *,
              hidden: tuple[int, ...] = (64, 32), alpha: float = 1e-3, max_iter: int = 300,
              random_state: int = 0, feature_names: tuple[str, ...] = ()) -> PairNetwork:
        """Fit on ``(x, y)``; fit the temperature on ``(x_cal, y_cal)`` from other topologies."""
        scaler = StandardScaler().fit(x)
        mlp = MLPClassifier(hidden_layer_sizes=hidden, alpha=alpha, max_iter=max_iter,
                            early_stopping=True, n_iter_no_change=15, random_state=random_state)
        mlp.fit(scaler.transform(x), y)
        if list(mlp.classes_) != [0, 1, 2]:
            raise ValueError("training data must contain all three classes (none, forward, backward)")
        net = cls(scaler.mean_, scaler.scale_, mlp.coefs_, mlp.intercepts_,
                  feature_names=feature_names)
        net.temperature = fit_temperature(net.logits(x_cal), y_cal)
        return net

    # -- inference ------------------------------------------------------------------

    def logits(self, x: np.ndarray) -> np.ndarray:
        h = (np.asarray(x, float) - self.mean) / self.scale
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        return h @ self.weights[-1] + self.biases[-1]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of (none, forward, backward), one row per pair (the
        average over the members of an ensemble)."""
        if len(x) == 0:
            return np.zeros((0, 3))
        p = self._proba(x)
        for m in self.members:
            p = p + m._proba(x)
        return p / (1 + len(self.members))

    def _proba(self, x: np.ndarray) -> np.ndarray:
        return softmax(self.logits(x) / self.temperature, axis=1)

    # -- storage --------------------------------------------------------------------

    def save(self, path: str | Path, **extra: float) -> None:
        arrays = {
            "format_version": np.array(FORMAT_VERSION),
            "feature_names": np.array(self.feature_names, dtype=str),
            "n_members": np.array(1 + len(self.members)),
        }
        for m, net in enumerate([self, *self.members]):
            pre = "" if m == 0 else f"m{m}_"
            arrays.update({f"{pre}mean": net.mean, f"{pre}scale": net.scale,
                           f"{pre}temperature": np.array(net.temperature),
                           f"{pre}n_layers": np.array(len(net.weights))})
            for k, (w, b) in enumerate(zip(net.weights, net.biases, strict=True)):
                arrays[f"{pre}w{k}"], arrays[f"{pre}b{k}"] = w, b
        for key, value in {**self.meta, **extra}.items():
            arrays[f"meta_{key}"] = np.array(value)
        with Path(path).open("wb") as handle:
            np.savez_compressed(handle, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> PairNetwork:
        """Read a network file; anything else (a model JSON, an npz of other arrays, a
        pickle) is refused with one message, never loaded unsafely."""
        try:
            return cls._load(path)
        except OSError as exc:
            raise ValueError(f"cannot read network {path}: {exc.strerror or exc}") from None
        except FormatVersionError:
            raise
        except (ValueError, KeyError, zipfile.BadZipFile, EOFError):
            raise ValueError(f"{path}: not a network written by `masa train`") from None

    @classmethod
    def _load(cls, path: str | Path) -> PairNetwork:
        with np.load(Path(path), allow_pickle=False) as data:
            version = int(data["format_version"])
            if version != FORMAT_VERSION:
                raise FormatVersionError(f"{path}: model format {version}, this masa reads {FORMAT_VERSION}")
            meta = {k[5:]: data[k].item() for k in data.files if k.startswith("meta_")}
            names = tuple(str(s) for s in data["feature_names"])
            count = int(data["n_members"]) if "n_members" in data.files else 1
            nets = []
            for m in range(count):
                pre = "" if m == 0 else f"m{m}_"
                n = int(data[f"{pre}n_layers"])
                nets.append(cls(data[f"{pre}mean"], data[f"{pre}scale"], [data[f"{pre}w{k}"] for k in range(n)],
                                [data[f"{pre}b{k}"] for k in range(n)], float(data[f"{pre}temperature"]),
                                names, meta))
            head = nets[0]
            head.members = nets[1:]
            return head
