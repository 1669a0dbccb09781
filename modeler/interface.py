"""The dependency-model interface as plain functions over a ``networkx.DiGraph``.

An edge ``A -> B`` means *A depends on B* and carries a ``confidence`` (see
:mod:`modeler.estimator`).  Management tools ask the same handful of questions whatever
transport they use (Pyro5 through the modeler agent, HTTP/JSON through its web app, the
CLI on a model file), so the answers are computed here once, as plain msgpack/JSON-safe
values, and the transports only carry them.

Confidence along a path is the product of the edge confidences: the chance that every
link of the chain is real, if the edges are independent.  "Most confident path" is then
a shortest path on ``-log(confidence)``.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import networkx as nx

from masa.errors import BadRequest
from modeler import export

#: Confidence below which two versions of an edge count as "changed" in a diff.
DIFF_TOLERANCE = 0.05


def _check(g: nx.DiGraph, obj: str) -> None:
    if obj not in g:
        raise BadRequest(f"unknown object {obj!r} (the model has {g.number_of_nodes()} objects)")


def check_confidence(value: Any, name: str = "min_confidence") -> float:
    """``value`` as a confidence bound: a number in [0, 1].  NaN or anything above 1 would
    silently keep no edge at all, so they are refused like a string or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise BadRequest(f"{name} must be a number between 0 and 1, not {value!r}")
    return float(value)


def _conf(data: dict) -> float:
    return float(data.get("confidence", 1.0))


def _kept(g: nx.DiGraph, min_confidence: float) -> nx.DiGraph:
    """A view without the edges below ``min_confidence``, so every query can be asked of
    the model a tool trusts, not only of everything the modeler kept."""
    min_confidence = check_confidence(min_confidence)
    if min_confidence <= 0:
        return g
    return nx.subgraph_view(g, filter_edge=lambda a, b: _conf(g.edges[a, b]) >= min_confidence)


def _edge(a: str, b: str, data: dict) -> dict[str, Any]:
    return {"source": a, "target": b, **{k: v for k, v in data.items()}}


def whole(g: nx.DiGraph) -> dict:
    """The model as node-link JSON, the form every graph tool reads."""
    return export.to_json(g)


def from_json(data: dict) -> nx.DiGraph:
    """Inverse of :func:`whole` (node-link JSON, ``edges`` or ``links`` key)."""
    key = "edges" if "edges" in data else "links"
    return nx.DiGraph(nx.node_link_graph(data, directed=True, multigraph=False, edges=key))


def dependencies(g: nx.DiGraph, obj: str, min_confidence: float = 0.0) -> list[dict]:
    """What ``obj`` depends on directly, most confident first."""
    _check(g, obj)
    h = _kept(g, min_confidence)
    out = [_edge(obj, b, h.edges[obj, b]) for b in h.successors(obj)]
    return sorted(out, key=lambda e: (-_conf(e), e["target"]))


def dependants(g: nx.DiGraph, obj: str, min_confidence: float = 0.0) -> list[dict]:
    """What depends on ``obj`` directly, most confident first."""
    _check(g, obj)
    h = _kept(g, min_confidence)
    out = [_edge(a, obj, h.edges[a, obj]) for a in h.predecessors(obj)]
    return sorted(out, key=lambda e: (-_conf(e), e["source"]))


def _weight(a: str, b: str, data: dict) -> float:
    return -math.log(max(_conf(data), 1e-12))


def impact_set(g: nx.DiGraph, obj: str, min_confidence: float = 0.0) -> list[dict]:
    """Everything that transitively depends on ``obj``: what a failure of ``obj`` may hit.

    Each entry has ``distance`` (fewest hops) and ``confidence`` (of its most confident
    chain of dependencies down to ``obj``), so a tool can rank the blast radius."""
    _check(g, obj)
    rev = _kept(g, min_confidence).reverse(copy=False)
    hops = nx.single_source_shortest_path_length(rev, obj)
    cost = nx.single_source_dijkstra_path_length(rev, obj, weight=_weight)
    out = [{"object": v, "distance": int(d), "confidence": round(math.exp(-cost[v]), 4)}
           for v, d in hops.items() if v != obj]
    return sorted(out, key=lambda e: (e["distance"], -e["confidence"], e["object"]))


def path(g: nx.DiGraph, source: str, target: str, min_confidence: float = 0.0) -> dict | None:
    """The most confident chain of dependencies from ``source`` down to ``target``,
    or None when ``source`` does not (transitively) depend on ``target``."""
    _check(g, source)
    _check(g, target)
    h = _kept(g, min_confidence)
    try:
        cost, nodes = nx.single_source_dijkstra(h, source, target, weight=_weight)
    except nx.NetworkXNoPath:
        return None
    return {"path": list(nodes), "confidence": round(math.exp(-cost), 4),
            "edges": [_edge(a, b, h.edges[a, b]) for a, b in zip(nodes, nodes[1:], strict=False)]}


def diff(old: nx.DiGraph, new: nx.DiGraph, tolerance: float = DIFF_TOLERANCE) -> dict:
    """What changed between two model versions: objects and edges that came and went,
    and edges whose confidence moved by more than ``tolerance`` (small moves are the
    noise of refitting on a slid window, not news)."""
    before, after = set(old.edges), set(new.edges)
    changed = []
    for a, b in sorted(before & after):
        c0, c1 = _conf(old.edges[a, b]), _conf(new.edges[a, b])
        if abs(c1 - c0) > tolerance:
            changed.append({"source": a, "target": b, "before": c0, "after": c1})
    return {
        "added_objects": sorted(set(new) - set(old)),
        "removed_objects": sorted(set(old) - set(new)),
        "added_edges": [_edge(a, b, new.edges[a, b]) for a, b in sorted(after - before)],
        "removed_edges": [_edge(a, b, old.edges[a, b]) for a, b in sorted(before - after)],
        "changed_edges": changed,
    }


def render(g: nx.DiGraph, fmt: str) -> str:
    """The model as text in ``fmt`` (json, graphml, dot), written by the same code as
    ``masa infer --out`` so a file and an answer over the wire never differ."""
    if fmt not in export.FORMATS:
        raise BadRequest(f"unknown format {fmt!r}; use one of {', '.join(export.FORMATS)}")
    if fmt == "json":
        return json.dumps(whole(g), indent=1) + "\n"
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / f"model.{fmt}"
        try:
            export.write(g, target, fmt)
        except ValueError as exc:  # a name the format cannot hold
            raise BadRequest(str(exc)) from None
        return target.read_text()


def summary(g: nx.DiGraph) -> dict:
    """Counts a supervision page or a CLI line shows at a glance."""
    confs = [_conf(d) for _, _, d in g.edges(data=True)]
    return {"objects": g.number_of_nodes(), "edges": g.number_of_edges(),
            "mean_confidence": round(sum(confs) / len(confs), 4) if confs else None}
