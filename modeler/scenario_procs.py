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
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing listens on right now (TCP by default, UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    """Service, client and background processes (``modeler.scenario_service``), all stopped
    by :meth:`stop`.  ``tag`` goes into every command line, so leftovers are findable."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.procs: list[subprocess.Popen] = []

    def spawn(self, role: str, cfg: dict, prefix: list[str] | None = None) -> subprocess.Popen:
        """``prefix`` runs it elsewhere (``ip netns exec NS``)."""
        p = subprocess.Popen(
            [*(prefix or []), sys.executable, "-m", "modeler.scenario_service", role,
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


def snmpd_path() -> str | None:
    """Debian's snmpd, if installed (often in /usr/sbin, outside a user's PATH)."""
    return shutil.which("snmpd") or ("/usr/sbin/snmpd" if os.path.exists("/usr/sbin/snmpd") else None)


class Router:
    """A real ``snmpd`` on a loopback UDP port, unprivileged when run as root (as the
    probe tests do): the scenario's router, read over SNMP by a collector agent."""

    COMMUNITY = "masascenario"

    def __init__(self, workdir: Path, address: str = "127.0.0.1", clients: str = "127.0.0.1") -> None:
        """Serve on ``address`` to SNMP managers from ``clients`` (an address or a network)."""
        exe = snmpd_path()
        if exe is None:
            raise FileNotFoundError("snmpd")
        self.address = address
        self.port = free_port(socket.SOCK_DGRAM)
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = [f"agentAddress udp:{address}:{self.port}", f"rocommunity {self.COMMUNITY} {clients}",
                "dontLogTCPWrappersConnects yes"]
        (self.dir / "snmpd.conf").write_text("\n".join(conf) + "\n")
        cmd = [exe, "-f", "-C", "-c", str(self.dir / "snmpd.conf"), "-I", "-smux",
               "-Lf", str(self.dir / "snmpd.log")]
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("Debian-snmp")
                os.chown(self.dir, user.pw_uid, user.pw_gid)
                cmd += ["-u", "Debian-snmp", "-g", str(user.pw_gid)]
            except KeyError:
                pass
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(self.dir / "persist")}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait()
        except Exception:
            self.stop()
            raise

    @property
    def target(self) -> str:
        return f"udp:{self.address}:{self.port}"

    def _wait(self, limit: float = 15.0) -> None:
        """Until a hand-built v2c GET of sysUpTime.0 is answered (independent of probes/)."""
        c = self.COMMUNITY.encode()
        oid = bytes([0x06, 0x08, 0x2B, 6, 1, 2, 1, 1, 3, 0])
        vb = bytes([0x30, len(oid) + 2]) + oid + b"\x05\x00"
        vbl = bytes([0x30, len(vb)]) + vb
        pdu_body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + vbl
        pdu = bytes([0xA0, len(pdu_body)]) + pdu_body
        body = b"\x02\x01\x01" + bytes([0x04, len(c)]) + c + pdu
        msg = bytes([0x30, len(body)]) + body
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpd exited with {self.proc.returncode} (log: {self.dir / 'snmpd.log'})")
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(0.3)
                s.sendto(msg, (self.address, self.port))
                try:
                    s.recv(4096)
                    return
                except OSError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"snmpd did not answer on {self.target}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
