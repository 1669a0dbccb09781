"""The recorder: subscribes to sources, keeps what arrives, and serves it again.

The smallest store-and-forward hop of the collection layer: it turns pushes from below
into a local, queryable history with the same interface as a collector.  Mediators and
domain agents build on the same receiving side (:class:`agents.standing.Inbox`).
"""

from __future__ import annotations

import threading
import time

from agents.source import ActivitySource
from agents.standing import Inbox
from masa.agent import configure, query

KEEPALIVE = 10.0  # seconds between re-sends of the pending requests (idempotent)


class RecorderAgent(ActivitySource):
    def on_start(self) -> None:
        self._arrival = threading.Lock()
        super().on_start()
        self.inbox = Inbox(self)
        self._unsent = set(self.inbox.subs)  # after a restart or move: send them all again
        self._keepalive_at = time.monotonic() + KEEPALIVE
        self.every(0.5, self._resubscribe, name="resubscribe")

    def _resubscribe(self) -> None:
        if time.monotonic() >= self._keepalive_at:
            self._keepalive_at, self._unsent = time.monotonic() + KEEPALIVE, set(self.inbox.subs)
        if self._unsent:
            self._unsent = set(self.inbox.resubscribe(self._unsent))

    @configure
    def subscribe_to(self, request: str, source: str, objects: list[str] | None = None,
                     predicates: list[str] | None = None, interval: float | None = None) -> dict:
        """Open a standing request at ``source`` whose samples this recorder keeps.  Sent
        again to the same source it goes on where it is; a ``request`` already open at
        another source moves here as a new stream, and the old source quits it (see
        :meth:`agents.standing.Inbox.subscribe`)."""
        return self.inbox.subscribe(request, source, objects, predicates, interval)

    @configure
    def unsubscribe(self, request: str) -> bool:
        return self.inbox.quit(request)

    @query
    def deliver(self, request: str, source: str, seq: int, until: float, series: list) -> int:
        """One batch from a source.  Batches from several sources arrive on several
        threads; taking them one at a time keeps the completeness horizon from passing
        a batch whose position is recorded but whose samples are not stored yet.  The
        horizon moves only after the stream's position (see ``Inbox.accept``)."""
        with self._arrival:
            taken = self.inbox.accept(request, source, seq, until, series, keep=self._keep)
            self.record([], complete_until=self._horizon())
            return taken

    def _keep(self, kept: list) -> None:
        self.record([(s.object, s.unit, a, b, v) for s in kept
                     for a, b, v in zip(s.start.tolist(), s.end.tolist(), s.value.tolist(), strict=True)],
                    complete_until=self._horizon())

    def _horizon(self) -> float | None:
        ends = [sub["until"] for sub in self.inbox.subs.values() if sub.get("until") is not None]
        return min(ends) if ends else None

    @query
    def subscriptions_status(self) -> dict:
        return {r: {"source": s["source"], "seq": s["seq"], "until": s["until"]}
                for r, s in self.inbox.subs.items()}
