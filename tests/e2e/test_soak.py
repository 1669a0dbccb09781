"""Soak: a standing stream through a mediator while hosts die and agents move, for minutes.

Two procfs collectors on their own hosts, a mediator in front of them, a recorder
subscribed to the mediator.  A seeded sequence of faults runs meanwhile: ``kill -9`` and a
restart of any of the hosts (collector, mediator, recorder), and moves of the mediator
between two hosts.  Afterwards every sample a collector holds in the recorded window must
be at the recorder exactly once, with the same value: nothing lost, nothing twice.

Kept out of the default run (``-m slow``); CI runs it in its own step (``./run soak``).
``MASA_SOAK_SECONDS`` sets how long the faults go on (default 150).
"""

from __future__ import annotations

import os
import random
import time

import pytest

from tests.agents.mediation_helpers import assert_same_samples, recorded, series, window
from tests.cluster import Cluster, attempt

SECONDS = float(os.environ.get("MASA_SOAK_SECONDS", "150"))
MAX_FAULTS = 200  # bound on the fault loop, whatever the clock does


def _settled(c: Cluster, name: str, timeout: float = 40.0) -> None:
    """Wait until ``name`` answers again (its host may just have been restarted)."""
    c.wait(lambda: attempt(lambda: c.ref(name, timeout=5).query("status")), timeout=timeout)


@pytest.mark.slow
def test_a_stream_survives_minutes_of_crashes_and_moves(tmp_path):
    hosts = {"c1": {"domain": "A"}, "c2": {"domain": "A"}, "m1": {"domain": "A"},
             "m2": {"domain": "A"}, "r1": {"domain": "A"}}
    rng = random.Random(7)
    with Cluster(tmp_path, hosts, heartbeat=0.5) as c:
        c.create("c1", "collector", "col1", interval=0.3, per_process="none")
        c.create("c2", "collector", "col2", interval=0.5, per_process="none")
        c.create("m1", "mediator", "med", sources=["col1", "col2"])
        c.create("r1", "recorder", "top")
        top = c.ref("top", timeout=20)
        top.configure("subscribe_to", request="soak", source="med", objects=["c1/cpu", "c2/cpu"])
        c.wait(lambda: attempt(lambda: top.query("subscriptions_status")["soak"]["seq"] >= 3), timeout=40)

        faults: list[str] = []
        end = time.monotonic() + SECONDS
        while time.monotonic() < end and len(faults) < MAX_FAULTS:
            action = rng.choice(["kill-collector", "kill-mediator", "kill-recorder", "move", "move"])
            if action == "move":
                here = c.where("med")
                there = "m2" if here == "m1" else "m1"
                attempt(lambda there=there: c.move("med", there))  # a move may fail; it stays then
                faults.append(f"move {here}->{there}")
            else:
                host = {"kill-collector": rng.choice(["c1", "c2"]), "kill-recorder": "r1",
                        "kill-mediator": attempt(lambda: c.where("med")) or "m1"}[action]
                c.kill(host)
                time.sleep(rng.uniform(0.5, 3.0))  # down for a while: the others keep going
                c.restart(host)
                faults.append(f"kill {host}")
            for name in ("col1", "col2", "med", "top"):
                _settled(c, name)
            time.sleep(rng.uniform(2.0, 5.0))

        # the faults are over: wait until the stream has passed the last of them
        after = time.time() + 5.0
        for obj in ("c1/cpu", "c2/cpu"):
            c.wait(lambda obj=obj: attempt(lambda: recorded(c, "top", obj).end[-1] > after), timeout=90)
        for obj, col in (("c1/cpu", "col1"), ("c2/cpu", "col2")):
            got = recorded(c, "top", obj)
            held = series(c.ref(col).query("report", objects=[obj], since=got.start[0] - 1.0,
                                           until=float(got.end[-1])))[obj]
            want = window(held, float(got.start[0]) - 1e-9, float(got.end[-1]))
            assert len(want) > SECONDS / 2, (obj, len(want), faults)
            assert_same_samples(got, want)  # across every fault: none lost, none twice
        assert sum(f.startswith("kill") for f in faults) >= 3 and any(f.startswith("move") for f in faults)
