"""The mediator: the collection query interface in front of other sources, with value added.

A mediator offers exactly what a collector offers (``catalog``, ``report``,
``subscribe``, ``quit``), so it can stand in front of collectors, domain agents or other
mediators, in cascades of any depth, or be left out.  What it adds:

* a report cache (:mod:`agents.cache`): repeated and overlapping reports fetch only the
  missing stretch below;
* pre-processing (:mod:`agents.preprocess`) not yet done below, each step once: steps
  already applied below are listed in the catalog below and skipped here;
* delegation (:mod:`agents.delegation`): ``hand_step`` asks an agent nearer the data to
  take a step over; ``hand_over`` makes the mediator refuse further queries with "ask X
  from now on";
* placement (:mod:`agents.self_placement`): with a ``placement`` policy it moves itself
  to the host with more spare CPU or nearer its sources (:mod:`agents.placement`); the
  policy can be switched on, changed and off at run time (``reconfigure placement=...``).

Which steps are still to be done is decided by the tags *the data at hand* carries, not
by what the catalog below says now: a step handed down changes the tags of what arrives
from then on, not of what is already held.  The report cache is therefore kept per set of
tags below (a report below that comes back with other tags than expected is not cached:
the catalog is refreshed and the report asked again), and the stream below is re-opened
at a known position when ``hand_step`` hands a step down (:mod:`agents.delegation`).

Connection evidence (``connections``) is asked from every source at the time of the
query and merged (:mod:`agents.evidence`), not cached: it is small, and a source below
that does not offer it simply contributes none.

Standing requests from above are translated into one standing request per source below
(predicates pushed down when the steps keep values as they are; the requester checks
them all anyway).  What arrives is kept in the activity store, like a recorder's, and
batches up are *regenerated* from it (:mod:`agents.standing`), so a move or a restart
resumes the stream from the acknowledged position: nothing lost, nothing twice.

A dead source must not take the mediator down with it: a handler that waited a call's
whole deadline on it would be restarted by the host's watchdog.  Calls below made while
someone waits go to all sources at once; short ones (catalog, subscribe, quit) with a short
budget (:data:`BELOW_TIMEOUT`), and a source that missed it is marked unreachable
(``status``) and not waited for again until the catalog task finds it answering; what it
is owed (its streams, their quits) is sent by the resubscribe task then.  Data questions
(report, connections) wait as long as the data takes, up to most of a call's deadline,
unless the source is found unreachable meanwhile.  A ``report`` or ``connections`` answered meanwhile holds
the live sources' data and names the others under ``"missing"`` (with what the sources
name, a mediator below): a caller paging with ``since`` = ``until`` knows what it has not
got, and the cache holds none of that stretch as complete.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any

from Pyro5.errors import CommunicationError

from agents import evidence, preprocess
from agents.cache import ReportCache
from agents.delegation import Delegation
from agents.domain_join import merge
from agents.placement import Policy
from agents.recorder import RecorderAgent
from agents.self_placement import SelfPlacement
from agents.source import check_report
from agents.standing import MAX_REQUEST_ID, matches, series_from_rows
from masa import checks
from masa.activity import MAX_OBJECTS, Series
from masa.agent import query
from masa.errors import (
    AgentNotFound,
    AgentNotHere,
    AgentSuspended,
    BadRequest,
    MasaError,
    QueryTimeout,
    UnknownOperation,
    brief,
)
from masa.naming import check_name

CATALOG_TTL = 2.0  # seconds a catalog from below is trusted
#: seconds a source is given for a catalog, a subscribe or a quit asked while a caller or
#: a task waits: a dead source then costs this once, never a call's whole deadline (which
#: would run a handler into the host's watchdog), and is marked unreachable until it answers
BELOW_TIMEOUT = 2.0
BELOW_THREADS = 16  # the mediator's own threads for calls below (all sources asked at once)
QUIT_PATIENCE = 86400.0  # s a quit below is retried before its source is taken to be gone for good
STRADDLE = 3600.0  # longest sample expected (s): a batch also reads samples running past its end
INF = float("inf")
RETAG_TRIES = 3  # reports asked again when the steps applied below changed under one

DEFAULTS: dict[str, Any] = {
    "sources": [], "steps": [], "max_lag": 30.0, "cache_retain": 3600.0,
    "placement": None, "placement_every": 5.0, "own_load": 0.05, "successor": None,
}


def _key(applied: Iterable[str]) -> tuple[str, ...]:
    """The set of step tags data carries, as a dict key (order does not matter)."""
    return tuple(sorted(set(applied)))


def _add_marks(missing: dict[str, str], marks: dict | None) -> None:
    """What an answer from below names ``"missing"`` (a mediator below), passed on."""
    for source, why in (marks or {}).items():
        missing.setdefault(source, why)


def _why(exc: BaseException | None) -> str:
    """A failed call below, for ``status``."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


#: what a source that cannot be reached raises (as opposed to a live source refusing)
_UNREACHED = (AgentNotFound, AgentNotHere, AgentSuspended, QueryTimeout, CommunicationError, OSError)


