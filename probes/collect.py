"""Recording loops behind ``masa collect``: sample on a fixed grid, stream a long CSV.

Rows are written as they come (``time,object,value``; value = the rate over the interval
ending at ``time``), so an interrupted recording keeps what it had, and memory stays flat
however long it runs.  The grid is ``start + k * interval``: a slow sample delays one
tick, it does not shift every later one.
"""

from __future__ import annotations

import asyncio
import csv
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from masa.activity import POINT_COLUMNS
from probes.connections import Connection, ConnectionProbe
from probes.errors import ProbeError
from probes.procfs import ProcfsProbe
from probes.samples import Sample
from probes.snmp import SnmpPoller, poll_all

CONNECTION_COLUMNS = ("time", "pid", "name", "local", "remote", "state", "direction", "uid")


@dataclass
class Progress:
    """What the progress line shows; updated after every tick."""

    ticks: int = 0
    rows: int = 0
    objects: set[str] = field(default_factory=set)
    errors: int = 0
    late: int = 0
    last_error: str = ""
    connections: int = 0


class ActivityWriter:
    """Streams samples as the long CSV the modeler reads."""

    def __init__(self, path: str | Path) -> None:
        self._handle: IO[str] = Path(path).open("w", newline="")  # noqa: SIM115 - streams until close()
        self._csv = csv.writer(self._handle)
        self._csv.writerow(POINT_COLUMNS)

    def write(self, samples: Iterable[Sample]) -> int:
        rows = sorted(((repr(s.end), s.object, repr(s.value)) for s in samples), key=lambda r: (float(r[0]), r[1]))
        self._csv.writerows(rows)
        self._handle.flush()
        return len(rows)

    def close(self) -> None:
        self._handle.close()


class ConnectionWriter:
    """Streams connection evidence: one row per connection per connection sample."""

    def __init__(self, path: str | Path) -> None:
        self._handle: IO[str] = Path(path).open("w", newline="")  # noqa: SIM115 - streams until close()
        self._csv = csv.writer(self._handle)
        self._csv.writerow(CONNECTION_COLUMNS)

    def write(self, conns: Iterable[Connection]) -> int:
        n = 0
        for c in conns:
            self._csv.writerow((repr(c.seen), "" if c.pid is None else c.pid, c.name or "",
                                _endpoint(c.local), _endpoint(c.remote), c.state, c.direction, c.uid))
            n += 1
        self._handle.flush()
        return n

    def close(self) -> None:
        self._handle.close()


def _endpoint(addr: tuple[str, int]) -> str:
    host, port = addr
    if not host:
        return ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _grid(interval: float, seconds: float, progress: Progress) -> Iterable[float]:
    """Tick times ``start + k * interval`` up to ``seconds``; a tick reached more than half
    an interval late is skipped (and counted late), not taken and then followed at once
    by the next: rates over a sliver of an interval are CPU-tick noise."""
    start = time.time()
    n = int(seconds / interval + 1e-9)
    k = 0
    while k <= n:
        due = start + k * interval
        now = time.time()
        if now > due + interval / 2:
            progress.late += 1
            k = int((now - start) / interval) + 1
            continue
        yield due
        k += 1


def record_procfs(
    probe: ProcfsProbe, out: str | Path, interval: float, seconds: float, *,
    connections: str | Path | None = None, connections_every: float = 10.0,
    on_tick: Callable[[Progress], None] = lambda p: None,
) -> Progress:
    """Sample ``probe`` every ``interval`` s for ``seconds`` s into ``out`` (and, if asked,
    TCP connections every ``connections_every`` s into ``connections``)."""
    progress = Progress()
    writer = ActivityWriter(out)
    conn_probe = ConnectionProbe(listening=True) if connections else None
    conn_writer = ConnectionWriter(connections) if connections else None
    next_conn = 0.0
    try:
        for due in _grid(interval, seconds, progress):
            if (delay := due - time.time()) > 0:
                time.sleep(delay)
            samples = probe.sample()
            progress.rows += writer.write(samples)
            progress.objects.update(s.object for s in samples)
            if conn_probe is not None and due >= next_conn:
                progress.connections += conn_writer.write(conn_probe.sample())
                next_conn = due + connections_every
            progress.ticks += 1
            on_tick(progress)
    finally:
        writer.close()
        if conn_writer is not None:
            conn_writer.close()
    return progress


def record_snmp(
    pollers: list[SnmpPoller], out: str | Path, interval: float, seconds: float, *,
    on_tick: Callable[[Progress], None] = lambda p: None,
) -> Progress:
    """Poll all agents concurrently every ``interval`` s for ``seconds`` s into ``out``."""
    progress = Progress()
    writer = ActivityWriter(out)

    async def run() -> None:
        from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

        engine = SnmpEngine()
        for p in pollers:
            p.attach(engine)
        try:
            for due in _grid(interval, seconds, progress):
                if (delay := due - time.time()) > 0:
                    await asyncio.sleep(delay)
                results = await poll_all(pollers)
                for r in results:
                    if isinstance(r, ProbeError):
                        progress.errors += 1
                        progress.last_error = str(r)
                    else:
                        progress.rows += writer.write(r)
                        progress.objects.update(s.object for s in r)
                progress.ticks += 1
                on_tick(progress)
        finally:
            engine.close_dispatcher()

    try:
        asyncio.run(run())
    finally:
        writer.close()
    return progress
