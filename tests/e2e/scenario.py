"""Activity with a known call graph, served by real recorder agents.

A recorder serves whatever its activity store holds through the collection query
interface; filling that store with a simulated recording (shifted to end just now) gives
the modeler real sources on real processes whose truth we know, without waiting minutes
for live services to produce enough activity."""

from __future__ import annotations

import time
from pathlib import Path

import networkx as nx
import numpy as np

from masa.activity import Series
from masa.store import Store
from modeler.simulator import Scenario, simulate


def recording(n_services: int = 6, seconds: float = 400.0, seed: int = 3, prefix: str = "") -> Scenario:
    """A tree of services, metered once a second, ending now."""
    rng = np.random.default_rng(seed)
    topo = nx.DiGraph()
    for k in range(1, n_services):
        topo.add_edge(int(rng.integers(0, k)), k)
    for v in topo:
        topo.nodes[v]["work"] = float(rng.uniform(0.002, 0.02))
    for a, b in topo.edges:
        topo.edges[a, b].update(p=float(rng.uniform(0.6, 1.0)), calls=1)
    topo = nx.relabel_nodes(topo, {v: f"{prefix}svc{v}" for v in topo})
    sc = simulate(topo, seconds, 1.0, rng=rng, background=1, clock_skew=0.0)
    sc.series = {f"{prefix}{k}" if not k.startswith(prefix) else k: v for k, v in sc.series.items()}
    end = max(float(s.end[-1]) for s in sc.series.values())
    shift = time.time() - 2.0 - end
    sc.series = {k: Series(k, s.unit, s.start + shift, s.end + shift, s.value) for k, s in sc.series.items()}
    return sc


def fill(path: Path, series: dict[str, Series]) -> str:
    """Write ``series`` into a new activity store; returns its URL for a recorder's ``store``."""
    url = f"sqlite:///{path}"
    with Store(url) as store:
        store.add_samples((s.object, s.unit, a, b, v) for s in series.values()
                          for a, b, v in zip(s.start.tolist(), s.end.tolist(), s.value.tolist(), strict=True))
    return url


def total(series: list[Series], name: str) -> Series:
    """The collective activity of a domain: what its domain agent serves as one object.
    (Same grid for all members here, so the exact interval join is a plain sum.)"""
    first = series[0]
    return Series(name, first.unit, first.start, first.end, np.sum([s.value for s in series], axis=0))


def two_domains(n_a: int = 5, n_b: int = 4, seconds: float = 400.0, seed: int = 7) -> Scenario:
    """Domain A's services call domain B's front service: one simulation, so the
    inter-domain dependency is real; objects named ``a/...`` and ``b/...``."""
    rng = np.random.default_rng(seed)
    topo = nx.DiGraph()
    for k in range(1, n_a):
        topo.add_edge(f"a/svc{int(rng.integers(0, k))}", f"a/svc{k}")
    for k in range(1, n_b):
        topo.add_edge(f"b/svc{int(rng.integers(0, k))}", f"b/svc{k}")
    topo.add_edge(f"a/svc{n_a - 1}", "b/svc0")
    for v in topo:
        topo.nodes[v]["work"] = float(rng.uniform(0.002, 0.02))
    for a, b in topo.edges:
        topo.edges[a, b].update(p=float(rng.uniform(0.6, 1.0)), calls=1)
    sc = simulate(topo, seconds, 1.0, rng=rng, background=0, clock_skew=0.0)
    end = max(float(s.end[-1]) for s in sc.series.values())
    shift = time.time() - 2.0 - end
    sc.series = {k: Series(k, s.unit, s.start + shift, s.end + shift, s.value) for k, s in sc.series.items()}
    return sc


def finished(mod, job: int) -> dict | None:
    """The modeler's status once run ``job`` is over (failing the test if it failed)."""
    st = mod.query("status")
    j = st["job"]
    if j.get("job") == job and j["state"] in ("done", "failed"):
        assert j["state"] == "done", j.get("error")
        return st
    return None


def mid_run(mod, job: int) -> bool:
    """Job ``job`` is scoring and has batches left (at least one is done)."""
    j = mod.query("status")["job"]
    pool = j.get("pool") or {}
    return j.get("job") == job and sum(pool.get("by_agent", {}).values()) >= 1 and \
        sum(pool["by_agent"].values()) < pool.get("batches", 0)
