"""Run Debian's net-snmp agent (``snmpd``) as a local SNMP peer.

The scenario's router and the SNMP tests are a real ``snmpd`` serving this machine's
IF-MIB and CPU on a chosen address and UDP port, unprivileged (as ``Debian-snmp`` when
started by root), with a v2c community and optional v3 users, its files in a folder of
its own.  Readiness is checked with a hand-built v2c GET, so this module depends on
neither pysnmp nor net-snmp's tools.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from masa.supervisor import stop_process


def snmpd_path() -> str | None:
    """Debian's snmpd, if installed (often in /usr/sbin, outside a user's PATH)."""
    return shutil.which("snmpd") or ("/usr/sbin/snmpd" if os.path.exists("/usr/sbin/snmpd") else None)


def free_udp_port(address: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((address, 0))
        return s.getsockname()[1]


def uptime_get(address: str, port: int, community: str, timeout: float = 0.3) -> bytes | None:
    """The raw answer to a hand-built v2c GET of sysUpTime.0, or None: a liveness check
    that depends on no SNMP library (so it can also check the project's own poller)."""
    c = community.encode()
    oid = bytes([0x06, 0x08, 0x2B, 6, 1, 2, 1, 1, 3, 0])
    vb = bytes([0x30, len(oid) + 2]) + oid + b"\x05\x00"
    vbl = bytes([0x30, len(vb)]) + vb
    pdu_body = b"\x02\x01\x01\x02\x01\x00\x02\x01\x00" + vbl
    pdu = bytes([0xA0, len(pdu_body)]) + pdu_body
    body = b"\x02\x01\x01" + bytes([0x04, len(c)]) + c + pdu
    msg = bytes([0x30, len(body)]) + body
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(msg, (address, port))
        try:
            return s.recv(4096)
        except OSError:
            return None


class LocalSnmpd:
    """A running ``snmpd``; ``target`` is what an SNMP poller is given.

    ``v3_users`` maps a user name to ``(auth protocol, auth key, priv protocol, priv key)``
    (e.g. ``("SHA", "authpass123", "AES", "privpass123")``)."""

    def __init__(self, community: str = "public", address: str = "127.0.0.1",
                 clients: str = "127.0.0.1", workdir: Path | None = None,
                 v3_users: dict[str, tuple[str, str, str, str]] | None = None) -> None:
        exe = snmpd_path()
        if exe is None:
            raise FileNotFoundError("snmpd is not installed (Debian package snmpd)")
        self.community, self.address = community, address
        self.port = free_udp_port(address)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="masa-snmpd-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = [f"agentAddress udp:{address}:{self.port}", f"rocommunity {community} {clients}",
                "dontLogTCPWrappersConnects yes"]
        for user, (auth, auth_key, priv, priv_key) in (v3_users or {}).items():
            conf += [f'createUser {user} {auth} "{auth_key}" {priv} "{priv_key}"', f"rouser {user} priv"]
        (self.dir / "snmpd.conf").write_text("\n".join(conf) + "\n")
        cmd = [exe, "-f", "-C", "-c", str(self.dir / "snmpd.conf"), "-I", "-smux", "-Lf", str(self.log)]
        if os.geteuid() == 0:  # never run a network daemon as root when we need not
            try:
                user = pwd.getpwnam("Debian-snmp")
                os.chown(self.dir, user.pw_uid, user.pw_gid)
                cmd += ["-u", "Debian-snmp", "-g", str(user.pw_gid)]
            except KeyError:
                pass
        env = {**os.environ, "MIBS": "", "SNMP_PERSISTENT_DIR": str(self.dir / "persist")}
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.started = time.time()
        try:
            self._wait()
        except Exception:
            self.stop()
            raise

    @property
    def target(self) -> str:
        return f"udp:{self.address}:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "snmpd.log"

    def _wait(self, limit: float = 15.0) -> None:
        """Until a v2c GET of sysUpTime.0 is answered."""
        deadline = time.time() + limit
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"snmpd exited with {self.proc.returncode} (log: {self.log})")
            if uptime_get(self.address, self.port, self.community) is not None:
                return
            time.sleep(0.1)
        raise RuntimeError(f"snmpd did not answer on {self.target} (log: {self.log})")

    def stop(self) -> None:
        stop_process(self.proc)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
