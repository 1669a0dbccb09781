"""Start the name server and hosts of a topology as child processes; restart the dead.

Used by ``masa up``, by ``masa demo`` and by the tests, so all three run the platform
the same way: real OS processes talking over loopback.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import Pyro5.errors

from masa import config, naming
from masa.config import Settings
from masa.errors import MasaError, TopologyError
from masa.naming import NameService
from masa.security import Proxy
from masa.topology import RESERVED_HOSTS, Topology

log = logging.getLogger("masa.supervisor")

#: seconds before the next restart of a child that died again; a child that ran for
#: STABLE seconds starts from the first delay again.  A child that dies at once (its port
#: taken, a broken install) is started every 30 s at most: each start is an interpreter
#: importing the platform, about a second of CPU, which a short fixed delay would repeat
#: forever
RESTART_BACKOFF = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
STABLE = 60.0
#: how long children get to end after SIGTERM before they are killed
GRACE = 5.0

#: what ends ``masa up`` cleanly besides Ctrl-C: SIGTERM, and SIGHUP (the terminal or ssh
#: session closed; the children run in sessions of their own and never see it)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def exit_on_stop_signals() -> None:
    """Make SIGTERM/SIGHUP raise SystemExit (once) in the main thread, so that a ``with
    Supervisor`` block still starting or deploying unwinds and stops its children;
    ``watch()`` replaces this by a clean end of its loop."""

    def _exit(signum, _frame):
        for sig in STOP_SIGNALS:  # the clean-up that follows is not interrupted again
            signal.signal(sig, signal.SIG_IGN)
        raise SystemExit(128 + signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout: float = GRACE) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``timeout`` seconds."""
    stop_processes([proc], timeout)


def stop_processes(procs: list[subprocess.Popen], timeout: float = GRACE) -> None:
    """SIGTERM to all at once, then SIGKILL to those that have not exited within
    ``timeout`` seconds (one grace for all: stopping N hosts one after the other took up
    to N times the grace, each host saving its checkpoints on the way out)."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("pid %d did not end within %g s of SIGTERM: killed", p.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the kernel send SIGTERM to the child when the thread that
    started it ends (``PR_SET_PDEATHSIG``, Linux): the children run in sessions of their
    own, so a supervisor killed with SIGKILL (or OOM-killed) otherwise left the broker and
    every host running unsupervised, holding their ports.  The kernel ties the signal to
    the *thread* that forked, so only children started from the main thread get it (its
    end is the process's); for others, None.  A parent that died before the call is
    caught by comparing the parent pid."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not in the child
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the supervisor is already gone
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class Child:
    """One supervised process: its command line and how often it was restarted."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.restarts = 0
        self.next_restart = 0.0
        self.started = 0.0  # time.monotonic() of the last start
        self._log_start = 0

    def start(self) -> None:
        # logs name agents, settings and addresses: private to the user, like the state
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            self._log_start = out.tell()
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         preexec_fn=_die_with_parent(os.getpid()))
        self.started = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def exited(self) -> MasaError:
        """The error for a child that exited while starting: its exit code and the last
        line it logged (the one-line ``masa: error: ...``)."""
        code = self.proc.returncode if self.proc else None
        last = ""
        with contextlib.suppress(OSError), self.log_path.open("rb") as log_file:
            log_file.seek(self._log_start)
            lines = log_file.read().decode(errors="replace").strip().splitlines()
            last = lines[-1].strip() if lines else ""
        return MasaError(f"{self.name} exited while starting (exit code {code})"
                         + (f": {last}" if last else "") + f"; log: {self.log_path}")

    def stop(self, timeout: float = GRACE) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)

    def kill(self) -> None:
        """``kill -9``: what a crash looks like to the rest of the system."""
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def masa_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "masa", *args]


