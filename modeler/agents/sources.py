"""Asking the modeler's sources for activity, through the collection query interface only.

Sources are collectors, mediators or domain agents (docs/ARCHITECTURE.md, "The
collection query interface"); the modeler knows them by name and never imports their
code, so any agent answering ``report`` will do.  Connection evidence (``connections``)
is asked for too, where a source offers it, and its endpoints are turned back into
objects across all sources (:func:`resolve`).

A mediator whose own sources below are dead answers with the live ones' data and names
the others under ``"missing"``; what is missing is handed back with the data, so a run
says in its provenance what it was made without instead of passing for complete.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from masa.activity import MAX_OBJECTS, Series
from masa.errors import BadRequest, MasaError, UnknownOperation
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
            if objects is not None and not (isinstance(objects, list) and all(isinstance(o, str) for o in objects)
                                            and len(objects) <= MAX_OBJECTS):
                raise BadRequest(f"objects of source {item['agent']!r} must be a list of at most "
                                 f"{MAX_OBJECTS} names or globs (a source takes no more in one request)")
            out.append({"agent": item["agent"], "objects": objects})
        else:
            raise BadRequest(f"bad source {item!r}: an agent name or {{agent, objects}}")
    return out


def _missing(agent: str, answer: dict, into: dict[str, str]) -> None:
    """What ``agent``'s answer says it lacks (agent below -> why), added to ``into`` with
    the source that said so."""
    for below, why in (answer.get("missing") or {}).items():
        into.setdefault(str(below), f"{agent}: {why}")


def collect(ref: Callable[[str], AgentRef], sources: list[dict[str, Any]], since: float,
            until: float | None = None, timeout: float = REPORT_TIMEOUT,
            ) -> tuple[dict[str, Series], dict[str, list[str]], dict[str, str]]:
    """Every source's series since ``since``; returns ``(series by object, objects by
    source, missing)``: ``missing`` names the agents below a source whose samples its
    answer lacks (agent -> "SOURCE: why").

    An object offered by two sources (a mediator in front of a collector also asked
    directly) is taken once, from the source that delivered more of it."""
    series: dict[str, Series] = {}
    origin: dict[str, str] = {}
    missing: dict[str, str] = {}
    for spec in sources:
        answer = ref(spec["agent"]).query("report", timeout=timeout, objects=spec["objects"],
                                          since=float(since), until=until)
        _missing(spec["agent"], answer, missing)
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
    return series, by_source, missing


def collect_connections(ref: Callable[[str], AgentRef], sources: list[dict[str, Any]], since: float,
                        timeout: float = REPORT_TIMEOUT) -> tuple[list[dict], dict[str, str], dict[str, str]]:
    """Every source's ``connections`` answer since ``since``, per source what came of
    asking: ``"ok"``, ``"unsupported"`` (no such operation: an agent that serves activity
    only) or the error, and the agents below whose evidence the answers lack (as
    :func:`collect`'s ``missing``).  Evidence is an addition to activity: a source that
    cannot give it leaves the model to activity for its objects, never fails the run."""
    answers, outcome, missing = [], {}, {}
    for spec in sources:
        agent = spec["agent"]
        try:
            answers.append(ref(agent).query("connections", timeout=timeout, since=float(since),
                                            objects=spec["objects"]))
            _missing(agent, answers[-1], missing)
            outcome[agent] = "ok"
        except UnknownOperation:
            outcome[agent] = "unsupported"
        except MasaError as exc:
            outcome[agent] = f"{type(exc).__name__}: {exc}"
    return answers, outcome, missing


def resolve(answers: list[dict], objects: set[str] | dict) -> tuple[dict[tuple[str, str], float], set[str], int]:
    """``(caller, callee) -> count`` among ``objects``, the objects watched, and how many
    endpoints stayed unresolved.

    An endpoint is resolved through every source's listening table: ``ip:port`` as the
    listener's collector wrote it.  Loopback endpoints carry the network namespace they
    belong to (``127.0.0.1:80@SCOPE``), so agent hosts sharing one machine's loopback
    (tests, the scenario) resolve each other's, and two machines never do.  An endpoint
    nobody listens on as far as the sources know (a database outside the model, a client's
    port) stays unresolved and is no evidence."""
    owners: dict[str, set[str]] = {}
    watched: set[str] = set()
    for a in answers:
        for ep, obj in a.get("listening", []):
            if obj in objects:
                owners.setdefault(ep, set()).add(obj)
        watched.update(o for o in a.get("watched", []) if o in objects)
    seen: dict[tuple[str, str], float] = {}
    for a in answers:  # one (object, endpoint) reported by two sources is one observation
        for obj, ep, n in a.get("edges", []):
            if obj in objects:
                seen[(obj, ep)] = max(seen.get((obj, ep), 0.0), float(n))
    out: dict[tuple[str, str], float] = {}
    unresolved = set()
    for (obj, ep), n in seen.items():
        targets = owners.get(ep)
        if not targets:
            unresolved.add(ep)
        for t in targets or ():
            if t != obj:
                out[(obj, t)] = out.get((obj, t), 0.0) + n
    return out, watched, len(unresolved)
