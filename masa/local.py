"""A throwaway masa deployment of real processes on one machine.

The name server and every host run as separate OS processes, started by the same
Supervisor as ``masa up``; the calling process is an ordinary client.  Tests,
benchmarks and notebooks use it to get a real platform in one line.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from masa import admin, config, naming
from masa.config import Settings
from masa.ref import AgentRef
from masa.supervisor import Supervisor, free_port
from masa.topology import HostSpec, Topology


class LocalCluster:
    """``with LocalCluster(home, {"h1": {"domain": "A"}}) as c: c.create(...)``"""

    def __init__(self, home: Path, hosts: dict[str, dict] | None = None, heartbeat: float = 0.5,
                 tls_dir: Path | None = None, store: str | None = None, secret: str | None = None,
                 call_timeout: float = 10.0, idle_timeout: float = Settings.idle_timeout) -> None:
        hosts = hosts if hosts is not None else {"h1": {}, "h2": {}, "h3": {}}
        specs = {name: HostSpec(name, spec.get("domain", "A"), list(spec.get("allow", [])))
                 for name, spec in hosts.items()}
        self.topology = Topology(specs, {}, store=store)
        self.settings = replace(
            Settings(home=Path(home), secret=(secret or secrets.token_hex(16)).encode()),
            ns_port=free_port(), heartbeat=heartbeat, tls_dir=tls_dir, call_timeout=call_timeout,
            idle_timeout=idle_timeout)
        self.sup = Supervisor(self.topology, self.settings, log_dir=Path(home) / "logs")

    def __enter__(self) -> LocalCluster:
        config.apply(self.settings)
        self.sup.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sup.stop()

    def create(self, host: str, kind: str, name: str, **settings: Any) -> dict:
        return admin.create(self.settings, host, kind, name, settings)

    def ref(self, name: str, timeout: float | None = None) -> AgentRef:
        return AgentRef(name, self.settings, timeout=timeout)

    def move(self, agent: str, target: str) -> dict:
        return admin.move(self.settings, agent, target)

    def where(self, agent: str) -> str:
        return admin.where(self.settings, agent)

    def host(self, name: str, method: str, *args: Any) -> Any:
        return admin.host_call(self.settings, name, method, *args)

    def kill(self, host: str) -> None:
        """``kill -9`` a host: what a crash looks like to everyone else."""
        self.sup.children[host].kill()

    def restart(self, host: str) -> None:
        self.sup.children[host].start()
        self.sup.wait_for(naming.host_name(host), child=self.sup.children[host])

    def nodes(self, **kw: Any) -> dict[str, dict]:
        return {n["name"]: n for n in admin.node_list(self.settings, **kw)}

    @staticmethod
    def wait(predicate, timeout: float = 15.0, every: float = 0.05):
        return wait(predicate, timeout, every)


def wait(predicate, timeout: float = 15.0, every: float = 0.05):
    """Poll ``predicate`` until it returns something true (bounded in time)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout} s")
        time.sleep(every)
