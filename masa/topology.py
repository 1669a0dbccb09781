"""Topology files (TOML): the domains, hosts and agents of a deployment.

    [nameserver]
    address = "127.0.0.1:9090"      # optional
    store = "sqlite:///nodes.db"    # optional, any SQLAlchemy URL

    [domains.A]
    description = "web shop"

    [hosts.h1]
    domain = "A"
    allow = ["collector", "mediator"]   # optional: default all installed kinds

    [agents.c1]
    kind = "collector"
    host = "h1"
    settings = { interval = 2 }         # optional; domain defaults to the host's
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from masa import admin, kinds
from masa.config import Settings
from masa.errors import AgentExists, MasaError, TopologyError


@dataclass
class HostSpec:
    name: str
    domain: str = ""
    allow: list[str] = field(default_factory=list)
    port: int = 0


@dataclass
class AgentSpec:
    name: str
    kind: str
    host: str
    domain: str = ""
    settings: dict = field(default_factory=dict)


@dataclass
class Topology:
    hosts: dict[str, HostSpec]
    agents: dict[str, AgentSpec]
    domains: dict[str, dict] = field(default_factory=dict)
    ns_address: str | None = None
    store: str | None = None
    path: Path | None = None


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise TopologyError(f"{where}: [{key}] must be a table")
    return value


def parse(data: dict, where: str = "topology") -> Topology:
    known = {"nameserver", "domains", "hosts", "agents"}
    if unknown := set(data) - known:
        raise TopologyError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    ns = _table(data, "nameserver", where)
    domains = _table(data, "domains", where)
    hosts = {}
    for name, h in _table(data, "hosts", where).items():
        if not isinstance(h, dict):
            raise TopologyError(f"{where}: hosts.{name} must be a table")
        spec = HostSpec(name, str(h.get("domain", "")), list(h.get("allow", [])), int(h.get("port", 0)))
        if domains and spec.domain and spec.domain not in domains:
            raise TopologyError(f"{where}: host {name} is in undeclared domain {spec.domain!r}")
        for kind in spec.allow:
            if kind not in kinds.installed():
                raise TopologyError(f"{where}: host {name} allows unknown kind {kind!r}")
        hosts[name] = spec
    agents = {}
    for name, a in _table(data, "agents", where).items():
        if not isinstance(a, dict) or "kind" not in a or "host" not in a:
            raise TopologyError(f"{where}: agents.{name} needs kind and host")
        if a["host"] not in hosts:
            raise TopologyError(f"{where}: agent {name} is placed on unknown host {a['host']!r}")
        if a["kind"] not in kinds.installed():
            raise TopologyError(f"{where}: agent {name} has unknown kind {a['kind']!r} "
                                f"(installed: {', '.join(kinds.installed())})")
        settings = a.get("settings", {})
        if not isinstance(settings, dict):
            raise TopologyError(f"{where}: agents.{name}.settings must be a table")
        agents[name] = AgentSpec(name, a["kind"], a["host"],
                                 str(a.get("domain", hosts[a["host"]].domain)), settings)
    return Topology(hosts, agents, domains, ns.get("address"), ns.get("store"))


def load(path: str | Path) -> Topology:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    t = parse(data, str(path))
    t.path = path
    return t


def deploy(t: Topology, settings: Settings) -> list[str]:
    """Create every agent of ``t`` on its host; agents already running are left alone."""
    lines = []
    for spec in t.agents.values():
        try:
            admin.create(settings, spec.host, spec.kind, spec.name, spec.settings, spec.domain)
            lines.append(f"created {spec.name} ({spec.kind}) on {spec.host}")
        except AgentExists:
            lines.append(f"kept {spec.name}: already running")
        except MasaError as exc:
            raise TopologyError(f"deploying {spec.name} on {spec.host}: {exc}") from None
    return lines
