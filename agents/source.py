"""What every agent that hands out activity has in common: its store and its interface.

Collectors, recorders, mediators and domain agents all keep what they hold in an activity
store and answer the collection query interface (docs/ARCHITECTURE.md) from it:
``catalog``, ``report``, ``subscribe``, ``quit``, ``connections``, ``status``.  Subclasses
only decide how samples arrive (a meter, a stream from below) and call
:meth:`ActivitySource.record` (and :meth:`ActivitySource.observe` for connection
evidence, :mod:`agents.evidence`; a source that never observes answers it empty).
"""

from __future__ import annotations

import bisect
import threading
import time
from typing import Any

from agents import checks, evidence
from agents.standing import Subscriptions, matches, series_from_rows
from masa.activity import Series
from masa.agent import Agent, query
from masa.errors import BadRequest
from masa.store import Store, check_url

MAX_REPORT_SAMPLES = 500_000  # one report answer; ask again with a later `since` for more
DEFAULTS = {"retention": 3600.0, "store": None}


def page(rows: list[tuple], until: float, cap: int) -> tuple[list[tuple], float]:
    """At most ``cap`` of ``(object, unit, start, end, value)`` rows, and up to where
    they are complete: the cut falls between two end times, never inside the group of
    samples sharing one (every object sampled in the same tick), because the next page
    asks for ``end > until``.  A single end time with more than ``cap`` samples is
    answered whole rather than losing any of it."""
    cap = max(int(cap), 1)
    if len(rows) <= cap:
        return rows, until
    rows = sorted(rows, key=lambda r: r[3])
    ends = [r[3] for r in rows]
    first_out = ends[cap]  # the end time of the first sample past the cap
    cut = bisect.bisect_left(ends, first_out)  # where its group begins
    if cut == 0:  # one group alone exceeds the cap: take it whole
        cut = bisect.bisect_right(ends, first_out)
    return rows[:cut], ends[cut - 1]


def check_report(objects: object, since: object, until: object) -> None:
    """The arguments of ``report``, for every agent that answers it: a bounded list of
    names or globs, and a window of finite times that does not run backwards (an answer's
    ``until`` is where the next report continues)."""
    checks.names(objects)
    checks.timestamp(since, "since")
    if until is not None and checks.timestamp(until, "until") < since:
        raise BadRequest(f"until ({until!r}) is before since ({since!r})")


def check_settings(settings: dict[str, Any]) -> None:
    """A source's own settings, at create and at every reconfigure: a ``retention`` that
    is not a positive number made every prune delete everything held or fail, and a
    ``store`` that is no database URL failed only when the store was next opened (after
    a move or a restart)."""
    checks.number(settings.get("retention"), "retention", positive=True, unit="seconds")
    check_url(settings.get("store"), "a SQLite file in the host's state folder")


