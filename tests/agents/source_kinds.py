"""A test kind (loaded into hosts through MASA_KINDS): an activity source fed by the test.

It answers the collection query interface exactly as a collector does (it is an
:class:`agents.source.ActivitySource`), but its samples are whatever the test hands it,
and its report pages are small, so paging is exercised with a few hundred samples."""

from __future__ import annotations

from agents.source import ActivitySource
from masa.agent import query

PAGE = 50


class FeederAgent(ActivitySource):
    max_report_samples = PAGE

    @query
    def feed(self, rows: list) -> int:
        """Keep ``[object, unit, start, end, value]`` rows; all of them may be delivered."""
        self.record([tuple(r) for r in rows])
        return len(rows)
