"""Test kinds (loaded into hosts through MASA_KINDS).

The feeder answers the collection query interface exactly as a collector does (it is an
:class:`agents.source.ActivitySource`), but its samples are whatever the test hands it,
and its report pages are small, so paging is exercised with a few hundred samples.  The
holding recorder is a recorder on a disk that can be made to stall."""

from __future__ import annotations

import time
from pathlib import Path

from agents.mediator import MediatorAgent
from agents.recorder import RecorderAgent
from agents.source import ActivitySource
from masa.agent import configure, query
from masa.errors import BadRequest

PAGE = 50
HOLD_LIMIT = 8.0


class FeederAgent(ActivitySource):
    max_report_samples = PAGE

    @query
    def feed(self, rows: list) -> int:
        """Keep ``[object, unit, start, end, value]`` rows; all of them may be delivered."""
        self.record([tuple(r) for r in rows])
        return len(rows)


class HoldingRecorderAgent(RecorderAgent):
    """A recorder whose store writes stall while the file named by its ``hold`` setting
    exists (at most ``HOLD_LIMIT`` s, under the host's watchdog floor): a slow disk, long
    enough for the host to checkpoint the agent in the middle of taking a batch.  It
    creates ``hold + ".entered"`` when a write starts stalling."""

    def record(self, rows: list[tuple], complete_until: float | None = None) -> None:
        hold = Path(self.settings["hold"])
        if rows and hold.exists():
            Path(f"{hold}.entered").touch()
            deadline = time.monotonic() + HOLD_LIMIT
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        super().record(rows, complete_until)


class SlowRecorderAgent(RecorderAgent):
    """A recorder that answers every batch, but only after ``delay`` s (under the source's
    delivery timeout): a subscriber on a slow link.  ``open_from`` opens a request from a
    position in the past, as a subscriber back from a long outage resumes."""

    @query
    def deliver(self, request: str, source: str, seq: int, until: float, series: list) -> int:
        time.sleep(float(self.settings.get("delay", 1.0)))
        return super().deliver(request, source, seq, until, series)

    @query
    def open_from(self, request: str, source: str, since: float) -> dict:
        with self.lock:
            self.inbox.subs[request] = {"seq": 0, "until": since, "source": source, "objects": None,
                                        "predicates": [], "interval": None, "deliver": "deliver"}
        return self.inbox.resubscribe([request])


class SmallMoveFeederAgent(FeederAgent):
    """A feeder whose move package may hold about 30 kB besides the package's reserve
    (agents.source.CARRY_RESERVE, 64 KiB): some 1,200 carried samples, so carrying only
    the newest history, or refusing to move, is exercised with a few thousand."""

    max_carry_bytes = 64 * 1024 + 30_000


class HoldingMediatorAgent(MediatorAgent):
    """A mediator whose ``adopt_step`` stalls, before it adopts anything, while the file
    ``hold-adopt`` exists in its host's folder (at most ``HOLD_LIMIT`` s), after creating
    ``adopting`` there: a host can be killed under the call."""

    @configure
    def adopt_step(self, step: dict) -> list[dict]:
        hold = Path(self.host.state_dir) / "hold-adopt"
        if hold.exists():
            (hold.parent / "adopting").touch()
            deadline = time.monotonic() + HOLD_LIMIT
            while hold.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        return super().adopt_step(step)


class SlowReportFeederAgent(FeederAgent):
    """A feeder whose ``report`` answers only after ``delay`` s: a source with a big
    history on a slow link, alive all the while (its catalog answers at once)."""

    @query
    def report(self, objects: list[str] | None = None, since: float = 0.0, until: float | None = None) -> dict:
        time.sleep(float(self.settings.get("delay", 4.0)))
        return super().report(objects, since, until)


class RefusingFeederAgent(FeederAgent):
    """A live feeder that refuses every report, as a source refuses a question it cannot
    take: an answer, not a dead source."""

    @query
    def report(self, objects: list[str] | None = None, since: float = 0.0, until: float | None = None) -> dict:
        raise BadRequest(f"{self.name} refuses reports")
