"""Agent kinds installed on this machine, from the ``masa.agents`` entry-point group.

An agent can only run where its code is installed (weak migration carries no code), so
the set of kinds is the installed entry points; a host narrows it with its allow-list.
``MASA_KINDS="name=module:Class,..."`` adds kinds without packaging them, for agents
under development (and the test suite's deliberately faulty agents).
"""

from __future__ import annotations

import os
from functools import cache
from importlib.metadata import EntryPoint, entry_points

from masa.agent import Agent
from masa.errors import UnknownKind


@cache
def _entry_points() -> dict:
    found = {ep.name: ep for ep in entry_points(group="masa.agents")}
    for item in filter(None, os.environ.get("MASA_KINDS", "").split(",")):
        name, _, target = item.partition("=")
        if name.strip() and target.strip():
            found[name.strip()] = EntryPoint(name.strip(), target.strip(), "masa.agents")
    return found


def installed() -> list[str]:
    return sorted(_entry_points())


def check(names: list[str] | tuple[str, ...]) -> None:
    """Raise UnknownKind naming every kind in ``names`` that is not installed (allow-lists:
    a misspelled kind would otherwise silently admit nothing)."""
    unknown = [n for n in dict.fromkeys(names) if n not in _entry_points()]
    if unknown:
        listed = ", ".join(repr(n) for n in unknown)
        raise UnknownKind(f"unknown agent kind{'s' if len(unknown) > 1 else ''} {listed}; "
                          f"installed kinds: {', '.join(installed())}")


@cache
def load(kind: str) -> type[Agent]:
    ep = _entry_points().get(kind)
    if ep is None:
        raise UnknownKind(f"unknown agent kind {kind!r}; installed kinds: {', '.join(installed())}")
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Agent)):
        raise UnknownKind(f"entry point for kind {kind!r} is not an Agent class")
    cls.kind = kind
    return cls
