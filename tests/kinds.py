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
        if getattr(self, "_held", None) is not None:  # a received copy dropped unstarted has none
            self._held.close()
        self._trace("stopped")

    def after_move(self, source: str) -> None:
        """With ``arrival_delay``, a slow arrival (the commit of a move takes that long)."""
        delay = float(self.settings.get("arrival_delay", 0))
        if delay and source != self.host.name:
            import time

            time.sleep(delay)
        self._trace("arrived")

    def _trace(self, event: str) -> None:
        """With the setting ``trace`` (a file), one line per arrival and stop: which host, what."""
        path = self.settings.get("trace")
        if path:
            with open(path, "a") as f:
                f.write(f"{self.host.name} {event}\n")

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
    def slow_set(self, value: int, seconds: float) -> int:
        """Sets the value at once (a query sees it), then takes its time before answering."""
        import time

        with self.lock:
            self.state["value"] = value
        time.sleep(seconds)
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
    def slow_read(self, seconds: float) -> str:
        """Says it is reading (``trace``), then takes its time before answering."""
        import time

        self._trace("reading")
        time.sleep(seconds)
        return "read"

    @query
    def boom(self) -> None:
        raise ValueError("handler failure")
