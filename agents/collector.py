"""The collector agent: one homogeneous interface over every kind of probe.

It reads its own host through procfs, an SNMP agent it polls, or an external probe
process (``masa probe``) where no agent host may run, and serves what it metered through
the collection query interface it shares with mediators and domain agents
(:class:`agents.source.ActivitySource`).
"""

from __future__ import annotations

import logging
import math
import numbers
import threading
import time
from typing import Any

import Pyro5.errors

from agents.meters import Meter, check_settings, make_meter
from agents.source import ActivitySource
from masa import checks
from masa.activity import BYTES_PER_S, CPU, REQUESTS_PER_S
from masa.errors import MasaError, cut
from probes.errors import ProbeError

log = logging.getLogger("masa.collector")

#: units of rates of something counted (CPU time, bytes, requests): below 0 is impossible
NON_NEGATIVE_UNITS = frozenset({CPU, BYTES_PER_S, REQUESTS_PER_S})
#: objects whose dropped samples ``status`` names one by one; the rest are counted together
MAX_DISCARDED_OBJECTS = 1000
OTHER_OBJECTS = "(other objects)"
NAMELESS = "(no object name)"
MALFORMED = "not (object, unit, start, end, value)"

class CollectorAgent(ActivitySource):
    """Settings: ``probe`` (procfs | snmp | remote), ``interval`` (s) and the probe's
    own (procfs: ``match``, ``rules``, ``per_process``, ``label``, ``connections_every``
    (s between samples of TCP connections, the dependency evidence of
    :mod:`agents.evidence`; 0: none); snmp: ``target``, ``community`` or
    ``v3_user``/``auth_key``/``priv_key``; remote: ``source``)."""

    defaults = {"probe": "procfs", "interval": 1.0, "connections_every": 5.0}

    def setup(self, **settings: Any) -> None:
        _check(settings)
        super().setup(**settings)

    def on_start(self) -> None:
        super().on_start()
        self._meter_lock = threading.Lock()
        self._meter: Meter | None = None
        self.health = MeterHealth()
        self.every(float(self.settings["interval"]), self._tick, name="sample")
        self._schedule_connections()

    def _schedule_connections(self) -> None:
        """Connections change far more slowly than CPU, and reading every process's fds
        costs tens of milliseconds: sampled every ``connections_every`` s, procfs only."""
        every = self._connections_every()
        if every > 0 and self.settings["probe"] == "procfs":
            self.every(every, self._observe_connections, name="connections")

    def _observe_connections(self) -> None:
        if not self._connections_every():
            return  # switched off at run time (a scheduled task cannot be withdrawn)
        with self._meter_lock:
            if self._meter is None:
                self._meter = make_meter(self.settings, self.host.name, self.host.settings)
            sample = getattr(self._meter, "connections", None)
            rows = sample() if sample is not None else []
        if rows:
            self.observe(rows)

    def _connections_every(self) -> float:
        return float(self.settings.get("connections_every", self.defaults["connections_every"]) or 0)

    def delivery_period(self) -> float:
        return min(float(self.settings["interval"]), 1.0)

    def _tick(self) -> None:
        try:
            with self._meter_lock:
                if self._meter is None:
                    self._meter = make_meter(self.settings, self.host.name, self.host.settings)
                rows = self._meter.sample()
        except Exception as exc:  # noqa: BLE001 - a failed sample is counted and shown, not fatal
            news = self.health.failed(exc)
            if news is not None:  # logged once per change of what goes wrong
                log.warning("collector %s: sampling fails: %s (counted in status until it works again)",
                            self.name, news, exc_info=not _expected(exc))
            return
        if self.health.ok():
            log.warning("collector %s: sampling works again (%d failed samples so far)",
                        self.name, self.health.errors)
        self.record(self._screen(rows))

    def _screen(self, rows: list) -> list[tuple]:
        """The meter's rows that are samples.  Every kind of meter passes here, a remote
        probe (or a hand-written one speaking its wire form) among them, so one check
        guards them all: a NaN made the store refuse the whole tick's batch (every object
        lost), an interval that is none made every ``report`` fail, an infinite value or
        a negative rate reached every subscriber and the modeler, which left the object
        out of its runs.  Dropped rows are counted per object in ``status`` and logged
        once per object, not once per tick."""
        kept = []
        for row in rows:
            why = unusable(row)
            if why is None:
                kept.append(row)
                continue
            obj = row[0] if isinstance(row, (tuple, list)) and row and isinstance(row[0], str) else NAMELESS
            if self.health.discard(obj, why):
                log.warning("collector %s: dropped a sample of %s from its meter: %s (counted in status "
                            "'discarded'; logged once per object)", self.name, cut(obj, 200), why)
        return kept

    def on_reconfigure(self, changed: dict) -> None:
        # the settings as a whole, before anything is applied: a refused change raises
        # here and the platform puts the settings in force back (Agent.reconfigure)
        _check(self.settings)
        super().on_reconfigure(changed)  # the source's settings
        if "interval" in changed:
            self.every(float(changed["interval"]), self._tick, name="sample")
        if "connections_every" in changed:
            self._schedule_connections()
        if set(changed) - {"interval", "retention", "connections_every"}:
            self._close_meter()  # rebuilt with the new settings on the next tick

    def _close_meter(self) -> None:
        with self._meter_lock:
            if self._meter is not None:
                self._meter.close()
                self._meter = None

    def release(self) -> None:
        self._close_meter()
        super().release()

    def status(self) -> dict:
        """Besides the source's: ``meter_errors`` (failed samples since the collector
        started here), ``last_meter_error`` (``{"error", "time", "since"}`` of the latest
        failure: the first of its run of identical failures is ``since``; None if none),
        ``meter_failing`` (the latest sample failed), ``last_sample`` (time of the
        latest good one, or None), ``discarded`` (rows dropped as no sample, per object:
        :func:`unusable`) and ``last_discarded`` (the latest of them and why, or None)."""
        return {**super().status(), "probe": self.settings["probe"], "interval": self.settings["interval"],
                **self.health.status()}


