"""The modeler agent against what operators and the platform throw at it, on real
processes: a ``run`` right after the modeler is restored or has moved (an accepted job
still open), a pool that cannot grow everywhere it was asked to, a sub-model nobody can
reach, a page port that is taken or changed at run time, settings and query arguments
that cannot work, and the ``masa model`` command's edges (a closed pipe, no versions yet,
an agent that is not a modeler)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request

import pytest

from masa import admin
from masa.activity import Series
from masa.errors import BadRequest, KindNotAllowed
from masa.supervisor import free_port
from modeler.web.auth import page_url, web_token
from tests.cluster import ROOT, Cluster
from tests.e2e.scenario import fill, mid_run, recording

PACE = 0.5  # s per batch of the neural agent: a run of the pooled modeler takes a few s
HOSTS = {"m1": {"domain": "A"}, "m2": {"domain": "A"}, "n1": {"domain": "A"},
         "w1": {"domain": "A"}, "r1": {"domain": "A", "allow": ["recorder"]}}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    home = tmp_path_factory.mktemp("inputs")
    sc = recording(n_services=5, seed=4)
    with Cluster(home, HOSTS, call_timeout=30.0) as c:
        # the source and the neural agent live on n1: killing a modeler host kills the modeler only
        c.create("n1", "recorder", "rec", store=fill(home / "r.db", sc.series))
        c.create("n1", "neural", "nn1", pace=PACE)
        c.create("m1", "modeler", "mod", sources=["rec"], pool=["nn1"], window=900.0,
                 pool_timeout=10.0, batch_rows=4, http=None)
        c.create("m1", "modeler", "plain", sources=["rec"], window=900.0, http=None)  # scores alone
        yield c


def jobs(mod) -> list[int]:
    return [h["info"]["job"] for h in mod.query("versions_list")]


def run_once(c, ref) -> dict:
    """Run ``ref`` and wait for that run's end; its status."""
    job = ref.configure("run")["job"]
    return c.wait(lambda: (s := ref.query("status"))["job"].get("job") == job
                  and s["job"]["state"] in ("done", "failed") and s, timeout=60, every=0.1)


