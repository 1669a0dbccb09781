"""Test kinds (loaded into hosts through MASA_KINDS).

The feeder answers the collection query interface exactly as a collector does (it is an
:class:`agents.source.ActivitySource`), but its samples are whatever the test hands it,
and its report pages are small, so paging is exercised with a few hundred samples.  The
holding recorder is a recorder on a disk that can be made to stall."""

from __future__ import annotations

import time
from pathlib import Path

from agents.recorder import RecorderAgent
from agents.source import ActivitySource
from masa.agent import query

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
