"""Connection evidence: which local process talks TCP to which remote endpoint.

The modeler uses this as evidence of a dependency (``web`` on hostA holds connections to
hostB:5432, so it likely depends on the database).  Read from ``/proc/net/tcp`` and
``/proc/net/tcp6`` of the caller's network namespace, and attributed to processes via
the socket inodes found in ``/proc/PID/fd``.

Attributing a socket to a PID needs read access to that process's ``fd`` directory, so
without root only the caller's own processes are attributed.  Other connections are
still reported, with ``pid=None`` and the socket owner's ``uid`` from the kernel table,
and :attr:`ConnectionProbe.complete` says whether attribution could be complete.

Costs tens of milliseconds with many processes (every fd link of every process is read),
so sample it far less often than CPU — :class:`ConnectionProbe` only rescans the fds
when it sees a socket inode it has not tried to attribute yet.

To be matched across hosts, a connection's far end is written as an *endpoint*
(:func:`endpoint`): ``ip:port`` (``[ip6]:port``), and for a loopback address
``ip:port@SCOPE``, where :func:`namespace_scope` names the one network namespace of one
running kernel that this loopback belongs to.  ``127.0.0.1:5432`` seen on two machines
is two different sockets; seen by two agent hosts on one machine (loopback tests, the
scenario) it is the same one, and the scope says which case it is.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from probes import procread

#: Kernel TCP states (include/net/tcp_states.h) we report.
STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
}
LISTEN = 10
#: samples that look again for a socket no readable fd held: between accept() giving the
#: socket its inode and installing the fd, or while an fd is in flight between processes
#: (SCM_RIGHTS), the socket is listed but nobody's yet; cached as unowned for its
#: lifetime, it was never attributed
RETRIES = 3


class Connection(NamedTuple):
    """One TCP socket seen at ``seen`` (wall-clock seconds).

    ``direction`` is ``"out"`` when the local port is not one we listen on (we called
    out to ``remote``), ``"in"`` when a client reached one of our listening ports, and
    ``"listen"`` for a listening socket (``remote`` is then ``("", 0)``)."""

    pid: int | None
    name: str | None
    local: tuple[str, int]
    remote: tuple[str, int]
    state: str
    direction: str
    uid: int
    inode: int
    seen: float


class _Raw(NamedTuple):
    local: tuple[str, int]
    remote: tuple[str, int]
    state: int
    uid: int
    inode: int


_HOSTS: dict[bytes, str] = {}  # hex address -> text: a few addresses recur in every row


def _addr(hexaddr: bytes) -> tuple[str, int]:
    host, port = hexaddr.split(b":")
    text = _HOSTS.get(host)
    if text is None:
        if len(_HOSTS) > 4096:  # a busy server sees many remote addresses: stay bounded
            _HOSTS.clear()
        text = _HOSTS[host] = _host(host)
    return text, int(port, 16)


def _host(host: bytes) -> str:
    raw = bytes.fromhex(host.decode())
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    # IPv6: four 32-bit words, each in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    text = socket.inet_ntop(socket.AF_INET6, words)
    if text.startswith("::ffff:") and "." in text:  # IPv4-mapped: report as IPv4
        text = text[7:]
    return text


def read_tcp_table(proc: str = procread.PROC) -> list[_Raw]:
    """All TCP sockets of our network namespace, IPv4 and IPv6."""
    out = []
    for name in ("tcp", "tcp6"):
        try:
            raw = procread.read_whole(f"{proc}/net/{name}")
        except FileNotFoundError:  # no IPv6 in this kernel
            continue
        for line in raw.splitlines()[1:]:
            f = line.split()
            if len(f) < 10:
                continue
            out.append(_Raw(_addr(f[1]), _addr(f[2]), int(f[3], 16), int(f[7]), int(f[9])))
    return out


def socket_owners(proc: str = procread.PROC, wanted: set[int] | None = None) -> dict[int, int]:
    """Map socket inode -> pid by reading the fd links of every process we may read.

    Stops early once every inode in ``wanted`` is found."""
    owners: dict[int, int] = {}
    for pid in procread.pids(proc):
        fddir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fddir)
        except OSError:  # not ours (EACCES) or gone
            continue
        for fd in fds:
            try:
                link = os.readlink(f"{fddir}/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owners[int(link[8:-1])] = pid
        if wanted is not None and wanted.issubset(owners.keys()):
            break
    return owners


def _comm(pid: int, proc: str) -> str | None:
    st = procread.read_stat(pid, proc)
    return st.comm if st else None


class ConnectionProbe:
    """Samples TCP connections with their owning process; keeps an inode -> pid cache."""

    def __init__(self, proc: str = procread.PROC, *, listening: bool = False) -> None:
        self.proc = proc
        self.listening = listening
        self._owner: dict[int, tuple[int, str | None]] = {}
        self._unowned: dict[int, int] = {}  # inode -> scans that could not attribute it

    @property
    def complete(self) -> bool:
        """Whether every socket can be attributed: only root may read others' fds."""
        return os.geteuid() == 0

    def sample(self) -> list[Connection]:
        """Connections now (states other than LISTEN; LISTEN too if ``listening``)."""
        if not os.path.exists(f"{self.proc}/net/tcp"):  # not Linux: portability over speed
            return psutil_connections(listening=self.listening)
        seen = time.time()
        table = read_tcp_table(self.proc)
        listen_ports = {r.local[1] for r in table if r.state == LISTEN}
        uids = {r.inode: r.uid for r in table if r.inode}
        inodes = uids.keys()
        # a socket not found before is looked for again (a few times) only where a scan
        # can find it: root reads every fd, anyone else only their own processes'
        euid = os.geteuid()
        retry = {i for i, n in self._unowned.items()
                 if n < RETRIES and i in uids and (euid == 0 or uids[i] == euid)}
        unknown = (inodes - self._owner.keys() - self._unowned.keys()) | retry
        if unknown:
            names: dict[int, str | None] = {}  # one stat read per process, not per socket
            for inode, pid in socket_owners(self.proc, unknown).items():
                if inode in unknown or inode not in self._owner:
                    if pid not in names:
                        names[pid] = _comm(pid, self.proc)
                    self._owner[inode] = (pid, names[pid])
            for inode in unknown - self._owner.keys():
                self._unowned[inode] = self._unowned.get(inode, 0) + 1
        # socket inodes are unique while the socket lives: forget the closed ones
        self._owner = {i: o for i, o in self._owner.items() if i in inodes}
        self._unowned = {i: n for i, n in self._unowned.items() if i in inodes and i not in self._owner}
        out = []
        for r in table:
            if r.state == LISTEN:
                if not self.listening:
                    continue
                direction = "listen"
            else:
                direction = "in" if r.local[1] in listen_ports else "out"
            pid, name = self._owner.get(r.inode, (None, None))
            remote = ("", 0) if r.state == LISTEN else r.remote
            out.append(Connection(pid, name, r.local, remote, STATES.get(r.state, str(r.state)),
                                  direction, r.uid, r.inode, seen))
        return out


