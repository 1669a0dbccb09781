"""Asking the modeler's sources for activity, through the collection query interface only.

Sources are collectors, mediators or domain agents (docs/ARCHITECTURE.md, "The
collection query interface"); the modeler knows them by name and never imports their
code, so any agent answering ``report`` will do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from masa.activity import Series
from masa.errors import BadRequest
from masa.ref import AgentRef

REPORT_TIMEOUT = 30.0


def parse_sources(raw: Any) -> list[dict[str, Any]]:
    """``["col-a", {"agent": "dom-b", "objects": ["B/*"]}]`` -> ``[{"agent", "objects"}]``."""
    if not isinstance(raw, list):
        raise BadRequest("sources must be a list of agent names or {agent, objects} dicts")
    out = []
    for item in raw:
        if isinstance(item, str) and item:
            out.append({"agent": item, "objects": None})
        elif isinstance(item, dict) and isinstance(item.get("agent"), str) and item["agent"]:
            objects = item.get("objects")
            if objects is not None and not (isinstance(objects, list) and all(isinstance(o, str) for o in objects)):
                raise BadRequest(f"objects of source {item['agent']!r} must be a list of names or globs")
            out.append({"agent": item["agent"], "objects": objects})
        else:
            raise BadRequest(f"bad source {item!r}: an agent name or {{agent, objects}}")
    return out


def collect(ref: Callable[[str], AgentRef], sources: list[dict[str, Any]], since: float,
            until: float | None = None, timeout: float = REPORT_TIMEOUT,
            ) -> tuple[dict[str, Series], dict[str, list[str]]]:
    """Every source's series since ``since``; returns ``(series by object, objects by source)``.

    An object offered by two sources (a mediator in front of a collector also asked
    directly) is taken once, from the source that delivered more of it."""
    series: dict[str, Series] = {}
    origin: dict[str, str] = {}
    for spec in sources:
        answer = ref(spec["agent"]).query("report", timeout=timeout, objects=spec["objects"],
                                          since=float(since), until=until)
        for wire in answer.get("series", []):
            s = Series.from_wire(wire)
            if not len(s):
                continue
            held = series.get(s.object)
            if held is None or len(s) > len(held):
                series[s.object], origin[s.object] = s, spec["agent"]
    by_source: dict[str, list[str]] = {}
    for obj, agent in sorted(origin.items()):
        by_source.setdefault(agent, []).append(obj)
    return series, by_source
