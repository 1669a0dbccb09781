"""Connection evidence against real TCP connections between real child processes."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
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


# -- many sockets, sockets that close while a sample reads, a socket nobody holds yet ---------

HOLDER = r"""
import json, resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if soft != resource.RLIM_INFINITY and soft < 600:
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(600, hard), hard))
role, n = sys.argv[1], int(sys.argv[2])
if role == "server":
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(n + 16); s.settimeout(30)
    print(s.getsockname()[1], flush=True)
    held = [s.accept()[0] for _ in range(n)]
else:
    port = int(sys.argv[3])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
print(json.dumps([c.getsockname()[1] for c in held]), flush=True)
sys.stdin.read()  # hold them until the test closes our stdin
"""

CHURN = r"""
import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(64)
print(s.getsockname()[1], flush=True)
end, count = time.time() + 20, 0
while time.time() < end and count < 200_000:  # until killed, bounded either way
    c = socket.create_connection(("127.0.0.1", s.getsockname()[1]), timeout=5)
    a, _ = s.accept()
    c.close(); a.close(); count += 1
"""


@pytest.fixture
def many():
    """2,000 TCP connections on loopback: four servers each accepting 500 from its own
    client process (500 sockets per process fits a default fd limit of 1,024).  Yields
    the set of (pid, local, remote) every one of the 4,000 sockets must be read as."""
    procs, expected = [], set()
    try:
        for _ in range(4):
            server = subprocess.Popen([sys.executable, "-c", HOLDER, "server", "500"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(server)
            port = int(server.stdout.readline())
            client = subprocess.Popen([sys.executable, "-c", HOLDER, "client", "500", str(port)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            procs.append(client)
            cports = json.loads(client.stdout.readline())
            assert json.loads(server.stdout.readline()) == [port] * 500
            for cport in cports:
                expected.add((client.pid, ("127.0.0.1", cport), ("127.0.0.1", port)))
                expected.add((server.pid, ("127.0.0.1", port), ("127.0.0.1", cport)))
        yield {p.pid for p in procs}, expected
    finally:
        for p in procs:
            p.kill()
            p.wait()
            p.stdin.close()
            p.stdout.close()


def test_2000_connections_every_one_attributed_none_invented(many):
    pids, expected = many
    probe = ConnectionProbe()
    for _ in range(2):  # the first sample scans every fd, the second answers from its cache
        conns = probe.sample()
        ours = {(c.pid, c.local, c.remote) for c in conns if c.pid in pids}
        assert len(expected) == 4000 and ours == expected
        ports = {c.local[1] for c in conns if c.pid in pids} | {c.remote[1] for c in conns if c.pid in pids}
        strays = [c for c in conns if c.pid not in pids and c.state == "ESTABLISHED"
                  and c.local[1] in ports and c.remote[1] in ports]
        assert not strays, strays[:5]


def test_sockets_closing_during_a_sample_are_never_misattributed(many):
    """A child opens and closes loopback connections as fast as it can while samples are
    taken, so sockets read in /proc/net/tcp are gone by the time the fds are read: such a
    socket is listed unattributed (or with its true owner), never with another pid, and
    the 2,000 steady connections stay attributed exactly."""
    pids, expected = many
    churn = subprocess.Popen([sys.executable, "-c", CHURN], stdout=subprocess.PIPE, text=True)
    try:
        port = int(churn.stdout.readline())
        probe = ConnectionProbe()
        churned = 0
        for _ in range(8):
            conns = probe.sample()
            assert expected <= {(c.pid, c.local, c.remote) for c in conns}
            for c in conns:
                if port in (c.local[1], c.remote[1]) and c.state != "LISTEN":
                    churned += 1
                    assert c.pid in (None, churn.pid), c
        assert churned and churn.poll() is None
    finally:
        churn.kill()
        churn.wait()
        churn.stdout.close()


RECEIVER = r"""
import socket, sys, time
unix = socket.socket(fileno=int(sys.argv[1]))
sys.stdin.readline()
msg, fds, _, _ = socket.recv_fds(unix, 16, 1)
print("got", fds, flush=True)
time.sleep(60)
"""


def test_a_socket_no_process_held_at_first_is_attributed_once_one_does(pair):
    """A socket in flight between processes (SCM_RIGHTS), like one between accept()
    giving it an inode and installing its fd, is listed in /proc/net/tcp but in nobody's
    fd table.  It was cached as unowned for its whole life; now it is looked for again."""
    spid, cpid, host, port, cport = pair
    mine, theirs = socket.socketpair()
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    theirs.close()
    try:
        conn = socket.create_connection((host, port), timeout=10)
        local = conn.getsockname()[:2]
        socket.send_fds(mine, [b"x"], [conn.fileno()])
        conn.close()  # now only the message in flight holds the socket
        probe = ConnectionProbe()
        (first,) = [c for c in probe.sample() if c.local == local and c.remote == (host, port)]
        assert first.pid is None and first.state == "ESTABLISHED"
        receiver.stdin.write("go\n")
        receiver.stdin.flush()
        assert receiver.stdout.readline().startswith("got")
        (second,) = [c for c in probe.sample() if c.local == local and c.remote == (host, port)]
        assert second.pid == receiver.pid and second.inode == first.inode
    finally:
        receiver.kill()
        receiver.wait()
        receiver.stdin.close()
        receiver.stdout.close()
        mine.close()
