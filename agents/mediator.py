"""The mediator: the collection query interface in front of other sources, with value added.

A mediator offers exactly what a collector offers (``catalog``, ``report``,
``subscribe``, ``quit``), so it can stand in front of collectors, domain agents or other
mediators, in cascades of any depth, or be left out.  What it adds:

* a report cache (:mod:`agents.cache`): repeated and overlapping reports fetch only the
  missing stretch below;
* pre-processing (:mod:`agents.preprocess`) not yet done below, each step once: steps
  already applied below are listed in the catalog below and skipped here;
* delegation: ``hand_step`` asks an agent nearer the data to take a step over;
  ``hand_over`` makes the mediator refuse further queries with "ask X from now on";
* placement: with a ``placement`` policy it moves itself to the host with more spare
  CPU or nearer its sources (:mod:`agents.placement`).

Connection evidence (``connections``) is asked from every source at the time of the
query and merged (:mod:`agents.evidence`), not cached: it is small, and a source below
that does not offer it simply contributes none.

Standing requests from above are translated into one standing request per source below
(predicates pushed down when the steps keep values as they are; the requester checks
them all anyway).  What arrives is kept in the activity store, like a recorder's, and
batches up are *regenerated* from it (:mod:`agents.standing`), so a move or a restart
resumes the stream from the acknowledged position: nothing lost, nothing twice.
"""

from __future__ import annotations

import contextlib
import fnmatch
import time
from collections.abc import Iterable
from typing import Any

from agents import evidence, preprocess
from agents.cache import ReportCache
from agents.domain_join import merge
from agents.placement import Policy, decide
from agents.recorder import RecorderAgent
from agents.standing import series_from_rows
from masa.activity import Series
from masa.agent import configure, query
from masa.errors import BadRequest, UnknownOperation

CATALOG_TTL = 2.0  # seconds a catalog from below is trusted
STRADDLE = 3600.0  # longest sample expected (s): a batch also reads samples running past its end
INF = float("inf")

DEFAULTS: dict[str, Any] = {
    "sources": [], "steps": [], "max_lag": 30.0, "cache_retain": 3600.0,
    "placement": None, "placement_every": 5.0, "own_load": 0.05, "successor": None,
}


