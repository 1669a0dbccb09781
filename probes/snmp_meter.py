"""SNMP as a collector agent's meter: settings dict in, ``sample()`` rows out.

The collector calls ``sample()`` from its own thread on a timer, so this wraps the
asyncio poller's sync form.  An agent restart is not an error for a collector (the
baselines are reset and the next tick has rates again), so it yields no rows; timeouts
and refused credentials raise, for the collector to report.
"""

from __future__ import annotations

import logging
from typing import Any

from probes.errors import AgentRestart
from probes.snmp import SnmpPoller
from probes.snmp_auth import Credentials

log = logging.getLogger(__name__)


def credentials_from(settings: dict[str, Any]) -> Credentials:
    """``community`` (v2c) or ``v3_user``/``auth_key``/``priv_key``
    (+ ``auth_protocol``, ``priv_protocol``)."""
    if settings.get("v3_user"):
        return Credentials(
            v3_user=settings["v3_user"], auth_key=settings.get("auth_key"), priv_key=settings.get("priv_key"),
            auth_protocol=settings.get("auth_protocol", "SHA"), priv_protocol=settings.get("priv_protocol", "AES"),
        )
    return Credentials(community=settings.get("community", "public"))


class SnmpMeter:
    """One SNMP agent polled synchronously; rows are ``(object, unit, start, end, value)``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.poller = SnmpPoller(
            settings["target"], credentials_from(settings), label=settings.get("label"),
            timeout=float(settings.get("timeout", 1.0)), retries=int(settings.get("retries", 1)),
        )

    def sample(self) -> list[tuple]:
        try:
            return [tuple(s) for s in self.poller.poll_sync()]
        except AgentRestart as exc:
            log.warning("%s", exc)
            return []

    def close(self) -> None:
        self.poller.close()
