"""The collector agent: one homogeneous interface over every kind of probe.

It reads its own host through procfs, an SNMP agent it polls, or an external probe
process (``masa probe``) where no agent host may run, and serves what it metered through
the collection query interface it shares with mediators and domain agents
(:class:`agents.source.ActivitySource`).
"""

from __future__ import annotations

import threading
from typing import Any

from agents.meters import Meter, make_meter
from agents.source import ActivitySource
from masa.errors import BadRequest

PROBES = ("procfs", "snmp", "remote")


class CollectorAgent(ActivitySource):
    """Settings: ``probe`` (procfs | snmp | remote), ``interval`` (s) and the probe's
    own (procfs: ``match``, ``rules``, ``per_process``, ``label``, ``connections_every``
    (s between samples of TCP connections, the dependency evidence of
    :mod:`agents.evidence`; 0: none); snmp: ``target``, ``community`` or
    ``v3_user``/``auth_key``/``priv_key``; remote: ``source``)."""

    defaults = {"probe": "procfs", "interval": 1.0, "connections_every": 5.0}

    def setup(self, **settings: Any) -> None:
        _check_interval(settings.get("interval", 1.0))
        _check_connections_every(settings.get("connections_every", 5.0))
        probe = settings.get("probe", "procfs")
        if probe not in PROBES:
            raise BadRequest(f"unknown probe {probe!r}: use {', '.join(PROBES)}")
        if probe == "remote" and not settings.get("source"):
            raise BadRequest("a remote collector needs 'source': the external probe's name")
        if probe == "snmp" and not settings.get("target"):
            raise BadRequest("an SNMP collector needs 'target', e.g. udp:10.0.0.1:161")
        super().setup(**settings)

    def on_start(self) -> None:
        super().on_start()
        self._meter_lock = threading.Lock()
        self._meter: Meter | None = None
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
        with self._meter_lock:
            if self._meter is None:
                self._meter = make_meter(self.settings, self.host.name, self.host.settings)
            rows = self._meter.sample()
        self.record(rows)

    def on_reconfigure(self, changed: dict) -> None:
        if "interval" in changed:
            _check_interval(changed["interval"])
            self.every(float(changed["interval"]), self._tick, name="sample")
        if "connections_every" in changed:
            _check_connections_every(changed["connections_every"])
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
        return {**super().status(), "probe": self.settings["probe"], "interval": self.settings["interval"]}


def _check_connections_every(value: Any) -> None:
    if value is not None and (not isinstance(value, (int, float)) or value < 0):
        raise BadRequest("connections_every must be a number of seconds (0: no connection evidence)")


def _check_interval(value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.05 <= value <= 3600:
        raise BadRequest("interval must be a number of seconds between 0.05 and 3600")