class MeterHealth:
    """How sampling goes: failures counted, the latest kept, changes reported once.
    Run-time facts of this meter on this host, so not part of the agent's state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.errors = 0
        self.last: dict | None = None
        self.failing = False
        self.last_sample: float | None = None
        self.discarded: dict[str, int] = {}
        self.last_discarded: str | None = None

    def failed(self, exc: Exception) -> str | None:
        """Count a failure; its text if it is news (the first, or not the last one's)."""
        text = str(exc) if isinstance(exc, (ProbeError, MasaError)) else f"{type(exc).__name__}: {exc}"
        now = time.time()
        with self._lock:
            news = not self.failing or self.last is None or self.last["error"] != text
            self.errors += 1
            self.last = {"error": text, "time": now, "since": now if news else self.last["since"]}
            self.failing = True
            return text if news else None

    def ok(self) -> bool:
        """A good sample; True if sampling failed until now."""
        with self._lock:
            self.last_sample = time.time()
            recovered, self.failing = self.failing, False
            return recovered

    def discard(self, obj: str, why: str) -> bool:
        """Count a row of ``obj`` dropped as no sample; True if it is that object's first
        (what is logged).  A meter sending garbage under ever new names makes the count
        of ``OTHER_OBJECTS`` grow, not ``status``."""
        obj = cut(obj, 512)
        with self._lock:
            if obj not in self.discarded and len(self.discarded) >= MAX_DISCARDED_OBJECTS:
                obj = OTHER_OBJECTS
            first = obj not in self.discarded
            self.discarded[obj] = self.discarded.get(obj, 0) + 1
            self.last_discarded = f"{obj}: {why}"
            return first

    def status(self) -> dict:
        with self._lock:
            return {"meter_errors": self.errors, "last_meter_error": dict(self.last) if self.last else None,
                    "meter_failing": self.failing, "last_sample": self.last_sample,
                    "discarded": dict(self.discarded), "last_discarded": self.last_discarded}


def unusable(row: object) -> str | None:
    """Why a meter's row cannot be a sample, or None if it can: a rate over a finite,
    forward interval ``[start, end)``, itself finite, and not below 0 in a unit of rates
    of something counted (:data:`NON_NEGATIVE_UNITS`; a unit a remote probe brings may
    measure something that can be negative).  A legitimate 0 is a sample."""
    try:
        obj, unit, start, end, value = row  # type: ignore[misc]
    except (TypeError, ValueError):
        return MALFORMED
    if not isinstance(obj, str) or not isinstance(unit, str) or not all(
            isinstance(x, numbers.Real) and not isinstance(x, bool) for x in (start, end, value)):
        return MALFORMED
    if not (math.isfinite(start) and math.isfinite(end) and end > start):
        return f"interval [{start!r}, {end!r}) is not a finite, forward interval"
    if not math.isfinite(value):
        return f"value {value!r} is not finite"
    if value < 0 and unit in NON_NEGATIVE_UNITS:
        return f"a negative rate ({value!r} {unit})"
    return None


def _expected(exc: Exception) -> bool:
    """Failures a probe reports in words (no answer, refused, not found, gone): no
    traceback; anything else is a bug worth one."""
    return isinstance(exc, (ProbeError, MasaError, Pyro5.errors.CommunicationError))


def _check(settings: dict) -> None:
    checks.number(settings.get("interval", 1.0), "interval", checks.MIN_PERIOD, 3600, unit="seconds")
    _check_connections_every(settings.get("connections_every", 5.0))
    check_settings(settings)


def _check_connections_every(value: Any) -> None:
    """0 (or None): never; else no more often than sampling may run (a period of a few
    microseconds stalled the host's scheduler) and at least once a day."""
    if value is None or value == 0 and not isinstance(value, bool):
        return
    checks.number(value, "connections_every", checks.MIN_PERIOD, checks.DAY, unit="seconds",
                  note=" (or 0: no connection evidence)")
