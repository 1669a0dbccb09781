"""Turn a collector's settings into a meter: procfs here, SNMP, or an external probe.

Every meter answers ``sample()`` with ``(object, unit, start, end, value)`` rows (rates
since the previous call) and ``close()``; the collector does not care which it has.  A
meter that can also see which of its objects hold TCP connections (procfs, on its own
host) answers ``connections()`` with observations for :mod:`agents.evidence`; the others
have no such method, and their collectors answer the ``connections`` query empty.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol

from masa.config import Settings
from masa.errors import BadRequest
from probes.errors import ProbeError

#: What a collector can meter with: this host's /proc, an SNMP agent, an external probe.
PROBES = ("procfs", "snmp", "remote")


class Meter(Protocol):
    def sample(self) -> list[tuple[str, str, float, float, float]]: ...

    def close(self) -> None: ...


class ProcfsMeter:
    def __init__(self, settings: dict, host: str) -> None:
        from probes.procfs import ProcfsProbe

        self.probe = ProcfsProbe(settings.get("rules") or (), host=settings.get("label") or host,
                                 per_process=settings.get("per_process", "name"),
                                 match=settings.get("match"))
        self._sampler = None

    def sample(self) -> list[tuple]:
        return [tuple(s) for s in self.probe.sample()]

    def connections(self) -> list[tuple]:
        """Connection evidence now, named like this meter's objects."""
        if self._sampler is None:
            from agents.evidence import ConnectionSampler

            self._sampler = ConnectionSampler(self.probe)
        return self._sampler.sample()

    def close(self) -> None:
        pass


class RemoteMeter:
    """An external probe process (``masa probe NAME``) reached by name, authenticated.

    The collector ticks on the host scheduler's pool, a different thread almost every
    time, while a Pyro5 proxy belongs to one thread: so each call claims the proxy
    (calls are one at a time, under this meter's lock) and keeps one connection, rather
    than failing on every thread but the one that made it."""

    def __init__(self, settings: dict, deployment: Settings) -> None:
        from probes.remote import connect

        if not settings.get("source"):
            raise BadRequest("a remote collector needs 'source': the external probe's name")
        self.source = settings["source"]
        # a missing probe must not hold a tick much longer than its interval
        wait = min(5.0, max(float(settings.get("interval", 1.0)), 0.5))
        self._connect = lambda: connect(self.source, deployment, wait=wait)
        self._lock = threading.Lock()
        self.proxy = None

    def sample(self) -> list[tuple]:
        from masa.errors import AgentNotFound

        with self._lock:
            if self.proxy is None:
                try:
                    self.proxy = self._connect()
                except AgentNotFound as exc:
                    raise ProbeError(f"external probe {self.source!r} not found: {exc}") from None
            self.proxy._pyroClaimOwnership()
            try:
                # a row that is no list is left as it came: the collector drops it, counted
                return [tuple(r) if isinstance(r, list) else r for r in self.proxy.sample()]
            except Exception:
                self._drop()  # reconnect (and re-resolve the name) on the next tick
                raise

    def _drop(self) -> None:
        proxy, self.proxy = self.proxy, None
        if proxy is not None:
            proxy._pyroClaimOwnership()
            with contextlib.suppress(Exception):
                proxy._pyroRelease()

    def close(self) -> None:
        with self._lock:
            self._drop()


def check_settings(settings: dict[str, Any]) -> None:
    """Refuse a collector's static mistakes at create and reconfigure, with the probe's
    own words (SNMP: the check behind ``masa collect snmp`` too), instead of a failing
    tick later."""
    kind = settings.get("probe", "procfs")
    try:
        if kind == "procfs":
            from probes.procfs import PatternError, ProcfsProbe

            rules = settings.get("rules") or ""
            if not isinstance(rules, str):
                raise ValueError("rules must be text: APP=KIND:PATTERN[,...];... or @FILE")
            try:
                ProcfsProbe(rules, host=settings.get("label") or "check", per_process=settings.get("per_process", "name"),
                            match=settings.get("match"))
            except PatternError as exc:
                raise ValueError(f"match: {exc}") from None
        elif kind == "snmp":
            from probes.snmp_meter import check_settings as check_snmp

            check_snmp(settings)
        elif kind == "remote":
            if not settings.get("source") or not isinstance(settings["source"], str):
                raise ValueError("a remote collector needs 'source': the external probe's name")
        else:
            raise ValueError(f"unknown probe {kind!r}: use {', '.join(PROBES)}")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def make_meter(settings: dict[str, Any], host: str, deployment: Settings) -> Meter:
    kind = settings.get("probe", "procfs")
    if kind == "procfs":
        return ProcfsMeter(settings, host)
    if kind == "remote":
        return RemoteMeter(settings, deployment)
    if kind == "snmp":
        from probes.snmp_meter import SnmpMeter

        return SnmpMeter(settings)
    raise BadRequest(f"unknown probe {kind!r}: use {', '.join(PROBES)}")