class Supervisor:
    """Runs a topology's processes.  Use as a context manager so they always stop."""

    def __init__(self, topology: Topology, settings: Settings | None = None,
                 log_dir: Path | None = None) -> None:
        settings = settings or Settings.from_env()
        if topology.ns_address:
            host, _, port = topology.ns_address.rpartition(":")
            settings = replace(settings, ns_host=host, ns_port=int(port))
        if clash := RESERVED_HOSTS & topology.hosts.keys():
            raise TopologyError(f"host name {sorted(clash)[0]!r} is reserved (the name server's process and log)")
        self.settings = settings
        self.topology = topology
        self.log_dir = log_dir or settings.home / "logs"
        env = settings.child_env()
        ns_args = ["ns"] + (["--store", topology.store] if topology.store else [])
        self.children: dict[str, Child] = {"ns": Child("ns", masa_argv(*ns_args), env, self.log_dir)}
        for h in topology.hosts.values():
            args = ["host", h.name, "--domain", h.domain, "--port", str(h.port)]
            for kind in h.allow:
                args += ["--allow", kind]
            self.children[h.name] = Child(h.name, masa_argv(*args), env, self.log_dir)

    def __enter__(self) -> Supervisor:
        config.apply(self.settings)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker, then the hosts, and wait until all are registered.  A child
        that exits meanwhile (a broker whose address is taken, a host refusing to start)
        fails the start at once; whatever was started is stopped again."""
        try:
            ns = self.children["ns"]
            ns.start()
            try:
                self.wait_for(naming.REGISTRY, timeout, ns, check=self._our_broker)
            except MasaError as exc:
                raise MasaError(f"name server on {self.settings.ns_address} could not start: {exc}"
                                + ("; is another masa ns or masa up running there?"
                                   if "in use" in str(exc) else "")) from None
            for name, child in self.children.items():
                if name != "ns":
                    child.start()
            for name in self.topology.hosts:
                self.wait_for(naming.host_name(name), timeout, self.children[name])
        except BaseException:
            self.stop()
            raise

    def _our_broker(self, uri: str) -> bool:
        """Whether the registry at ``uri`` runs in the broker this supervisor started (an
        older broker on the same address would answer too, until ours has failed)."""
        with Proxy(uri, self.settings.secret, timeout=2.0) as registry:
            return registry.pid() == self.children["ns"].pid

    def wait_for(self, name: str, timeout: float = 30.0, child: Child | None = None,
                 check: Callable[[str], bool] | None = None) -> None:
        """Wait until ``name`` is registered (and ``check(uri)`` holds); fail at once if
        ``child``, the process that should register it, exits."""
        ns = NameService(self.settings)
        deadline = time.monotonic() + timeout
        try:
            for _ in naming.backoff(deadline, cap=0.25):
                if child is not None and child.proc is not None and not child.alive:
                    raise child.exited()
                try:
                    uri = str(ns.lookup(name, wait=0))
                    if check is None or check(uri):
                        return
                except (MasaError, Pyro5.errors.PyroError):
                    ns.close()  # not there yet, or not ours yet
        finally:
            ns.close()
        logs = {n: str(c.log_path) for n, c in self.children.items()}
        raise MasaError(f"{naming.short(name)} did not come up within {timeout:g} s; logs: {logs}")

    def restart_dead(self) -> list[str]:
        """One supervision pass: start again what died, with growing backoff."""
        restarted = []
        now = time.monotonic()
        for child in self.children.values():
            if child.alive or now < child.next_restart:
                continue
            code = child.proc.returncode if child.proc else None
            log.warning("%s exited (%s); restarting", child.name, code)
            if child.started and now - child.started >= STABLE:
                child.restarts = 0  # it had been running: not a crash loop
            child.restarts += 1
            delay = RESTART_BACKOFF[min(child.restarts, len(RESTART_BACKOFF)) - 1]
            child.next_restart = now + delay
            child.start()
            restarted.append(child.name)
        return restarted

    def watch(self, interval: float = 0.5) -> None:
        """Supervise until interrupted (SIGINT, SIGTERM, SIGHUP); the caller then stops
        the children (``with Supervisor``)."""
        stop = False

        def _stop(*_):
            nonlocal stop
            stop = True

        for sig in STOP_SIGNALS:
            signal.signal(sig, _stop)
        try:
            while not stop:
                for name in self.restart_dead():
                    print(f"up: restarted {name}", file=sys.stderr)
                time.sleep(interval)
        except KeyboardInterrupt:
            pass

    def stop(self, timeout: float = GRACE) -> None:
        """Stop the hosts (together: SIGTERM, ``timeout`` s, SIGKILL), then the broker they
        deregister from.  Interrupted (a second Ctrl-C while the hosts save their state),
        it kills whatever still runs before passing the interruption on: children run in
        sessions of their own, no terminal signal reaches them, and one left behind would
        run unsupervised on its port."""
        try:
            stop_processes([c.proc for n, c in self.children.items() if n != "ns" and c.proc], timeout)
            if self.children["ns"].proc is not None:
                stop_processes([self.children["ns"].proc], timeout)
        except BaseException:
            for child in self.children.values():
                child.kill()
            raise
