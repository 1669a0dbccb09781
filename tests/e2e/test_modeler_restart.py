"""A modeling run that was accepted is not lost: not when the modeler's host is killed
(kill -9) mid-run and restarts it from its checkpoint, not when the modeler moves
mid-run.  Real processes; the run is kept long by a neural agent that takes at least
``pace`` seconds per batch, so the crash or the move lands while batches remain."""

from __future__ import annotations

import pytest

from tests.cluster import Cluster
from tests.e2e.scenario import fill, mid_run, recording

PACE = 1.5  # s per batch; a pool of one agent cuts a run into 4 batches or so


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    home = tmp_path_factory.mktemp("restart")
    sc = recording(n_services=5, seed=4)
    # the source and the neural agent live on n1, so killing m1 kills the modeler only
    with Cluster(home, {"m1": {"domain": "A"}, "m2": {"domain": "A"}, "n1": {"domain": "A"}},
                 call_timeout=30.0) as c:
        c.create("n1", "recorder", "rec", store=fill(home / "r.db", sc.series))
        c.create("n1", "neural", "nn1", pace=PACE)
        c.create("m1", "modeler", "mod", sources=["rec"], pool=["nn1"], window=900.0,
                 pool_timeout=10.0, batch_rows=4, http=None)
        yield c


def stored(mod, job: int) -> list[dict]:
    return [h for h in mod.query("versions_list") if h["info"]["job"] == job]


def test_an_accepted_run_survives_a_crash_of_the_modelers_host(deployment):
    c = deployment
    mod = c.ref("mod", timeout=30)
    before = len(mod.query("versions_list"))
    accepted = mod.configure("run")
    assert accepted["started"] is True
    job = accepted["job"]
    c.wait(lambda: mid_run(mod, job), timeout=60, every=0.02)
    c.kill("m1")  # kill -9: no before_move, no last checkpoint
    c.restart("m1")  # restores its agents from the host's checkpoints
    c.wait(lambda: stored(mod, job), timeout=90, every=0.2)
    heads = mod.query("versions_list")
    assert [h["info"]["job"] for h in heads[before:]] == [job]  # redone once, same number
    st = c.wait(lambda: (s := mod.query("status"))["job"].get("state") == "done" and s, timeout=30)
    assert st["job"]["job"] == job and st["job"]["redo"] is True and st["job"]["version"] == heads[-1]["version"]
    assert heads[-1]["info"]["pairs_scored"] > 0 and heads[-1]["info"]["pool"]["by_agent"]["nn1"] > 0
    # the next run gets the next number: the redo did not reuse or skip one
    nxt = mod.configure("run")
    assert nxt == {"started": True, "job": job + 1}
    c.wait(lambda: stored(mod, job + 1), timeout=90, every=0.2)


def test_an_accepted_run_cut_short_by_a_move_is_redone_at_the_target(deployment):
    c = deployment
    mod = c.ref("mod", timeout=30)
    before = len(mod.query("versions_list"))
    accepted = mod.configure("run")
    job = accepted["job"]
    c.wait(lambda: mid_run(mod, job), timeout=60, every=0.02)
    source = c.where("mod")
    target = "m2" if source != "m2" else "m1"
    c.move("mod", target)
    c.wait(lambda: stored(mod, job), timeout=90, every=0.2)
    heads = mod.query("versions_list")
    assert [h["info"]["job"] for h in heads[before:]] == [job]
    st = c.wait(lambda: (s := mod.query("status"))["job"].get("state") == "done" and s, timeout=30)
    assert st["host"] == target and st["job"]["job"] == job and st["job"]["redo"] is True