def read_connections(proc: str = procread.PROC, *, listening: bool = False) -> list[Connection]:
    """One-shot: the TCP connections of this network namespace with their processes."""
    return ConnectionProbe(proc, listening=listening).sample()


def psutil_connections(*, listening: bool = False) -> list[Connection]:
    """The same evidence through psutil, for systems without Linux's ``/proc/net/tcp``
    (slower, and on Linux it needs root for other users' sockets just the same)."""
    import psutil

    seen = time.time()
    conns = psutil.net_connections("tcp")
    listen_ports = {c.laddr.port for c in conns if c.status == psutil.CONN_LISTEN}
    names: dict[int, str | None] = {}
    out = []
    for c in conns:
        is_listen = c.status == psutil.CONN_LISTEN
        if is_listen and not listening:
            continue
        if c.pid is not None and c.pid not in names:
            try:
                names[c.pid] = psutil.Process(c.pid).name()
            except psutil.Error:
                names[c.pid] = None
        direction = "listen" if is_listen else ("in" if c.laddr.port in listen_ports else "out")
        remote = (c.raddr.ip, c.raddr.port) if c.raddr and not is_listen else ("", 0)
        out.append(Connection(c.pid, names.get(c.pid) if c.pid is not None else None,
                              (c.laddr.ip, c.laddr.port), remote, c.status, direction, -1, 0, seen))
    return out


