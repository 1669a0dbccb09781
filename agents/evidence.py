"""Connection evidence in the collection layer: sampled, kept, answered, merged.

Activity says how much two objects move together; which process holds a TCP connection
to which endpoint says who calls whom.  A procfs collector samples the latter every few
intervals (:class:`ConnectionSampler`), maps sockets to the *objects* it reports
activity for, and keeps what it saw in its store's ``observations`` table with counts
and first/last-seen times.  Every agent of the collection layer answers the
``connections`` query (docs/ARCHITECTURE.md) in one wire form::

    {"edges": [[object, endpoint, count], ...],   # object opened connections to endpoint
     "listening": [[endpoint, object], ...],      # object accepts connections there
     "watched": [object, ...],                    # objects whose every socket was seen
     "until": t or None}                          # newest sample behind the answer

so mediators can merge their sources' answers and the modeler can turn endpoints back
into objects across all of them.  An object that is *watched* but has no edge to another
watched object is evidence against a dependency between them; an object nobody watched
(SNMP, a remote probe, another user's process) says nothing either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from agents.standing import matches
from masa import checks
from masa.store import Store
from probes import procread
from probes.connections import (
    ConnectionProbe,
    attributable,
    attribute,
    local_addresses,
    namespace_scope,
)

CONNECTION, LISTENING, WATCHED = "connection", "listening", "watched"
KINDS = (CONNECTION, LISTENING, WATCHED)
#: seconds between re-reads of the interface addresses (wildcard listeners answer there)
ADDRESSES_EVERY = 60.0


class ConnectionSampler:
    """Samples TCP connections and names them by the objects of a procfs probe.

    ``probe`` is the collector's :class:`probes.procfs.ProcfsProbe`: its own grouping of
    processes into per-process and application objects decides the names, so evidence
    and activity can never disagree on what a process is called."""

    def __init__(self, probe: Any, proc: str = procread.PROC) -> None:
        self.probe = probe
        self.proc = proc
        self.connections = ConnectionProbe(proc, listening=True)
        self.scope = namespace_scope(proc)
        self._addresses: list[str] = []
        self._addresses_at = -ADDRESSES_EVERY

    def _objects(self, st: procread.ProcStat) -> list[str]:
        app, obj = self.probe.label(st)  # the probe's own naming, cached per process
        out = [obj] if obj else []
        if app:
            out.append(f"{self.probe.host}/app/{app}")
        return out

    def sample(self) -> list[tuple[str, str, str, float, float]]:
        """``(kind, subject, target, count, seen)`` observations of this moment."""
        now = time.monotonic()
        if now - self._addresses_at > ADDRESSES_EVERY:
            self._addresses, self._addresses_at = local_addresses(), now
        conns = self.connections.sample()
        seen = time.time()
        stats = {st.pid: st for st in procread.read_all_stats(self.proc)}
        labels: dict[int, list[str]] = {}

        def objects_of(pid: int) -> list[str]:
            if pid not in labels:
                st = stats.get(pid) or procread.read_stat(pid, self.proc)
                labels[pid] = self._objects(st) if st is not None else []
            return labels[pid]

        edges, listening = attribute(conns, objects_of, self.scope, self._addresses)
        watched: dict[str, bool] = {}
        for pid in stats:
            ok = attributable(pid, self.proc)
            for obj in objects_of(pid):
                watched[obj] = watched.get(obj, True) and ok
        rows = [(CONNECTION, o, ep, float(n), seen) for (o, ep), n in edges.items()]
        rows += [(LISTENING, ep, o, 1.0, seen) for ep, o in listening]
        rows += [(WATCHED, o, "", 1.0, seen) for o, ok in watched.items() if ok]
        return rows


# -- keeping and answering ---------------------------------------------------------------------


def keep(store: Store, rows: Iterable[tuple[str, str, str, float, float]], replace: bool = False) -> None:
    """Observations into the store, one transaction per kind."""
    by_kind: dict[str, list[tuple[str, str, float, float]]] = {}
    for kind, subject, target, count, seen in rows:
        by_kind.setdefault(kind, []).append((subject, target, count, seen))
    for kind, batch in by_kind.items():
        store.observe(kind, batch, replace=replace)


def held(store: Store, since: float = float("-inf")) -> list[tuple[str, str, str, float, float]]:
    """Everything held, as rows :func:`keep` takes back (``first`` and ``last`` both kept)."""
    out = []
    for kind in KINDS:
        for subject, target, count, first, last in store.observations(kind, since):
            out += [(kind, subject, target, count, first), (kind, subject, target, count, last)]
    return out


def check(since: Any, objects: Any) -> None:
    """The arguments of ``connections``, as ``report``'s are checked."""
    checks.timestamp(since, "since")
    checks.names(objects)


def answer(store: Store, since: float, until: float | None, objects: list[str] | None) -> dict:
    """The ``connections`` answer from a store: what was last seen after ``since``.

    ``count`` is every socket sighting held (within retention), not only those after
    ``since``: the evidence of a long-lived connection does not shrink with the window."""
    out = {"edges": [[s, t, c] for s, t, c, _a, _b in store.observations(CONNECTION, since)],
           "listening": [[s, t] for s, t, _c, _a, _b in store.observations(LISTENING, since)],
           "watched": [s for s, _t, _c, _a, _b in store.observations(WATCHED, since)],
           "until": until}
    return select(out, objects)


def select(answer: dict, objects: list[str] | None) -> dict:
    """Only the entries of ``objects`` (names or globs; None: all)."""
    if objects is None:
        return answer
    return {"edges": [e for e in answer["edges"] if matches(objects, e[0])],
            "listening": [e for e in answer["listening"] if matches(objects, e[1])],
            "watched": [o for o in answer["watched"] if matches(objects, o)],
            "until": answer.get("until")}


def merge(answers: Iterable[dict]) -> dict:
    """Several sources' answers as one.  An edge two sources report (a mediator and the
    collector behind it, both asked) is one observation seen twice: the larger count."""
    edges: dict[tuple[str, str], float] = {}
    listening: set[tuple[str, str]] = set()
    watched: set[str] = set()
    untils = []
    for a in answers:
        for obj, ep, n in a.get("edges", []):
            edges[(obj, ep)] = max(edges.get((obj, ep), 0.0), float(n))
        listening.update((ep, obj) for ep, obj in a.get("listening", []))
        watched.update(a.get("watched", []))
        if a.get("until") is not None:
            untils.append(float(a["until"]))
    return {"edges": [[o, ep, n] for (o, ep), n in sorted(edges.items())],
            "listening": [list(e) for e in sorted(listening)],
            "watched": sorted(watched), "until": min(untils) if untils else None}


def empty() -> dict:
    return {"edges": [], "listening": [], "watched": [], "until": None}
