"""The scenario's non-masa processes: service processes with a known call graph and a
router played by Debian's ``snmpd``.

Kept apart from the orchestration so that the one thing that must never go wrong —
every process started here is stopped again, on success, error or Ctrl-C — is small
enough to read at a glance.  Each process runs in its own session, so a terminal's
Ctrl-C reaches only the scenario, which then stops them in order.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from probes.snmpd import LocalSnmpd


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Service, client and background processes (``modeler.testbed_service``), all stopped
    by :meth:`stop`.  ``tag`` goes into every command line, so leftovers are findable."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.procs: list[subprocess.Popen] = []

    def spawn(self, role: str, cfg: dict, prefix: list[str] | None = None) -> subprocess.Popen:
        """``prefix`` runs it elsewhere (``ip netns exec NS``)."""
        p = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "modeler.testbed_service", role,
             json.dumps({**cfg, "run": self.tag})],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()


def wait_listening(addresses, timeout: float = 15.0) -> None:
    """Block until every ``(host, port)`` accepts a TCP connection."""
    deadline = time.monotonic() + timeout
    for host, port in addresses:
        while True:
            try:
                socket.create_connection((host, port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"service on {host}:{port} did not start") from None
                time.sleep(0.05)


class Router(LocalSnmpd):
    """The scenario's router: a real ``snmpd`` serving on ``address`` to SNMP managers
    from ``clients`` (an address or a network), read over SNMP by a collector agent."""

    COMMUNITY = "masascenario"

    def __init__(self, workdir: Path, address: str = "127.0.0.1", clients: str = "127.0.0.1") -> None:
        super().__init__(community=self.COMMUNITY, address=address, clients=clients, workdir=workdir)
