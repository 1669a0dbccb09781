"""Real SNMP agents for the tests: Debian's snmpd and snmpsim, run unprivileged on
loopback high ports, each stopped when its test module ends."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from masa.supervisor import stop_process
from probes.snmpd import LocalSnmpd, uptime_get

COMMUNITY = "masatest"
V3_USERS = {  # user -> (auth protocol, priv protocol)
    "shauser": ("SHA", "AES"),
    "sha256user": ("SHA-256", "AES"),
}
AUTH_KEY = "authpass123"
PRIV_KEY = "privpass123"


def free_udp_port() -> int:
    """A loopback UDP port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_udp(port: int, proc: subprocess.Popen, what: str, limit: float = 15.0,
              community: str = COMMUNITY) -> None:
    """Wait until an SNMP GET of sysUpTime on the port is answered."""
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if snmpget_raw(port, community) is not None:
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer on udp:127.0.0.1:{port}")


def snmpget_raw(port: int, community: str = COMMUNITY) -> bytes | None:
    return uptime_get("127.0.0.1", port, community)


class Snmpd(LocalSnmpd):
    """Debian's net-snmp agent serving this machine's IF-MIB and CPU, with the tests'
    community and v3 users."""

    def __init__(self) -> None:
        super().__init__(community=COMMUNITY, v3_users={
            user: (auth, AUTH_KEY, priv, PRIV_KEY) for user, (auth, priv) in V3_USERS.items()})


def net_snmp(tool: str, port: int, *oids: str, v3: str | None = None, extra: tuple = ()) -> str:
    """Run one of Debian's net-snmp tools (snmpget, snmpbulkwalk) against the agent."""
    auth = ["-v2c", "-c", COMMUNITY]
    if v3:
        a, p = V3_USERS[v3]
        auth = ["-v3", "-l", "authPriv", "-u", v3, "-a", a, "-A", AUTH_KEY, "-x", p, "-X", PRIV_KEY]
    out = subprocess.run([tool, *auth, "-On", "-Oe", "-t", "2", "-r", "1", *extra,
                          f"udp:127.0.0.1:{port}", *oids],
                         capture_output=True, text=True, timeout=30, env={**os.environ, "MIBS": ""})
    if out.returncode != 0:
        raise RuntimeError(f"{tool} failed: {out.stderr.strip()}")
    return out.stdout


def parse_net_snmp(text: str) -> dict[str, str]:
    """'.1.3.6... = Counter32: 5' lines -> {'1.3.6...': '5'}."""
    out = {}
    for line in text.splitlines():
        oid, _, rest = line.partition(" = ")
        if not rest:
            continue
        value = rest.split(": ", 1)[-1].strip()
        if value.startswith("(") and ")" in value:  # Timeticks: (123) 0:00:01.23
            value = value[1 : value.index(")")]
        out[oid.strip().lstrip(".")] = value.strip('"')
    return out


class Snmpsim:
    """snmpsim serving .snmprec data files from a directory (community = file name)."""

    def __init__(self, data_dir: Path, port: int | None = None, extra: tuple = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_udp_port()
        # (the -lite responder of snmpsim 1.2 does not run on pysnmp 7.1)
        exe = Path(sys.executable).with_name("snmpsim-command-responder")
        if not exe.exists():
            raise FileNotFoundError("snmpsim-command-responder (pip install snmpsim)")
        self.cache = Path(tempfile.mkdtemp(prefix="masa-snmpsim-"))
        cmd = [str(exe), f"--data-dir={data_dir}", f"--agent-udpv4-endpoint=127.0.0.1:{self.port}",
               f"--cache-dir={self.cache}", *extra]
        env = dict(os.environ)
        if os.geteuid() == 0:
            # snmpsim would drop to 'nobody', who cannot read this venv's interpreter under
            # /root; it serves only loopback here, so let it keep root
            env["SNMPSIM_ALLOW_ROOT"] = "true"
        self.log = self.cache / "log"
        self._log = self.log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)
        try:
            first = sorted(data_dir.glob("*.snmprec"))[0].stem  # community = data file name
            _wait_udp(self.port, self.proc, "snmpsim", limit=30, community=first)
        except Exception:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.cache, ignore_errors=True)