class MediatorAgent(RecorderAgent):
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
        if not isinstance(s["sources"], list) or not s["sources"] or \
                not all(isinstance(x, str) and x for x in s["sources"]):
            raise BadRequest(f"{self.kind} needs 'sources': a non-empty list of agent names")
        if self.name in s["sources"]:
            raise BadRequest("a mediator cannot be its own source")
        if not isinstance(s["steps"], list):
            raise BadRequest("steps must be a list of step specs")
        for key in ("max_lag", "cache_retain", "placement_every"):
            if not isinstance(s[key], (int, float)) or s[key] <= 0:
                raise BadRequest(f"{key} must be a positive number of seconds")
        if s["placement"] is not None:
            Policy.from_settings(s["placement"])

    def on_reconfigure(self, changed: dict) -> None:
        if "steps" in changed:
            with self.lock:
                self.settings["steps"] = [preprocess.check(s) for s in self.settings["steps"]]
        if "sources" in changed or "placement" in changed:
            self._check({**DEFAULTS, **self.settings})
        self._catalog_at = 0.0
        super().on_reconfigure(changed)

    # -- lifecycle ---------------------------------------------------------------------------

    def on_start(self) -> None:
        super().on_start()
        self.cache = ReportCache(retain=float(self.settings["cache_retain"]))
        self._catalog: dict[str, dict] = {}
        self._catalog_at = 0.0
        self.state.setdefault("last_end", {})
        self.state.setdefault("placement_memo", {})
        self._refresher = False
        self.every(CATALOG_TTL, self._refresh_catalog, name="catalog")
        if self.settings.get("placement") is not None:
            self.every(float(self.settings["placement_every"]), self._place, name="placement")

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

    def _below(self, refresh: bool = False) -> dict[str, dict]:
        """Object -> {"unit", "applied", "source"} from every source's catalog."""
        now = time.monotonic()
        if refresh or not self._catalog or (now - self._catalog_at > CATALOG_TTL and not self._refresher):
            out: dict[str, dict] = {}
            for source in self.settings["sources"]:
                for entry in self.ref(source).query("catalog"):
                    out.setdefault(entry["object"], {
                        "unit": entry.get("unit", ""), "applied": list(entry.get("applied", [])),
                        "source": source})
            self._catalog, self._catalog_at = out, now
            self._anchor(out)
        return self._catalog

    def _refresh_catalog(self) -> None:
        """Keep the catalog below fresh off the request path (a cache hit then makes no
        call below at all)."""
        self._refresher = True
        self._below(refresh=True)

    def _anchor(self, catalog: dict[str, dict]) -> None:
        """An object known below but not heard from yet may have a sample running right
        now: until it arrives, the horizon waits for it as for any live object."""
        globs = [sub.get("objects") for sub in self.inbox.subs.values()]
        if not globs:
            return
        with self.lock:
            last = self.state["last_end"]
            for obj in catalog:
                if obj not in last and (None in globs or any(
                        fnmatch.fnmatchcase(obj, g) for gs in globs if gs for g in gs)):
                    last[obj] = self._complete

    def _steps_for(self, obj: str) -> list[dict]:
        applied = self._catalog.get(obj, {}).get("applied", [])
        return preprocess.pending(self.settings["steps"], applied)

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
        return [n for n in names if any(fnmatch.fnmatchcase(n, g) for g in objects)]

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
        self._below()  # markers of what is applied below
        raw = {s.object: s for s in series_from_rows(rows)}
        return self._window(self._outgoing(raw), since, until)

    def _pull(self, names: list[str], since: float, until: float | None) -> tuple[dict[str, Series], float]:
        """Raw samples of ``names`` from below through the cache, with look-back."""
        by_source: dict[str, list[str]] = {}
        for n in names:
            by_source.setdefault(self._catalog[n]["source"], []).append(n)
        raw: dict[str, Series] = {}
        answered = INF if until is None else until
        t0 = since - self._lookback()
        for source, objs in by_source.items():
            ref = self.ref(source)

            def fetch(o: list[str], a: float, b: float | None, ref=ref) -> tuple[list[Series], float]:
                r = ref.query("report", objects=o, since=a, until=b)
                return [Series.from_wire(w) for w in r["series"]], float(r["until"])

            got, u = self.cache.report(objs, t0, until, fetch)
            answered = min(answered, u)
            raw.update({s.object: s for s in got})
            first = min((float(s.start[0]) for s in got if len(s)), default=t0)
            if self.joins and first < t0:  # a sample reaching back before t0: what ended meanwhile cuts it
                extra, _ = self.cache.report(objs, first, t0, fetch)
                for s in extra:
                    raw[s.object] = merge(raw[s.object], s) if s.object in raw else s
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
        return raw, answered

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
        """Like a collector's report; served from the cache where it can be."""
        self._maybe_redirect()
        if objects is not None and (not isinstance(objects, list) or not all(isinstance(o, str) for o in objects)):
            raise BadRequest("objects must be a list of names or globs")
        if not isinstance(since, (int, float)) or (until is not None and not isinstance(until, (int, float))):
            raise BadRequest("since and until must be numbers (seconds since the epoch)")
        since = float(since)
        names = self._resolve(objects)
        raw, answered = self._pull(names, since, None if until is None else float(until))
        out = self._window(self._outgoing(raw), since, answered)
        wanted = self._up_objects(objects)
        if wanted is not None:
            out = [s for s in out if any(fnmatch.fnmatchcase(s.object, g) for g in wanted)]
        return {"series": [{**s.to_wire(), "applied": self._applied(s.object)} for s in out],
                "until": answered}

    @query
    def connections(self, since: float = 0.0, objects: list[str] | None = None) -> dict:
        """Every source's connection evidence, merged; the same answer a collector gives."""
        self._maybe_redirect()
        evidence.check(since, objects)
        answers = []
        for source in self.settings["sources"]:
            try:
                answers.append(self.ref(source).query("connections", since=float(since),
                                                      objects=self._down_objects(objects)))
            except UnknownOperation:
                continue  # a source without connection evidence: none from it
        return evidence.select(self._evidence_up(evidence.merge(answers)), self._up_objects(objects))

    def _evidence_up(self, merged: dict) -> dict:
        """Evidence from below as it is named here (a domain agent renames members)."""
        return merged

    def _applied(self, obj: str) -> list[str]:
        """Tags of the steps applied to ``obj`` by the time it leaves here."""
        entry = self._catalog.get(obj)
        if entry is None:
            return [preprocess.tag(s) for s in self.settings["steps"]]  # made here (collective)
        return entry["applied"] + [preprocess.tag(s) for s in self._steps_for(obj)]

    @query
    def subscribe(self, request: str, subscriber: str, objects: list[str] | None = None,
                  predicates: list[str] | None = None, interval: float | None = None,
                  deliver: str = "deliver", resume_seq: int | None = None,
                  resume_until: float | None = None) -> dict:
        """Open a standing request here and the matching ones below."""
        self._maybe_redirect()
        answer = super().subscribe(request, subscriber, self._up_objects(objects), predicates, interval,
                                   deliver, resume_seq, resume_until)
        self._open_below(request, objects, predicates)
        return answer

    def _up_objects(self, objects: list[str] | None) -> list[str] | None:
        return objects

    def _below_id(self, request: str, source: str) -> str:
        return f"{self.name}:{request}@{source}"

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
        """Send the standing requests below that :meth:`_anchor_stream` registered."""
        for source in self.settings["sources"]:
            rid = self._below_id(request, source)
            try:
                self.inbox.subscribe(rid, source, self._down_objects(objects), self._pushdown(predicates))
            except Exception:  # noqa: BLE001 - registered; the resubscribe task retries it
                self._unsent.add(rid)
        with contextlib.suppress(Exception):  # a source not there yet is anchored later
            self._below(refresh=True)
        self.host.checkpoint(self)

    @query
    def quit(self, request: str) -> bool:
        found = super().quit(request)
        for source in self.settings["sources"]:
            self.inbox.quit(self._below_id(request, source))
        self.host.checkpoint(self)
        return found

    @query
    def status(self) -> dict:
        return {**super().status(), "host": self.host.name, "cache": dict(self.cache.stats),
                "below": {r: {"seq": s["seq"], "until": s["until"], "source": s.get("source"),
                              "predicates": s.get("predicates", [])} for r, s in self.inbox.subs.items()},
                "moves": self.state.get("placement_memo", {}).get("moves", 0)}

    # -- delegation --------------------------------------------------------------------------

    @configure
    def adopt_step(self, step: dict) -> list[dict]:
        """Take over a pre-processing step (another agent suggests it: nearer the data)."""
        spec = preprocess.check(step)
        with self.lock:
            if spec not in self.settings["steps"]:
                self.settings["steps"] = [*self.settings["steps"], spec]
        self._catalog_at = 0.0
        return list(self.settings["steps"])

    @configure
    def drop_step(self, step: dict) -> bool:
        spec = preprocess.check(step)
        with self.lock:
            steps = self.settings["steps"]
            if spec not in steps:
                return False
            self.settings["steps"] = [s for s in steps if s != spec]
        self._catalog_at = 0.0
        return True

    @configure
    def hand_step(self, step: dict, to: str) -> list[str]:
        """Suggest that ``to`` (an agent below) applies ``step``; this mediator keeps the
        step configured but skips it from then on, because ``to`` marks it applied."""
        spec = preprocess.check(step)
        self.ref(to).configure("adopt_step", step=spec)
        self._below(refresh=True)
        return [preprocess.tag(s) for s in self._steps_for_all()]

    def _steps_for_all(self) -> list[dict]:
        pending: list[dict] = []
        for obj in self._catalog:
            for s in self._steps_for(obj):
                if s not in pending:
                    pending.append(s)
        return pending

    @configure
    def hand_over(self, to: str) -> dict:
        """From now on refuse queries with "ask ``to``"; standing requests are dropped
        here, and their subscribers re-establish them at ``to`` from where they are."""
        if to == self.name:
            raise BadRequest("cannot hand over to itself")
        with self.lock:
            self.settings["successor"] = to
            requests = list(self.subscriptions.requests)
        for request in requests:
            self.quit(request)
        return {"successor": to, "dropped": requests}

    # -- placement ---------------------------------------------------------------------------

    def _place(self) -> None:
        """Gather host resources and source locations, let the policy decide, move."""
        from masa import admin
        from masa.naming import short

        nodes = admin.node_list(self.host.settings)
        up = [n for n in nodes if n["status"] == "up"]
        hosts = {short(n["name"]): n["info"] or {} for n in up if n["type"] == "host"}
        allowed = self.settings.get("hosts")
        if allowed:
            hosts = {h: r for h, r in hosts.items() if h in allowed}
        where = {short(n["name"]): short(n["location"]) for n in up if n["type"] == "agent"}
        sources = self.settings["sources"]
        local: dict[str, float] = {}
        for s in sources:
            if where.get(s):
                local[where[s]] = local.get(where[s], 0.0) + 1.0 / len(sources)
        memo = self.state["placement_memo"]
        target = decide(self.host.name, hosts, local, memo, time.time(),
                        Policy.from_settings(self.settings["placement"]), float(self.settings["own_load"]))
        if target:
            memo["moves"] = memo.get("moves", 0) + 1
            self.move_to(target)
