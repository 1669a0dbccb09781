"""Agent kinds that misbehave on purpose (loaded into hosts through MASA_KINDS)."""

from __future__ import annotations

import socket

from masa.agent import Agent, configure, query


class FlakyAgent(Agent):
    """A periodic task that raises (every ``tick_every`` s), and a handler that can hang.
    With the setting ``hold_port`` it listens on that loopback port while it runs, as a modeler's page does."""

    def on_start(self) -> None:
        self.state.setdefault("ticks", 0)
        self.state.setdefault("value", 0)
        self.state.setdefault("starts", 0)
        self.state["starts"] += 1
        self.every(self.settings.get("tick_every", 0.1), self._tick)
        self._held, self._holding = None, None
        port = self.settings.get("hold_port")
        if port:
            try:
                self._held, self._holding = socket.create_server(("127.0.0.1", int(port))), "listening"
            except OSError as exc:
                self._holding = f"could not listen: {exc}"

    def on_reconfigure(self, changed: dict) -> None:
        if "tick_every" in changed:
            self.every(changed["tick_every"], self._tick)

    def on_stop(self) -> None:
        if self._held is not None:
            self._held.close()

    @query
    def holding(self) -> str | None:
        return self._holding

    def _tick(self) -> None:
        with self.lock:
            self.state["ticks"] += 1
        raise RuntimeError("this task always fails after counting")

    @configure
    def set_value(self, value: int) -> int:
        self.state["value"] = value
        return value

    @configure
    def slow_fail(self, seconds: float) -> None:
        """Changes the state, takes its time, then fails: rolled back by the host."""
        import time

        self.state["value"] = -1
        time.sleep(seconds)
        raise ValueError("refused after a while")

    @query
    def get(self) -> dict:
        return {"ticks": self.state["ticks"], "value": self.state["value"],
                "starts": self.state["starts"]}

    @query
    def hang(self, seconds: float = 30.0) -> str:
        import time

        time.sleep(seconds)
        return "finished"

    @query
    def boom(self) -> None:
        raise ValueError("handler failure")
