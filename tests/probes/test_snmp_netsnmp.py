"""The SNMP poller against Debian's real snmpd (net-snmp), checked with net-snmp's tools."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import time

import pytest

from probes.errors import AuthFailure, ProbeTimeout
from probes.snmp import SnmpPoller, poll_all
from probes.snmp_auth import Credentials
from tests.probes.snmp_agents import (
    AUTH_KEY,
    COMMUNITY,
    PRIV_KEY,
    V3_USERS,
    Snmpd,
    net_snmp,
    parse_net_snmp,
)
from tests.probes.traffic import through_loopback

pytestmark = pytest.mark.snmpd

V2C = Credentials(community=COMMUNITY)


@pytest.fixture(scope="module")
def snmpd():
    if not (shutil.which("snmpd") or os.path.exists("/usr/sbin/snmpd")) or not shutil.which("snmpbulkwalk"):
        pytest.skip("Debian's snmpd/snmp are not installed (./run setup installs them)")
    agent = Snmpd()
    yield agent
    agent.stop()


def v3(user: str, auth_key: str = AUTH_KEY) -> Credentials:
    auth, priv = V3_USERS[user]
    return Credentials(v3_user=user, auth_key=auth_key, priv_key=PRIV_KEY, auth_protocol=auth, priv_protocol=priv)


def _agree(poller: SnmpPoller, port: int, tries: int = 4) -> tuple[dict, dict, dict]:
    """Poll, then read the same columns with snmpbulkwalk; retry when net-snmp's ~3 s
    ifTable cache refreshed in between (values differ only then)."""
    for _ in range(tries):
        poller.poll_sync()
        mine = poller.last_readings
        ref = parse_net_snmp(net_snmp("snmpbulkwalk", port, "1.3.6.1.2.1.31.1.1.1"))
        names = {oid.rsplit(".", 1)[1]: v for oid, v in ref.items() if oid.startswith("1.3.6.1.2.1.31.1.1.1.1.")}
        hc_in = {names[o.rsplit(".", 1)[1]]: int(v) for o, v in ref.items() if o.startswith("1.3.6.1.2.1.31.1.1.1.6.")}
        if all(mine["interfaces"].get(n, {}).get("in", (None,))[0] == v for n, v in hc_in.items()):
            return mine, names, hc_in
        time.sleep(0.5)
    return mine, names, hc_in


def test_v2c_counters_and_names_equal_snmpbulkwalk(snmpd):
    poller = SnmpPoller(snmpd.target, V2C, label="agent")
    try:
        mine, names, hc_in = _agree(poller, snmpd.port)
        assert hc_in and set(mine["interfaces"]) == set(names.values())
        for name, value in hc_in.items():
            assert mine["interfaces"][name]["in"] == (value, 64), name
        # this agent serves the real machine: its interfaces are /proc/net/dev's
        with open("/proc/net/dev") as f:
            local = {line.split(":")[0].strip() for line in f.readlines()[2:]}
        assert set(names.values()) <= local
        uptime = int(parse_net_snmp(net_snmp("snmpget", snmpd.port, "1.3.6.1.2.1.1.3.0"))["1.3.6.1.2.1.1.3.0"])
        assert 0 <= uptime - mine["uptime"] < 3000
        assert poller.polls >= 1
    finally:
        poller.close()


def test_rates_are_counter_differences_over_the_interval(snmpd):
    """Traffic on loopback between two polls appears as a rate on the agent's lo."""
    poller = SnmpPoller(snmpd.target, V2C, label="agent", cpu=False)
    try:
        poller.poll_sync()
        before = poller.last_readings["interfaces"]
        through_loopback(100, 60_000)  # 6 MB through lo
        time.sleep(3.5)  # past net-snmp's ifTable cache
        out = poller.poll_sync()
        after = poller.last_readings["interfaces"]
        lo = [s for s in out if s.object == "agent/if/lo/in"]
        assert len(lo) == 1
        s = lo[0]
        expected = (after["lo"]["in"][0] - before["lo"]["in"][0]) / (s.end - s.start)
        assert s.value == pytest.approx(expected)
        assert s.value * (s.end - s.start) >= 6_000_000
        assert all(x.unit == "B/s" and x.value >= 0 for x in out)
    finally:
        poller.close()


