"""A scenario service or client that talks to given addresses, not only loopback.

``modeler.testbed_service`` serves and calls on 127.0.0.1; with ``masa scenario --netns``
each host has its own network namespace and address, so services bind their host's
address and call their dependencies at theirs.  The work model (CPU per request, calls
with a probability, bursty open-loop clients) is the testbed's, reused as it is.

Run as ``python -m modeler.scenario_service ROLE CONFIG_JSON``.
"""

from __future__ import annotations

import json
import random
import socket
import socketserver
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from modeler.testbed_service import burn, run_background, set_name


class _Pool(threading.local):
    """One persistent connection per dependency per thread."""

    def __init__(self) -> None:
        self.conns: dict[tuple[str, int], tuple[socket.socket, object]] = {}


def _call(pool: _Pool, addr: tuple[str, int]) -> None:
    for attempt in range(2):
        conn = pool.conns.get(addr)
        try:
            if conn is None:
                s = socket.create_connection(addr, timeout=10)
                conn = pool.conns[addr] = (s, s.makefile("rb"))
            conn[0].sendall(b"x\n")
            if not conn[1].readline():
                raise OSError("closed")
            return
        except OSError:
            pool.conns.pop(addr, None)
            if attempt:
                return


def run_service(cfg: dict) -> None:
    work = cfg["work_ms"] / 1000.0
    calls = [((c["host"], int(c["port"])), float(c.get("p", 1.0))) for c in cfg.get("calls", [])]
    pool = _Pool()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            rnd = random.Random()
            for _line in self.rfile:
                burn(work * rnd.lognormvariate(0, 0.3))
                for addr, p in calls:
                    if rnd.random() < p:
                        _call(pool, addr)
                self.wfile.write(b"ok\n")

    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer((cfg["bind"], cfg["port"]), Handler) as server:
        server.serve_forever()


def run_client(cfg: dict) -> None:
    rnd = random.Random(cfg.get("seed"))
    addr, base = (cfg["host"], int(cfg["port"])), float(cfg["rate"])
    pool = _Pool()
    executor = ThreadPoolExecutor(max_workers=16)
    on, switch, drift = False, 0.0, 1.0
    t = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= switch:
            on = not on
            switch = now + rnd.expovariate(1.0 / (cfg.get("on_s", 6) if on else cfg.get("off_s", 8)))
            drift = min(4.0, max(0.25, drift * rnd.lognormvariate(0, 0.3)))
        rate = base * drift * (cfg.get("burst", 4.0) if on else 0.3)
        t += rnd.expovariate(rate)
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -1.0:
            t = time.monotonic()  # overloaded: drop the backlog rather than spiral
        executor.submit(_call, pool, addr)


def main() -> None:
    role, cfg = sys.argv[1], json.loads(sys.argv[2])
    set_name(cfg["name"])
    {"service": run_service, "client": run_client, "background": run_background}[role](cfg)


if __name__ == "__main__":
    main()
