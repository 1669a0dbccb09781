"""``masa demo``: the platform at work in a few seconds, on loopback.

Starts a name server and three hosts as separate processes, deploys the agents of the
bundled topology, sends a query down a three-hop cascade, then keeps two clients
querying while agents hop between hosts, and reports who answered where, how many
queries were lost (none) and what each move cost.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import threading
import time
from dataclasses import replace
from importlib.resources import files
from pathlib import Path

from rich.console import Console
from rich.table import Table

from masa import admin, topology
from masa.config import Settings
from masa.progress import console as output_console
from masa.ref import AgentRef
from masa.supervisor import Supervisor, free_port

DEMO_TOPOLOGY = files("masa") / "data" / "demo.toml"


class _Load:
    """A client thread that queries one agent as fast as it can until stopped."""

    def __init__(self, settings: Settings, agent: str, op: str) -> None:
        self.ref = AgentRef(agent, settings, timeout=15)
        self.op, self.answered, self.failed = op, 0, []
        self.hosts: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                answer = self.ref.query(self.op)
                self.answered += 1
                where = answer.get("host") or answer["path"][1].split("@")[1]
                self.hosts[where] = self.hosts.get(where, 0) + 1
            except Exception as exc:  # noqa: BLE001 - counted and shown, never hidden
                self.failed.append(repr(exc))

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(20)


def run(moves: int = 12, home: Path | None = None, console: Console | None = None) -> dict:
    """Run the demo; returns the figures it printed (the tests check them)."""
    console = console or output_console()
    with tempfile.TemporaryDirectory(prefix="masa-demo-") as tmp:
        base = Settings.from_env(home=home or Path(tmp), secret=secrets.token_hex(16).encode())
        settings = replace(base, ns_port=free_port(), heartbeat=0.5)
        topo = topology.load(str(DEMO_TOPOLOGY))
        with Supervisor(topo, settings) as sup:
            with console.status("starting name server and 3 hosts as separate processes..."):
                t0 = time.perf_counter()
                sup.start()
                for line in topology.deploy(topo, settings):
                    console.print(f"  {line}")
            console.print(f"[green]up[/] in {time.perf_counter() - t0:.1f} s: "
                          f"name server on {settings.ns_address}, hosts alpha, beta (domain A), gamma (B)")
            return _scenario(settings, moves, console, sup)


def _scenario(settings: Settings, moves: int, console: Console, sup: Supervisor) -> dict:
    chain = AgentRef("front", settings).query("chain", payload="hello")
    console.print(f"cascade: front -> middle -> back answered via {' -> '.join(chain['path'])}")

    plan = ["beta", "gamma", "alpha"] * (moves // 3 + 1)
    times = []
    with (_Load(settings, "counter", "echo") as load, _Load(settings, "front", "chain") as chains,
          console.status("moving agents while two clients keep querying...") as status):
        for i, target in enumerate(plan[:moves]):
            moved = admin.move(settings, "counter", target)
            times.append(moved["seconds"])
            status.update(f"move {i + 1}/{moves}: counter {moved['from']} -> {target} "
                          f"in {moved['seconds'] * 1e3:.1f} ms; {load.answered} queries answered")
            if i % 4 == 3:  # the middle of the cascade moves too
                here = admin.where(settings, "middle")
                admin.move(settings, "middle", "alpha" if here != "alpha" else "beta")
            time.sleep(0.1)
    final = AgentRef("counter", settings).query("echo")
    lost = final["n"] - 1 - load.answered  # the counter's own tally vs what the client saw

    table = Table("agent", "host", "queries answered", "answered on hosts", "failed")
    table.add_row("counter", final["host"], str(load.answered),
                  ", ".join(f"{h}: {n}" for h, n in sorted(load.hosts.items())), str(len(load.failed)))
    table.add_row("front (cascade)", admin.where(settings, "front"), str(chains.answered),
                  f"middle on {', '.join(sorted(chains.hosts))}", str(len(chains.failed)))
    console.print(table)
    ms = sorted(t * 1e3 for t in times)
    console.print(f"{moves} moves of counter: median {statistics.median(ms):.1f} ms, "
                  f"max {ms[-1]:.1f} ms; queries lost or doubled: {lost}")

    time.sleep(settings.heartbeat * 1.5)  # let the node list hear the last move
    nodes = Table("node", "type", "domain", "location", "status")
    for n in admin.node_list(settings):
        loc = n["location"].split("masa.host.")[-1] if n["type"] == "agent" else n["location"].split("@")[-1]
        nodes.add_row(n["name"].split(".", 2)[-1], n["type"], n["domain"], loc, n["status"])
    console.print(nodes)
    console.print("[green]done[/]: shutting down hosts and name server")
    return {"cascade": chain["path"], "answered": load.answered, "failed": load.failed + chains.failed,
            "lost": lost, "moves": len(times), "chains": chains.answered, "restarts": sum(
                c.restarts for c in sup.children.values())}
