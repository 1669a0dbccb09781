"""Testbeds with ground truth: real processes, a known call graph, the project's own probe.

A topology is JSON (the built-ins are in :data:`TOPOLOGIES`)::

    {"services": {"web": {"work_ms": 4, "calls": {"api": 0.8}},
                  "api": {"work_ms": 6, "calls": {"db": 1.0}},
                  "db":  {"work_ms": 3}},
     "clients": [{"to": "web", "rate": 15}, {"to": "db", "rate": 3}],
     "background": 2,
     "load": "high"}

``calls`` maps a dependency to the probability that a request makes that call;
``clients`` are independent bursty populations (``rate`` requests/s, the base rate of the
population's ON/OFF process, optional ``on_s``, ``off_s``, ``burst``); ``background`` is a
number of unrelated CPU jobs.  ``load`` (optional, default ``"high"``) scales every client
``rate``: ``"low"`` (x0.25), ``"high"`` (x0.8) or a positive number (the scale itself);
the background jobs are not scaled (they are not load).  A recording's ``topology.json``
says which level it ran at as ``{"level": ..., "rate_scale": ...}``.
Every service and background job is metered with :class:`probes.procfs.ProcfsProbe`;
:class:`probes.procfs.ConnectionProbe` records which service connected to which.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from masa.activity import write_csv
from masa.host import next_beat
from modeler.export import read_json
from probes.procfs import ConnectionProbe, ProcfsProbe, to_series

PREFIX = "tb-"

TOPOLOGIES: dict[str, dict] = {
    "chain": {
        "services": {
            "web": {"work_ms": 4, "calls": {"app": 0.7}},
            "app": {"work_ms": 6, "calls": {"db": 0.8}},
            "db": {"work_ms": 3},
        },
        "clients": [{"to": "web", "rate": 12}, {"to": "app", "rate": 4}, {"to": "db", "rate": 3}],
        "background": 2,
    },
    "fanout": {
        "services": {
            "gateway": {"work_ms": 3, "calls": {"users": 0.5, "orders": 0.6, "search": 0.4, "cart": 0.3}},
            "users": {"work_ms": 5}, "orders": {"work_ms": 6}, "search": {"work_ms": 8}, "cart": {"work_ms": 4},
        },
        "clients": [{"to": "gateway", "rate": 20}, {"to": "search", "rate": 3}, {"to": "users", "rate": 2}],
        "background": 2,
    },
    # a diamond: two paths from the front to one store
    "twopath": {
        "services": {
            "front": {"work_ms": 3, "calls": {"left": 0.6, "right": 0.5}},
            "left": {"work_ms": 5, "calls": {"store": 0.7}},
            "right": {"work_ms": 4, "calls": {"store": 0.6}},
            "store": {"work_ms": 3},
        },
        "clients": [{"to": "front", "rate": 14}, {"to": "left", "rate": 3}, {"to": "store", "rate": 3}],
        "background": 2,
    },
    # two tiers with a cache: every request reads the cache, a miss goes to the database
    "cached": {
        "services": {
            "web": {"work_ms": 4, "calls": {"cache": 1.0, "database": 0.25}},
            "cache": {"work_ms": 1},
            "database": {"work_ms": 9},
            "batch": {"work_ms": 6, "calls": {"database": 0.9}},
        },
        "clients": [{"to": "web", "rate": 16}, {"to": "batch", "rate": 2}, {"to": "cache", "rate": 3}],
        "background": 2,
    },
    # a collider: one service with two independent callers, plus a side dependency
    "collider": {
        "services": {
            "ingest": {"work_ms": 5, "calls": {"store": 0.8}},
            "query": {"work_ms": 3, "calls": {"store": 0.5, "index": 0.7}},
            "store": {"work_ms": 4},
            "index": {"work_ms": 5},
        },
        "clients": [{"to": "ingest", "rate": 10}, {"to": "query", "rate": 12}, {"to": "index", "rate": 2}],
        "background": 2,
    },
    # a deeper chain with low call probabilities and a shortcut
    "shortcut": {
        "services": {
            "edge": {"work_ms": 2, "calls": {"logic": 0.5}},
            "logic": {"work_ms": 6, "calls": {"rules": 0.4, "ledger": 0.3}},
            "rules": {"work_ms": 4, "calls": {"ledger": 0.6}},
            "ledger": {"work_ms": 5},
        },
        "clients": [{"to": "edge", "rate": 18}, {"to": "logic", "rate": 4}, {"to": "rules", "rate": 3},
                    {"to": "ledger", "rate": 2}],
        "background": 2,
    },
    "shared_db": {
        "services": {
            "shop": {"work_ms": 4, "calls": {"catalog": 0.8}},
            "catalog": {"work_ms": 5, "calls": {"db": 0.7}},
            "blog": {"work_ms": 3, "calls": {"comments": 0.6}},
            "comments": {"work_ms": 4, "calls": {"db": 0.9}},
            "reports": {"work_ms": 8, "calls": {"db": 0.5}},
            "db": {"work_ms": 3},
        },
        "clients": [{"to": "shop", "rate": 14}, {"to": "blog", "rate": 10}, {"to": "reports", "rate": 3},
                    {"to": "catalog", "rate": 3}],
        "background": 3,
    },
    "apps": {
        "services": {
            "a_web": {"work_ms": 4, "calls": {"a_api": 0.7}},
            "a_api": {"work_ms": 6, "calls": {"a_db": 0.6}},
            "a_db": {"work_ms": 3},
            "b_front": {"work_ms": 3, "calls": {"b_auth": 0.5, "b_store": 0.6}},
            "b_auth": {"work_ms": 5},
            "b_store": {"work_ms": 5},
            "c_job": {"work_ms": 7, "calls": {"c_queue": 0.8}},
            "c_queue": {"work_ms": 3},
        },
        "clients": [{"to": "a_web", "rate": 12}, {"to": "b_front", "rate": 14}, {"to": "c_job", "rate": 5},
                    {"to": "a_api", "rate": 3}, {"to": "b_store", "rate": 3}, {"to": "c_queue", "rate": 3}],
        "background": 3,
    },
    "twelve": {
        "services": {
            "frontend": {"work_ms": 3, "calls": {"catalog": 0.6, "cart": 0.4, "recommend": 0.3, "ads": 0.5}},
            "catalog": {"work_ms": 4, "calls": {"catalog_db": 0.7}},
            "cart": {"work_ms": 4, "calls": {"redis": 0.9}},
            "recommend": {"work_ms": 6, "calls": {"catalog_db": 0.5}},
            "ads": {"work_ms": 3},
            "checkout": {"work_ms": 5, "calls": {"payment": 0.8, "shipping": 0.6, "email": 0.5, "cart": 0.4}},
            "payment": {"work_ms": 5},
            "shipping": {"work_ms": 4, "calls": {"currency": 0.6}},
            "email": {"work_ms": 3},
            "currency": {"work_ms": 2},
            "catalog_db": {"work_ms": 3},
            "redis": {"work_ms": 2},
        },
        "clients": [{"to": "frontend", "rate": 14}, {"to": "checkout", "rate": 6}, {"to": "currency", "rate": 3},
                    {"to": "catalog", "rate": 3}, {"to": "email", "rate": 2}],
        "background": 3,
    },
}

#: Built-ins the shipped network may be trained on; the others stay held out.
TRAINING_TOPOLOGIES = ("chain", "fanout", "twopath", "cached", "collider", "shortcut")

#: Named load levels: the factor every client ``rate`` is multiplied by.  The built-ins'
#: rates at x1 keep a 12-service testbed at ~1 core on average with bursts near 2 cores,
#: which saturates a 2-core machine during bursts; "high" stays below that, "low" leaves
#: services mostly idle between requests (see docs/MODELING.md, Testbeds).
LOADS: dict[str, float] = {"low": 0.25, "high": 0.8}
DEFAULT_LOAD = "high"


class TopologyError(ValueError):
    """A topology JSON that does not describe a runnable testbed."""


def load_topology(name_or_path: str) -> dict:
    """A built-in topology by name, or a JSON file in the documented format."""
    if name_or_path in TOPOLOGIES:
        return TOPOLOGIES[name_or_path]
    path = Path(name_or_path)
    if not path.is_file():
        raise TopologyError(
            f"{name_or_path}: neither a built-in topology ({', '.join(TOPOLOGIES)}) nor a readable file")
    topo = read_json(path, TopologyError)
    validate(topo)
    return topo


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x and abs(x) != float("inf")


def rate_scale(load: str | float | dict | None) -> tuple[str, float]:
    """``(level, factor)`` for a load given as a level name, a positive number or the
    ``{"level": ..., "rate_scale": ...}`` that a recording's topology.json holds."""
    if load is None:
        load = DEFAULT_LOAD
    if isinstance(load, dict):
        load = load.get("level") if load.get("level") in LOADS else load.get("rate_scale")
    if isinstance(load, str):
        if load in LOADS:
            return load, LOADS[load]
        try:
            load = float(load)
        except ValueError:
            raise TopologyError(
                f"load {load!r}: one of {', '.join(LOADS)} or a positive rate scale such as 0.5"
            ) from None
    if not _number(load) or not 0 < load <= 10:
        raise TopologyError(f"load {load!r}: one of {', '.join(LOADS)} or a rate scale in (0, 10]")
    level = next((k for k, v in LOADS.items() if v == load), f"x{load:g}")
    return level, float(load)