class ActivitySource(Agent):
    """Base of agents that serve activity.  Settings: ``retention`` (s), ``store`` (URL;
    default a SQLite file in the host's state folder, one per agent)."""

    defaults: dict[str, Any] = DEFAULTS
    max_report_samples = MAX_REPORT_SAMPLES  # one report answer (a class attribute: tests lower it)

    def setup(self, **settings: Any) -> None:
        merged = {**DEFAULTS, **self.defaults, **settings}
        check_settings(merged)
        super().setup(**merged)

    def on_reconfigure(self, changed: dict) -> None:
        check_settings(self.settings)
        super().on_reconfigure(changed)

    def on_start(self) -> None:
        self._store_lock = threading.Lock()
        self._store: Store | None = None
        self._complete = self.state.setdefault("complete_until", time.time())
        self._last_prune = 0.0
        self.subscriptions = Subscriptions(self, self._read)
        carried = self.state.pop("carry", None)
        if carried:  # samples brought along from the previous host's store
            self.store.add_samples([tuple(r) for r in carried])
        observed = self.state.pop("carry_observations", None)
        if observed:  # connection evidence too (replace: a store left here before has them)
            evidence.keep(self.store, [tuple(r) for r in observed], replace=True)
        self.every(self.delivery_period(), self._deliver, name="deliver")

    def delivery_period(self) -> float:
        return 0.5

    # -- the store -----------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        with self._store_lock:
            if self._store is None:
                url = self.settings.get("store") or \
                    f"sqlite:///{self.host.state_dir / f'activity-{self.name}.db'}"
                self._store = Store(url)
            return self._store

    def record(self, rows: list[tuple], complete_until: float | None = None) -> None:
        """Keep ``(object, unit, start, end, value)`` rows; everything ending up to
        ``complete_until`` (default: the newest row) is now held and may be delivered."""
        if rows:
            self.store.add_samples(rows)
        newest = complete_until if complete_until is not None else max((r[3] for r in rows), default=None)
        if newest is not None and newest > self._complete:
            self._complete = self.state["complete_until"] = newest
        self._prune()

    def observe(self, rows: list[tuple[str, str, str, float, float]]) -> None:
        """Keep ``(kind, subject, target, count, seen)`` observations (connection evidence)."""
        evidence.keep(self.store, rows)
        newest = max((r[4] for r in rows), default=None)
        if newest is not None and newest > self.state.get("observed_until", float("-inf")):
            self.state["observed_until"] = newest
        self._prune()

    def _prune(self) -> None:
        now = time.time()
        if now - self._last_prune > 60:
            self._last_prune = now
            horizon = now - float(self.settings.get("retention", 3600))
            self.store.prune_samples(horizon)
            self.store.prune_observations(horizon)

    def _read(self, since: float, until: float, objects: list[str] | None = None) -> list[Series]:
        return series_from_rows(self.store.samples(since, until, objects))

    def _deliver(self) -> None:
        # Checkpoint after acknowledged batches: a restart then resumes from what was
        # acknowledged rather than from up to five seconds earlier.
        if self.subscriptions.deliver_all(horizon=lambda: self._complete):
            self.host.checkpoint(self)

    def carry_since(self) -> float | None:
        """From when on held samples must travel with the agent when it moves: what no
        subscriber has acknowledged yet (the store stays behind on the old host)."""
        acked = [spec["acked_until"] for spec in self.subscriptions.requests.values()]
        return min(acked) if acked else None

    def release(self) -> None:
        """Close the store (before a move, at stop); it reopens on first use."""
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def before_move(self, target: str) -> None:
        # The platform has drained calls and periodic tasks (deliveries) by now, so the
        # acknowledged positions in the state are final.
        since = self.carry_since()
        if since is not None:
            self.state["carry"] = [list(r) for r in self.store.samples(since)]
        observed = evidence.held(self.store)
        if observed:
            self.state["carry_observations"] = [list(r) for r in observed]
        self.release()

    def on_stop(self) -> None:
        self.release()

    # -- the collection query interface -------------------------------------------------------

    @query
    def catalog(self) -> list[dict]:
        return [{"object": o, "unit": u} for o, u in sorted(self.store.activity_objects())]

    @query
    def report(self, objects: list[str] | None = None, since: float = 0.0,
               until: float | None = None) -> dict:
        """All samples of ``objects`` (names or globs; None: all) ending after ``since``.

        The answer's ``until`` is where a refreshed report continues, so polling for
        new data costs one indexed range read, never a new setup."""
        check_report(objects, since, until)
        horizon = self._complete if until is None else min(float(until), self._complete)
        exact = None if objects is None or any(any(c in o for c in "*?[") for o in objects) else objects
        rows = self.store.samples(float(since), horizon, exact)
        if exact is None and objects is not None:  # globs: count only what is asked for
            wanted = {o for o in {r[0] for r in rows} if matches(objects, o)}
            rows = [r for r in rows if r[0] in wanted]
        rows, horizon = page(rows, horizon, self.max_report_samples)
        series = series_from_rows(sorted(rows))
        return {"series": [s.to_wire() for s in series], "until": horizon}

    @query
    def subscribe(self, request: str, subscriber: str, objects: list[str] | None = None,
                  predicates: list[str] | None = None, interval: float | None = None,
                  deliver: str = "deliver", resume_seq: int | None = None,
                  resume_until: float | None = None) -> dict:
        """Open (or re-open) a standing request; samples are pushed to ``subscriber``."""
        answer = self.subscriptions.subscribe(request, subscriber, objects, predicates, interval,
                                              deliver, resume_seq, resume_until,
                                              anchor=lambda start: self._anchor_stream(request, start))
        self.host.checkpoint(self)  # a standing request must survive a restart at once
        return answer

    def _anchor_stream(self, request: str, start: float) -> None:
        """Called under the lock as ``request`` opens with its stream at ``start``: a source
        whose data for it is still to come (a mediator) lowers its horizon here."""

    @query
    def quit(self, request: str) -> bool:
        found = self.subscriptions.quit(request)
        self.host.checkpoint(self)
        return found

    @query
    def connections(self, since: float = 0.0, objects: list[str] | None = None) -> dict:
        """Connection evidence last seen after ``since`` (wire form: :mod:`agents.evidence`);
        empty lists from a source that observes none (SNMP, a remote probe, a recorder)."""
        evidence.check(since, objects)
        return evidence.answer(self.store, float(since), self.state.get("observed_until"), objects)

    @query
    def status(self) -> dict:
        return {"kind": self.kind, "complete_until": self._complete,
                "requests": sorted(self.subscriptions.requests),
                "delivered": self.subscriptions.delivered,
                "delivery_errors": self.state.get("delivery_errors", 0),
                "last_delivery_error": self.subscriptions.last_error,
                "retrying": sorted(self.subscriptions.retry)}
