"""Turn a collector's settings into a meter: procfs here, SNMP, or an external probe.

Every meter answers ``sample()`` with ``(object, unit, start, end, value)`` rows (rates
since the previous call) and ``close()``; the collector does not care which it has.  A
meter that can also see which of its objects hold TCP connections (procfs, on its own
host) answers ``connections()`` with observations for :mod:`agents.evidence`; the others
have no such method, and their collectors answer the ``connections`` query empty.
"""

from __future__ import annotations

from typing import Any, Protocol

from masa.config import Settings
from masa.errors import BadRequest


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
    """An external probe process (``masa probe NAME``) reached by name, authenticated."""

    def __init__(self, settings: dict, deployment: Settings) -> None:
        from probes.remote import connect

        if not settings.get("source"):
            raise BadRequest("a remote collector needs 'source': the external probe's name")
        self.source = settings["source"]
        self._connect = lambda: connect(self.source, deployment)
        self.proxy = None

    def sample(self) -> list[tuple]:
        if self.proxy is None:
            self.proxy = self._connect()
        try:
            return [tuple(r) for r in self.proxy.sample()]
        except Exception:
            self.close()  # reconnect (and re-resolve the name) on the next tick
            raise

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy._pyroRelease()
            self.proxy = None


def make_meter(settings: dict[str, Any], host: str, deployment: Settings) -> Meter:
    kind = settings.get("probe", "procfs")
    if kind == "procfs":
        return ProcfsMeter(settings, host)
    if kind == "remote":
        return RemoteMeter(settings, deployment)
    if kind == "snmp":
        from probes.snmp_meter import SnmpMeter

        return SnmpMeter(settings)
    raise BadRequest(f"unknown probe {kind!r}: use procfs, snmp or remote")
