"""Checks of what agents are told: settings at create and reconfigure, the arguments of
their operations.  In the platform, so every layer's agents (collection, mediation,
modeling) refuse the same mistakes in the same words.

A value is refused where it arrives, with a ``BadRequest`` naming the setting or argument
and what it accepts, instead of being taken and failing later: in a periodic task, a
delivery, the store, or a checkpoint that can no longer be saved.  A message shows the
value only cut short (:func:`masa.errors.brief`), as a request may carry megabytes.
"""

from __future__ import annotations

import math
from typing import Any

from masa.activity import MAX_OBJECTS
from masa.errors import BadRequest, brief

#: shortest period of anything an agent does on its own beat (sampling, connection
#: evidence, placement rounds, a standing request's interval): the host's scheduler
#: cannot keep up with less
MIN_PERIOD = 0.05
DAY = 86400.0


def finite(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite, nor an int beyond
    what a float holds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def number(value: Any, what: str, low: float = -math.inf, high: float = math.inf, *,
           positive: bool = False, unit: str = "", note: str = "") -> float:
    """``value`` as a float if it is :func:`finite`, within ``[low, high]`` and, with
    ``positive``, above 0; else ``BadRequest`` saying so (``unit`` and ``note`` complete
    the sentence: "a number of seconds between 0.05 and 3600 (or omitted: ...)")."""
    if finite(value) and low <= value <= high and not (positive and value <= 0):
        return float(value)
    rule = "a positive number" if positive else "a finite number" if math.isinf(low) and math.isinf(high) \
        else "a number"
    if unit:
        rule += f" of {unit}"
    if not math.isinf(low) and not math.isinf(high):
        rule += f" between {low:g} and {high:g}"
    elif not math.isinf(low):
        rule += f" >= {low:g}"
    raise BadRequest(f"{what} must be {rule}{note}, not {brief(value)}")


def timestamp(value: Any, what: str) -> float:
    """A point in time: finite seconds since the epoch."""
    return number(value, what, unit="seconds since the epoch")


def whole(value: Any, what: str, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) with ``low <= value <= high``, else ``BadRequest``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequest(f"{what} must be a whole number from {low} to {high}, not {brief(value)}")
    return value


def text(value: Any, what: str, limit: int) -> str:
    """``value`` if it is a non-empty string of at most ``limit`` characters."""
    if not isinstance(value, str) or not 0 < len(value) <= limit:
        raise BadRequest(f"{what} must be a non-empty string of at most {limit} characters, not {brief(value)}")
    return value


def names(value: Any, what: str = "objects") -> None:
    """None (all) or a list of at most :data:`masa.activity.MAX_OBJECTS` names or globs
    (a domain's members too)."""
    if value is None:
        return
    if not isinstance(value, list) or not all(isinstance(o, str) for o in value):
        raise BadRequest(f"{what} must be a list of names or globs, not {brief(value)}")
    if len(value) > MAX_OBJECTS:
        raise BadRequest(f"{what} lists {len(value)} names or globs; at most {MAX_OBJECTS} are accepted "
                         "(ask in parts, or use globs)")
