"""SNMP as a collector agent's meter: settings dict in, ``sample()`` rows out.

The collector calls ``sample()`` from its own thread on a timer, so this wraps the
asyncio poller's sync form.  An agent restart is not an error for a collector (the
baselines are reset and the next tick has rates again), so it yields no rows; timeouts
and refused credentials raise, for the collector to report.
"""

from __future__ import annotations

import logging
from typing import Any

from masa.activity import check_label
from masa.errors import brief
from probes.errors import AgentRestart
from probes.snmp import SnmpPoller, parse_target
from probes.snmp_auth import Credentials

log = logging.getLogger(__name__)


def credentials_from(settings: dict[str, Any]) -> Credentials:
    """``community`` (v2c) or ``v3_user``/``auth_key``/``priv_key``
    (+ ``auth_protocol``, ``priv_protocol``)."""
    if settings.get("v3_user"):
        return Credentials(
            v3_user=settings["v3_user"], auth_key=settings.get("auth_key"), priv_key=settings.get("priv_key"),
            auth_protocol=settings.get("auth_protocol") or "SHA", priv_protocol=settings.get("priv_protocol") or "AES",
        )
    return Credentials(community=settings.get("community") or "public")


_TEXT = ("target", "community", "v3_user", "auth_key", "priv_key", "auth_protocol", "priv_protocol", "label")


def check_settings(settings: dict[str, Any]) -> Credentials:
    """The static mistakes, refused before any packet is sent: the one check behind both
    ``masa collect snmp`` and SNMP collector agents (create and reconfigure), so both
    say the same.  Raises ValueError (unparseable target or port, keys shorter than 8
    characters, an unknown auth or privacy protocol, a wrong type); returns the
    credentials."""
    if not settings.get("target"):
        raise ValueError("an SNMP collector needs 'target', e.g. udp:10.0.0.1:161")
    for key in _TEXT:
        if settings.get(key) is not None and not isinstance(settings[key], str):
            raise ValueError(f"{key} must be text, not {brief(settings[key])}")
    parse_target(settings["target"])
    if settings.get("label"):
        check_label(settings["label"])
    timeout, retries = settings.get("timeout", 1.0), settings.get("retries", 1)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 60:
        raise ValueError(f"timeout must be a number of seconds per try (0 < timeout <= 60), not {brief(timeout)}")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        raise ValueError(f"retries must be a whole number from 0 to 10, not {brief(retries)}")
    return credentials_from(settings)


class SnmpMeter:
    """One SNMP agent polled synchronously; rows are ``(object, unit, start, end, value)``."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.poller = SnmpPoller(
            settings["target"], check_settings(settings), label=settings.get("label"),
            timeout=float(settings.get("timeout", 1.0)), retries=int(settings.get("retries", 1)),
        )
        self._discarded = 0
        self._garbage_logged = ""

    def sample(self) -> list[tuple]:
        try:
            return [tuple(s) for s in self.poller.poll_sync()]
        except AgentRestart as exc:
            log.warning("%s", exc)
            return []
        finally:
            self._report_garbage()

    def _report_garbage(self) -> None:
        """One log line when the agent starts sending values that cannot be what their
        column holds (dropped, no sample), not one per tick."""
        what = self.poller.last_discarded
        if self.poller.discarded > self._discarded and what != self._garbage_logged:
            log.warning("%s: dropped garbage from the agent: %s", self.poller.target, what)
            self._garbage_logged = what
        self._discarded = self.poller.discarded

    def close(self) -> None:
        self.poller.close()
