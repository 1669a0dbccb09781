"""Reading and writing dependency models: node-link JSON, GraphML, DOT.

The JSON form is networkx node-link data (``{"directed": true, "nodes": [{"id": ...}],
"edges": [{"source": A, "target": B, "confidence": p, ...}]}``) because every graph
tool and language can read it and networkx round-trips it exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from masa.activity import utf8_errors

FORMATS = ("json", "graphml", "dot")


class ModelFormatError(ValueError):
    """A model file that is not node-link JSON of a directed graph."""


def format_for(path: str | Path, fmt: str | None = None) -> str:
    """The output format: given explicitly, or from the file suffix (default JSON)."""
    if fmt:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    suffix = Path(path).suffix.lower().lstrip(".")
    return {"graphml": "graphml", "dot": "dot", "gv": "dot"}.get(suffix, "json")


def to_json(g: nx.DiGraph) -> dict:
    return nx.node_link_data(g, edges="edges")


def write(g: nx.DiGraph, path: str | Path, fmt: str | None = None) -> str:
    """Write ``g`` to ``path``; returns the format used."""
    fmt = format_for(path, fmt)
    path = Path(path)
    if fmt == "json":
        path.write_text(json.dumps(to_json(g), indent=1) + "\n")
    elif fmt == "graphml":
        nx.write_graphml(g, path)
    else:
        from networkx.drawing.nx_pydot import to_pydot  # pydot is only needed here

        # names like "DynamoDB_AWS::DynamoDB" read as node:port in DOT unless quoted
        quoted = nx.relabel_nodes(g, {v: '"' + str(v).replace('"', '\\"') + '"' for v in g})
        dot = to_pydot(quoted)
        for key, value in g.graph.items():  # how the model was decided, as in the other formats
            dot.set(key, '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"')
        for edge in dot.get_edges():
            conf = edge.get("confidence")
            if conf is not None:
                edge.set("label", conf)
        path.write_text(dot.to_string())
    return fmt


def read_json(path: str | Path, error: type[ValueError] = ValueError):
    """A JSON file the researchers' interface reads (model, truth, topology), with one kind
    of message for every way it can be unreadable; a byte-order mark is accepted."""
    path = Path(path)
    try:
        with utf8_errors(path, error):
            return json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None


def read_model(path: str | Path) -> nx.DiGraph:
    """Read a node-link JSON model, with a clear message for anything else."""
    path = Path(path)
    data = read_json(path, ModelFormatError)
    if not isinstance(data, dict) or "nodes" not in data or not isinstance(data.get("edges", data.get("links")), list):
        raise ModelFormatError(f"{path}: expected node-link JSON with 'nodes' and 'edges'")
    try:
        key = "edges" if "edges" in data else "links"
        g = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise ModelFormatError(f"{path}: malformed node-link data ({exc})") from None
    return nx.DiGraph(g)