def masa(c, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masa", *args], env=c.settings.child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def get(url: str, token: str) -> dict:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.loads(r.read())


def refused(url: str) -> bool:
    """Nothing listens at ``url`` any more."""
    host, port = urllib.parse.urlsplit(url).hostname, urllib.parse.urlsplit(url).port
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return True
    return False


def hold_port() -> tuple[socket.socket, int]:
    """A port on loopback that someone else holds (listening)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


# -- 1. an accepted run is never lost to a `run` that arrives before the redo ---------------

def test_a_run_right_after_a_move_redoes_the_open_job_first(deployment):
    c = deployment
    mod = c.ref("mod", timeout=30)
    before = len(jobs(mod))
    job = mod.configure("run")["job"]
    c.wait(lambda: mid_run(mod, job), timeout=60, every=0.02)
    target = "m2" if c.where("mod") != "m2" else "m1"
    c.move("mod", target)
    # at once: the arrival's schedule (every 0.5 s) has not redone the open job yet
    assert mod.configure("run") == {"started": False, "job": job + 1}  # queued behind the open one
    c.wait(lambda: len(jobs(mod)) >= before + 2, timeout=60, every=0.2)
    assert jobs(mod)[before:] == [job, job + 1]  # the accepted job kept its number, nothing lost


def test_a_run_right_after_a_crash_restore_redoes_the_open_job_first(deployment):
    c = deployment
    mod = c.ref("mod", timeout=30)
    host = c.where("mod")
    before = len(jobs(mod))
    job = mod.configure("run")["job"]
    c.wait(lambda: mid_run(mod, job), timeout=60, every=0.02)
    c.kill(host)  # kill -9: no before_move; the checkpoint holds the open job
    c.sup.children[host].start()  # and `run` as soon as the restored modeler answers
    assert mod.configure("run") == {"started": False, "job": job + 1}
    c.wait(lambda: len(jobs(mod)) >= before + 2, timeout=60, every=0.2)
    assert jobs(mod)[before:] == [job, job + 1]
    st = c.wait(lambda: (s := mod.query("status"))["job"].get("state") == "done" and s, timeout=30)
    assert st["job"]["job"] == job + 1
    assert mod.configure("run") == {"started": True, "job": job + 2}  # numbering goes on
    c.wait(lambda: job + 2 in jobs(mod), timeout=60, every=0.2)


# -- 2. pool_grow: all or nothing, the real error, names that cannot collide -------------------

def neural(c) -> set[str]:
    return set(admin.find_agents(c.settings, kind="neural"))


def test_pool_grow_refuses_an_unknown_host_at_once(deployment):
    c = deployment
    plain = c.ref("plain", timeout=10)  # it used to take the whole deadline, then AgentExists
    before = neural(c)
    for hosts in (["nosuch"], ["n1", "nosuch"]):
        with pytest.raises(BadRequest, match="nosuch"):
            plain.configure("pool_grow", hosts=hosts)
        assert neural(c) == before and plain.query("status")["pool"] == []


def test_pool_grow_that_fails_midway_stops_what_it_started(deployment):
    c = deployment
    plain = c.ref("plain", timeout=30)
    before = neural(c)
    # r1 is up but refuses neural agents: the one already started on n1 is stopped again
    with pytest.raises(KindNotAllowed):
        plain.configure("pool_grow", hosts=["n1", "r1"])
    c.wait(lambda: neural(c) == before, timeout=15)
    assert plain.query("status")["pool"] == []


def test_pool_grow_picks_names_nobody_holds(deployment):
    c = deployment
    c.create("m1", "modeler", "grower", sources=["rec"], window=900.0, http=None)
    grower = c.ref("grower", timeout=30)
    c.create("n1", "neural", "grower-nn1")  # someone else's agent under the name it would pick
    assert grower.configure("pool_grow", hosts=["n1"]) == ["grower-nn2"]
    assert c.where("grower-nn2") == "n1"
    # the pool is grower's own: a modeler created next in the same process starts without it
    c.create("m1", "modeler", "other", sources=["rec"], http=None)
    assert c.ref("other").query("status")["pool"] == []
    assert grower.configure("pool_shrink", count=1) == []  # stops its own, not the other
    c.wait(lambda: "grower-nn2" not in neural(c), timeout=15)
    assert "grower-nn1" in neural(c)
    for host, name in (("n1", "grower-nn1"), ("m1", "other"), ("m1", "grower")):
        c.host(host, "terminate", name)


# -- 3. an unreachable sub-model is a missing one, not a failed run --------------------------

def test_an_unreachable_sub_model_is_scored_here(deployment):
    c = deployment
    c.create("m1", "modeler", "ent", sources=["rec"], submodels=["gone"], window=900.0, http=None)
    ent = c.ref("ent", timeout=30)
    st = run_once(c, ent)
    assert st["job"]["state"] == "done", st["job"]
    head = ent.query("versions_list")[-1]
    assert head["info"]["submodels_missing"] == ["gone"] and head["info"]["submodels"] == {}
    assert "gone" in head["info"]["submodels_unavailable"]
    n = head["info"]["objects"]
    assert head["info"]["pairs_scored"] == n * (n - 1)  # all of them, here


# -- 4, 5. the page follows `http` at run time; a taken port is refused, naming it ------------

def test_the_page_follows_reconfigure_and_a_taken_port_is_refused(deployment):
    c = deployment
    plain = c.ref("plain", timeout=30)
    token = web_token(c.settings.secret, "plain")
    assert plain.query("status")["http"] is None
    assert plain.configure("reconfigure", http=0)["http"] == 0
    base = c.wait(lambda: plain.query("status")["http"], timeout=10)
    assert get(base + "api/status", token)["name"] == "plain"
    assert masa(c, "model", "page", "plain").stdout.strip() == page_url(base, c.settings.secret, "plain")
    # a port someone else holds: refused with its number, the page serves on where it was
    sock, port = hold_port()
    try:
        with pytest.raises(BadRequest, match=str(port)):
            plain.configure("reconfigure", http=port)
        assert plain.query("describe")["settings"]["http"] == 0
        assert plain.query("status")["http"] == base and get(base + "api/status", token)["name"] == "plain"
        with pytest.raises(BadRequest, match=str(port)):  # and at create, where nothing is made
            c.create("m1", "modeler", "taken", sources=["rec"], http=port)
        assert "taken" not in admin.find_agents(c.settings)
    finally:
        sock.close()
    fixed = free_port()
    plain.configure("reconfigure", http=fixed)
    moved = plain.query("status")["http"]
    assert moved.endswith(f":{fixed}/") and moved != base
    c.wait(lambda: refused(base), timeout=10)
    assert get(moved + "api/status", token)["name"] == "plain"
    plain.configure("reconfigure", http=None)
    assert plain.query("status")["http"] is None
    c.wait(lambda: refused(moved), timeout=10)
    page = masa(c, "model", "page", "plain")
    assert page.returncode != 0 and "serves no page" in page.stderr


def test_a_page_port_taken_while_the_host_was_down_is_reported_then_taken_back(deployment):
    c = deployment
    port = free_port()
    c.create("w1", "modeler", "web", sources=["rec"], window=900.0, http=port)
    web = c.ref("web", timeout=30)
    assert web.query("status")["http"].endswith(f":{port}/")
    c.kill("w1")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
        c.restart("w1")  # restored: it runs, without its page, and says why
        st = web.query("status")
        assert st["http"] is None and str(port) in st["http_error"]
        page = masa(c, "model", "page", "web")
        assert page.returncode != 0 and str(port) in page.stderr
    finally:
        sock.close()
    back = c.wait(lambda: web.query("status")["http"], timeout=20, every=0.2)  # tried again
    assert back.endswith(f":{port}/") and web.query("status")["http_error"] is None
    assert get(back + "api/status", web_token(c.settings.secret, "web"))["name"] == "web"


# -- 6. settings that cannot work are refused at create and at reconfigure ----------------------

@pytest.mark.parametrize("setting", [
    {"sources": []}, {"step": -1}, {"step": 0}, {"step": "x"}, {"step": math.inf}, {"step": 1e-300},
    {"step": 1e300}, {"http": True}, {"http_bind": 7}, {"evry": 5}, {"min_confidence": 0.5},
    {"autostart": "no"}, {"discover": 1}, {"batch_rows": 0.5}, {"batch_rows": 2.5}, {"batch_rows": 0},
    {"every": 0.001}, {"every": 1e300}, {"window": 1e-300}, {"window": 1e300}, {"pool_timeout": 1e10},
    {"pool_timeout": 0}, {"store": 5}, {"store": "no url at all"}, {"store": "nosuchdb://x/y"}])
def test_settings_that_cannot_work_are_refused(deployment, setting):
    c = deployment
    if "cfg" not in admin.find_agents(c.settings):
        c.create("m1", "modeler", "cfg", sources=["rec"], window=900.0, http=None)
    cfg = c.ref("cfg", timeout=30)
    before = cfg.query("describe")["settings"]
    try:
        with pytest.raises(BadRequest):
            cfg.configure("reconfigure", **setting)
        assert cfg.query("describe")["settings"] == before
    finally:  # taken after all (the defect): put back, so the next case tests its own setting
        if cfg.query("describe")["settings"] != before:
            cfg.configure("reconfigure", **{k: before[k] for k in setting})
    with pytest.raises(BadRequest):
        c.create("m1", "modeler", "refused", **{"sources": ["rec"], "http": None, **setting})
    assert "refused" not in admin.find_agents(c.settings)


def test_settings_refusals_say_what_is_wrong_and_what_is_accepted(deployment):
    c = deployment
    with pytest.raises(BadRequest, match=r"unknown modeler setting 'evry'.*\bevery\b"):
        c.create("m1", "modeler", "typo", sources=["rec"], http=None, evry=5)
    with pytest.raises(BadRequest, match="cannot be its own source"):
        c.create("m1", "modeler", "selfish", sources=["rec", "selfish"], http=None)
    with pytest.raises(BadRequest, match=r"every must be a number of seconds between 1 and \S+, not float 0.001"):
        c.create("m1", "modeler", "hasty", sources=["rec"], http=None, every=0.001)
    with pytest.raises(BadRequest, match=r"pool_timeout must be a positive number of seconds"):
        c.create("m1", "modeler", "hasty", sources=["rec"], http=None, pool_timeout=0)
    with pytest.raises(BadRequest, match="store must be a database URL") as refused:
        c.create("m1", "modeler", "secret", sources=["rec"], http=None, store="nosuchdb://u:hunter2@h/d")
    assert "hunter2" not in str(refused.value)  # a URL may hold a password: never quoted
    assert not {"typo", "selfish", "secret", "hasty"} & set(admin.find_agents(c.settings))


def test_reconfigure_refuses_what_only_a_new_modeler_can_change(deployment, tmp_path):
    """``network`` and ``store`` are taken at create only: the pool's neural agents hold the
    network, and the versions live in the store (a change took effect only after a move)."""
    c = deployment
    if "cfg" not in admin.find_agents(c.settings):
        c.create("m1", "modeler", "cfg", sources=["rec"], window=900.0, http=None)
    cfg = c.ref("cfg", timeout=30)
    before = cfg.query("describe")["settings"]
    for setting, why in (({"network": b"junk"}, "network cannot be changed"),
                         ({"store": f"sqlite:///{tmp_path / 'other.db'}"}, "store cannot be changed"),
                         ({"sources": ["rec", "cfg"]}, "its own source")):
        with pytest.raises(BadRequest, match=why):
            cfg.configure("reconfigure", **setting)
        assert cfg.query("describe")["settings"] == before
    assert cfg.configure("reconfigure", every=2.0)["every"] == 2.0  # the rollbacks left it usable
    cfg.configure("reconfigure", every=before["every"])


def test_one_job_uses_one_snapshot_of_its_settings(deployment):
    """A reconfigure of ``sources`` while a job scores applies from the next job: the
    version's provenance, its objects and its evidence all name the sources it ran with."""
    c = deployment
    mod = c.ref("mod", timeout=30)
    job = mod.configure("run")["job"]
    c.wait(lambda: mid_run(mod, job), timeout=60, every=0.02)
    try:
        mod.configure("reconfigure", sources=["rec", "elsewhere"])
        head = c.wait(lambda: next((h for h in mod.query("versions_list") if h["info"]["job"] == job), None),
                      timeout=60, every=0.2)
    finally:
        mod.configure("reconfigure", sources=["rec"])
    assert head["sources"] == ["rec"]
    assert list(head["info"]["objects_by_source"]) == ["rec"]
    assert list(head["info"]["connections"]["sources"]) == ["rec"]


def test_objects_with_non_finite_or_huge_activity_are_left_out_and_named(deployment, tmp_path):
    """One bad sample from one source made every run fail; the rest is modeled now."""
    c = deployment
    series = {w["object"]: Series.from_wire(w) for w in c.ref("rec").query("report")["series"]}
    first = next(iter(series.values()))
    for name, bad in (("bad/inf", math.inf), ("bad/huge", 1e300)):
        value = first.value.copy()
        value[4] = bad
        series[name] = Series(name, first.unit, first.start, first.end, value)
    c.create("n1", "recorder", "odd", store=fill(tmp_path / "odd.db", series))
    c.create("m1", "modeler", "lenient", sources=["odd"], window=900.0, http=None)
    lenient = c.ref("lenient", timeout=30)
    try:
        st = run_once(c, lenient)
        assert st["job"]["state"] == "done", st["job"]
        head = lenient.query("versions_list")[-1]
        left = head["info"]["objects_left_out"]
        assert set(left) == {"bad/inf", "bad/huge"}
        assert "finite" in left["bad/inf"] and "beyond" in left["bad/huge"]
        nodes = {n["id"] for n in lenient.query("model")["model"]["nodes"]}
        assert nodes and not nodes & set(left) and head["info"]["objects"] == len(series) - 2
        plot = lenient.query("activity", objects=["bad/inf"])["bad/inf"]["v"]
        assert None in plot and all(v is None or math.isfinite(v) for v in plot)  # JSON has no inf
    finally:
        c.host("m1", "terminate", "lenient")
        c.host("n1", "terminate", "odd")


def test_a_valid_step_is_taken(deployment):
    c = deployment
    c.create("m1", "modeler", "stepped", sources=["rec"], window=900.0, http=None, step=2)
    stepped = c.ref("stepped", timeout=30)
    assert stepped.configure("reconfigure", step=1.5)["step"] == 1.5
    st = run_once(c, stepped)
    assert st["job"]["state"] == "done", st["job"]
    c.host("m1", "terminate", "stepped")


# -- nits: query arguments, pool_remove, the command line -----------------------------------

@pytest.fixture(scope="module")
def known(deployment):
    """A modeler with a model and a page: (its ref, one of its objects)."""
    c = deployment
    c.create("m1", "modeler", "known", sources=["rec"], window=900.0, http=0)
    ref = c.ref("known", timeout=30)
    assert run_once(c, ref)["job"]["state"] == "done"
    return ref, ref.query("model")["model"]["nodes"][0]["id"]


@pytest.mark.parametrize("bad", ["abc", None, math.nan, 1.5, -0.1, True])
def test_min_confidence_is_checked_by_every_query(known, bad):
    ref, obj = known
    for op in ("dependencies", "dependants", "impact"):
        with pytest.raises(BadRequest, match="min_confidence"):
            ref.query(op, object=obj, min_confidence=bad)
    with pytest.raises(BadRequest, match="min_confidence"):
        ref.query("path", source=obj, target=obj, min_confidence=bad)


def test_other_query_arguments_are_checked(known):
    ref, obj = known
    assert ref.query("dependencies", object=obj, min_confidence=1) is not None  # the bounds are fine
    assert ref.query("dependants", object=obj, min_confidence=0) is not None
    for bad in (1.9, "x", True):
        with pytest.raises(BadRequest, match="new"):
            ref.query("diff", old=1, new=bad)
        with pytest.raises(BadRequest, match="old"):
            ref.query("diff", old=bad)
    with pytest.raises(BadRequest, match="object"):
        ref.query("dependencies", object=["a"])


def test_pool_remove_takes_a_list_of_names_only(deployment):
    c = deployment
    mod = c.ref("mod", timeout=30)
    with pytest.raises(BadRequest, match="names"):
        mod.configure("pool_remove", names="nn10")  # a string: once "in" matched nn1 too
    assert mod.query("status")["pool"] == ["nn1"]
    mod.configure("pool_add", names=["nn10"])
    assert mod.configure("pool_remove", names=["nn10"]) == ["nn1"]


def test_http_refuses_a_confidence_that_keeps_nothing(deployment, known):
    c = deployment
    ref, obj = known
    base = c.wait(lambda: ref.query("status")["http"], timeout=10)
    token = web_token(c.settings.secret, "known")
    for bad in ("nan", "2", "inf"):
        with pytest.raises(urllib.error.HTTPError) as err:
            get(f"{base}api/dependencies?{urllib.parse.urlencode({'object': obj, 'min_confidence': bad})}", token)
        assert err.value.code == 400 and "min_confidence" in json.loads(err.value.read())["error"]


def test_cli_refuses_a_confidence_that_keeps_nothing(deployment, known):
    c = deployment
    _, obj = known
    for bad in ("nan", "1.5"):
        out = masa(c, "model", "deps", "known", obj, "--min-confidence", bad)
        assert out.returncode == 2 and "--min-confidence" in out.stderr


def test_cli_ends_quietly_on_a_closed_pipe(deployment, known):
    c = deployment
    r, w = os.pipe()
    os.close(r)  # the reader went away (`| head` that has its line) before anything is written
    try:
        closed = subprocess.run([sys.executable, "-m", "masa", "model", "show", "known"],
                                env=c.settings.child_env(), cwd=ROOT, stdout=w, stderr=subprocess.PIPE,
                                text=True, timeout=60)
    finally:
        os.close(w)
    assert closed.returncode == 141 and closed.stderr == ""


def test_cli_versions_without_versions_and_page_of_an_agent_that_is_no_modeler(deployment):
    c = deployment
    c.create("m1", "modeler", "fresh", sources=["rec"], http=None)
    none = masa(c, "model", "versions", "fresh")
    assert none.returncode != 0 and "modeler 'fresh' has no model yet" in none.stderr
    assert json.loads(masa(c, "model", "versions", "fresh", "--json").stdout) == []
    c.host("m1", "terminate", "fresh")
    not_modeler = masa(c, "model", "page", "rec")
    assert not_modeler.returncode != 0 and "rec is not a modeler" in not_modeler.stderr
