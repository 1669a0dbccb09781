"""Collector failures made visible: static mistakes refused at create/reconfigure with the
words `masa collect` uses, run-time failures counted in `status` and logged once; and a
remote-probe collector ticking on the host's thread pool without losing ticks.

Real processes throughout: a broker and two hosts, Debian's snmpd, `masa probe`."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from masa.activity import Series
from masa.errors import BadRequest
from tests.cluster import ROOT
from tests.probes.snmp_agents import AUTH_KEY, COMMUNITY, PRIV_KEY

MASA = [str(Path(sys.executable).with_name("masa"))]


@pytest.fixture
def external_probe(pair):
    """`masa probe NAME --label LABEL` as a child process, stopped after the test."""
    procs = []

    def start(name, label):
        proc = subprocess.Popen(MASA + ["probe", name, "--label", label], env=pair.settings.child_env(),
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(10)


def host_log(pair, host):
    return (pair.settings.home / "logs" / f"{host}.log").read_text(errors="replace")


def series(answer):
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def collect_error(*args):
    """What `masa collect snmp` says about the same settings (exit 2, usage error)."""
    run = subprocess.run(MASA + ["collect", "snmp", *args, "--interval", "1", "--seconds", "1", "--out", os.devnull],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2, run.stderr
    return " ".join(run.stderr.split())


# -- bug: a remote collector's proxy used from every thread of the scheduler's pool --------


def test_remote_collector_samples_on_every_tick(pair, external_probe):
    """The ticks run on four pool threads; a Pyro5 proxy belongs to one.  Every tick must
    reach the probe: no failed samples, no ownership tracebacks, one sample per tick."""
    external_probe("edge2", "router2")
    pair.create("b1", "collector", "col-edge2", probe="remote", source="edge2", interval=0.3)
    col = pair.ref("col-edge2")

    def enough():
        s = series(col.query("report")).get("router2/cpu")
        return s if s is not None and len(s) >= 12 else None

    cpu = pair.wait(enough, timeout=40)
    status = col.query("status")
    assert status["meter_errors"] == 0, status["last_meter_error"]
    assert status["last_meter_error"] is None and status["meter_failing"] is False
    assert "not the owner of this proxy" not in host_log(pair, "b1")
    assert (cpu.start[1:] == cpu.end[:-1]).all()  # one unbroken stream of samples


# -- static mistakes: refused up front, in `masa collect`'s words -------------------------


def test_static_snmp_mistakes_are_refused_like_masa_collect(pair):
    bad_target = "udp:127.0.0.1:notaport"
    with pytest.raises(BadRequest) as err:
        pair.create("b1", "collector", "col-s1", probe="snmp", target=bad_target)
    said = collect_error(bad_target)
    assert "bad SNMP target 'udp:127.0.0.1:notaport': use udp:HOST:PORT" in str(err.value)
    assert "bad SNMP target 'udp:127.0.0.1:notaport': use udp:HOST:PORT" in said

    with pytest.raises(BadRequest, match="bad SNMP target"):
        pair.create("b1", "collector", "col-s2", probe="snmp", target="udp:127.0.0.1:70000")

    with pytest.raises(BadRequest) as err:
        pair.create("b1", "collector", "col-s3", probe="snmp", target="udp:127.0.0.1:1161",
                    v3_user="u", auth_key="short")
    said = collect_error("udp:127.0.0.1:1161", "--v3-user", "u", "--auth-key", "short")
    assert "SNMPv3 keys must be at least 8 characters (RFC 3414)" in str(err.value)
    assert "SNMPv3 keys must be at least 8 characters (RFC 3414)" in said

    with pytest.raises(BadRequest, match="unknown auth protocol 'SHA-3'"):
        pair.create("b1", "collector", "col-s4", probe="snmp", target="udp:127.0.0.1:1161",
                    v3_user="u", auth_key=AUTH_KEY, auth_protocol="SHA-3")
    with pytest.raises(BadRequest, match="unknown privacy protocol 'DES'"):
        pair.create("b1", "collector", "col-s5", probe="snmp", target="udp:127.0.0.1:1161",
                    v3_user="u", auth_key=AUTH_KEY, priv_key=PRIV_KEY, priv_protocol="DES")
    with pytest.raises(BadRequest, match="auth_key must be text"):
        pair.create("b1", "collector", "col-s6", probe="snmp", target="udp:127.0.0.1:1161",
                    v3_user="u", auth_key=12345678)
    with pytest.raises(BadRequest, match="match: bad regular expression"):
        pair.create("b1", "collector", "col-s7", match="((")
    # a label is one name segment (objects are LABEL/...), for every kind of collector
    with pytest.raises(BadRequest, match="label must be one non-empty name without '/'"):
        pair.create("b1", "collector", "col-s8", probe="snmp", target="udp:127.0.0.1:1161", label="rack/r1")
    with pytest.raises(BadRequest, match="not 'web\\*'"):
        pair.create("b1", "collector", "col-s9", label="web*")
    # none of them was created
    assert not {a["name"] for a in pair.host("b1", "agents")} & {f"col-s{i}" for i in range(1, 10)}


def test_a_bad_reconfigure_is_refused_and_changes_nothing(pair, snmpd):
    pair.create("b1", "collector", "col-rc1", probe="snmp", target=snmpd.target, community=COMMUNITY,
                label="rc1", interval=0.5)
    col = pair.ref("col-rc1")
    with pytest.raises(BadRequest, match="bad SNMP target 'udp:127.0.0.1:notaport'"):
        col.configure("reconfigure", target="udp:127.0.0.1:notaport")
    with pytest.raises(BadRequest, match="8 characters"):
        col.configure("reconfigure", v3_user="shauser", auth_key="short")
    settings = col.query("describe")["settings"]
    assert settings["target"] == snmpd.target and "v3_user" not in settings
    # and it still meters
    pair.wait(lambda: any(c["object"].startswith("rc1/if/") for c in col.query("catalog")), timeout=30)
    assert col.query("status")["meter_errors"] == 0


# -- run-time failures: counted, shown in status, logged once per change ------------------


def failing(col, n=3):
    def check():
        s = col.query("status")
        return s if s["meter_errors"] >= n and s["meter_failing"] else None

    return check


def test_wrong_community_is_shown_in_status_and_logged_once(pair, snmpd):
    pair.create("b2", "collector", "col-comm", probe="snmp", target=snmpd.target, community="wrong",
                label="comm", interval=0.3, timeout=0.2, retries=0)
    col = pair.ref("col-comm")
    status = pair.wait(failing(col, 4), timeout=30)
    last = status["last_meter_error"]
    assert "no answer after 1 tries" in last["error"] and "wrong community" in last["error"]
    assert last["since"] <= last["time"] and status["last_sample"] is None
    assert col.query("catalog") == []
    log = host_log(pair, "b2")
    assert log.count("collector col-comm: sampling fails") == 1
    assert "Traceback" not in log.split("collector col-comm: sampling fails", 1)[1]

    col.configure("reconfigure", community=COMMUNITY)  # fixed: it recovers and says so
    pair.wait(lambda: any(c["object"].startswith("comm/if/") for c in col.query("catalog")), timeout=30)
    status = pair.wait(lambda: (s := col.query("status")) and not s["meter_failing"] and s, timeout=10)
    assert status["last_sample"] is not None and status["meter_errors"] >= 4
    assert "wrong community" in status["last_meter_error"]["error"]  # kept: when it last failed
    pair.wait(lambda: "collector col-comm: sampling works again" in host_log(pair, "b2"), timeout=10)


def test_v3_auth_failure_is_shown_in_status(pair, snmpd):
    pair.create("b2", "collector", "col-v3", probe="snmp", target=snmpd.target, v3_user="shauser",
                auth_key="not-the-key", priv_key=PRIV_KEY, interval=0.3, timeout=0.3, retries=0)
    col = pair.ref("col-v3")
    status = pair.wait(failing(col), timeout=30)
    assert "SNMPv3 credentials refused" in status["last_meter_error"]["error"]
    assert col.query("catalog") == []
    assert host_log(pair, "b2").count("collector col-v3: sampling fails") <= 2  # not one per tick


def test_silent_target_is_shown_in_status(pair):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        target = f"udp:127.0.0.1:{silent.getsockname()[1]}"
        pair.create("b2", "collector", "col-silent", probe="snmp", target=target, community=COMMUNITY,
                    interval=0.3, timeout=0.2, retries=1)
        status = pair.wait(failing(pair.ref("col-silent")), timeout=30)
        assert status["last_meter_error"]["error"] == f"{target}: no answer after 2 tries of 0.2 s " \
                                                      "(or wrong community: a v2c agent stays silent)"
    assert host_log(pair, "b2").count("collector col-silent: sampling fails") == 1


def test_missing_remote_source_is_shown_in_status_until_it_appears(pair, external_probe):
    pair.create("b1", "collector", "col-nosuch", probe="remote", source="late1", interval=0.5)
    col = pair.ref("col-nosuch")
    status = pair.wait(failing(col, 2), timeout=40)
    assert "external probe 'late1' not found" in status["last_meter_error"]["error"]
    assert col.query("catalog") == []
    assert host_log(pair, "b1").count("collector col-nosuch: sampling fails") == 1
    external_probe("late1", "late")  # the probe starts: the collector finds it by itself
    pair.wait(lambda: any(c["object"] == "late/cpu" for c in col.query("catalog")), timeout=40)
    assert col.query("status")["meter_failing"] is False


# -- the CLI's query output ---------------------------------------------------------------


def test_query_prints_series_as_numbers(pair):
    pair.create("b2", "collector", "col-cli", interval=0.3, per_process="none")
    col = pair.ref("col-cli")
    pair.wait(lambda: len(series(col.query("report", objects=["b2/cpu"])).get("b2/cpu", ())) >= 2, timeout=20)
    run = subprocess.run(MASA + ["query", "col-cli", "report", 'objects=["b2/cpu"]'],
                         env=pair.settings.child_env(), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "b'" not in run.stdout
    answer = json.loads(run.stdout)
    (cpu,) = answer["series"]
    assert cpu["object"] == "b2/cpu" and cpu["unit"] == "cpu"
    assert len(cpu["start"]) == len(cpu["end"]) == len(cpu["value"]) >= 2
    assert all(isinstance(v, float) for v in cpu["start"] + cpu["end"] + cpu["value"])
    assert all(s < e for s, e in zip(cpu["start"], cpu["end"], strict=True))