#: The keys each level of a topology may hold; anything else is a typo that would otherwise
#: record a testbed other than the one meant (``call`` for ``calls``: no dependencies at all).
TOPOLOGY_KEYS = ("services", "clients", "background", "load")
SERVICE_KEYS = ("work_ms", "calls")
CLIENT_KEYS = ("to", "rate", "on_s", "off_s", "burst")


#: A service runs as process ``tb-NAME``, cut by the kernel to 15 *bytes*: ASCII letters,
#: digits and ``_``, at most 12 (a longer or non-ASCII name would be recorded cut short,
#: under another name than the truth's).  ``bg<digits>`` is refused: background job k runs
#: as ``tb-bgk``, and the probe meters by name, so the two would be summed into one object.
SERVICE_NAME = re.compile(rf"(?!bg[0-9]+$)[A-Za-z0-9_]{{1,{15 - len(PREFIX)}}}")
#: Upper bounds that no testbed on one machine needs: each background job is a process
#: burning CPU, and a client's requests/s (rate x burst when ON, times --load up to 10) are
#: served by real threads; a typo of 100000 would fork or flood the machine instead.
MAX_BACKGROUND = 64
MAX_RATE = 1000
MAX_BURST = 50


def _unknown_keys(where: str, given: dict, allowed: tuple[str, ...]) -> None:
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise TopologyError(f"{where}: unknown key{'s' if len(extra) > 1 else ''} "
                            f"{', '.join(map(repr, extra))} (allowed: {', '.join(allowed)})")


