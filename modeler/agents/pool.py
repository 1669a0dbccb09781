"""A pool of neural agents that scores one job's pair features in parallel.

The job's rows are cut into batches; one thread per neural agent takes batches from a
shared queue, so fast agents take more and a slow one holds up only its own batch.  When
a call fails (the agent's host died, it timed out, it holds another network), the batch
goes back into the queue for the others and that agent takes no more batches of this
job.  When every agent is gone the pool scores the rest itself, because a model late is
better than no model: that is counted, never hidden.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from masa.ref import AgentRef
from modeler.agents.scoring import from_bytes, to_bytes
from modeler.network import PairNetwork


@dataclass
class PoolReport:
    """How a job went: who scored what, what had to be redone."""

    batches: int = 0
    by_agent: dict[str, int] = field(default_factory=dict)
    by_host: dict[str, int] = field(default_factory=dict)
    redone: int = 0  # batches that failed somewhere and were scored again
    lost: list[str] = field(default_factory=list)  # agents dropped during the job
    local: int = 0  # batches the pool scored itself (no agent left)
    compute_seconds: float = 0.0  # summed inside the neural agents
    wall_seconds: float = 0.0

    def as_dict(self) -> dict:
        return {"batches": self.batches, "by_agent": dict(self.by_agent),
                "by_host": dict(self.by_host), "redone": self.redone, "lost": list(self.lost),
                "local": self.local, "compute_seconds": round(self.compute_seconds, 4),
                "wall_seconds": round(self.wall_seconds, 4)}


class Pool:
    """``Pool(refs, network_id, fallback).score(features)`` -> probabilities (P, 3).

    ``refs`` maps agent names to references; the modeler changes membership between jobs
    (grow, shrink), never during one.  ``progress`` is called after each batch with the
    report so far, which is how a supervision page (and a test) sees a job mid-way."""

    def __init__(self, refs: dict[str, AgentRef], network: str, fallback: PairNetwork,
                 batch_rows: int = 2000, batches_per_agent: int = 4, timeout: float = 10.0,
                 progress: Callable[[PoolReport], None] | None = None) -> None:
        self.refs = refs
        self.network = network
        self.fallback = fallback
        self.batch_rows = batch_rows
        self.batches_per_agent = batches_per_agent
        self.timeout = timeout
        self.progress = progress

    def _cuts(self, rows: int) -> list[tuple[int, int]]:
        """Enough batches to keep every agent busy and to make a lost one cheap to redo."""
        if rows == 0:
            return []
        want = max(1, len(self.refs) * self.batches_per_agent)
        size = int(min(self.batch_rows, max(1, -(-rows // want))))
        return [(a, min(a + size, rows)) for a in range(0, rows, size)]

    def score(self, features: np.ndarray) -> tuple[np.ndarray, PoolReport]:
        started = time.perf_counter()
        rows, cols = features.shape if features.size else (0, 0)
        out = np.zeros((rows, 3))
        report = PoolReport()
        cuts = self._cuts(rows)
        report.batches = len(cuts)
        todo: queue.Queue[tuple[int, int]] = queue.Queue()
        for cut in cuts:
            todo.put(cut)
        lock = threading.Lock()
        left = [len(cuts)]
        failed: set[tuple[int, int]] = set()

        def worker(name: str, ref: AgentRef) -> None:
            while True:
                with lock:
                    if left[0] == 0:
                        return
                try:
                    a, b = todo.get(timeout=0.05)
                except queue.Empty:
                    continue
                try:
                    answer = ref.query("evaluate", timeout=self.timeout,
                                       features=to_bytes(features[a:b]), cols=int(cols),
                                       network=self.network)
                    proba = from_bytes(answer["proba"], 3)
                    if len(proba) != b - a:
                        raise ValueError(f"{name} answered {len(proba)} rows for {b - a}")
                except Exception:  # noqa: BLE001 - any failure: the batch goes to the others
                    with lock:
                        failed.add((a, b))
                        report.lost.append(name)
                    todo.put((a, b))
                    return
                with lock:
                    out[a:b] = proba
                    left[0] -= 1
                    if (a, b) in failed:
                        report.redone += 1
                    report.by_agent[name] = report.by_agent.get(name, 0) + 1
                    host = str(answer.get("host", "?"))
                    report.by_host[host] = report.by_host.get(host, 0) + 1
                    report.compute_seconds += float(answer.get("seconds", 0.0))
                    snapshot = PoolReport(**{**report.__dict__, "by_agent": dict(report.by_agent),
                                             "by_host": dict(report.by_host), "lost": list(report.lost)})
                if self.progress is not None:
                    self.progress(snapshot)

        threads = [threading.Thread(target=worker, args=(n, r), daemon=True, name=f"pool-{n}")
                   for n, r in self.refs.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        # no agent left (or none at all): score what remains here
        while True:
            try:
                a, b = todo.get_nowait()
            except queue.Empty:
                break
            out[a:b] = self.fallback.predict_proba(features[a:b])
            report.local += 1
            if (a, b) in failed:
                report.redone += 1
        report.wall_seconds = time.perf_counter() - started
        return out, report
