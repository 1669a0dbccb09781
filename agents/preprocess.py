"""Pre-processing steps a mediator applies on the way up, each at most once per cascade.

A step is a small dict (``{"step": "resample", "period": 5}``) so it can be configured,
stored in agent state and handed to another agent.  Its *tag* (canonical text) is what
travels up with the data: a catalog entry and a reported series list the tags already
applied below, and a mediator skips any step whose tag is in that list.  That is how a
mediator can hand a step to an agent nearer the data and not apply it again itself.

Every step is a function of the data alone (no hidden carry-over between calls), so a
standing request's batch and a report over the same stretch give the same values, and a
batch regenerated after a restart is the batch that was sent before.  Steps that look at
the past (``smooth``, ``resample``) say how much history they need (:func:`lookback`),
and values are final only up to the last sample end each object has delivered.

* ``resample``: average rate on the grid ``origin + k*period`` (exact, via integrals);
  a bin's rate is activity / covered time, and bins covered less than ``min_coverage``
  are left out (a gap is unknown, not idle).
* ``normalise``: ``(value - offset) / scale``.
* ``filter``: keep samples for which every predicate holds (the standing-request
  predicate language, :mod:`agents.standing`), optionally only ``objects`` globs.
* ``smooth``: trailing mean over ``window`` seconds of covered time, per sample.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from agents.standing import all_hold, matches, parse_predicates
from masa import checks
from masa.activity import Series
from masa.errors import BadRequest, brief

STEPS = ("resample", "normalise", "filter", "smooth")
#: steps after which a sample's value is still the value below (predicates may go down)
VALUE_PRESERVING = ("filter",)

REQUIRED = object()
_PARAMS = {
    "resample": {"period": REQUIRED, "origin": 0.0, "min_coverage": 0.5},
    "normalise": {"scale": REQUIRED, "offset": 0.0},
    "filter": {"predicates": [], "objects": None},
    "smooth": {"window": REQUIRED},
}


def check(spec: dict) -> dict:
    """A complete, validated step spec (defaults filled in), or ``BadRequest``."""
    if not isinstance(spec, dict) or spec.get("step") not in STEPS:
        raise BadRequest(f"a step is a dict with 'step' one of {', '.join(STEPS)}, not {brief(spec)}")
    name = spec["step"]
    params = _PARAMS[name]
    unknown = set(spec) - set(params) - {"step"}
    if unknown:
        raise BadRequest(f"step {name!r} has no parameter(s) {brief(sorted(map(str, unknown)))}")
    out = {"step": name}
    for key, default in params.items():
        value = spec.get(key, default)
        if value is REQUIRED:
            raise BadRequest(f"step {name!r} needs {key!r}")
        out[key] = value
    if name == "resample":  # a period far below any sampling interval would make bins by the million
        out.update(period=checks.number(out["period"], "resample period", checks.MIN_PERIOD, unit="seconds"),
                   origin=checks.timestamp(out["origin"], "resample origin"),
                   min_coverage=checks.number(out["min_coverage"], "resample min_coverage", 0, 1))
    elif name == "normalise":
        if not checks.finite(out["scale"]) or out["scale"] == 0 or not checks.finite(out["offset"]):
            raise BadRequest("normalise needs a non-zero scale and a numeric offset")
        out.update(scale=float(out["scale"]), offset=float(out["offset"]))
    elif name == "filter":
        if not isinstance(out["predicates"], list) or not out["predicates"] and out["objects"] is None:
            raise BadRequest("filter needs a list of predicates and/or objects globs")
        parse_predicates(out["predicates"])
        checks.names(out["objects"], "filter objects")
    elif name == "smooth":
        out["window"] = checks.number(out["window"], "smooth window", positive=True, unit="seconds")
    return out


def tag(spec: dict) -> str:
    """Canonical text of a step: equal steps have equal tags wherever they are configured."""
    spec = check(spec)
    args = ",".join(f"{k}={_fmt(spec[k])}" for k in sorted(spec) if k != "step")
    return f"{spec['step']}({args})"


def lookback(steps: Iterable[dict]) -> float:
    """Seconds of history before a window that the steps need to compute it."""
    total = 0.0
    for s in steps:
        if s["step"] == "resample":
            total += s["period"]
        elif s["step"] == "smooth":
            total += s["window"]
    return total


def pending(steps: Sequence[dict], applied: Iterable[str]) -> list[dict]:
    """The steps not yet applied below."""
    done = set(applied)
    return [s for s in steps if tag(s) not in done]


def value_preserving(steps: Iterable[dict]) -> bool:
    return all(s["step"] in VALUE_PRESERVING for s in steps)


def apply(steps: Sequence[dict], series: Series) -> Series:
    """Run ``steps`` in order over one object's samples."""
    for spec in steps:
        if not len(series):
            break
        series = _APPLY[spec["step"]](spec, series)
    return series


def _resample(spec: dict, s: Series) -> Series:
    period, origin = spec["period"], spec["origin"]
    # the first bin is the one holding the first sample's start: whatever window of raw
    # samples a caller passes, a bin's value depends only on the samples overlapping it
    first = math.floor((s.start[0] - origin) / period + 1e-9)
    last = math.floor((s.end[-1] - origin) / period + 1e-9)  # bins must end by the last sample
    n = last - first
    if n <= 0:
        return Series.empty(s.object, s.unit)
    t0 = origin + first * period
    edges = t0 + period * np.arange(n + 1)
    amount = np.diff(s.integral(edges))
    covered = np.diff(s.coverage(edges))
    keep = covered >= spec["min_coverage"] * period - 1e-9
    keep &= covered > 0
    rate = np.divide(amount, covered, out=np.zeros(n), where=covered > 0)
    return Series(s.object, s.unit, edges[:-1][keep], edges[1:][keep], rate[keep])


def _normalise(spec: dict, s: Series) -> Series:
    return Series(s.object, s.unit, s.start, s.end, (s.value - spec["offset"]) / spec["scale"])


def _filter(spec: dict, s: Series) -> Series:
    if not matches(spec["objects"], s.object):
        return Series.empty(s.object, s.unit)
    keep = all_hold(parse_predicates(spec["predicates"]), s.object, s.value)
    return Series(s.object, s.unit, s.start[keep], s.end[keep], s.value[keep])


def _smooth(spec: dict, s: Series) -> Series:
    w = spec["window"]
    amount = s.integral(s.end) - s.integral(s.end - w)
    covered = s.coverage(s.end) - s.coverage(s.end - w)
    return Series(s.object, s.unit, s.start, s.end, amount / covered)


_APPLY = {"resample": _resample, "normalise": _normalise, "filter": _filter, "smooth": _smooth}


def _fmt(x: object) -> str:
    if isinstance(x, float):
        return repr(x)
    if isinstance(x, list):
        return "[" + ";".join(str(i) for i in x) + "]"
    return str(x)
