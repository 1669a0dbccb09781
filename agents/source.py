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
import logging
import threading
import time
from typing import Any

import msgpack
import numpy as np
from sqlalchemy.engine import make_url

from agents import evidence
from agents.standing import Subscriptions, matches, series_from_rows
from masa import checks
from masa.activity import Series
from masa.agent import Agent, query
from masa.errors import BadRequest, MoveFailed, cut
from masa.store import Store, check_url

log = logging.getLogger("masa.source")

MAX_REPORT_SAMPLES = 500_000  # one report answer; ask again with a later `since` for more
DEFAULTS = {"retention": 3600.0, "store": None}
#: bytes of a move package left for all but the agent's state (the package's other
#: fields, Pyro5's call around it): the carried history fills the rest
CARRY_RESERVE = 64 * 1024
SAMPLE_BYTES = 24  # one carried sample: start, end and value as float64
SERIES_BYTES = 64  # a carried object's series besides its samples, name and unit
#: seconds between two looks at whether the store's file is still there (one ``stat``)
STORE_CHECK_EVERY = 1.0


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


def columns(rows: list[tuple]) -> list[dict]:
    """``(object, unit, start, end, value)`` rows as one series per object in the activity
    wire form (:meth:`masa.activity.Series.to_wire`: float64 columns as bytes), 24 bytes a
    sample where a row as a list costs 40 and more in msgpack.  Not checked as a
    :class:`Series` is (sorted, not overlapping): what a store holds travels as it is."""
    groups: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for obj, unit, a, b, v in rows:
        groups.setdefault((obj, unit), []).append((a, b, v))
    out = []
    for (obj, unit), buf in groups.items():
        arr = np.asarray(buf, dtype="<f8")
        out.append({"object": obj, "unit": unit, "start": arr[:, 0].tobytes(),
                    "end": arr[:, 1].tobytes(), "value": arr[:, 2].tobytes()})
    return out


def rows_of(series: list[dict]) -> list[tuple]:
    """The rows of :func:`columns`' series again; a malformed series is refused."""
    rows: list[tuple] = []
    for w in series:
        try:
            obj, unit = w["object"], w["unit"]
            start, end, value = (np.frombuffer(w[k], dtype="<f8").tolist() for k in ("start", "end", "value"))
        except (KeyError, TypeError, ValueError) as exc:
            raise BadRequest(f"carried history: a malformed series ({type(exc).__name__}: {exc})") from None
        if not isinstance(obj, str) or not isinstance(unit, str) or not len(start) == len(end) == len(value):
            raise BadRequest(f"carried history: a malformed series of {obj!r}")
        rows += [(obj, unit, a, b, v) for a, b, v in zip(start, end, value, strict=True)]
    return rows


