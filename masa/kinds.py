"""Agent kinds installed on this machine, from the ``masa.agents`` entry-point group.

An agent can only run where its code is installed (weak migration carries no code), so
the set of kinds is the installed entry points; a host narrows it with its allow-list.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from masa.agent import Agent
from masa.errors import UnknownKind


@cache
def _entry_points() -> dict:
    return {ep.name: ep for ep in entry_points(group="masa.agents")}


def installed() -> list[str]:
    return sorted(_entry_points())


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
