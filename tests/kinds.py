"""Agent kinds that misbehave on purpose (loaded into hosts through MASA_KINDS)."""

from __future__ import annotations

from masa.agent import Agent, configure, query


class FlakyAgent(Agent):
    """A periodic task that raises, and a handler that can hang."""

    def on_start(self) -> None:
        self.state.setdefault("ticks", 0)
        self.state.setdefault("value", 0)
        self.state.setdefault("starts", 0)
        self.state["starts"] += 1
        self.every(0.1, self._tick)

    def _tick(self) -> None:
        with self.lock:
            self.state["ticks"] += 1
        raise RuntimeError("this task always fails after counting")

    @configure
    def set_value(self, value: int) -> int:
        self.state["value"] = value
        return value

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