# -- endpoints: the far end of a connection, comparable across hosts -------------------------


def namespace_scope(proc: str = procread.PROC) -> str:
    """Who shares this loopback: the network namespace of this process on this boot of
    this kernel (namespace inode numbers repeat across machines and boots, boot ids do
    not).  Processes reading the same ``/proc/net/tcp`` get the same scope."""
    try:
        boot = procread.read_small(f"{proc}/sys/kernel/random/boot_id").decode().strip()
    except OSError:
        boot = socket.gethostname()
    try:
        ns = os.readlink(f"{proc}/self/ns/net")
    except OSError:
        ns = ""
    return hashlib.sha1(f"{boot}|{ns}".encode()).hexdigest()[:12]


def endpoint(ip: str, port: int, scope: str) -> str:
    """``ip:port``; IPv6 in brackets; a loopback address qualified by its ``scope``."""
    try:
        loopback = ipaddress.ip_address(ip).is_loopback
    except ValueError:
        loopback = False
    text = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    return f"{text}@{scope}" if loopback else text


def local_addresses() -> list[str]:
    """The addresses of this network namespace's interfaces: where a socket listening
    on the wildcard address (``0.0.0.0``, ``::``) can be reached."""
    import psutil

    out = []
    for addrs in psutil.net_if_addrs().values():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6):
                out.append(a.address.split("%")[0])
    return sorted(set(out))


def listening_endpoints(local: tuple[str, int], scope: str, addresses: Iterable[str]) -> list[str]:
    """Every endpoint a listening socket bound to ``local`` answers on (a wildcard
    address answers on every address of the namespace; ``::`` also on IPv4, as Linux
    sockets are dual-stack unless told otherwise)."""
    ip, port = local
    if ip == "0.0.0.0":
        return [endpoint(a, port, scope) for a in addresses if ":" not in a]
    if ip == "::":
        return [endpoint(a, port, scope) for a in addresses]
    return [endpoint(ip, port, scope)]


def attribute(conns: Iterable[Connection], objects_of: Callable[[int], list[str]], scope: str,
              addresses: Iterable[str]) -> tuple[dict[tuple[str, str], int], set[tuple[str, str]]]:
    """Outgoing connections and listening sockets of attributed processes, by object.

    Incoming connections are left out: the caller's own collector reports them as its
    outgoing ones, with the endpoint the caller used (the server sees only a port the
    client's kernel picked)."""
    addresses = list(addresses)
    edges: dict[tuple[str, str], int] = {}
    listening: set[tuple[str, str]] = set()
    for c in conns:
        if c.pid is None or c.direction == "in":
            continue
        objects = objects_of(c.pid)
        if not objects:
            continue
        if c.direction == "listen":
            for ep in listening_endpoints(c.local, scope, addresses):
                listening.update((ep, o) for o in objects)
        elif c.remote[1]:
            ep = endpoint(c.remote[0], c.remote[1], scope)
            for o in objects:
                edges[(o, ep)] = edges.get((o, ep), 0) + 1
    return edges, listening


def attributable(pid: int, proc: str = procread.PROC) -> bool:
    """Whether this process's sockets can be attributed to it: root reads every fd
    directory, anyone else only their own processes'."""
    if os.geteuid() == 0:
        return True
    try:
        return os.stat(f"{proc}/{pid}").st_uid == os.geteuid()
    except OSError:
        return False