class ActivitySource(Agent):
    """Base of agents that serve activity.  Settings: ``retention`` (s), ``store`` (URL;
    default a SQLite file in the host's state folder, one per agent)."""

    defaults: dict[str, Any] = DEFAULTS
    max_report_samples = MAX_REPORT_SAMPLES  # one report answer (a class attribute: tests lower it)
    #: bytes a move package may take (None: the host's MASA_MAX_MESSAGE; tests lower it)
    max_carry_bytes: int | None = None

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
        self._unpack(self.state.pop("carry", None), self.state.pop("carry_observations", None))
        self.every(self.delivery_period(), self._deliver, name="deliver")
        self._store_check_error: str | None = None
        self.every(STORE_CHECK_EVERY, self._keep_store_in_place, name="keep-store")

    def _unpack(self, carried: dict | list | None, observed: list | None = None) -> None:
        """Into this host's store what :meth:`before_move` brought along.  Connection
        evidence replaces what is held (a store left here by an earlier stay has it
        already, and its counts must not add up twice).  A list of rows and a separate
        ``observed`` are how earlier versions carried (a checkpoint may still hold them)."""
        if isinstance(carried, list):
            carried = {"rows": carried}
        carried = carried or {}
        rows = [tuple(r) for r in carried.get("rows", [])] + rows_of(carried.get("series", []))
        if rows:
            self.store.add_samples(rows)
        observed = carried.get("observations") or observed
        if observed:
            evidence.keep(self.store, [tuple(r) for r in observed], replace=True)
        cut = carried.get("from")
        if cut is not None and cut > self.state.get("history_from", float("-inf")):
            self.state["history_from"] = cut

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

    def _keep_store_in_place(self) -> None:
        """Put the store's file back, with everything it held, if it was deleted (or its
        folder removed, or the file replaced) while the agent runs.  The open connection
        goes on reading and writing the deleted file without an error, so nothing shows
        until the next restart, move or watchdog restart, which finds an empty store: the
        history and connection evidence gone, and standing requests' positions pointing at
        samples that no longer exist.  Checked on its own beat, not only when something
        is written, since a recorder whose source fell silent writes nothing.  A store on
        a database server has no file and is never concerned."""
        store = self._store
        if store is None:  # not opened yet (or released): the next opening finds the file
            return
        try:
            lost = store.keep_file_in_place()
        except Exception as exc:  # noqa: BLE001 - tried again on the next beat, logged once
            text = f"{type(exc).__name__}: {cut(str(exc), 300)}"
            if text != self._store_check_error:
                log.warning("%s: its store's file %s could not be made again (tried every %s s): %s",
                            self.name, store.file, STORE_CHECK_EVERY, text)
            self._store_check_error = text
            return
        self._store_check_error = None
        if lost is not None:
            log.warning("%s: its store's file %s %s while the agent ran; made it again%s", self.name,
                        store.file, lost.why, " with everything it held" if lost.copy_error is None
                        else f", EMPTY: what it held could not be copied ({lost.copy_error})")

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
            if self.state.get("history_from", horizon) < horizon:  # retention reached it:
                self.state.pop("history_from", None)  # nothing before it is held anyway

    def _read(self, since: float, until: float, objects: list[str] | None = None) -> list[Series]:
        return series_from_rows(self.store.samples(since, until, objects))

    def _deliver(self) -> None:
        # Checkpoint after acknowledged batches: a restart then resumes from what was
        # acknowledged rather than from up to five seconds earlier.
        if self.subscriptions.deliver_all(horizon=lambda: self._complete):
            self.host.checkpoint(self)

    def carry_since(self) -> float | None:
        """From when on held samples must travel with the agent when it moves, whatever
        their size: what no subscriber has acknowledged yet exists nowhere else once the
        store stays behind on the old host (:meth:`_pack` carries older history too, as
        far as it fits).  None: nothing must."""
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
        self.state.pop("carry", None)  # left by an attempt that failed
        carry = self._pack()
        if carry is not None:
            self.state["carry"] = carry
        self.release()

    def after_move(self, source: str) -> None:
        # A failed move leaves the agent here with what it was to carry: drop it, or every
        # checkpoint would hold it and a restart would apply it again.
        self.state.pop("carry", None)
        super().after_move(source)

    def _shared_store(self) -> bool:
        """Whether the store is a database server the next host reaches as well (``store``
        a PostgreSQL URL, say): its history is there already.  A SQLite file, the default
        or one named, is this host's own."""
        url = self.settings.get("store")
        return bool(url) and make_url(url).get_backend_name() != "sqlite"

    def _pack(self) -> dict | None:
        """What travels besides the state: the held history and connection evidence.

        All of it, within ``retention``, not only what subscribers have not acknowledged
        yet: the default store is a file in the old host's state folder, which stays
        behind, and ``report`` answers from the store, so a recorder or collector nobody
        subscribes to would arrive with nothing.  Nothing when the store is shared.
        Samples travel as float64 columns per object (:func:`columns`) within what a move
        package may carry (MASA_MAX_MESSAGE, less the rest of the state): if not all fit,
        the newest that do, cut between two end times, and ``from`` says where they begin
        (``history_from`` on arrival, in ``status`` and in a ``report`` reaching before
        it).  What no subscriber has acknowledged (:meth:`carry_since`) exists nowhere
        else and must travel whole: if it cannot, the move is refused here (MoveFailed),
        before anything is sent, and the agent stays with nothing lost."""
        if self._shared_store():
            return None
        observed = [list(r) for r in evidence.held(self.store)]
        rows = self.store.samples(time.time() - float(self.settings.get("retention", 3600.0)))
        limit = self.max_carry_bytes or getattr(self.host.settings, "max_message", 16 * 1024 * 1024)
        room = (limit - CARRY_RESERVE - len(msgpack.packb(self.state, use_bin_type=True))
                - len(msgpack.packb(observed, use_bin_type=True))
                - sum(SERIES_BYTES + len(o.encode()) + len(u.encode()) for o, u in {r[:2] for r in rows}))
        fits, cut = max(room // SAMPLE_BYTES, 0), None
        if len(rows) > fits:
            cut = sorted((r[3] for r in rows), reverse=True)[fits]  # newest end left out
            must = self.carry_since()
            if must is not None and cut > must:
                waiting = sum(r[3] > must for r in rows)
                raise MoveFailed(f"{self.name}: its {waiting} samples no subscriber has acknowledged "
                                 f"yet do not fit a move package ({limit} bytes, MASA_MAX_MESSAGE); "
                                 "it stays until they are delivered")
            rows = [r for r in rows if r[3] > cut]
        return {"series": columns(rows), "observations": observed, "from": cut}

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
        new data costs one indexed range read, never a new setup.  Its ``history_from``,
        when a move could not carry all history (see :meth:`_pack`) and ``since`` reaches
        before it: samples ending up to then may be missing here."""
        check_report(objects, since, until)
        horizon = self._complete if until is None else min(float(until), self._complete)
        exact = None if objects is None or any(any(c in o for c in "*?[") for o in objects) else objects
        rows = self.store.samples(float(since), horizon, exact)
        if exact is None and objects is not None:  # globs: count only what is asked for
            wanted = {o for o in {r[0] for r in rows} if matches(objects, o)}
            rows = [r for r in rows if r[0] in wanted]
        rows, horizon = page(rows, horizon, self.max_report_samples)
        series = series_from_rows(sorted(rows))
        answer = {"series": [s.to_wire() for s in series], "until": horizon}
        held = self.state.get("history_from")
        if held is not None and since < held:  # a move left older history behind
            answer["history_from"] = held
        return answer

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
                "history_from": self.state.get("history_from"),
                "requests": sorted(self.subscriptions.requests),
                "delivered": self.subscriptions.delivered,
                "delivery_errors": self.state.get("delivery_errors", 0),
                "last_delivery_error": self.subscriptions.last_error,
                "retrying": sorted(self.subscriptions.retry)}
