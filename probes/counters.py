"""Turning SNMP counter readings into rates, safely.

Kept apart from the SNMP code because this is where bogus spikes come from: a 32-bit
counter wraps every 34 s at 1 Gbit/s, and an agent restart resets every counter, which
naive subtraction turns into a rate of petabytes per second.
"""

from __future__ import annotations

COUNTER32 = 1 << 32
COUNTER64 = 1 << 64


def counter_delta(old: int, new: int, bits: int) -> int | None:
    """Increase of a counter between two readings of the same agent incarnation.

    A 32-bit counter that went down wrapped once (RFC 2578: it wraps at 2^32).  A 64-bit
    counter does not wrap in practice, so going down means a discontinuity (interface
    reset, counter re-created): None, no rate for this interval."""
    if new >= old:
        return new - old
    if bits == 32:
        return new + COUNTER32 - old
    return None


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
