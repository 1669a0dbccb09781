"""Connection evidence: which process talked to which endpoint (from the procfs probe).

Activity says *how much* two objects move together; a TCP connection from a process to
another's listening socket says *who calls whom*, including the direction that activity
alone cannot give when every request is forwarded.  The two are combined as likelihood
ratios on the odds of the activity model, so each edge can say which evidence it rests
on and a missing connection weighs against a dependency without vetoing it outright.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from masa.activity import ActivityError, utf8_errors
from probes.samples import safe_name

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


def read_connections(path: str | Path, objects: Iterable[str] = ()) -> dict[tuple[str, str], float]:
    """Read ``source,target[,count]`` rows: ``source`` opened connections to ``target``.

    The raw socket log ``masa collect procfs --connections`` writes is read too: each
    outgoing socket is matched to the process listening on its remote endpoint, and both
    processes to the ``objects`` the activity names them by (``HOST/proc/NAME/PID`` or
    ``HOST/proc/NAME``), so one recording session gives both inputs of ``masa infer``."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ActivityError(f"cannot read {path}: {exc.strerror}") from None
    with handle, utf8_errors(path):
        reader = csv.reader(handle)
        header = [h.strip().lower() for h in next(reader, [])]
        if set(header) >= SOCKET_LOG:
            return _from_socket_log(path, header, reader, list(objects))
        if not {"source", "target"} <= set(header):
            raise ActivityError(f"{path}: header must contain source,target (found {','.join(header)}), "
                                "or be the socket log of `masa collect procfs --connections`")
        return _from_pairs(path, header, reader)


#: The columns of ``masa collect procfs --connections`` that attribute a socket.
SOCKET_LOG = {"pid", "name", "local", "remote", "direction"}


def _from_pairs(path: Path, header: list[str], reader) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
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
        if not count >= 0 or count == float("inf"):
            raise ActivityError(f"{path}:{lineno}: count must be a number of sightings >= 0, not {count:g}")
        if src != dst:
            out[(src, dst)] = out.get((src, dst), 0.0) + count
    return out


def _from_socket_log(path: Path, header: list[str], reader, objects: list[str]) -> dict[tuple[str, str], float]:
    col = {c: header.index(c) for c in SOCKET_LOG}
    listening: dict[tuple[str, int], tuple[str, str]] = {}
    outgoing: list[tuple[tuple[str, str], tuple[str, int]]] = []
    for lineno, row in enumerate(reader, start=2):
        if not row or all(not c.strip() for c in row):
            continue
        try:
            pid, direction = (row[col[c]].strip() for c in ("pid", "direction"))
            name = row[col["name"]]  # as written: the object name is made from it unstripped
            local, remote = _split_endpoint(row[col["local"]]), _split_endpoint(row[col["remote"]])
        except (IndexError, ValueError):
            raise ActivityError(f"{path}:{lineno}: not a row of the socket log "
                                f"({','.join(sorted(SOCKET_LOG))})") from None
        if not pid:
            continue  # a socket whose process could not be read
        if direction == "listen":
            listening[local] = (name, pid)
        elif direction == "out" and remote is not None:
            outgoing.append(((name, pid), remote))
    wildcard = {port: who for (ip, port), who in listening.items() if ip in WILDCARDS}
    sightings = Counter((caller, listening.get(remote) or wildcard.get(remote[1])) for caller, remote in outgoing)
    object_of = {proc: _object_of(proc, objects) for pair in sightings for proc in pair if proc}
    out: dict[tuple[str, str], float] = {}
    for (caller, callee), n in sightings.items():  # each process resolved once, not per row
        src, dst = object_of[caller], object_of.get(callee)
        if src and dst and src != dst:
            out[(src, dst)] = out.get((src, dst), 0.0) + n
    return out


WILDCARDS = ("0.0.0.0", "::")


def _split_endpoint(text: str) -> tuple[str, int] | None:
    text = text.strip()
    if not text:
        return None
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _object_of(proc: tuple[str, str], objects: list[str]) -> str | None:
    """The activity object a process was metered as: per process, else per name.

    The socket log keeps the raw process name (``my srv``), the probe names the object
    with :func:`probes.samples.safe_name` (``my_srv``): matched on the latter, or a name
    with a space, comma or ``/`` would lose its connections."""
    name, pid = safe_name(proc[0]), proc[1]
    for suffix in (f"/proc/{name}/{pid}", f"/proc/{name}"):
        found = [o for o in objects if o.endswith(suffix)]
        if len(found) == 1:
            return found[0]
    return None


def combine(p_activity: float, connected: bool) -> float:
    """Posterior probability of a dependency given the activity model and the probe."""
    p = min(max(p_activity, 1e-6), 1 - 1e-6)
    odds = p / (1 - p) * (LR_CONNECTED if connected else LR_NOT_CONNECTED)
    return odds / (1 + odds)
