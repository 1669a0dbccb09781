"""Connection evidence against real TCP connections between real child processes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

import probes
from probes import connections
from probes.connections import ConnectionProbe, read_connections

SERVER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET)
s.bind(("::1" if sys.argv[1] == "6" else "127.0.0.1", 0)); s.listen()
print(s.getsockname()[1], flush=True)
conns = []
s.settimeout(30)
while True:
    c, _ = s.accept(); conns.append(c)
"""
CLIENT = r"""
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
print(c.getsockname()[1], flush=True)
time.sleep(60)
"""


@pytest.fixture
def pair(request):
    """A server and a client child process holding one TCP connection on loopback."""
    family = getattr(request, "param", "4")
    host = "::1" if family == "6" else "127.0.0.1"
    server = subprocess.Popen([sys.executable, "-c", SERVER, family], stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline())
    client = subprocess.Popen([sys.executable, "-c", CLIENT, host, str(port)], stdout=subprocess.PIPE, text=True)
    cport = int(client.stdout.readline())
    yield server.pid, client.pid, host, port, cport
    for p in (client, server):
        p.kill()
        p.wait()
        p.stdout.close()


@pytest.mark.parametrize("pair", ["4", "6"], indirect=True)
def test_connections_attributed_to_processes(pair):
    spid, cpid, host, port, cport = pair
    conns = read_connections(listening=True)
    out = [c for c in conns if c.pid == cpid and c.remote == (host, port)]
    assert len(out) == 1, conns
    assert out[0].state == "ESTABLISHED" and out[0].direction == "out" and out[0].local[1] == cport
    assert out[0].name == psutil.Process(cpid).name()
    inbound = [c for c in conns if c.pid == spid and c.remote == (host, cport)]
    assert len(inbound) == 1 and inbound[0].direction == "in" and inbound[0].local[1] == port
    listening = [c for c in conns if c.pid == spid and c.direction == "listen"]
    assert [c.local[1] for c in listening] == [port]
    # reference: psutil sees the same sockets with the same owners
    ref = {(c.laddr.port, c.raddr.port if c.raddr else 0, c.pid) for c in psutil.net_connections("tcp")
           if c.pid in (spid, cpid)}
    mine = {(c.local[1], c.remote[1], c.pid) for c in conns if c.pid in (spid, cpid)}
    assert mine == ref


def test_probe_reuses_its_inode_cache_and_forgets_closed(pair, monkeypatch):
    spid, cpid, host, port, cport = pair
    scanned: list[set[int]] = []  # the inodes each fd scan was asked to find
    real_owners = connections.socket_owners

    def spying_owners(proc, wanted=None):
        scanned.append(set(wanted or ()))
        return real_owners(proc, wanted)

    monkeypatch.setattr(connections, "socket_owners", spying_owners)
    probe = ConnectionProbe()
    first = probe.sample()
    (mine,) = [c for c in first if c.pid == cpid and c.remote == (host, port)]
    assert mine.inode in scanned[0]  # the first sample had to look its owner up
    scans = len(scanned)
    second = probe.sample()
    # second sample: the client's socket is attributed from the cache, not by a new scan
    assert [c.pid for c in second if c.inode == mine.inode] == [cpid]
    assert not any(mine.inode in wanted for wanted in scanned[scans:])
    assert probe._owner[mine.inode][0] == cpid
    os.kill(cpid, 9)
    psutil.Process(cpid).wait(5) if psutil.pid_exists(cpid) else None
    later = probe.sample()
    assert not any(c.pid == cpid for c in later)
    assert mine.inode not in probe._owner  # the closed socket is forgotten


def test_without_root_others_sockets_are_reported_unattributed(pair, request):
    """Run the probe as 'nobody': root's connection is still listed, with its uid but no
    pid, and the probe says attribution is incomplete."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    spid, cpid, host, port, cport = pair
    nobody = pwd.getpwnam("nobody")
    code = ("import json; from probes.connections import ConnectionProbe; p = ConnectionProbe();"
            "print(json.dumps({'complete': p.complete, 'c': [c._asdict() for c in p.sample()]}))")
    # the venv's interpreter lives under /root; the probe needs only the standard library
    python = shutil.which("python3", path="/usr/bin:/usr/local/bin")
    if python is None:
        pytest.skip("no system python3 that an unprivileged user may run")
    lib = Path(tempfile.mkdtemp(prefix="masa-probes-"))  # pytest's tmp_path is 0700 for root
    lib.chmod(0o755)
    request.addfinalizer(lambda: shutil.rmtree(lib, ignore_errors=True))
    shutil.copytree(Path(probes.__file__).parent, lib / "probes",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                         user=nobody.pw_uid, group=nobody.pw_gid, extra_groups=[], cwd="/",
                         env={"PYTHONPATH": str(lib), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["complete"] is False
    ours = [c for c in data["c"] if c["local"][1] == cport and c["remote"] == [host, port]]
    assert len(ours) == 1 and ours[0]["pid"] is None and ours[0]["uid"] == 0


def test_psutil_fallback_gives_the_same_evidence(pair):
    """The portable path (used where /proc/net/tcp does not exist) agrees with /proc."""
    from probes.connections import psutil_connections

    spid, cpid, host, port, cport = pair
    fast = {(c.pid, c.local, c.remote, c.direction) for c in read_connections() if c.pid in (spid, cpid)}
    portable = {(c.pid, c.local, c.remote, c.direction) for c in psutil_connections() if c.pid in (spid, cpid)}
    assert fast == portable and len(fast) == 2