def test_cpu_from_sscpuraw_matches_snmpget(snmpd):
    """ssCpuRaw* are served at once (hrProcessorLoad only after ~60 s); net-snmp refreshes
    them every few seconds, so a CPU sample appears once two readings differ."""
    poller = SnmpPoller(snmpd.target, V2C, label="agent", interfaces=False)
    cpu = []
    try:
        deadline = time.time() + 25
        while not cpu and time.time() < deadline:
            cpu = [s for s in poller.poll_sync() if s.object == "agent/cpu"]
            if not cpu:
                time.sleep(1.0)
        assert cpu, "no CPU sample within 25 s"
        assert cpu[0].unit == "cpu" and 0 <= cpu[0].value <= os.cpu_count() + 0.01
        # the raw counters read are snmpget's (read again when net-snmp refreshed them in between)
        for _ in range(4):
            raw = poller.last_readings["cpu"]
            ref = parse_net_snmp(net_snmp("snmpget", snmpd.port, "1.3.6.1.4.1.2021.11.50.0",
                                          "1.3.6.1.4.1.2021.11.53.0", "1.3.6.1.4.1.2021.11.67.0"))
            if (raw["user"], raw["idle"]) == (int(ref["1.3.6.1.4.1.2021.11.50.0"]),
                                              int(ref["1.3.6.1.4.1.2021.11.53.0"])):
                break
            time.sleep(0.5)
            poller.poll_sync()
        assert raw["user"] == int(ref["1.3.6.1.4.1.2021.11.50.0"]) > 0
        assert raw["idle"] == int(ref["1.3.6.1.4.1.2021.11.53.0"]) > 0
        assert int(ref["1.3.6.1.4.1.2021.11.67.0"]) == os.cpu_count()
    finally:
        poller.close()


@pytest.mark.parametrize("user", sorted(V3_USERS))
def test_v3_auth_priv(snmpd, user):
    poller = SnmpPoller(snmpd.target, v3(user), label="agent")
    try:
        poller.poll_sync()
        ref = parse_net_snmp(net_snmp("snmpbulkwalk", snmpd.port, "1.3.6.1.2.1.31.1.1.1.1", v3=user))
        assert set(poller.last_readings["interfaces"]) == set(ref.values())
    finally:
        poller.close()


def test_wrong_v3_password_is_auth_failure(snmpd):
    poller = SnmpPoller(snmpd.target, v3("shauser", auth_key="not-the-key"), timeout=0.5, retries=0)
    try:
        with pytest.raises(AuthFailure, match="credentials refused"):
            poller.poll_sync()
    finally:
        poller.close()


def test_unknown_v3_user_is_auth_failure(snmpd):
    creds = Credentials(v3_user="nobody", auth_key=AUTH_KEY, priv_key=PRIV_KEY)
    poller = SnmpPoller(snmpd.target, creds, timeout=0.5, retries=0)
    try:
        with pytest.raises(AuthFailure):
            poller.poll_sync()
    finally:
        poller.close()


def test_wrong_community_times_out_with_a_hint(snmpd):
    poller = SnmpPoller(snmpd.target, Credentials(community="wrong"), timeout=0.3, retries=1)
    try:
        with pytest.raises(ProbeTimeout, match="wrong community"):
            poller.poll_sync()
    finally:
        poller.close()


