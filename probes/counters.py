"""Turning SNMP counter readings into rates, safely.

Kept apart from the SNMP code because this is where bogus spikes come from: a 32-bit
counter wraps every 34 s at 1 Gbit/s, and an agent restart resets every counter, which
naive subtraction turns into a rate of petabytes per second.
"""

from __future__ import annotations

from collections.abc import Iterable

COUNTER32 = 1 << 32
COUNTER64 = 1 << 64
SPEED_SLACK = 1.25  # a wrap may imply up to this much more than the line rate (timing jitter)
HISTORY_SLACK = 2.0  # ... or this much more than the busiest recent interval


def counter_delta(old: int, new: int, bits: int) -> int | None:
    """Increase of a counter between two readings of the same agent incarnation.

    A 32-bit counter that went down wrapped once (RFC 2578: it wraps at 2^32), or was
    reset: for interface octets the caller tells them apart (:func:`wrap_plausible`).  A 64-bit
    counter does not wrap in practice, so going down means a discontinuity (interface
    reset, counter re-created): None, no rate for this interval."""
    if new >= old:
        return new - old
    if bits == 32:
        return new + COUNTER32 - old
    return None


def wrap_plausible(delta: int, dt: float, speed_bps: float | None, recent: Iterable[float]) -> bool:
    """Whether a 32-bit counter that went down wrapped (``delta`` bytes, the wrapped
    increase, over ``dt`` s) rather than being reset (interface reset, counters cleared:
    the agent kept running, so sysUpTime says nothing).

    Both look the same, a lower reading; read as a wrap, a reset is a fake spike of up to
    2^32 bytes in one interval.  As network management tools do, a wrap is accepted only
    if the rate it implies is one the interface could carry: at most its speed
    (``speed_bps``, ifSpeed or ifHighSpeed; with some slack, since our clock and the
    agent's counter reads are not in step), or at most twice the busiest of the
    ``recent`` rates (B/s), which covers agents that understate the speed (net-snmp says
    10 Mbit/s for loopback).  Unknown speed and no history: not plausible, so the first
    wrap of an interface with an unknown speed costs one interval (no sample), never a
    spike."""
    rate = delta / dt if dt > 0 else float("inf")
    bound = speed_bps / 8.0 * SPEED_SLACK if speed_bps else 0.0
    bound = max([bound, *(HISTORY_SLACK * r for r in recent)])
    return rate <= bound


def uptime_went_back(old_ticks: int, new_ticks: int, elapsed_s: float) -> bool:
    """Whether the agent restarted between two polls, judged by sysUpTime (1/100 s).

    It went back: restarted.  It grew by far less than the time that passed: restarted
    too (and has been up longer than its old, small uptime by now).  TimeTicks wrap after
    497 days; a reading just past the wrap looks like a restart, which costs one
    interval, never a spike."""
    if new_ticks < old_ticks:
        return True
    grew = (new_ticks - old_ticks) / 100.0
    return elapsed_s > 5.0 and grew < 0.5 * elapsed_s - 2.0
