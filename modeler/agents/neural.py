"""The neural agent: holds a trained pair network and scores batches of pair features.

It is deliberately stateless between batches: a batch is ``(features, network id)`` in,
probabilities out, so any neural agent holding the same network can redo a batch whose
agent died, and an agent can move between two batches without losing anything.  The
network itself (a ~35 kB ``.npz``) lives in ``state`` when given explicitly, so it
travels with the agent; otherwise the network shipped with the package is used.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from masa import admin
from masa.agent import Agent, configure, query
from masa.errors import BadRequest
from modeler.agents.scoring import from_bytes, to_bytes
from modeler.estimator import DependencyModeler
from modeler.network import PairNetwork

#: largest batch accepted, in feature values (about 8 MiB of float64): under the wire limit
MAX_BATCH_VALUES = 1_000_000


def load_network(blob: bytes | None) -> PairNetwork:
    """The network from ``.npz`` bytes, or the package's default network."""
    if not blob:
        net = DependencyModeler.default().network_
        assert net is not None
        return net
    with tempfile.TemporaryDirectory() as tmp:  # the core loads from paths only
        path = Path(tmp) / "network.npz"
        path.write_bytes(blob)
        try:
            return PairNetwork.load(path)
        except (ValueError, KeyError, OSError) as exc:
            raise BadRequest(f"not a network from `masa train`: {exc}") from None


class NeuralAgent(Agent):
    """Settings: ``pace`` (minimum seconds per batch: caps the share of a host's CPU this
    agent takes when it shares the host with production work), ``follow`` (name of the
    modeler to stay next to; None = stay where placed)."""

    def setup(self, **settings: Any) -> None:
        blob = settings.pop("network", None)
        if blob is not None and not isinstance(blob, bytes):
            raise BadRequest("network must be the bytes of a .npz file from `masa train`")
        pace = settings.setdefault("pace", 0.0)
        if not isinstance(pace, (int, float)) or not 0 <= pace <= 60:
            raise BadRequest("pace must be between 0 and 60 seconds")
        settings.setdefault("follow", None)
        super().setup(**settings)
        if blob is not None:
            self.state["network"] = blob

    def on_start(self) -> None:
        self._net = load_network(self.state.get("network"))
        self._net_id = self._net.ident
        self.state.setdefault("batches", 0)
        self.state.setdefault("pairs", 0)
        self.every(2.0, self._follow, name="follow")

    # -- placement -------------------------------------------------------------------

    def _follow(self) -> None:
        """Move to the host of the modeler it serves, so features travel over loopback."""
        target = self.settings.get("follow")
        if not target:
            return
        settings = self.ref(self.name).settings
        where = admin.where(settings, target)
        if where and where != self.host.name:
            self.move_to(where)

    @configure
    def serve(self, modeler: str | None) -> dict:
        """Stay next to ``modeler`` (None: stay where it is)."""
        if modeler is not None and not isinstance(modeler, str):
            raise BadRequest("modeler must be an agent name or None")
        with self.lock:
            self.settings["follow"] = modeler
        return {"follow": modeler}

    @configure
    def load(self, network: bytes | None) -> str:
        """Replace the network (None: the shipped default); returns its id."""
        if network is not None and not isinstance(network, bytes):
            raise BadRequest("network must be the bytes of a .npz file")
        net = load_network(network)
        with self.lock:
            self.state["network"] = network
            self._net, self._net_id = net, net.ident
        return self._net_id

    # -- the work ----------------------------------------------------------------------

    @query
    def network(self) -> dict:
        return {"id": self._net_id, "features": list(self._net.feature_names)}

    @query
    def evaluate(self, features: bytes, cols: int, network: str) -> dict:
        """Probabilities (none, forward, backward) of each row of ``features``.

        ``network`` is the id the modeler expects: a mismatch is refused rather than
        answered with scores of another network."""
        if not isinstance(features, bytes) or not isinstance(cols, int):
            raise BadRequest("evaluate needs features as float64 bytes and cols as an int")
        if network != self._net_id:
            raise BadRequest(f"this agent holds network {self._net_id}, not {network}")
        if len(features) // 8 > MAX_BATCH_VALUES:
            raise BadRequest(f"batch larger than {MAX_BATCH_VALUES} values; split it")
        if cols != len(self._net.feature_names):
            raise BadRequest(f"network takes {len(self._net.feature_names)} features, got {cols}")
        started = time.perf_counter()
        try:
            x = from_bytes(features, cols)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        proba = self._net.predict_proba(x)
        spent = time.perf_counter() - started
        pace = float(self.settings.get("pace") or 0.0)
        if pace > spent:
            time.sleep(pace - spent)
        with self.lock:
            self.state["batches"] += 1
            self.state["pairs"] += len(x)
        return {"proba": to_bytes(proba), "host": self.host.name, "seconds": spent}

    @query
    def status(self) -> dict:
        return {"network": self._net_id, "host": self.host.name, "batches": self.state["batches"],
                "pairs": self.state["pairs"], "follow": self.settings.get("follow")}