def _call_cycle(services: dict) -> list[str] | None:
    """A cycle of calls, if any: each request of a service on it may come back to that
    service, and at call probability 1 never returns (threads pile up until the end)."""
    graph = {name: list(svc.get("calls") or {}) for name, svc in services.items()}
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in graph[node]:
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def validate(topo: dict) -> None:
    services = topo.get("services") if isinstance(topo, dict) else None
    if not isinstance(services, dict) or not services:
        raise TopologyError("a topology needs a non-empty 'services' object")
    _unknown_keys("topology", topo, TOPOLOGY_KEYS)
    for name, svc in services.items():
        if not SERVICE_NAME.fullmatch(name):
            raise TopologyError(f"service name {name!r}: ASCII letters, digits, _ and at most "
                                f"{15 - len(PREFIX)} chars, not bg<digits> (the background jobs' names)")
        if not isinstance(svc, dict):
            raise TopologyError(f"service {name!r}: an object such as {{\"work_ms\": 4, \"calls\": {{...}}}}")
        _unknown_keys(f"service {name!r}", svc, SERVICE_KEYS)
        work = svc.get("work_ms", 4)
        if not _number(work) or not 0 <= work <= 1000:
            raise TopologyError(f"{name}: work_ms must be a number of milliseconds in [0, 1000], not {work!r}")
        calls = svc.get("calls") or {}
        if not isinstance(calls, dict):
            raise TopologyError(f"{name}: 'calls' maps a service name to a call probability")
        for dep, p in calls.items():
            if dep not in services:
                raise TopologyError(f"{name} calls unknown service {dep!r}")
            if dep == name:
                raise TopologyError(f"{name} calls itself")
            if not (_number(p) and 0 < p <= 1):
                raise TopologyError(f"{name} -> {dep}: call probability must be in (0, 1]")
    cycle = _call_cycle(services)
    if cycle:
        raise TopologyError(f"calls form a cycle ({' -> '.join(cycle)}): a request could come back "
                            "to a service it has passed, so the call graph must be acyclic")
    clients = topo.get("clients", [])
    if not isinstance(clients, list):
        raise TopologyError("'clients' is a list of {\"to\": SERVICE, \"rate\": REQUESTS_PER_S, ...}")
    for c in clients:
        if not isinstance(c, dict):
            raise TopologyError(f"a client is an object such as {{\"to\": SERVICE, \"rate\": 5}}, not {c!r}")
        to = c.get("to")
        if not isinstance(to, str) or to not in services:  # a list is no name (nor hashable)
            raise TopologyError(f"client targets unknown service {to!r}: 'to' is one service name")
        _unknown_keys(f"client of {to}", c, CLIENT_KEYS)
        if not _number(c.get("rate")) or not 0 < c["rate"] <= MAX_RATE:
            raise TopologyError(f"client of {to}: 'rate' must be a positive number of requests/s, at most {MAX_RATE}")
        for key in ("on_s", "off_s", "burst"):
            if key in c and not (_number(c[key]) and c[key] > 0):
                raise TopologyError(f"client of {to}: {key!r} must be a positive number")
        if c.get("burst", 0) > MAX_BURST:
            raise TopologyError(f"client of {to}: 'burst' is at most {MAX_BURST}, not {c['burst']!r}")
    bg = topo.get("background", 0)
    if not _number(bg) or not 0 <= bg <= MAX_BACKGROUND or bg != int(bg):
        raise TopologyError(f"'background' is a number of jobs in [0, {MAX_BACKGROUND}], not {bg!r}")
    if "load" in topo:
        rate_scale(topo["load"])


