"""Placement switched on and off at run time (``reconfigure placement=...``), on real hosts.

The source's collector runs on b2, the mediator starts on m1: a policy that weighs only
nearness to the sources wants it on b2 at once (dwell 1, no cooldown).  Observation is
counted in rounds of the mediator's placement task, never in seconds."""

import pytest

from tests.cluster import Cluster

NEAR = {"w_cpu": 0.0, "w_local": 1.0, "margin": 0.5, "dwell": 1, "cooldown": 0.0}


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    with Cluster(tmp_path_factory.mktemp("masa"), {"b2": {"domain": "B"}, "m1": {"domain": "A"}}) as c:
        c.create("b2", "collector", "col2", interval=0.5, per_process="none")
        yield c


def status(c, name: str) -> dict:
    return c.ref(name).query("status")


def rounds_pass(c, name: str, n: int) -> None:
    """Wait until ``name``'s placement task has run ``n`` more rounds where it is now."""
    start = status(c, name)["placement"]["rounds"]
    c.wait(lambda: status(c, name)["placement"]["rounds"] >= start + n, timeout=30)


def test_placement_switched_on_moves_at_once_and_switched_off_never_again(hosts):
    c = hosts
    c.create("m1", "mediator", "roamer", sources=["col2"], placement_every=0.3)
    rounds_pass(c, "roamer", 3)
    assert c.where("roamer") == "m1"  # no policy: it stays
    c.ref("roamer").configure("reconfigure", placement=NEAR)
    c.wait(lambda: c.where("roamer") == "b2", timeout=30)  # without being moved by hand first
    assert status(c, "roamer")["moves"] == 1
    c.ref("roamer").configure("reconfigure", placement=None)
    c.move("roamer", "m1")  # by hand, to where the policy would not leave it
    rounds_pass(c, "roamer", 8)
    now = status(c, "roamer")
    assert now["host"] == "m1" and now["moves"] == 1 and now["placement"]["policy"] is None


def test_placement_switched_off_stops_the_running_policy_at_once(hosts):
    c = hosts
    # a policy that never finds a host good enough: the task runs and decides to stay
    c.create("m1", "mediator", "sitter", sources=["col2"], placement={"margin": 100.0}, placement_every=0.3)
    rounds_pass(c, "sitter", 2)
    c.ref("sitter").configure("reconfigure", placement=None)
    rounds_pass(c, "sitter", 8)  # a default policy (dwell 3) would have moved it to b2 by now
    now = status(c, "sitter")
    assert now["host"] == "m1" and now["moves"] == 0
    c.ref("sitter").configure("reconfigure", placement=NEAR)  # and on again
    c.wait(lambda: c.where("sitter") == "b2", timeout=30)
    assert status(c, "sitter")["moves"] == 1
