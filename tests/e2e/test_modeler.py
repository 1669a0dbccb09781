"""Modeler and neural agents on real processes: a pool that loses an agent mid-job, the
dependency-model interface over Pyro5 and over HTTP, versions, grow/shrink, following."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPConnection, HTTPResponse
from http.cookiejar import CookieJar

import pytest

from masa import admin
from masa.errors import BadRequest
from modeler import interface
from modeler.estimator import DependencyModeler
from modeler.web.auth import cookie_name, page_url, web_token
from tests.cluster import ROOT, Cluster
from tests.e2e.scenario import fill, finished, recording

HOSTS = {"m1": {"domain": "A"}, "n1": {"domain": "A"}, "n2": {"domain": "A"}, "n3": {"domain": "A"}}


def http(base: str, token: str, path: str, raw: bool = False, **params):
    query = urllib.parse.urlencode(params, doseq=True)
    request = urllib.request.Request(f"{base}{path}?{query}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=10) as r:
        body = r.read().decode()
        return body if raw else json.loads(body)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    home = tmp_path_factory.mktemp("e2e")
    sc = recording(n_services=7, seed=5)
    names = sorted(sc.series)
    with Cluster(home, HOSTS, call_timeout=30.0) as c:  # sklearn imports on a busy machine
        half = len(names) // 2
        c.create("m1", "recorder", "rec-1", store=fill(home / "r1.db", {k: sc.series[k] for k in names[:half]}))
        c.create("m1", "recorder", "rec-2", store=fill(home / "r2.db", {k: sc.series[k] for k in names[half:]}))
        for k, host in enumerate(("n1", "n2", "n3"), start=1):
            c.create(host, "neural", f"nn{k}", pace=0.8)
        c.create("m1", "modeler", "mod", sources=["rec-1", "rec-2"], pool=["nn1", "nn2", "nn3"],
                 window=900.0, pool_timeout=6.0, batch_rows=4)
        c.create("m1", "modeler", "mod2", sources=["rec-1"], window=900.0)  # a second page on m1
        yield c, sc


def test_pool_survives_a_neural_agent_killed_mid_job(deployment):
    c, sc = deployment
    mod = c.ref("mod", timeout=20)
    assert mod.configure("run")["started"] is True
    # wait until the job is mid-way: some batches scored, most still to do
    c.wait(lambda: (p := mod.query("status")["job"].get("pool")) and sum(p["by_agent"].values()) >= 1,
           timeout=30, every=0.02)
    c.kill("n2")  # kill -9 the host of nn2 while the pool is using it
    st = c.wait(lambda: finished(mod, 1), timeout=60)
    head = mod.query("versions_list")[-1]
    pool = head["info"]["pool"]
    assert pool["lost"] == ["nn2"]  # dropped once, for the rest of the job
    assert pool["redone"] >= 1 and pool["local"] == 0  # its batch was redone by the others
    assert sum(pool["by_agent"].values()) == pool["batches"] > 4
    assert pool["by_agent"].get("nn1", 0) > 0 and pool["by_agent"].get("nn3", 0) > 0
    # the distributed model is exactly the one-process model of the same activity
    local = DependencyModeler.default().predict(sc.series)
    remote = interface.from_json(mod.query("model")["model"])
    assert sorted(remote.edges(data="confidence")) == sorted(local.edges(data="confidence"))
    assert remote.number_of_edges() > 0
    # provenance: sources, the activity window, the network that scored it
    assert head["sources"] == ["rec-1", "rec-2"] and head["version"] == st["latest"] == 1
    t0 = min(float(s.start[0]) for s in sc.series.values())
    assert abs(head["since"] - t0) < 2.0 and head["until"] > head["since"] + 300
    assert head["network"] == mod.query("status")["network"]
    assert head["info"]["pairs_scored"] == len(sc.series) * (len(sc.series) - 1)
    c.restart("n2")


def test_http_answers_equal_pyro5_answers(deployment):
    c, sc = deployment
    mod = c.ref("mod", timeout=20)
    latest = mod.query("status")["latest"]
    mod.configure("run")  # a second version, for diffs
    st = c.wait(lambda: (s := mod.query("status"))["latest"] == latest + 1 and s["http"] and s, timeout=60)
    base = st["http"]
    assert base and base.startswith("http://127.0.0.1:")
    tok = web_token(c.settings.secret, "mod")
    g = interface.from_json(mod.query("model")["model"])
    a, b = next(iter(g.edges))
    obj = max(g, key=g.in_degree)
    assert http(base, tok, "api/model") == mod.query("model")
    assert http(base, tok, "api/model", version=1) == mod.query("model", version=1)
    assert http(base, tok, "api/dependencies", object=a) == mod.query("dependencies", object=a)
    assert http(base, tok, "api/dependants", object=b, min_confidence=0.3) == \
        mod.query("dependants", object=b, min_confidence=0.3)
    impact = mod.query("impact", object=obj)
    assert impact and http(base, tok, "api/impact", object=obj) == impact
    assert http(base, tok, "api/path", source=a, target=b) == mod.query("path", source=a, target=b)
    assert http(base, tok, "api/diff", old=1) == mod.query("diff", old=1)
    assert http(base, tok, "api/versions") == mod.query("versions_list")
    layout = http(base, tok, "api/layout", version=1)  # the page's drawing: every node, in [0, 1]²
    assert layout == mod.query("layout", version=1) and layout["version"] == 1
    assert set(layout["nodes"]) == {n["id"] for n in mod.query("model", version=1)["model"]["nodes"]}
    assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in layout["nodes"].values())
    for fmt in ("json", "graphml", "dot"):
        assert http(base, tok, "api/export", raw=True, format=fmt) == mod.query("export", format=fmt)
    with pytest.raises(urllib.error.HTTPError) as err:
        http(base, tok, "api/dependencies", object="no/such/object")
    assert err.value.code == 400 and "unknown object" in json.loads(err.value.read())["error"]
    # no token, a wrong one, or one of another modeler: refused, whatever the route
    for headers in ({}, {"Authorization": "Bearer " + "0" * 32},
                    {"Authorization": "Bearer " + web_token(c.settings.secret, "other")}):
        for route in ("", "api/model", "api/status"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(urllib.request.Request(base + route, headers=headers), timeout=10)
            assert err.value.code == 401 and "token" in json.loads(err.value.read())["error"]
    # a browser trades the token in the address for a cookie that opens the rest
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(page_url(base, c.settings.secret, "mod"), timeout=10) as r:
        assert r.url == base and b"masa modeler" in r.read()  # redirected to the bare address
    with opener.open(base + "api/versions", timeout=10) as r:
        assert json.loads(r.read()) == mod.query("versions_list")
    # control over HTTP: only with the header another web site cannot send (CSRF)
    bearer = {"Authorization": f"Bearer {tok}"}
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(urllib.request.Request(f"{base}api/stop", method="POST", headers=bearer), timeout=10)
    assert err.value.code == 403
    stop = urllib.request.Request(f"{base}api/stop", method="POST", headers={"X-Masa-Control": "1", **bearer})
    with urllib.request.urlopen(stop, timeout=10) as r:
        assert json.loads(r.read()) == {"running": False}


def raw(base: str, path: str, headers: dict) -> tuple[int, HTTPResponse, bytes]:
    """One request, redirects not followed."""
    conn = HTTPConnection(urllib.parse.urlsplit(base).netloc, timeout=10)
    try:
        conn.request("GET", path, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer, answer.read()
    finally:
        conn.close()


def test_two_modelers_pages_open_in_one_browser(deployment):
    """Browsers keep one cookie jar per host name, whatever the port: the pages of two
    modelers on one machine must not lock each other out."""
    c, _ = deployment
    bases = {name: c.wait(lambda n=name: c.ref(n, timeout=20).query("status")["http"], timeout=30)
             for name in ("mod", "mod2")}
    assert bases["mod"] != bases["mod2"] and all(b.startswith("http://127.0.0.1:") for b in bases.values())
    jar = CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    for name, base in bases.items():
        with opener.open(page_url(base, c.settings.secret, name), timeout=10) as r:
            assert r.url == base and b"masa modeler" in r.read()
    assert sorted(k.name for k in jar) == [cookie_name("mod"), cookie_name("mod2")]
    for _ in range(2):  # both stay open, in any order
        for name, base in bases.items():
            with opener.open(base + "api/status", timeout=10) as r:
                assert json.loads(r.read())["name"] == name
    # a stale cookie (an earlier secret) alone is refused; the correct address wins over it
    base, tok = bases["mod2"], web_token(c.settings.secret, "mod2")
    stale = {"Cookie": f"{cookie_name('mod2')}={'0' * 32}"}
    status, _, body = raw(base, "/api/status", stale)
    assert status == 401 and "token" in json.loads(body)["error"]
    status, answer, _ = raw(base, f"/?token={tok}", stale)
    assert status == 303 and f"{cookie_name('mod2')}={tok}" in answer.getheader("Set-Cookie")
    # scripts: the bearer scheme in any case; errors under /api in JSON
    status, _, body = raw(base, "/api/status", {"authorization": f"bearer {tok}"})
    assert status == 200 and json.loads(body)["name"] == "mod2"
    status, _, body = raw(base, "/api/no-such-route", {"Authorization": f"Bearer {tok}"})
    assert status == 404 and "error" in json.loads(body)
    status, _, body = raw(base, "/api/model?version=abc", {"Authorization": f"Bearer {tok}"})
    assert status == 400 and json.loads(body) == {"error": "version must be an integer"}


def test_pool_grows_shrinks_and_a_neural_agent_follows_its_modeler(deployment):
    c, _ = deployment
    mod = c.ref("mod", timeout=20)
    pool = mod.configure("pool_grow", hosts=["n3"])
    assert pool[-1] == "mod-nn1" and c.where("mod-nn1") == "n3"
    assert "mod-nn1" in admin.find_agents(c.settings, kind="neural")
    assert mod.configure("pool_shrink", count=1) == ["nn1", "nn2", "nn3"]
    c.wait(lambda: "mod-nn1" not in admin.find_agents(c.settings, kind="neural"), timeout=15)
    c.ref("nn1").configure("serve", modeler="mod")
    c.wait(lambda: c.where("nn1") == c.where("mod"), timeout=20)
    assert c.ref("nn1").query("status")["host"] == "m1"


def masa(c, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "masa", *args], env=c.settings.child_env(), cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_model_cli(deployment, tmp_path):
    c, _ = deployment
    mod = c.ref("mod", timeout=20)
    g = interface.from_json(mod.query("model")["model"])
    a, b = next(iter(g.edges))
    shown = masa(c, "model", "show", "mod")
    assert shown.returncode == 0, shown.stderr
    assert f"{g.number_of_nodes()} objects, {g.number_of_edges()} dependencies" in shown.stdout
    assert f"{a} -> {b}" in shown.stdout
    as_json = json.loads(masa(c, "model", "deps", "mod", a, "--json").stdout)
    assert as_json == mod.query("dependencies", object=a)
    assert json.loads(masa(c, "model", "impact", "mod", b, "--json").stdout) == mod.query("impact", object=b)
    assert json.loads(masa(c, "model", "diff", "mod", "1", "--json").stdout) == mod.query("diff", old=1)
    out = tmp_path / "m.graphml"
    assert masa(c, "model", "export", "mod", "--out", str(out)).returncode == 0
    assert out.read_text() == mod.query("export", format="graphml")
    latest = mod.query("versions_list")[-1]["version"]
    pinned = json.loads(masa(c, "model", "deps", "mod", a, "--version", str(latest), "--json").stdout)
    assert pinned == mod.query("dependencies", object=a, version=latest)
    sink = next(n for n in g if g.out_degree(n) == 0)
    assert masa(c, "model", "deps", "mod", sink).stdout.strip() == f"{sink} depends on nothing"
    assert json.loads(masa(c, "model", "path", "mod", a, b, "--min-confidence", "0", "--json").stdout) == \
        mod.query("path", source=a, target=b)
    bad = masa(c, "model", "deps", "mod", "no/such")
    assert bad.returncode != 0 and "unknown object 'no/such'" in bad.stderr
    typo = masa(c, "model", "show", "mdo")  # a modeler nobody knows: at once, with a guess
    assert typo.returncode != 0 and "no agent named 'mdo'" in typo.stderr and "did you mean mod?" in typo.stderr
    # the page's address with its token: it opens the page
    address = masa(c, "model", "page", "mod").stdout.strip()
    assert address == page_url(mod.query("status")["http"], c.settings.secret, "mod")
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    with opener.open(address, timeout=10) as r:
        assert r.status == 200 and b"masa modeler" in r.read()


def test_schedule_and_a_modeler_that_moves_keeps_its_versions(deployment):
    c, _ = deployment
    mod = c.ref("mod", timeout=30)
    before = mod.query("status")
    mod.configure("reconfigure", every=1.0)
    mod.configure("start")
    c.wait(lambda: mod.query("status")["latest"] >= before["latest"] + 2, timeout=60)  # on its own
    mod.configure("stop")
    c.wait(lambda: mod.query("status")["job"]["state"] in ("done", "failed"), timeout=60)
    st = mod.query("status")
    model = mod.query("model")
    tok = web_token(c.settings.secret, "mod")  # the same token wherever the page runs
    c.move("mod", "n3")
    after = c.wait(lambda: (s := mod.query("status"))["http"] and s, timeout=30)
    assert after["host"] == "n3" and after["latest"] == st["latest"] and after["running"] is False
    assert mod.query("model") == model and len(mod.query("versions_list")) == st["latest"]
    assert http(after["http"], tok, "api/status")["host"] == "n3"  # the page moved with it
    assert http(after["http"], tok, "api/model") == model


def test_a_neural_agent_with_another_network_is_refused_not_mixed_in(deployment, tmp_path):
    c, sc = deployment
    net = DependencyModeler.default().network_
    other = type(net)(net.mean, net.scale, net.weights, net.biases, net.temperature * 2.0,
                      net.feature_names, net.meta)
    other.save(tmp_path / "other.npz")
    c.create("n1", "neural", "nn-other", network=(tmp_path / "other.npz").read_bytes())
    mod = c.ref("mod", timeout=30)
    mine = mod.query("status")["network"]
    assert c.ref("nn-other").query("network")["id"] != mine
    with pytest.raises(BadRequest, match="holds network"):
        c.ref("nn-other").query("evaluate", features=b"\0" * 8 * 27, cols=27, network=mine)
    mod.configure("pool_remove", names=["nn1", "nn2", "nn3"])
    mod.configure("pool_add", names=["nn-other"])
    latest = mod.query("status")["latest"]
    mod.configure("run")
    c.wait(lambda: mod.query("status")["latest"] == latest + 1, timeout=60)
    pool = mod.query("versions_list")[-1]["info"]["pool"]
    assert pool["lost"] == ["nn-other"] and pool["local"] == pool["batches"]  # scored by the modeler
    local = DependencyModeler.default().predict(sc.series)
    remote = interface.from_json(mod.query("model")["model"])
    assert sorted(remote.edges(data="confidence")) == sorted(local.edges(data="confidence"))
    with pytest.raises(BadRequest, match="not a network"):
        c.create("n1", "neural", "nn-junk", network=b"garbage")


def test_a_discovering_pool_uses_the_neural_agents_registered_now(deployment):
    c, _ = deployment
    mod = c.ref("mod", timeout=30)
    mod.configure("reconfigure", pool=[], discover=True)
    latest = mod.query("status")["latest"]
    mod.configure("run")
    c.wait(lambda: mod.query("status")["latest"] == latest + 1, timeout=60)
    pool = mod.query("versions_list")[-1]["info"]["pool"]
    assert set(pool["by_agent"]) <= {"nn1", "nn2", "nn3"} and len(pool["by_agent"]) >= 2
    assert pool["lost"] == ["nn-other"] and pool["local"] == 0
