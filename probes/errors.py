"""Exceptions raised by the probes.

One class per outcome a caller reacts to differently: a timeout is retried next poll, an
authentication failure needs a human, garbage is a bug or a hostile peer, and an agent
restart only means "no rate this time".  All derive from :class:`ProbeError` so a
collector loop can catch one thing and keep going.
"""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not produce activity for this sample."""

    def __init__(self, message: str, target: str = "") -> None:
        super().__init__(f"{target}: {message}" if target else message)
        self.target = target


class ProbeTimeout(ProbeError):
    """The target did not answer within the timeout, retries included."""


class AuthFailure(ProbeError):
    """The target refused our credentials (SNMPv3 USM errors; v2c never answers instead)."""


class GarbageResponse(ProbeError):
    """The target answered with something we cannot use (wrong types, missing columns)."""


class AgentRestart(ProbeError):
    """The agent restarted between two polls (sysUpTime went back, counters reset).

    Raised once, for the poll that detected it; the baselines are reset, so the next
    poll produces rates again.  No rate is ever computed across a restart."""
