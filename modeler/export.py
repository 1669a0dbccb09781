"""Reading and writing dependency models: node-link JSON, GraphML, DOT.

The JSON form is networkx node-link data (``{"directed": true, "nodes": [{"id": ...}],
"edges": [{"source": A, "target": B, "confidence": p, ...}]}``) because every graph
tool and language can read it and networkx round-trips it exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
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


#: What XML 1.0 cannot hold at all, not even as a character reference (&#1; is not
#: well-formed either): C0 controls other than tab, newline and carriage return, and the
#: non-characters U+FFFE, U+FFFF.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def check_writable(names: Iterable, fmt: str) -> None:
    """Refuse, naming it, an object name the format cannot hold: GraphML cannot hold a
    control character, and a file no XML reader parses is worse than no file.  Called
    before the work by ``masa infer``, and by :func:`write` for every caller."""
    if fmt != "graphml":
        return
    for name in names:
        bad = NOT_XML.search(str(name))
        if bad:
            raise ValueError(f"{str(name)!r} holds the character U+{ord(bad.group()):04X}, which GraphML "
                             "(XML 1.0) cannot hold: write JSON or DOT instead")


def dot_string(value) -> str:
    """``value`` as a quoted DOT string: ``\\`` and ``"`` escaped, or a name ending in a
    backslash would escape its closing quote (names like "DynamoDB_AWS::DynamoDB" read as
    node:port in DOT unless quoted)."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write(g: nx.DiGraph, path: str | Path, fmt: str | None = None) -> str:
    """Write ``g`` to ``path``; returns the format used."""
    fmt = format_for(path, fmt)
    check_writable([*g, *g.graph.values()], fmt)
    path = Path(path)
    if fmt == "json":
        path.write_text(json.dumps(to_json(g), indent=1) + "\n")
    elif fmt == "graphml":
        nx.write_graphml(g, path)
    else:
        from networkx.drawing.nx_pydot import to_pydot  # pydot is only needed here

        dot = to_pydot(nx.relabel_nodes(g, {v: dot_string(v) for v in g}))
        for key, value in g.graph.items():  # how the model was decided, as in the other formats
            dot.set(key, dot_string(value))
        for edge in dot.get_edges():
            conf = edge.get("confidence")
            if conf is not None:
                edge.set("label", conf)
        path.write_text(dot.to_string())
    return fmt


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object whose keys are all different: with a key twice, json keeps the last
    silently (a topology's second ``"web"`` would drop the first one's ``calls``)."""
    out: dict = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def read_json(path: str | Path, error: type[ValueError] = ValueError):
    """A JSON file the researchers' interface reads (model, truth, topology), with one kind
    of message for every way it can be unreadable; a byte-order mark is accepted, a key
    twice in one object is not."""
    path = Path(path)
    try:
        with utf8_errors(path, error):
            return json.loads(path.read_text(encoding="utf-8-sig"), object_pairs_hook=_unique_keys)
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    except _DuplicateKey as exc:
        raise error(f"{path}: the key {exc.args[0]!r} appears twice in one object; "
                    "only the last would count") from None


def read_model(path: str | Path) -> nx.DiGraph:
    """Read a node-link JSON model, with a clear message for anything else."""
    path = Path(path)
    data = read_json(path, ModelFormatError)
    if not isinstance(data, dict) or "nodes" not in data or not isinstance(data.get("edges", data.get("links")), list):
        raise ModelFormatError(f"{path}: expected node-link JSON with 'nodes' and 'edges'")
    # else networkx fails in its internals ("'str' object has no attribute 'get'"), or
    # takes a node without an id as the node None
    nodes = data["nodes"]
    bad = [n for n in nodes if not (isinstance(n, dict) and "id" in n)] if isinstance(nodes, list) else [nodes]
    if bad:
        raise ModelFormatError(f"{path}: 'nodes' must be a list of objects with an \"id\", got {bad[0]!r}")
    try:
        key = "edges" if "edges" in data else "links"
        g = nx.node_link_graph(data, directed=True, multigraph=False, edges=key)
    except (KeyError, TypeError, nx.NetworkXError) as exc:
        raise ModelFormatError(f"{path}: malformed node-link data ({exc})") from None
    return nx.DiGraph(g)