def truth_edges(topo: dict) -> list[list[str]]:
    return sorted([a, b] for a, svc in topo["services"].items() for b in (svc.get("calls") or {}))


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _spawn(role: str, cfg: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "modeler.testbed_service", role, json.dumps(cfg)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def check_nice(nice: int | None) -> None:
    """A nice value the testbed's processes can be started at (raises TopologyError)."""
    if nice is None:
        return
    if isinstance(nice, bool) or not isinstance(nice, int) or not -20 <= nice <= 19:
        raise TopologyError(f"nice {nice!r}: an integer in [-20, 19]")
    if nice < os.getpriority(os.PRIO_PROCESS, 0) and os.geteuid() != 0:
        raise TopologyError(f"nice {nice}: raising the priority needs root (CAP_SYS_NICE)")


def record(topology: dict, seconds: float, out: str | Path, *, interval: float = 0.5,
           seed: int = 0, load: str | float | None = None, nice: int | None = None,
           tick: Callable[[float], None] | None = None) -> dict:
    """Run the testbed for ``seconds`` and write activity.csv, truth.json, connections.csv.

    ``load`` (a level of :data:`LOADS` or a rate scale) overrides the topology's own
    ``load``; without either the level is :data:`DEFAULT_LOAD`.  ``nice`` runs every
    service, client and background process at that nice value (a negative one keeps a
    recording from being starved by other work on a shared machine; needs root).
    """
    validate(topology)
    level, scale = rate_scale(load if load is not None else topology.get("load"))
    check_nice(nice)
    prio = {} if nice is None else {"nice": nice}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    services = topology["services"]
    names = list(services)
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    procs: list[subprocess.Popen] = []
    # a token in every command line, so that only this run's processes are metered even
    # when another testbed runs on the same machine
    run = f"run{os.getpid()}x{int(time.time() * 1000)}x{uuid.uuid4().hex[:8]}"

    pid_service: dict[int, str] = {}
    try:
        for name, svc in services.items():
            cfg = {"name": PREFIX + name, "run": run, "port": ports[name], "work_ms": svc.get("work_ms", 4),
                   "calls": [{"port": ports[d], "p": p} for d, p in (svc.get("calls") or {}).items()], **prio}
            p = _spawn("service", cfg)
            procs.append(p)
            pid_service[p.pid] = name
        _wait_listening(ports.values())
        for k, c in enumerate(topology.get("clients", [])):
            procs.append(_spawn("client", {**c, "rate": c["rate"] * scale, "name": f"{PREFIX}cl{k}",
                                           "port": ports[c["to"]], "seed": seed * 1000 + k, **prio}))
        metered = list(pid_service)
        for k in range(int(topology.get("background", 0))):
            kind = "periodic" if k % 2 == 0 else "random"
            procs.append(_spawn("background", {"name": f"{PREFIX}bg{k}", "run": run, "kind": kind,
                                               "period_s": 7 + 6 * k, "seed": seed * 1000 + 100 + k, **prio}))
            metered.append(procs[-1].pid)
        # a process is metered under the name it gives itself once started; sampling
        # before that would add a stray "python3" object
        _wait_named(metered)
        probe = ProcfsProbe(per_process="name", match=rf"testbed_service (service|background) .*{run}",
                            host_cpu=False,
                            interfaces=False, host="tb")
        conn_probe = ConnectionProbe()
        samples, edges = [], {}
        port_service = {p: n for n, p in ports.items()}
        machine = _Machine()
        probe.sample()
        start = time.monotonic()
        next_t, next_conn = start + interval, start
        while (now := time.monotonic()) < start + seconds:
            if now >= next_conn:
                for c in conn_probe.sample():
                    src = pid_service.get(c.pid)
                    dst = port_service.get(c.remote[1])
                    if c.direction == "out" and src and dst and src != dst:
                        edges[(src, dst)] = edges.get((src, dst), 0) + 1
                next_conn = now + 2.0
            time.sleep(max(0.0, next_t - time.monotonic()))
            samples.extend(probe.sample())
            machine.sample()
            due = next_beat(next_t, interval, time.monotonic())
            if due > next_t + interval:
                # the recorder itself did not get a CPU in time: the missed ticks are skipped
                # (one longer interval), as the hosts' scheduler does, not sampled in a burst
                machine.stalls += 1
            next_t = due
            if tick:
                tick(min(1.0, (time.monotonic() - start) / seconds))
        contention = {**machine.summary(metered), "nice": nice or 0}
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    series = {}
    for obj, s in to_series(samples).items():
        name = obj.rsplit("/", 1)[-1].removeprefix(PREFIX)
        series[name] = type(s)(name, s.unit, s.start, s.end, s.value)
    write_csv(out / "activity.csv", series.values())
    truth = {"edges": truth_edges(topology), "objects": sorted(series)}
    (out / "truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    # the rates as given; "load" says by how much the run scaled them
    written = {**topology, "load": {"level": level, "rate_scale": scale}}
    (out / "topology.json").write_text(json.dumps(written, indent=1) + "\n")
    with (out / "connections.csv").open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["source", "target", "count"])
        w.writerows(sorted([a, b, n] for (a, b), n in edges.items()))
    (out / "machine.json").write_text(json.dumps(contention, indent=1) + "\n")
    return {"objects": len(series), "edges": len(truth["edges"]), "connections": len(edges),
            "load": level, "rate_scale": scale}


class _Machine:
    """How busy the machine was while recording: host CPU idle per sampling interval,
    1-minute load average, and, at the end, how long the metered processes' threads waited
    for a CPU (``/proc/PID/task/*/schedstat``) per second of CPU they got."""

    def __init__(self) -> None:
        self.prev = self._stat()
        self.idle: list[float] = []
        self.load: list[float] = []
        self.stalls = 0

    @staticmethod
    def _stat() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return v[3] + (v[4] if len(v) > 4 else 0), sum(v[:8])

    def sample(self) -> None:
        cur = self._stat()
        if cur and self.prev and cur[1] > self.prev[1]:
            self.idle.append((cur[0] - self.prev[0]) / (cur[1] - self.prev[1]))
        self.prev = cur
        with contextlib.suppress(OSError):
            self.load.append(os.getloadavg()[0])

    def summary(self, pids: list[int]) -> dict:
        run = wait = 0
        for pid in pids:
            for task in Path(f"/proc/{pid}/task").glob("*/schedstat"):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    r, w = task.read_text().split()[:2]
                    run, wait = run + int(r), wait + int(w)
        n = len(self.idle)
        return {
            "cpus": os.cpu_count(),
            "host_idle_mean": round(sum(self.idle) / n, 3) if n else None,
            "host_saturated_intervals": round(sum(i < 0.05 for i in self.idle) / n, 3) if n else None,
            "loadavg_1min_mean": round(sum(self.load) / len(self.load), 2) if self.load else None,
            "loadavg_1min_max": round(max(self.load), 2) if self.load else None,
            "runqueue_wait_per_cpu_s": round(wait / run, 3) if run else None,
            "sampling_stalls": self.stalls,
            "note": "host_idle_mean: share of CPU time idle over the recording (all CPUs); "
                    "host_saturated_intervals: share of sampling intervals with < 5 % idle; "
                    "runqueue_wait_per_cpu_s: seconds the testbed's service and background threads "
                    "(live at the end) waited for a CPU per second of CPU they used; sampling_stalls: "
                    "times the recorder was late by more than a sampling interval (ticks skipped)",
        }


def _wait_named(pids: list[int], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                raise RuntimeError(f"testbed process {pid} exited at start") from None
            if comm.startswith(PREFIX):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"testbed process {pid} did not start (still {comm!r})")
            time.sleep(0.02)


def _wait_listening(ports, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for port in ports:
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"testbed service on port {port} did not start") from None
                time.sleep(0.05)
