"""A report cache that knows which stretches of time it holds, per object.

Report requests overlap heavily: a modeler refreshes with ``since`` = the last
``until``, several consumers ask for the same recent window, a cascade above asks again
what a cascade below already answered.  The cache therefore remembers, per object, the
ranges of sample *end* times ``(a, b]`` for which it holds every sample the source had
(the report contract: samples with ``since < end <= until``), and a request is split
into what is held (served locally) and the missing ranges (fetched below, stored).

It holds raw samples as they came from below; whatever a mediator does to them is done
on the way out, so one cached stretch serves every pipeline and every request shape.
It is a cache, not state: it does not travel with a moving agent and refills on demand.

An answer from below that says part of it is missing (a mediator below with a dead
source: ``"missing"``) is passed on for the request it was fetched for, never held: were
its stretch taken as complete, the missing source's samples would never be asked for
again once it is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from agents.domain_join import merge
from masa.activity import Series

EPS = 1e-9
INF = float("inf")


class Ranges:
    """Disjoint ranges ``(a, b]`` kept sorted and merged when they touch."""

    def __init__(self, items: Iterable[tuple[float, float]] = ()) -> None:
        self.items: list[tuple[float, float]] = []
        for a, b in items:
            self.add(a, b)

    def __repr__(self) -> str:
        return f"Ranges({self.items})"

    def add(self, a: float, b: float) -> None:
        if b <= a:
            return
        out: list[tuple[float, float]] = []
        for x, y in self.items:
            if y < a - EPS or x > b + EPS:
                out.append((x, y))
            else:
                a, b = min(a, x), max(b, y)
        out.append((a, b))
        out.sort()
        self.items = out

    def missing(self, a: float, b: float) -> list[tuple[float, float]]:
        """The parts of ``(a, b]`` not held."""
        gaps, cursor = [], a
        for x, y in self.items:
            if y <= cursor + EPS:
                continue
            if x >= b - EPS:
                break
            if x > cursor + EPS:
                gaps.append((cursor, x))
            cursor = max(cursor, y)
        if cursor < b - EPS:
            gaps.append((cursor, b))
        return gaps

    def reach(self, a: float) -> float:
        """How far the held ranges extend contiguously from ``a`` (``a`` if not held)."""
        for x, y in self.items:
            if x <= a + EPS < y + EPS:
                return y
        return a

    def cut(self, before: float) -> None:
        """Forget everything up to ``before``."""
        self.items = [(max(x, before), y) for x, y in self.items if y > before]


#: ``fetch(objects, since, until) -> ([Series], until_answered[, left_out])``; ``until``
#: None = latest.  A truthy ``left_out`` (what the answer below says it lacks) makes the
#: answer serve the request it was fetched for only.
Fetch = Callable[[list[str], float, "float | None"], tuple]


def _clip(s: Series, since: float, until: float) -> Series:
    """The samples of ``s`` with ``since < end <= until``."""
    k = (s.end > since) & (s.end <= until + EPS)
    return s if k.all() else Series(s.object, s.unit, s.start[k], s.end[k], s.value[k])


class ReportCache:
    """Per-object samples plus the end-time ranges they are complete for."""

    def __init__(self, retain: float = 3600.0, max_samples: int = 200_000) -> None:
        self.retain = retain
        self.max_samples = max_samples
        self.series: dict[str, Series] = {}
        self.held: dict[str, Ranges] = {}
        self.lock = threading.Lock()
        self.stats = {"requests": 0, "hits": 0, "fetches": 0, "fetched_samples": 0, "served_samples": 0}

    def plan(self, objects: Sequence[str], since: float, until: float | None) -> list[tuple[list[str], float, float | None]]:
        """The fetches a request needs: objects grouped by identical missing range."""
        top = INF if until is None else until
        groups: dict[tuple[float, float], list[str]] = {}
        with self.lock:
            for obj in objects:
                held = self.held.get(obj) or Ranges()
                for a, b in held.missing(since, top):
                    groups.setdefault((a, b), []).append(obj)
        return [(objs, a, None if b == INF else b) for (a, b), objs in sorted(groups.items())]

    def store(self, fetched: Iterable[Series], objects: Sequence[str], since: float, until: float) -> None:
        """Take what a fetch of ``objects`` over ``(since, until]`` returned."""
        with self.lock:
            for s in fetched:
                s = _clip(s, since, until)
                held = self.series.get(s.object)
                self.series[s.object] = s if held is None else merge(held, s)
                self.stats["fetched_samples"] += len(s)
            for obj in objects:
                self.held.setdefault(obj, Ranges()).add(since, until)

    def read(self, objects: Sequence[str], since: float, until: float | None,
             passing: dict[str, tuple[Ranges, list[Series]]] | None = None) -> tuple[list[Series], float]:
        """Held samples of ``objects`` with ``since < end <= bound``, and the bound: the
        requested ``until`` or, if less is held for some object, how far all are held.
        ``passing``: per object, stretches fetched for this read only and their samples,
        read as if held."""
        passing = passing or {}
        bound = INF if until is None else until
        with self.lock:
            for obj in objects:
                held = self.held.get(obj) or Ranges()
                if obj in passing:
                    held = Ranges(held.items + passing[obj][0].items)
                bound = min(bound, held.reach(since))
            out = []
            for obj in objects:
                s = self.series.get(obj)
                for extra in passing.get(obj, (None, ()))[1]:
                    s = extra if s is None else merge(s, extra)
                if s is None:
                    continue
                i = int(np.searchsorted(s.end, since, side="right"))
                j = int(np.searchsorted(s.end, bound + EPS, side="right"))
                if j > i:
                    out.append(s if (i, j) == (0, len(s)) else
                               Series(s.object, s.unit, s.start[i:j], s.end[i:j], s.value[i:j]))
                    self.stats["served_samples"] += j - i
        return out, (since if bound == INF else bound)

    def report(self, objects: Sequence[str], since: float, until: float | None, fetch: Fetch) -> tuple[list[Series], float]:
        """Answer a report request, fetching only the missing stretches through ``fetch``;
        a fetch that says it left something out serves this answer only (see module)."""
        needed = self.plan(objects, since, until)
        with self.lock:
            self.stats["requests"] += 1
            if not needed:
                self.stats["hits"] += 1
        passing: dict[str, tuple[Ranges, list[Series]]] = {}
        for objs, a, b in needed:
            got, answered, *left_out = fetch(objs, a, b)
            with self.lock:
                self.stats["fetches"] += 1
            upto = answered if b is None else min(answered, b)
            if not any(left_out):
                self.store(got, objs, a, upto)
                continue
            for obj in objs:
                passing.setdefault(obj, (Ranges(), []))[0].add(a, upto)
            for s in got:
                if s.object in passing:
                    passing[s.object][1].append(_clip(s, a, upto))
        answer = self.read(objects, since, until, passing)
        with self.lock:  # after reading: an old stretch asked for again is served first
            self._evict(objects)
        return answer

    def _evict(self, objects: Iterable[str]) -> None:
        for obj in objects:
            s = self.series.get(obj)
            if s is None or not len(s):
                continue
            cut = s.end[-1] - self.retain
            if len(s) > self.max_samples:
                cut = max(cut, float(s.end[-self.max_samples - 1]))
            if s.end[0] <= cut:
                self.series[obj] = s.since(cut)
                self.held[obj].cut(cut)
