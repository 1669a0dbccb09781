"""Connection evidence: which process talked to which endpoint (from the procfs probe).

Activity says *how much* two objects move together; a TCP connection from a process to
another's listening socket says *who calls whom*, including the direction that activity
alone cannot give when every request is forwarded.  The two are combined as likelihood
ratios on the odds of the activity model, so each edge can say which evidence it rests
on and a missing connection weighs against a dependency without vetoing it outright.
"""

from __future__ import annotations

import csv
from pathlib import Path

from masa.activity import ActivityError

#: How much more likely an observed connection is under a dependency than without one.
#: A process holding a connection to another's listening socket is all but proof that it
#: calls it (what it does not prove, health checks and monitors, is rare among the objects
#: a modeler watches), and it must outweigh an activity model that sees nothing: a light
#: caller's share of a callee's work can drown in the callee's other traffic (activity
#: probability ~0.01 for a true, connected pair), which x50 left below the cut.
LR_CONNECTED = 1000.0
#: The same for *no* observed connection between two objects the probe watched.
LR_NOT_CONNECTED = 0.05
#: Direction certainty a connection gives: the connecting side is the caller.
DIRECTION_FROM_CONNECTION = 0.99


def read_connections(path: str | Path) -> dict[tuple[str, str], float]:
    """Read ``source,target[,count]`` rows: ``source`` opened connections to ``target``."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise ActivityError(f"cannot read {path}: {exc.strerror}") from None
    out: dict[tuple[str, str], float] = {}
    with handle:
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if not {"source", "target"} <= set(header):
            raise ActivityError(f"{path}: header must contain source,target (found {','.join(header)})")
        si, ti = header.index("source"), header.index("target")
        ci = header.index("count") if "count" in header else None
        for lineno, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            try:
                src, dst = row[si].strip(), row[ti].strip()
                count = float(row[ci]) if ci is not None else 1.0
            except (IndexError, ValueError):
                raise ActivityError(f"{path}:{lineno}: expected source,target[,count]") from None
            if not src or not dst:
                raise ActivityError(f"{path}:{lineno}: empty source or target")
            if src != dst:
                out[(src, dst)] = out.get((src, dst), 0.0) + count
    return out


def combine(p_activity: float, connected: bool) -> float:
    """Posterior probability of a dependency given the activity model and the probe."""
    p = min(max(p_activity, 1e-6), 1 - 1e-6)
    odds = p / (1 - p) * (LR_CONNECTED if connected else LR_NOT_CONNECTED)
    return odds / (1 + odds)