def test_wrong_v3_privacy_key_times_out_with_a_hint(snmpd):
    """net-snmp drops a request it cannot decrypt without a report, so a wrong privacy
    key is indistinguishable from silence: the message says so."""
    creds = Credentials(v3_user="shauser", auth_key=AUTH_KEY, priv_key="not-the-priv-key")
    poller = SnmpPoller(snmpd.target, creds, timeout=0.3, retries=0)
    try:
        with pytest.raises(ProbeTimeout, match="wrong privacy key or protocol"):
            poller.poll_sync()
    finally:
        poller.close()


def test_silent_port_times_out():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        poller = SnmpPoller(f"udp:127.0.0.1:{silent.getsockname()[1]}", V2C, timeout=0.2, retries=1)
        try:
            with pytest.raises(ProbeTimeout, match="2 tries"):
                poller.poll_sync()
        finally:
            poller.close()


def test_many_targets_concurrently_one_loop(snmpd):
    """Good agents answer while a silent one times out; one failure spoils nothing."""
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))

        async def run():
            engine = SnmpEngine()
            pollers = [SnmpPoller(snmpd.target, V2C, label=f"a{i}", engine=engine, timeout=0.3, retries=0)
                       for i in range(5)]
            pollers.append(SnmpPoller(f"udp:127.0.0.1:{silent.getsockname()[1]}", V2C, engine=engine,
                                      timeout=0.3, retries=0))
            pollers.append(SnmpPoller(snmpd.target, v3("sha256user"), label="v3", engine=engine))
            first = await poll_all(pollers)
            await asyncio.sleep(0.2)
            second = await poll_all(pollers)
            engine.close_dispatcher()
            return first, second

        first, second = asyncio.run(run())
    assert all(r == [] for r in first[:5]) and first[6] == []
    assert isinstance(first[5], ProbeTimeout) and isinstance(second[5], ProbeTimeout)
    for i in range(5):
        assert {s.object.split("/")[0] for s in second[i]} == {f"a{i}"}
    assert any(s.object.startswith("v3/if/") for s in second[6])


def test_credentials_validation():
    with pytest.raises(ValueError):
        Credentials()
    with pytest.raises(ValueError):
        Credentials(community="a", v3_user="b")
    with pytest.raises(ValueError, match="8 characters"):
        Credentials(v3_user="u", auth_key="short")
    with pytest.raises(ValueError, match="auth protocol"):
        Credentials(v3_user="u", auth_key=AUTH_KEY, auth_protocol="SHA-3")
    assert "authpass" not in repr(v3("shauser"))


def test_collect_snmp_cli_v3_and_a_dead_target(snmpd, tmp_path):
    """`masa collect snmp` with two targets, one silent: rows for the live one, the
    failures counted on the progress line, exit 0 because something was recorded."""
    import subprocess
    import sys
    from pathlib import Path

    from masa.activity import read_csv

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        auth, priv = V3_USERS["sha256user"]
        out = tmp_path / "snmp.csv"
        run = subprocess.run(
            [str(Path(sys.executable).with_name("masa")), "collect", "snmp", snmpd.target,
             f"udp:127.0.0.1:{silent.getsockname()[1]}", "--v3-user", "sha256user", "--auth-key", AUTH_KEY,
             "--priv-key", PRIV_KEY, "--auth-protocol", auth, "--priv-protocol", priv, "--timeout", "0.3",
             "--retries", "0", "--interval", "1", "--seconds", "2", "--out", str(out)],
            capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "errors" in run.stderr and "failed polls" in run.stderr
    series = read_csv(out)
    label = f"127.0.0.1_{snmpd.port}"
    assert f"{label}/if/lo/in" in series and all(o.startswith(label + "/") for o in series)


def test_snmp_meter_for_collector_agents(snmpd):
    from probes.snmp_meter import SnmpMeter

    meter = SnmpMeter({"target": snmpd.target, "community": COMMUNITY, "label": "r1"})
    try:
        assert meter.sample() == []
        time.sleep(0.3)
        rows = meter.sample()
        assert rows and all(len(r) == 5 and r[0].startswith("r1/") for r in rows)
    finally:
        meter.close()
