"""One process of a testbed: a service, a client population or a background job.

Run as ``python -m modeler.testbed_service ROLE CONFIG_JSON``.  Each process renames
itself (``prctl(PR_SET_NAME)``) so the procfs probe meters it under its own name.

Addresses default to loopback; a service's ``bind`` and the ``host`` of a client or of a
call put it elsewhere (``masa scenario --netns`` gives each host its own address).

* ``service``: a threaded TCP server; each request (one line) burns CPU for
  a noisy amount of work, then calls each dependency with its call probability, then
  answers.  This is the "activity of a caller includes the call" structure that real
  request-driven services have.
* ``client``: an open-loop population sending requests at a bursty rate (ON/OFF periods,
  log-normal rate drift), independent of every other population.
* ``background``: CPU work unrelated to any request (cron-like bursts or random jobs).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

LOOPBACK = "127.0.0.1"


def set_name(name: str) -> None:
    """Set the kernel's comm of this process (what ``/proc/PID/stat`` shows)."""
    try:
        libc = ctypes.CDLL(None)
        libc.prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def burn(seconds: float) -> None:
    """Spend ``seconds`` of CPU time in this thread."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for _ in range(200):
            x += 1


class _Pool(threading.local):
    """One persistent connection per dependency per thread."""

    def __init__(self) -> None:
        self.conns: dict[tuple[str, int], tuple[socket.socket, object]] = {}


def _call(pool: _Pool, port: tuple[str, int]) -> None:
    for attempt in range(2):
        conn = pool.conns.get(port)
        try:
            if conn is None:
                s = socket.create_connection(port, timeout=10)
                conn = pool.conns[port] = (s, s.makefile("rb"))
            conn[0].sendall(b"x\n")
            if not conn[1].readline():
                raise OSError("closed")
            return
        except OSError:
            pool.conns.pop(port, None)
            if attempt:
                return


def run_service(cfg: dict) -> None:
    work = cfg["work_ms"] / 1000.0
    calls = [((c.get("host", LOOPBACK), int(c["port"])), float(c.get("p", 1.0))) for c in cfg.get("calls", [])]
    pool = _Pool()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            rnd = random.Random()
            for _line in self.rfile:
                burn(work * rnd.lognormvariate(0, 0.3))
                for port, p in calls:
                    if rnd.random() < p:
                        _call(pool, port)
                self.wfile.write(b"ok\n")

    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer((cfg.get("bind", LOOPBACK), cfg["port"]), Handler) as server:
        server.serve_forever()


def run_client(cfg: dict) -> None:
    # two random streams: the ON/OFF and drift schedule is the same for a given seed at
    # any rate (so a testbed at low and at high load sees the same bursts, scaled), and
    # the arrivals within it
    seed = cfg.get("seed")
    sched = random.Random(seed)
    rnd = random.Random(None if seed is None else f"arrivals-{seed}")
    port, base = (cfg.get("host", LOOPBACK), int(cfg["port"])), float(cfg["rate"])
    pool = _Pool()
    executor = ThreadPoolExecutor(max_workers=16)
    on, drift = False, 1.0
    t = switch = time.monotonic()
    while True:
        while t >= switch:
            on = not on
            switch += sched.expovariate(1.0 / (cfg.get("on_s", 6) if on else cfg.get("off_s", 8)))
            drift = min(4.0, max(0.25, drift * sched.lognormvariate(0, 0.3)))
        rate = base * drift * (cfg.get("burst", 4.0) if on else 0.3)
        gap = rnd.expovariate(rate)
        if t + gap >= switch:
            t = switch  # the rate changes before the next arrival: start afresh (memoryless)
            continue
        t += gap
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            # overloaded: drop the backlog rather than spiral (the schedule moves on too)
            t = time.monotonic()
        executor.submit(_call, pool, port)


def run_background(cfg: dict) -> None:
    rnd = random.Random(cfg.get("seed"))
    period = float(cfg.get("period_s", 15))
    while True:
        if cfg.get("kind") == "periodic":
            burn(float(cfg.get("burst_s", 0.4)))
            time.sleep(period)
        else:
            time.sleep(rnd.expovariate(1.0 / period))
            burn(rnd.uniform(0.05, 0.6))


def set_priority(nice: int) -> None:
    """Run this process at ``nice`` (before it starts threads, which inherit it); with
    scheduler autogroups (Linux), its session -- its own, the testbed starts every process
    in a new session -- gets the same nice value."""
    os.setpriority(os.PRIO_PROCESS, 0, nice)
    with contextlib.suppress(OSError), open("/proc/self/autogroup", "w") as f:
        f.write(str(nice))


def main() -> None:
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    set_name(cfg["name"])
    if cfg.get("nice") is not None:
        set_priority(int(cfg["nice"]))
    {"service": run_service, "client": run_client, "background": run_background}[role](cfg)


if __name__ == "__main__":
    main()
