"""Testbeds with ground truth: real processes, a known call graph, the project's own probe.

A topology is JSON (the built-ins are in :data:`TOPOLOGIES`)::

    {"services": {"web": {"work_ms": 4, "calls": {"api": 0.8}},
                  "api": {"work_ms": 6, "calls": {"db": 1.0}},
                  "db":  {"work_ms": 3}},
     "clients": [{"to": "web", "rate": 15}, {"to": "db", "rate": 3}],
     "background": 2}

``calls`` maps a dependency to the probability that a request makes that call;
``clients`` are independent bursty populations (``rate`` requests/s on average, optional
``on_s``, ``off_s``, ``burst``); ``background`` is a number of unrelated CPU jobs.
Every service and background job is metered with :class:`probes.procfs.ProcfsProbe`;
:class:`probes.procfs.ConnectionProbe` records which service connected to which.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from masa.activity import write_csv
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
TRAINING_TOPOLOGIES = ("chain", "fanout")


class TopologyError(ValueError):
    """A topology JSON that does not describe a runnable testbed."""


def load_topology(name_or_path: str) -> dict:
    """A built-in topology by name, or a JSON file in the documented format."""
    if name_or_path in TOPOLOGIES:
        return TOPOLOGIES[name_or_path]
    path = Path(name_or_path)
    try:
        topo = json.loads(path.read_text())
    except OSError:
        raise TopologyError(
            f"{name_or_path}: neither a built-in topology ({', '.join(TOPOLOGIES)}) nor a readable file"
        ) from None
    except json.JSONDecodeError as exc:
        raise TopologyError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    validate(topo)
    return topo


def validate(topo: dict) -> None:
    services = topo.get("services") if isinstance(topo, dict) else None
    if not isinstance(services, dict) or not services:
        raise TopologyError("a topology needs a non-empty 'services' object")
    for name, svc in services.items():
        if not name or len(PREFIX + name) > 15 or not name.replace("_", "").isalnum():
            raise TopologyError(f"service name {name!r}: letters, digits, _ and at most {15 - len(PREFIX)} chars")
        for dep, p in (svc.get("calls") or {}).items():
            if dep not in services:
                raise TopologyError(f"{name} calls unknown service {dep!r}")
            if not (isinstance(p, (int, float)) and 0 < p <= 1):
                raise TopologyError(f"{name} -> {dep}: call probability must be in (0, 1]")
    for c in topo.get("clients", []):
        if c.get("to") not in services:
            raise TopologyError(f"client targets unknown service {c.get('to')!r}")


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


def record(topology: dict, seconds: float, out: str | Path, *, interval: float = 0.5,
           seed: int = 0, tick: Callable[[float], None] | None = None) -> dict:
    """Run the testbed for ``seconds`` and write activity.csv, truth.json, connections.csv."""
    validate(topology)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    services = topology["services"]
    names = list(services)
    ports = dict(zip(names, _free_ports(len(names)), strict=True))
    procs: list[subprocess.Popen] = []
    # a token in every command line, so that only this run's processes are metered even
    # when another testbed runs on the same machine
    run = f"run{os.getpid()}x{int(time.time() * 1000)}"

    pid_service: dict[int, str] = {}
    try:
        for name, svc in services.items():
            cfg = {"name": PREFIX + name, "run": run, "port": ports[name], "work_ms": svc.get("work_ms", 4),
                   "calls": [{"port": ports[d], "p": p} for d, p in (svc.get("calls") or {}).items()]}
            p = _spawn("service", cfg)
            procs.append(p)
            pid_service[p.pid] = name
        _wait_listening(ports.values())
        for k, c in enumerate(topology.get("clients", [])):
            procs.append(_spawn("client", {**c, "name": f"{PREFIX}cl{k}", "port": ports[c["to"]],
                                           "seed": seed * 1000 + k}))
        for k in range(int(topology.get("background", 0))):
            kind = "periodic" if k % 2 == 0 else "random"
            procs.append(_spawn("background", {"name": f"{PREFIX}bg{k}", "run": run, "kind": kind,
                                               "period_s": 7 + 6 * k, "seed": seed * 1000 + 100 + k}))
        probe = ProcfsProbe(per_process="name", match=rf"testbed_service (service|background) .*{run}",
                            host_cpu=False,
                            interfaces=False, host="tb")
        conn_probe = ConnectionProbe()
        samples, edges = [], {}
        port_service = {p: n for n, p in ports.items()}
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
            next_t += interval
            if tick:
                tick(min(1.0, (time.monotonic() - start) / seconds))
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
    (out / "topology.json").write_text(json.dumps(topology, indent=1) + "\n")
    with (out / "connections.csv").open("w", newline="") as handle:
        w = csv.writer(handle)
        w.writerow(["source", "target", "count"])
        w.writerows(sorted([a, b, n] for (a, b), n in edges.items()))
    return {"objects": len(series), "edges": len(truth["edges"]), "connections": len(edges)}


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