class _Retagged(Exception):
    """A report from below came back with other step tags than the cache it was for."""


class MediatorAgent(Delegation, SelfPlacement, RecorderAgent):
    """Settings: ``sources`` (agent names below), ``steps`` (pre-processing specs),
    ``max_lag`` (s an object may fall behind before the stream stops waiting for it),
    ``cache_retain`` (s), ``placement`` (policy dict, None = stay), ``placement_every``
    (s), ``own_load`` (share of a host's CPU this mediator uses, for the policy)."""

    defaults = DEFAULTS
    #: whether outgoing values join several objects: then a segment can be cut by a sample
    #: that ended before the window, and reads reach back to the earliest sample start
    joins = False

    # -- settings ----------------------------------------------------------------------------

    def setup(self, **settings: Any) -> None:
        merged = {**DEFAULTS, **self.defaults, **settings}
        self._check(merged)
        merged["steps"] = [preprocess.check(s) for s in merged["steps"]]
        super().setup(**merged)

    def _check(self, s: dict) -> None:
        if not isinstance(s["sources"], list) or not s["sources"]:
            raise BadRequest(f"{self.kind} needs 'sources': a non-empty list of agent names")
        for name in s["sources"]:
            check_name(name, "source")
        if self.name in s["sources"]:
            raise BadRequest("a mediator cannot be its own source")
        if not isinstance(s["steps"], list):
            raise BadRequest("steps must be a list of step specs")
        for key in ("max_lag", "cache_retain"):
            checks.number(s[key], key, positive=True, unit="seconds")
        checks.number(s["placement_every"], "placement_every", checks.MIN_PERIOD, checks.DAY, unit="seconds")
        checks.number(s["own_load"], "own_load", 0, 1, note=" (its share of a host's CPU)")
        if s.get("hosts") is not None:  # where placement may move it (None: anywhere)
            if not isinstance(s["hosts"], list):
                raise BadRequest(f"hosts must be a list of host names, not {brief(s['hosts'])}")
            for name in s["hosts"]:
                check_name(name, "host")
        if s["successor"] is not None:
            check_name(s["successor"], "successor")
        if s["placement"] is not None:
            Policy.from_settings(s["placement"])

    def on_reconfigure(self, changed: dict) -> None:
        if "steps" in changed:
            with self.lock:
                self.settings["steps"] = [preprocess.check(s) for s in self.settings["steps"]]
        self._check({**DEFAULTS, **self.settings})
        self._catalog_at = 0.0
        self._arm_placement()
        super().on_reconfigure(changed)
        if "sources" in changed:  # every setting checked by now
            self._sources_changed()

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        self._local = threading.local()  # see _view
        self._handing: dict[str, int] = {}  # sources a hand-off to runs: requests wait
        # Calls below while someone waits go out on threads of the mediator's own, all
        # sources at once; these are not state: a restarted or moved mediator asks afresh.
        self._pool = ThreadPoolExecutor(max_workers=BELOW_THREADS, thread_name_prefix=f"below-{self.name}")
        self._unreachable: dict[str, dict] = {}  # source -> {"since", "why"}: skipped while someone waits
        self._quits_sent: set[str] = set()  # quits below on their way (see _send_quits)
        super().on_start()
        self._caches: dict[tuple[str, ...], ReportCache] = {}  # per set of tags below
        self._cache_stats_gone: dict[str, int] = {}  # of caches dropped
        self._catalog: dict[str, dict] = {}
        self._catalog_at = 0.0
        self._catalog_asked = self._catalog_ticket = 0
        self.state.setdefault("last_end", {})
        self.state.setdefault("placement_memo", {})
        self._refresher = False
        self.every(CATALOG_TTL, self._refresh_catalog, name="catalog")
        self._placement_armed: tuple | None = None  # (policy, every) the task runs with
        self._placement_gen = 0  # changes with every change of the policy in force
        self._placement_rounds = 0  # rounds of the placement task here, for status
        self._self_move: tuple[int, str, float | None] | None = None  # (generation, target, last move before)
        self._arm_placement()

    def on_stop(self) -> None:
        pool = getattr(self, "_pool", None)
        if pool is not None:  # a call below still waiting ends at its own deadline
            pool.shutdown(wait=False, cancel_futures=True)
        super().on_stop()

    def carry_since(self) -> float | None:
        """Besides what is not yet passed up, the history the steps and the join need,
        and whole samples of other objects that overlap that start."""
        since = super().carry_since()
        if since is None:
            return None
        t0 = since - self._lookback()
        first = min((r[2] for r in self.store.samples(t0)), default=t0)
        return min(first, t0)

    # -- what arrives from below --------------------------------------------------------------

    def record(self, rows: list[tuple], complete_until: float | None = None) -> None:
        retagged = self.state.get("retagged")
        if retagged:
            # up to its last hand-off boundary an object's samples are held in the old
            # form; a copy in the new form arriving later (a replay) is not taken
            rows = [r for r in rows if r[0] not in retagged or r[3] > retagged[r[0]][-1][0]]
        ends: dict[str, float] = {}
        for obj, _u, _a, b, _v in rows:
            if b > ends.get(obj, -INF):
                ends[obj] = b
        with self.lock:
            last = self.state["last_end"]
            for obj, b in ends.items():
                if b > last.get(obj, -INF):
                    last[obj] = b
        super().record(rows, complete_until=None if complete_until is None else self._horizon())

    def _horizon(self) -> float | None:
        """Up to where every standing stream below has delivered, and, when values depend
        on neighbouring samples, up to where every live object's samples have arrived
        (a sample still running past that point would change values before it)."""
        ends = [sub["until"] for sub in self.inbox.subs.values() if sub.get("until") is not None]
        if not ends:
            return None
        h = min(ends)
        if self._needs_object_horizon():
            lag = float(self.settings["max_lag"])
            live = [e for e in self.state["last_end"].values() if e >= h - lag]
            if live:
                h = min(h, min(live))
        return h

    def _needs_object_horizon(self) -> bool:
        return not all(s["step"] in ("filter", "normalise") for s in self.settings["steps"])

    # -- the catalog below -----------------------------------------------------------------

    def _below(self, refresh: bool = False, probe: bool = False) -> dict[str, dict]:
        """Object -> {"unit", "applied", "source"} from every source's catalog.

        All sources are asked at once, each for at most :data:`BELOW_TIMEOUT` s, and a
        source that does not answer keeps what it offered last (its objects stay known,
        their data waits for it) and is marked unreachable.  A source already marked is
        not asked at all unless ``probe`` (the catalog task, which runs off the request
        path and is how the mark is lifted): so a handler never waits on a dead source,
        not a call's deadline per source, nor a budget more than once."""
        now = time.monotonic()
        if refresh or probe or not self._catalog or (now - self._catalog_at > CATALOG_TTL and not self._refresher):
            ticket = self._ticket()
            sources = list(self.settings["sources"])
            with self.lock:
                skip = set() if probe else set(self._unreachable)
            answers = self._each([s for s in sources if s not in skip],
                                 lambda s: self.ref(s).query("catalog", timeout=BELOW_TIMEOUT), "catalog")
            kept: dict[str, list[tuple[str, dict]]] = {}
            for obj, entry in self._catalog.items():
                if entry["source"] not in answers:
                    kept.setdefault(entry["source"], []).append((obj, entry))
            out: dict[str, dict] = {}
            for source in sources:
                if source not in answers:  # unreachable: what it offered last
                    for obj, entry in kept.get(source, ()):
                        out.setdefault(obj, entry)
                    continue
                for entry in answers[source]:
                    out.setdefault(entry["object"], {
                        "unit": entry.get("unit", ""), "applied": list(entry.get("applied", [])),
                        "source": source})
            if self._install(out, ticket, now):
                self._anchor(out)
        return self._catalog

    # -- reaching the sources -----------------------------------------------------------------

    def _each(self, sources: list[str], call: Callable[[str], Any], what: str,
              failed: dict[str, str] | None = None, patient: bool = False) -> dict[str, Any]:
        """``call(source)`` for every source at once, on the mediator's threads; returns
        source -> answer of those that answered, marking them reachable, and puts why the
        others did not in ``failed``.  Concurrent, so a handler asking several sources
        waits one budget however many of them are dead.

        A short question (catalog, subscribe, quit) is given :data:`BELOW_TIMEOUT`, and a
        source that misses it is marked unreachable.  A data question (``patient``:
        report, connections) may take as long as its data takes to come, since a big
        report below is slow, not dead: it is given up only when the catalog task marks
        the source unreachable meanwhile (a 2 s question it could not answer), when the
        source fails to be reached (marked), or at :meth:`_data_budget` (not marked); any
        other error of a live source (a refused argument) is the caller's to see.  A call
        given up on runs on, and a report then still fills the cache for the next."""
        if not sources:
            return {}
        futures = {}
        for source in sources:
            try:
                futures[self._pool.submit(call, source)] = source
            except RuntimeError:  # the pool is shut down: this instance is stopping
                if failed is not None:
                    failed.update({s: f"{what}: {self.name} is stopping" for s in sources})
                return {}
        if patient:
            done, waited = self._wait_while_reachable(futures)
        else:
            done, _ = wait_for(futures, timeout=BELOW_TIMEOUT + 1.0)
            waited = f"no answer within {BELOW_TIMEOUT:g} s"
        out = {}
        for future, source in futures.items():
            exc = future.exception() if future in done else None
            if future in done and exc is None:
                out[source] = future.result()
                self._answered(source)
                continue
            if patient and exc is not None and not isinstance(exc, _UNREACHED):
                raise exc
            why = _why(exc) if future in done else waited
            if not patient or exc is not None:
                self._missed(source, f"{what}: {why}")
            if failed is not None:
                failed[source] = f"{what}: {why}"
        return out

    def _wait_while_reachable(self, futures: dict) -> tuple[set, str]:
        """Wait for ``futures`` (future -> source) until each is done or its source has been
        marked unreachable since the wait began; also what the rest were given."""
        deadline = time.monotonic() + self._data_budget()
        with self.lock:
            before = set(self._unreachable)
        pending = set(futures)
        while pending and time.monotonic() < deadline:
            _, pending = wait_for(pending, timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            with self.lock:
                lost = {f for f in pending if futures[f] in self._unreachable and futures[f] not in before}
            pending -= lost
        done = {f for f in futures if f.done()}
        return done, f"no answer within {self._data_budget():g} s, or found unreachable meanwhile"

    def _data_budget(self) -> float:
        """How long a data question below is waited for: most of a call's deadline, so the
        handler ends before the host's watchdog (whose floor is that deadline) takes it for
        stuck."""
        timeout = getattr(self.host.settings, "call_timeout", None) or 10.0
        return max(BELOW_TIMEOUT, 0.8 * float(timeout))

    def _missing(self, sources: Iterable[str]) -> dict[str, str]:
        """Those of ``sources`` marked unreachable, and why: not asked while someone waits,
        and named as missing in the answer."""
        with self.lock:
            return {s: f"unreachable: {self._unreachable[s].get('why', '')}"
                    for s in sources if s in self._unreachable}

    def _answered(self, source: str) -> None:
        with self.lock:
            self._unreachable.pop(source, None)

    def _missed(self, source: str, why: str) -> None:
        with self.lock:
            mark = self._unreachable.setdefault(source, {"since": time.time()})
            mark["why"] = why

    def _ticket(self) -> int:
        with self.lock:
            self._catalog_asked += 1
            return self._catalog_asked

    def _install(self, catalog: dict[str, dict], ticket: int, at: float) -> bool:
        """Take a catalog asked for with ``ticket`` unless one asked for later is in
        already (an answer from before a hand-off must not undo the hand-off's tags, one
        from before a source was dropped must not bring its objects back)."""
        with self.lock:
            if ticket <= self._catalog_ticket:
                return False
            self._catalog_ticket = ticket
            self._catalog, self._catalog_at = catalog, at
            used = {_key(e["applied"]) for e in catalog.values()}
            for key in [k for k in self._caches if k not in used]:
                for stat, n in self._caches.pop(key).stats.items():
                    self._cache_stats_gone[stat] = self._cache_stats_gone.get(stat, 0) + n
            return True

    def _cache(self, key: tuple[str, ...]) -> ReportCache:
        """The report cache for data carrying the tags ``key``: data in one form only."""
        with self.lock:
            cache = self._caches.get(key)
            if cache is None:
                cache = self._caches[key] = ReportCache(retain=float(self.settings["cache_retain"]))
            return cache

    def _cache_stats(self) -> dict[str, int]:
        with self.lock:
            out = dict(self._cache_stats_gone)
            for cache in self._caches.values():
                for stat, n in cache.stats.items():
                    out[stat] = out.get(stat, 0) + n
            return out

    def _refresh_catalog(self) -> None:
        """Keep the catalog below fresh off the request path (a cache hit then makes no
        call below at all)."""
        self._refresher = True
        self._below(probe=True)

    def _anchor(self, catalog: dict[str, dict]) -> None:
        """An object known below but not heard from yet may have a sample running right
        now: until it arrives, the horizon waits for it as for any live object."""
        globs = [sub.get("objects") for sub in self.inbox.subs.values()]
        if not globs:
            return
        with self.lock:
            last = self.state["last_end"]
            for obj in catalog:
                if obj not in last and any(matches(gs, obj) for gs in globs):
                    last[obj] = self._complete

    @contextlib.contextmanager
    def _view(self, applied: dict[str, list[str]]) -> Iterator[None]:
        """While one answer is made: the steps as configured at its start and, per object,
        the tags the data at hand carries (what is still to do, and the tags sent up with
        it, follow from these, whatever the catalog below says meanwhile)."""
        saved = getattr(self._local, "view", None)
        self._local.view = (list(self.settings["steps"]), applied)
        try:
            yield
        finally:
            self._local.view = saved

    def _steps(self) -> list[dict]:
        view = getattr(self._local, "view", None)
        return view[0] if view is not None else self.settings["steps"]

    def _tags_below(self, obj: str) -> list[str] | None:
        """Tags of the steps applied below to ``obj``'s data (None: not an object below)."""
        view = getattr(self._local, "view", None)
        if view is not None and obj in view[1]:
            return view[1][obj]
        entry = self._catalog.get(obj)
        return None if entry is None else entry["applied"]

    def _steps_for(self, obj: str) -> list[dict]:
        return preprocess.pending(self._steps(), self._tags_below(obj) or [])

    def _lookback(self) -> float:
        return preprocess.lookback(self.settings["steps"])

    # -- turning raw samples into what goes up (DomainAgent overrides these) ----------------

    def _outgoing(self, raw: dict[str, Series]) -> list[Series]:
        return [preprocess.apply(self._steps_for(obj), s) for obj, s in raw.items()]

    def _resolve(self, objects: list[str] | None) -> list[str]:
        """Exact object names below for a request's names or globs."""
        names = list(self._below())
        if objects is None:
            return names
        return [n for n in names if matches(objects, n)]

    def _down_objects(self, objects: list[str] | None) -> list[str] | None:
        return objects

    def _pushdown(self, predicates: list[str] | None) -> list[str]:
        return list(predicates or []) if preprocess.value_preserving(self.settings["steps"]) else []

    # -- reading ---------------------------------------------------------------------------

    @staticmethod
    def _window(series: Iterable[Series], since: float, until: float) -> list[Series]:
        out = []
        for s in series:
            k = (s.end > since) & (s.end <= until)
            if k.all() and len(s):
                out.append(s)
            elif k.any():
                out.append(Series(s.object, s.unit, s.start[k], s.end[k], s.value[k]))
        return out

    def _read(self, since: float, until: float, objects: list[str] | None = None) -> list[Series]:
        """A standing request's batch ``(since, until]``, regenerated from the store."""
        t0 = since - self._lookback()
        # Samples still running at ``until`` count too: they cover time before it.
        rows = [r for r in self.store.samples(t0, until + STRADDLE) if r[2] < until]
        first = min((r[2] for r in rows), default=t0)
        if self.joins and first < t0:  # a sample reaching back before t0: take what ended meanwhile too
            rows = [r for r in self.store.samples(first, until + STRADDLE) if r[2] < until]
        catalog = self._below()  # markers of what is applied below
        raw = {s.object: s for s in series_from_rows(rows)}
        tags = {obj: list(catalog[obj]["applied"]) for obj in raw if obj in catalog}
        with self._view(tags):
            steps = self._steps()
            raw = {obj: self._current_form(s, steps, tags.get(obj)) for obj, s in raw.items()}
            return self._window(self._outgoing(raw), since, until)

    def _pull(self, names: list[str], since: float, until: float | None
              ) -> tuple[dict[str, Series], float, dict[str, list[str]], dict[str, str]]:
        """Samples of ``names`` from below through the cache, with look-back, the tags of
        the steps applied below to each (all of one object's samples carry the same: each
        cache holds data of one set of tags; raises :class:`_Retagged` when a report below
        comes back with other tags than the catalog said), and what is missing: source ->
        why.

        The sources are asked at once (:meth:`_each`, patiently: a big report below is
        slow, not dead), those marked unreachable not at all: a source that dies costs a
        report the time the catalog task takes to find it unreachable (about one
        :data:`BELOW_TIMEOUT`), never a call's deadline per source.  The answer is then the
        live sources' up to where they are complete, and names each source left out, and
        what the sources themselves say is missing below them, so the caller knows what
        its ``until`` does not cover; none of that is held in the cache as complete.  A
        source with no object known here (dead before it was ever heard from) is missing
        from any report while it is unreachable: what it has might have been asked for."""
        catalog = self._catalog
        groups: dict[str, dict[tuple[str, ...], list[str]]] = {}
        tags: dict[str, list[str]] = {}
        for n in names:
            entry = catalog.get(n)
            if entry is not None:
                groups.setdefault(entry["source"], {}).setdefault(_key(entry["applied"]), []).append(n)
                tags[n] = list(entry["applied"])
        known = {e["source"] for e in catalog.values()}
        missing = self._missing(s for s in self.settings["sources"] if s in groups or s not in known)
        t0 = since - self._lookback()

        def pull(source: str) -> tuple[dict[str, Series], float, dict[str, str]] | _Retagged:
            try:
                return self._pull_source(source, groups[source], t0, until)
            except _Retagged as exc:  # it answered: the catalog is what is out of date
                return exc

        failed: dict[str, str] = {}
        answers = self._each([s for s in groups if s not in missing], pull, "report", failed, patient=True)
        missing.update(failed)
        raw: dict[str, Series] = {}
        answered = INF if until is None else until
        for answer in answers.values():
            if isinstance(answer, _Retagged):
                raise answer
            got, u, below = answer
            raw.update(got)
            answered = min(answered, u)
            _add_marks(missing, below)
        if answered == INF:
            answered = since
        if until is not None:
            answered = min(answered, until)
        if self._needs_object_horizon():
            # Values are final up to the earliest last sample end of the live objects: a
            # sample running past that point has then arrived (it ends before its object's
            # last end), so no sample that is missing here can cover time before it.
            lag = float(self.settings["max_lag"])
            live = [float(s.end[-1]) for s in raw.values() if len(s) and s.end[-1] >= answered - lag]
            if live:
                answered = min(answered, min(live))
        return raw, answered, tags, missing

    def _pull_source(self, source: str, groups: dict[tuple[str, ...], list[str]], t0: float,
                     until: float | None) -> tuple[dict[str, Series], float, dict[str, str]]:
        """One source's part of :meth:`_pull` (on one of the mediator's threads): its
        objects' samples from ``t0``, up to where all are complete, and what its answers
        said is missing below it."""
        ref = self.ref(source)
        raw: dict[str, Series] = {}
        answered = INF
        below: dict[str, str] = {}
        for key, objs in groups.items():

            def fetch(o: list[str], a: float, b: float | None, key=key) -> tuple[list[Series], float, dict]:
                got, answered, left_out = [], INF, {}
                for i in range(0, len(o), MAX_OBJECTS):  # what one report below takes
                    r = ref.query("report", objects=o[i:i + MAX_OBJECTS], since=a, until=b)
                    if any(_key(w.get("applied", ())) != key for w in r["series"]):
                        raise _Retagged(ref.name)  # before the cache takes any of it
                    got += [Series.from_wire(w) for w in r["series"]]
                    answered = min(answered, float(r["until"]))
                    _add_marks(left_out, r.get("missing"))  # a mediator below: passed on, not held
                _add_marks(below, left_out)
                return got, answered, left_out

            cache = self._cache(key)
            got, u = cache.report(objs, t0, until, fetch)
            answered = min(answered, u)
            raw.update({s.object: s for s in got})
            first = min((float(s.start[0]) for s in got if len(s)), default=t0)
            if self.joins and first < t0:  # a sample reaching back before t0: what ended meanwhile cuts it
                extra, _ = cache.report(objs, first, t0, fetch)
                for s in extra:
                    raw[s.object] = merge(raw[s.object], s) if s.object in raw else s
        return raw, answered, below

    # -- the collection query interface ------------------------------------------------------

    def _maybe_redirect(self) -> None:
        if self.settings.get("successor"):
            self.redirect(self.settings["successor"])

    @query
    def catalog(self) -> list[dict]:
        self._maybe_redirect()
        out = []
        for obj, entry in sorted(self._below().items()):
            out.append({"object": obj, "unit": entry["unit"], "applied": self._applied(obj)})
        return out

    @query
    def report(self, objects: list[str] | None = None, since: float = 0.0,
               until: float | None = None) -> dict:
        """Like a collector's report; served from the cache where it can be.  With a
        source below dead or failing, the live sources' samples and ``"missing": {source:
        why}``: its samples up to ``until`` are not in it (see :meth:`_pull`)."""
        self._maybe_redirect()
        check_report(objects, since, until)
        since = float(since)
        for _ in range(RETAG_TRIES):
            names = self._resolve(objects)
            try:
                raw, answered, tags, missing = self._pull(names, since, None if until is None else float(until))
                break
            except _Retagged:  # a step was handed down meanwhile: learn the new tags, ask again
                self._below(refresh=True)
        else:
            raise MasaError(f"{self.name}: the steps applied below kept changing during the report; ask again")
        with self._view(tags):
            out = self._window(self._outgoing(raw), since, answered)
            wanted = self._up_objects(objects)
            if wanted is not None:
                out = [s for s in out if matches(wanted, s.object)]
            answer = {"series": [{**s.to_wire(), "applied": self._applied(s.object)} for s in out],
                      "until": answered}
            return {**answer, "missing": missing} if missing else answer

    @query
    def connections(self, since: float = 0.0, objects: list[str] | None = None) -> dict:
        """Every source's connection evidence, merged; the same answer a collector gives.
        The sources are asked as for a report (at once, with the short budget, those
        marked unreachable not at all): a dead one gives no evidence and is named under
        ``"missing"`` with those the sources name."""
        self._maybe_redirect()
        evidence.check(since, objects)
        sources = self.settings["sources"]
        missing = self._missing(sources)
        down = self._down_objects(objects)

        def ask(source: str) -> dict | None:
            try:
                return self.ref(source).query("connections", since=float(since), objects=down)
            except UnknownOperation:
                return None  # a source without connection evidence: none from it

        failed: dict[str, str] = {}
        answers = self._each([s for s in sources if s not in missing], ask, "connections", failed, patient=True)
        missing.update(failed)
        given = [a for a in answers.values() if a is not None]
        for a in given:
            _add_marks(missing, a.get("missing"))
        out = evidence.select(self._evidence_up(evidence.merge(given)), self._up_objects(objects))
        return {**out, "missing": missing} if missing else out

    def _evidence_up(self, merged: dict) -> dict:
        """Evidence from below as it is named here (a domain agent renames members)."""
        return merged

    def _applied(self, obj: str) -> list[str]:
        """Tags of the steps applied to ``obj`` by the time it leaves here."""
        below = self._tags_below(obj)
        if below is None:
            return [preprocess.tag(s) for s in self._steps()]  # made here (collective)
        return list(below) + [preprocess.tag(s) for s in self._steps_for(obj)]

    @query
    def subscribe(self, request: str, subscriber: str, objects: list[str] | None = None,
                  predicates: list[str] | None = None, interval: float | None = None,
                  deliver: str = "deliver", resume_seq: int | None = None,
                  resume_until: float | None = None) -> dict:
        """Open a standing request here and the matching ones below."""
        self._maybe_redirect()
        if isinstance(request, str) and any(len(self._below_id(request, source)) + 8 > MAX_REQUEST_ID
                                            for source in self.settings["sources"]):  # 8: a "#N" to come
            # refused here: refused below, the stream up would wait for it forever
            raise BadRequest(f"request is too long for {self.name}: its ids below, "
                             f"'{self.name}:REQUEST@SOURCE#N', must stay within {MAX_REQUEST_ID} characters")
        answer = super().subscribe(request, subscriber, self._up_objects(objects), predicates, interval,
                                   deliver, resume_seq, resume_until)
        self._open_below(request, objects, predicates)
        return answer

    def _up_objects(self, objects: list[str] | None) -> list[str] | None:
        return objects

    def _below_id(self, request: str, source: str) -> str:
        base = f"{self.name}:{request}@{source}"
        n = self.state.get("below_gen", {}).get(source, 0)
        return f"{base}#{n}" if n else base  # a new generation after each hand_step to source

    def _anchor_stream(self, request: str, start: float) -> None:
        """A new standing request below per source, asking for history from ``start``
        (less the steps' look-back), and the horizon back there: the first batches up need
        samples from before now.  Runs before the request from above can be delivered, so
        no batch up is cut from a store that has not received that history yet."""
        begin = start - self._lookback()
        for source in self.settings["sources"]:
            rid = self._below_id(request, source)
            if rid not in self.inbox.subs:
                self.inbox.subs[rid] = {"seq": 0, "until": begin}
                self._complete = self.state["complete_until"] = min(self._complete, start)

    def _open_below(self, request: str, objects: list[str] | None, predicates: list[str] | None) -> None:
        """Send the standing requests below that :meth:`_anchor_stream` registered.

        The caller above is waiting, so this waits for no source longer than
        :data:`BELOW_TIMEOUT`, and for a source marked unreachable not at all: those
        requests are left to the resubscribe task, which sends them, from the position
        anchored (nothing is lost), once the source answers again; meanwhile the streams
        from the live sources run.  The catalog is asked first, so the objects the horizon
        must wait for are anchored before the first batch can arrive."""
        down, pushed = self._down_objects(objects), self._pushdown(predicates)
        todo = {}
        for source in self.settings["sources"]:
            rid = self._below_id(request, source)
            self._register_below(rid, source, down, pushed)
            if source not in self._handing:  # else hand_step sends it once the hand-off is done
                todo[rid] = source
        with contextlib.suppress(Exception):  # a source not there yet is anchored later
            self._below(refresh=True)
        self._send_below(todo)
        self.host.checkpoint(self)

    def _register_below(self, rid: str, source: str, objects: list[str] | None, predicates: list[str]) -> None:
        """The stream ``rid`` from ``source`` as it is to be asked for (sent separately)."""
        with self.lock:
            sub = self.inbox.subs.setdefault(rid, {"seq": 0, "until": None})
            sub.update({"source": source, "objects": objects, "predicates": predicates,
                        "interval": None, "deliver": "deliver"})
            self.state.get("quitting", {}).pop(rid, None)  # wanted again: a late quit would end it

    def _send_below(self, rids: dict[str, str]) -> None:
        """Send the registered streams ``rids`` (id -> source) to their sources, waiting at
        most :data:`BELOW_TIMEOUT`; what is not known to be open by then is left in
        ``_unsent`` for the resubscribe task.  One thread per source sends its requests in
        turn and stops at the first failure, so a source that died unnoticed holds one
        thread for a call's deadline, not one per request.  A source not a single request
        of which went through in time is marked unreachable (the next handler does not
        wait on it); one that refuses is left to the catalog task to judge."""
        with self.lock:
            down = set(self._unreachable)
        by_source: dict[str, list[str]] = {}
        for rid, source in rids.items():
            if source not in down:
                by_source.setdefault(source, []).append(rid)
        opened: dict[str, list[str]] = {source: [] for source in by_source}

        def send(source: str) -> None:
            for rid in by_source[source]:
                if self.inbox.resubscribe([rid]):
                    return
                opened[source].append(rid)
                self._answered(source)

        futures = {}
        for source in by_source:
            with contextlib.suppress(RuntimeError):  # the pool is shut down: this instance is stopping
                futures[self._pool.submit(send, source)] = source
        done, _ = wait_for(futures, timeout=BELOW_TIMEOUT)
        for future, source in futures.items():
            if future not in done and not opened[source]:
                self._missed(source, f"subscribe: no answer within {BELOW_TIMEOUT:g} s")
        sent = {rid for got in opened.values() for rid in list(got)}
        with self.lock:
            self._unsent |= {rid for rid in rids if rid not in sent and rid in self.inbox.subs}

    def _sources_changed(self) -> None:
        """Follow a change of ``sources`` at once (``reconfigure``).

        Streams from a source no longer listed are forgotten here now: their batches are
        refused from now on, and the horizon, the earliest position of the streams below,
        no longer waits for them (a dead source's stream would never move again, and the
        streams up would stall for good); the objects only it delivered are no longer
        waited for either.  Its generation of request ids moves on, so if it is listed
        again its new streams are not the ones being quit.  The quits go out off the
        caller's time (:meth:`_quit_below`).

        A source newly listed gets a stream for every standing request, from the position
        that request has reached above (less the look-back), as a re-opened request's
        (:meth:`_anchor_stream`): the batches up not yet acknowledged wait for its history.

        Every stream is sent again, too: after a refused change this runs with the old
        sources and state put back, and the quits already sent are undone that way."""
        sources = list(self.settings["sources"])
        with self._arrival, self.lock:
            gone = [rid for rid, sub in self.inbox.subs.items() if sub.get("source") not in sources]
            gens = self.state.setdefault("below_gen", {})
            for source in {self.inbox.subs[rid].get("source") for rid in gone} - {None}:
                gens[source] = gens.get(source, 0) + 1
            last = self.state["last_end"]
            catalog = {}
            for obj, entry in self._catalog.items():
                if entry["source"] in sources:
                    catalog[obj] = entry
                else:
                    last.pop(obj, None)
            for source in [s for s in self._unreachable if s not in sources]:
                del self._unreachable[source]
            for request, spec in self.subscriptions.requests.items():
                new = [s for s in sources if self._below_id(request, s) not in self.inbox.subs]
                self._anchor_stream(request, spec["acked_until"])
                for source in new:
                    self._register_below(self._below_id(request, source), source,
                                         self._down_objects(spec["objects"]), self._pushdown(spec["predicates"]))
            self._install(catalog, self._ticket(), time.monotonic())
        self._quit_below(gone)
        with self._arrival:
            self.record([], complete_until=self._horizon())  # the horizon moves on now
        with self.lock:
            self._unsent |= set(self.inbox.subs)

    def _quit_below(self, rids: Iterable[str]) -> None:
        """Forget the streams ``rids`` here at once and quit them at their sources, off
        the caller's time: the quits are kept in the state (``quitting``) and sent on the
        mediator's threads, and again with every keep-alive until the source answers, so
        a source that was unreachable learns it when it is back (until then its batches
        are refused here, which it takes as a quit too)."""
        with self.lock:
            quitting = self.state.setdefault("quitting", {})
            for rid in rids:
                sub = self.inbox.forget(rid)
                self._unsent.discard(rid)
                if sub is not None and sub.get("source"):
                    quitting[rid] = {"source": sub["source"], "since": time.time()}
        self._send_quits()

    def _send_quits(self) -> None:
        """Send the quits still owed below (see :meth:`_quit_below`), without waiting."""
        with self.lock:
            due = {rid: q["source"] for rid, q in self.state.get("quitting", {}).items()
                   if rid not in self._quits_sent}
            self._quits_sent |= set(due)
        for rid, source in due.items():
            try:
                self._pool.submit(self._send_quit, rid, source)
            except RuntimeError:  # the pool is shut down: this instance is stopping
                with self.lock:
                    self._quits_sent.discard(rid)

    def _send_quit(self, rid: str, source: str) -> None:
        try:
            self.ref(source).query("quit", request=rid, timeout=BELOW_TIMEOUT)
            done = True
        except (AgentNotFound, AgentNotHere, QueryTimeout):  # not there (yet): again later
            done = False
        except MasaError:  # it answered, with an error: asking again will not help
            done = True
        except Exception:  # noqa: BLE001 - the connection failed: again later
            done = False
        with self.lock:
            self._quits_sent.discard(rid)
            quitting = self.state.get("quitting", {})
            q = quitting.get(rid)
            if q is not None and (done or time.time() - q["since"] > QUIT_PATIENCE):
                del quitting[rid]

    @query
    def quit(self, request: str) -> bool:
        found = super().quit(request)
        self._quit_below([self._below_id(request, source) for source in self.settings["sources"]])
        self.host.checkpoint(self)
        return found

    @query
    def status(self) -> dict:
        return {**super().status(), "host": self.host.name, "cache": self._cache_stats(),
                "below": {r: {"seq": s["seq"], "until": s["until"], "source": s.get("source"),
                              "objects": s.get("objects"), "predicates": s.get("predicates", [])}
                          for r, s in self.inbox.subs.items()},
                # sources that did not answer the last call (their streams wait for them)
                "unreachable": {src: dict(mark) for src, mark in self._unreachable.items()},
                "unsent": sorted(self._unsent),  # streams below not known to be open yet
                "quitting": sorted(self.state.get("quitting", {})),  # quits below still owed
                "moves": self.state.get("placement_memo", {}).get("moves", 0),
                "placement": {"policy": copy.deepcopy(self.settings.get("placement")),
                              "rounds": self._placement_rounds}}
