"""Agent kinds that ship with the platform itself: for demos, tests and benchmarks.

``echo`` answers from its own state; ``relay`` forwards a query to the next agent of a
chain and adds itself to the answer, which is the smallest honest cascade.
"""

from __future__ import annotations

import time

from masa.agent import Agent, configure, query
from masa.errors import BadRequest


class EchoAgent(Agent):
    """Counts the queries it answered; the count travels with it when it moves."""

    def on_start(self) -> None:
        self.state.setdefault("answered", 0)
        self.state.setdefault("blob", "")

    @query
    def echo(self, payload=None) -> dict:
        with self.lock:
            self.state["answered"] += 1
            n = self.state["answered"]
        return {"agent": self.name, "host": self.host.name, "n": n, "payload": payload}

    @query
    def forward(self, payload=None) -> dict:
        """Answers itself, or redirects callers to its ``successor`` setting if it has one."""
        if self.settings.get("successor"):
            self.redirect(self.settings["successor"])
        return self.echo(payload)

    @query
    def inbox(self, task: str, source: str, result) -> None:
        """Receives pushes (e.g. from a delegated task): keeps a count and the last one."""
        with self.lock:
            box = self.state.setdefault("inbox", {})
            entry = box.setdefault(f"{source}/{task}", {"count": 0})
            entry["count"] += 1
            entry["last"] = result

    @query
    def received(self) -> dict:
        with self.lock:
            return dict(self.state.get("inbox", {}))

    @query
    def sleep(self, seconds: float) -> str:
        """Hold the caller for ``seconds``: lets tests exercise deadlines and the watchdog."""
        time.sleep(float(seconds))
        return "awake"

    @configure
    def load_state(self, size: int) -> int:
        """Give the agent ``size`` bytes of state, to measure migration by state size."""
        if not 0 <= int(size) <= 64 * 1024 * 1024:
            raise BadRequest("size must be between 0 and 64 MiB")
        with self.lock:
            self.state["blob"] = "x" * int(size)
        return len(self.state["blob"])

    @configure
    def relocate(self, host: str) -> str:
        """Ask the agent to move itself to ``host`` (it leaves after this call returns)."""
        self.move_to(host)
        return host

    def after_move(self, source: str) -> None:
        delay = float(self.settings.get("arrival_delay", 0))
        if delay and source != self.host.name:
            time.sleep(delay)  # a slow arrival: lets tests kill the target mid-move


class RelayAgent(Agent):
    """Forwards ``chain`` queries to the agent named by its ``next`` setting."""

    @query
    def chain(self, payload=None) -> dict:
        nxt = self.settings.get("next")
        if nxt:
            answer = self.ref(nxt).query("chain", payload=payload)
        else:
            answer = {"path": [], "payload": payload}
        answer["path"] = [f"{self.name}@{self.host.name}", *answer["path"]]
        return answer

    @query
    def chain_back(self, depth: int = 1) -> list[str]:
        """Query ``next`` which queries back: a call cycle that must not deadlock."""
        nxt = self.settings.get("next")
        if depth <= 0 or not nxt:
            return [self.name]
        return [self.name, *self.ref(nxt).query("chain_back", depth=depth - 1)]
