"""Where a mediator should run: a pure placement policy with hysteresis.

A mediator moves to the host with more unused CPU or closer to its sources (the share
of its incoming samples produced on that host: those never cross the network).  Moving
costs a handover and a cold cache, and host load is noisy, so the policy only moves when
the advantage is (1) larger than ``margin`` *after* counting the mediator's own load
against the target and crediting it to the current host, which is what a naive
comparison gets wrong and oscillates on, (2) seen at ``dwell`` consecutive evaluations
for the same target, and (3) at least ``cooldown`` seconds after the last move.

The decision is a function of its inputs and a small memo dict (kept in agent state, so
it travels and survives restarts): easy to test, and the agent only gathers facts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from masa.errors import BadRequest, brief


@dataclass(frozen=True)
class Policy:
    margin: float = 0.25  # score units: spare CPU share (0..1) + locality share (0..1)
    dwell: int = 3  # consecutive evaluations that must agree
    cooldown: float = 60.0  # seconds between moves
    w_cpu: float = 1.0
    w_local: float = 1.0

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any] | None) -> Policy:
        names = [f.name for f in fields(cls)]
        if settings is not None and not isinstance(settings, Mapping):
            raise BadRequest(f"placement must be a dict of {', '.join(names)} (or None: stay), not {brief(settings)}")
        settings = dict(settings or {})
        unknown = set(settings) - set(names)
        if unknown:
            raise BadRequest(f"unknown placement setting(s): {brief(sorted(map(str, unknown)))}")
        try:
            p = cls(**{k: type(getattr(cls, k))(v) for k, v in settings.items()})
        except (TypeError, ValueError, OverflowError):
            raise BadRequest(f"placement settings must be numbers, not {brief(settings)}") from None
        if not all(math.isfinite(getattr(p, name)) for name in names) or p.margin < 0 or p.dwell < 1 or p.cooldown < 0 \
                or p.w_cpu < 0 or p.w_local < 0:
            raise BadRequest("placement needs finite numbers: margin, cooldown, weights >= 0 and dwell >= 1")
        return p


def spare(resources: Mapping[str, Any]) -> float:
    """Unused share of the host's CPU (0..1), from a host's ``info()["resources"]``."""
    by_percent = 1.0 - float(resources.get("cpu_percent", 100.0)) / 100.0
    cpus = max(float(resources.get("cpus", 1) or 1), 1.0)
    by_load = 1.0 - float(resources.get("load1", cpus)) / cpus
    return max(0.0, min(1.0, min(by_percent, by_load)))


def score(resources: Mapping[str, Any], local: float, policy: Policy, own: float = 0.0) -> float:
    """How good a host is; ``own`` (share of that host's CPU the mediator itself uses) is
    subtracted for a host it would move to and not for the one it runs on."""
    return policy.w_cpu * max(0.0, spare(resources) - own) + policy.w_local * local


def decide(current: str, hosts: Mapping[str, Mapping[str, Any]], local: Mapping[str, float],
           memo: dict, now: float, policy: Policy, own: float = 0.0) -> str | None:
    """The host to move to now, or None.  ``hosts``: name -> resources of the hosts that
    may take the agent (up, allowed); ``local``: name -> locality share; ``memo`` is
    updated in place (candidate, streak, last move)."""
    if current not in hosts or len(hosts) < 2:
        memo.update(candidate=None, streak=0)
        return None
    here = score(hosts[current], local.get(current, 0.0), policy)
    best, best_score = None, here + policy.margin
    for name, res in sorted(hosts.items()):
        if name == current:
            continue
        s = score(res, local.get(name, 0.0), policy, own)
        if s > best_score:
            best, best_score = name, s
    if best is None:
        memo.update(candidate=None, streak=0)
        return None
    memo["streak"] = memo.get("streak", 0) + 1 if memo.get("candidate") == best else 1
    memo["candidate"] = best
    if memo["streak"] < policy.dwell or now - float(memo.get("last_move", float("-inf"))) < policy.cooldown:
        return None
    memo.update(candidate=None, streak=0, last_move=now)
    return best


def restart(memo: dict, moved_at: float | None = None) -> None:
    """Count the dwell afresh: forget the candidate and its streak, because the policy
    changed or the agent now runs elsewhere (scores were relative to the old host).
    ``moved_at``: the agent has just moved (by itself or by hand); the cooldown runs from
    then.  A policy switched on again keeps the time of the last move it knows of."""
    memo.update(candidate=None, streak=0)
    if moved_at is not None:
        memo["last_move"] = moved_at
