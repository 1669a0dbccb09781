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

from masa import admin, kinds, naming
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


#: the keys each kind of table may have: a misspelt key (``prot = 9000``, ``setings``)
#: was ignored, and the deployment came up without what it said
KEYS = {
    "nameserver": {"address", "store"},
    "hosts": {"domain", "allow", "port"},
    "agents": {"kind", "host", "domain", "settings"},
}
#: the supervisor's own child (and its log file ``ns.log``): no host may take its name
RESERVED_HOSTS = frozenset({"ns"})


def _table(data: dict, key: str, where: str) -> dict:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise TopologyError(f"{where}: [{key}] must be a table")
    return value


def _keys(table: dict, allowed: set[str], what: str, where: str) -> None:
    if unknown := set(table) - allowed:
        raise TopologyError(f"{where}: {what} has unknown key(s) {', '.join(sorted(unknown))} "
                            f"(known: {', '.join(sorted(allowed))})")


def _text(value: object, what: str, where: str) -> str:
    if not isinstance(value, str):
        raise TopologyError(f"{where}: {what} must be a string, not {type(value).__name__} {value!r}")
    return value


def _name(name: str, what: str, where: str) -> str:
    try:
        naming.check_name(name, what)
    except MasaError as exc:
        raise TopologyError(f"{where}: {exc}") from None
    return name


def _port(value: object, what: str, where: str, low: int = 0) -> int:
    # bool is an int to Python: `port = true` must not become port 1
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 65535:
        raise TopologyError(f"{where}: {what} must be a whole number from {low} to 65535, not {value!r}")
    return value


def parse(data: dict, where: str = "topology") -> Topology:
    """Check a topology's tables, keys, types, names and ports, all before any process
    starts: a mistake found by a child process while starting costs a half-started
    deployment, and a wrong type taken as is (``port = 1.5``, ``allow = "echo"``) or a
    misspelt key ignored would run something other than what the file says."""
    known = {"nameserver", "domains", "hosts", "agents"}
    if unknown := set(data) - known:
        raise TopologyError(f"{where}: unknown section(s) {', '.join(sorted(unknown))}")
    ns = _table(data, "nameserver", where)
    _keys(ns, KEYS["nameserver"], "[nameserver]", where)
    address = store = None
    if "address" in ns:
        address = _text(ns["address"], "nameserver.address", where)
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise TopologyError(f"{where}: nameserver.address must be HOST:PORT, e.g. 127.0.0.1:9090, "
                                f"not {address!r}")
        _port(int(port), "the port of nameserver.address", where, low=1)
    if "store" in ns:
        store = _text(ns["store"], "nameserver.store", where)
    domains = _table(data, "domains", where)
    for name, d in domains.items():
        if not isinstance(d, dict):
            raise TopologyError(f"{where}: domains.{name} must be a table")
    hosts = {}
    ports: dict[int, str] = {}
    for name, h in _table(data, "hosts", where).items():
        if not isinstance(h, dict):
            raise TopologyError(f"{where}: hosts.{name} must be a table")
        _name(name, "host", where)
        if name in RESERVED_HOSTS:
            raise TopologyError(f"{where}: host name {name!r} is reserved (the name server's process and log)")
        _keys(h, KEYS["hosts"], f"hosts.{name}", where)
        allow = h.get("allow", [])
        if not isinstance(allow, list):
            raise TopologyError(f"{where}: hosts.{name}.allow must be a list of kinds, e.g. [\"echo\"], "
                                f"not {allow!r}")
        spec = HostSpec(name, _text(h.get("domain", ""), f"hosts.{name}.domain", where),
                        [_text(k, f"a kind in hosts.{name}.allow", where) for k in allow],
                        _port(h.get("port", 0), f"hosts.{name}.port", where))
        if spec.port:
            if spec.port in ports:
                raise TopologyError(f"{where}: hosts {ports[spec.port]} and {name} both have port {spec.port}")
            ports[spec.port] = name
        if domains and spec.domain and spec.domain not in domains:
            raise TopologyError(f"{where}: host {name} is in undeclared domain {spec.domain!r}")
        for kind in spec.allow:
            if kind not in kinds.installed():
                raise TopologyError(f"{where}: host {name} allows unknown kind {kind!r}")
        hosts[name] = spec
    if address and (taken := ports.get(int(address.rpartition(":")[2]))):
        raise TopologyError(f"{where}: host {taken} has the name server's port {address}")
    agents = {}
    for name, a in _table(data, "agents", where).items():
        if not isinstance(a, dict) or "kind" not in a or "host" not in a:
            raise TopologyError(f"{where}: agents.{name} needs kind and host")
        _name(name, "agent", where)
        _keys(a, KEYS["agents"], f"agents.{name}", where)
        kind = _text(a["kind"], f"agents.{name}.kind", where)
        host = _text(a["host"], f"agents.{name}.host", where)
        if host not in hosts:
            raise TopologyError(f"{where}: agent {name} is placed on unknown host {host!r}")
        if kind not in kinds.installed():
            raise TopologyError(f"{where}: agent {name} has unknown kind {kind!r} "
                                f"(installed: {', '.join(kinds.installed())})")
        settings = a.get("settings", {})
        if not isinstance(settings, dict):
            raise TopologyError(f"{where}: agents.{name}.settings must be a table")
        domain = _text(a.get("domain", hosts[host].domain), f"agents.{name}.domain", where)
        agents[name] = AgentSpec(name, kind, host, domain, settings)
    return Topology(hosts, agents, domains, address, store)


def load(path: str | Path) -> Topology:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError(f"{path}: cannot read it: {exc}") from None
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
