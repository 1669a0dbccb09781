"""``masa up`` against bad topology files and misbehaving children: real processes, every
wait bounded, no timing thresholds (what happened is asserted, not how fast)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from masa import topology
from masa.config import Settings
from masa.errors import TopologyError
from masa.supervisor import RESTART_BACKOFF, STABLE, Supervisor, free_port
from masa.topology import HostSpec, Topology
from tests.cluster import ROOT, wait


@pytest.mark.parametrize("text, message", [
    ('hosts.h1 = { prot = 9000 }', "hosts.h1 has unknown key(s) prot"),
    ('hosts.h1 = {}\nagents.a = { kind = "echo", host = "h1", setings = {} }', "agents.a has unknown key(s) setings"),
    ('nameserver = { adress = "127.0.0.1:9" }', "[nameserver] has unknown key(s) adress"),
    ('hosts.h1 = { port = "abc" }', "hosts.h1.port must be a whole number"),
    ('hosts.h1 = { port = 1.5 }', "hosts.h1.port must be a whole number"),
    ('hosts.h1 = { port = true }', "hosts.h1.port must be a whole number"),
    ('hosts.h1 = { port = 70000 }', "hosts.h1.port must be a whole number from 0 to 65535"),
    ('hosts.h1 = { allow = "echo" }', "hosts.h1.allow must be a list of kinds"),
    ('hosts.h1 = { domain = 5 }', "hosts.h1.domain must be a string"),
    ('hosts."bad name" = {}', "invalid host name 'bad name'"),
    ('hosts.ns = {}', "host name 'ns' is reserved"),
    ('hosts.h1 = { port = 7001 }\nhosts.h2 = { port = 7001 }', "hosts h1 and h2 both have port 7001"),
    ('nameserver = { address = "127.0.0.1:7001" }\nhosts.h1 = { port = 7001 }', "host h1 has the name server's port"),
    ('nameserver = { address = "127.0.0.1" }', "nameserver.address must be HOST:PORT"),
    ('nameserver = { address = "127.0.0.1:0" }', "the port of nameserver.address must be a whole number from 1"),
    ('nameserver = { store = 5 }', "nameserver.store must be a string"),
    ('hosts.h1 = {}\nagents.a = { kind = "echo", host = ["h1"] }', "agents.a.host must be a string"),
    ('hosts.h1 = {}\nagents."a b" = { kind = "echo", host = "h1" }', "invalid agent name 'a b'"),
    ('domains.A = "web"', "domains.A must be a table"),
])
def test_a_bad_topology_is_refused_before_anything_starts(tmp_path, text, message):
    """Each of these was ignored (a misspelt key), coerced (``port = true`` became port 1),
    split into letters (``allow = "echo"``), or surfaced as a raw Python error or as the
    broker failing to start (a host named ``ns`` replaced the broker's child)."""
    path = tmp_path / "t.toml"
    path.write_text(text + "\n")
    with pytest.raises(TopologyError) as info:
        topology.load(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_an_unreadable_topology_is_a_topology_error(tmp_path):
    path = tmp_path / "t.toml"
    path.write_bytes(b"\xff\xfe[hosts]\n")
    with pytest.raises(TopologyError, match="cannot read it"):
        topology.load(path)


def test_the_shipped_topologies_still_load():
    for path in (ROOT / "masa" / "data" / "demo.toml", ROOT / "examples" / "two-domains.toml"):
        assert topology.load(path).hosts


def test_masa_up_with_a_bad_topology_says_so_in_one_line_and_starts_nothing(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('hosts.h1 = { port = true }\n')
    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "faults-secret", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "masa", "up", str(path)], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [f"masa: error: {path}: hosts.h1.port must be a whole number "
                                               "from 0 to 65535, not True"]
    assert not (tmp_path / "logs").exists()  # no child was started


def test_a_supervisor_refuses_a_host_named_like_its_broker(tmp_path):
    t = Topology({"ns": HostSpec("ns")}, {})
    with pytest.raises(TopologyError, match="reserved"):
        Supervisor(t, Settings(home=tmp_path, secret=b"faults-secret"), log_dir=tmp_path / "logs")


# -- children that misbehave ----------------------------------------------------------------

# stands in for a host stuck in its shutdown: notes SIGTERM in a file and carries on
STUBBORN = r"""
import signal, sys, time
def note(*_):
    with open(sys.argv[1], "a") as f:
        f.write("term\n")
signal.signal(signal.SIGTERM, note)
open(sys.argv[1], "a").close()
end = time.time() + 120
while time.time() < end:
    time.sleep(0.05)
"""


def _supervisor(tmp_path, hosts=("h1", "h2")) -> Supervisor:
    t = Topology({h: HostSpec(h, "A") for h in hosts}, {})
    settings = replace(Settings(home=tmp_path, secret=b"faults-secret"), ns_port=free_port())
    return Supervisor(t, settings, log_dir=tmp_path / "logs")


def _stubborn(sup: Supervisor, tmp_path: Path) -> dict[str, Path]:
    notes = {}
    for name, child in sup.children.items():
        notes[name] = tmp_path / f"{name}.notes"
        child.argv = [sys.executable, "-c", STUBBORN, str(notes[name])]
        child.start()
    wait(lambda: all(p.exists() for p in notes.values()), timeout=30)
    return notes


def test_children_that_ignore_sigterm_are_killed_after_the_grace(tmp_path):
    sup = _supervisor(tmp_path)
    notes = _stubborn(sup, tmp_path)
    try:
        sup.stop(timeout=1.0)
        for name, child in sup.children.items():
            assert child.proc.returncode == -signal.SIGKILL, name
            assert notes[name].read_text() == "term\n", name  # asked first, then killed
    finally:
        for child in sup.children.values():
            child.kill()


def test_an_interrupted_stop_leaves_no_child_running(tmp_path):
    """A second Ctrl-C while the hosts save their state interrupted the stop half-way:
    the children not yet stopped (in sessions of their own, untouched by the terminal's
    signal) ran on unsupervised."""
    sup = _supervisor(tmp_path, hosts=("h1", "h2", "h3"))
    notes = _stubborn(sup, tmp_path)

    stopping = threading.Event()

    def interrupt(*_):
        if stopping.is_set():  # a late signal, after stop() ended, is ignored
            raise KeyboardInterrupt

    def second_ctrl_c():  # once every host has been asked to stop (not waiting for a time)
        with contextlib.suppress(TimeoutError):
            wait(lambda: all(notes[h].read_text() for h in ("h1", "h2", "h3")), timeout=60)
        if stopping.is_set():
            os.kill(os.getpid(), signal.SIGUSR1)

    old = signal.signal(signal.SIGUSR1, interrupt)
    ctrl_c = threading.Thread(target=second_ctrl_c, daemon=True)
    try:
        stopping.set()
        ctrl_c.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                sup.stop(timeout=90.0)
        finally:
            stopping.clear()
        assert all(not c.alive for c in sup.children.values()), {n: c.alive for n, c in sup.children.items()}
    finally:
        ctrl_c.join(90)
        signal.signal(signal.SIGUSR1, old)
        for child in sup.children.values():
            child.kill()


def test_a_crash_loop_backs_off_to_half_a_minute_and_a_stable_run_resets_it(tmp_path):
    """A host whose port is taken dies at every start; its restarts are spaced out along
    RESTART_BACKOFF (a short fixed cap restarted an interpreter every few seconds
    forever), and one that had been running for STABLE seconds starts again quickly."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        t = Topology({"h1": HostSpec("h1", "A", port=port)}, {})
        settings = replace(Settings(home=tmp_path, secret=b"faults-secret"), ns_port=free_port())
        sup = Supervisor(t, settings, log_dir=tmp_path / "logs")
        child = sup.children["h1"]
        sup.children = {"h1": child}  # no broker: the host dies before it looks for one
        delays = []
        try:
            child.start()
            for _ in range(len(RESTART_BACKOFF) + 1):
                child.proc.wait(60)
                child.next_restart = 0.0  # as if the delay had passed
                before = time.monotonic()
                assert sup.restart_dead() == ["h1"]
                delays.append(round(child.next_restart - before, 1))
            assert delays == [*RESTART_BACKOFF, RESTART_BACKOFF[-1]]
            child.proc.wait(60)
            child.started -= STABLE  # as if this start had run for a minute
            child.next_restart = 0.0
            before = time.monotonic()
            sup.restart_dead()
            assert round(child.next_restart - before, 1) == RESTART_BACKOFF[0]
            assert "in use" in child.log_path.read_text()
        finally:
            child.kill()


def test_children_of_a_supervisor_killed_with_sigkill_end_too(tmp_path):
    """``kill -9`` of ``masa up`` (or the OOM killer) left the broker and the hosts
    running, unsupervised and holding their ports; the kernel now ends them."""
    port = free_port()
    path = tmp_path / "t.toml"
    path.write_text(f'nameserver = {{ address = "127.0.0.1:{port}" }}\nhosts.k1 = {{}}\nhosts.k2 = {{}}\n')
    env = {**os.environ, "MASA_HOME": str(tmp_path), "MASA_SECRET": "faults-secret", "PYTHONPATH": str(ROOT)}
    up = subprocess.Popen([sys.executable, "-m", "masa", "up", "--no-deploy", str(path)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        line = ""
        for _ in range(200):  # the line that says all are up (or the end of its output)
            line = up.stderr.readline()
            if not line or line.startswith("up:"):
                break
        assert line.startswith("up: name server + 2 hosts"), line
        children = [p.pid for p in psutil.Process(up.pid).children()]
        assert len(children) == 3
        up.kill()
        up.wait(30)

        def running(pid):
            try:
                return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
            except psutil.NoSuchProcess:
                return False

        wait(lambda: not any(running(p) for p in children), timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait(30)
        for pid in children:  # only if the kernel did not end them
            with contextlib.suppress(psutil.NoSuchProcess):
                psutil.Process(pid).kill()
