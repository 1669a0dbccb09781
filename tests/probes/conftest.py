"""Shared helpers for the probe tests: real child processes with known behaviour."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import uuid

import pytest

# A child that follows a script of phases ("busy:2" s of wall time spinning, "cpu:1" s of
# CPU time burnt however long that takes on a loaded machine, "idle:2"), prints the wall time
# and its own CPU time at every phase boundary, then idles until killed.
CHILD = r"""
import sys, time
marker = sys.argv[1]
def report(tag):
    print(tag, repr(time.time()), repr(time.process_time()), flush=True)
report("start")
for phase in sys.argv[2:]:
    kind, secs = phase.split(":")
    end = time.time() + float(secs)
    if kind == "busy":
        while time.time() < end:
            pass
    elif kind == "cpu":  # burn this much CPU time, however long it takes (capped)
        goal, cap = time.process_time() + float(secs), time.time() + 20
        while time.process_time() < goal and time.time() < cap:
            pass
    else:
        time.sleep(float(secs))
    report(kind + "-end")
if "exit" in marker:
    sys.exit(0)
time.sleep(3600)
"""


class Child:
    """A running child process and the phase boundaries it reported."""

    def __init__(self, marker: str, phases: list[str]) -> None:
        self.marker = marker
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, marker, *phases], stdout=subprocess.PIPE, text=True
        )
        self.pid = self.proc.pid
        self.events: list[tuple[str, float, float]] = []
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def wait_event(self, timeout: float = 30.0) -> tuple[str, float, float]:
        """The next phase boundary the child reported (blocks up to ``timeout``)."""
        line = self._lines.get(timeout=timeout)
        if not line:
            raise AssertionError(f"child {self.pid} ended without reporting")
        tag, wall, cpu = line.split()
        ev = (tag, float(wall), float(cpu))
        self.events.append(ev)
        return ev

    def poll_event(self) -> tuple[str, float, float] | None:
        """A reported boundary if one is waiting, else None."""
        if self._lines.empty():
            return None
        return self.wait_event()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def spawn():
    """Start marked children; all are killed at the end of the test."""
    children: list[Child] = []

    def start(phases: list[str], marker: str | None = None) -> Child:
        child = Child(marker or f"masa-probe-test-{uuid.uuid4().hex[:8]}", phases)
        children.append(child)
        return child

    yield start
    for c in children:
        c.stop()
