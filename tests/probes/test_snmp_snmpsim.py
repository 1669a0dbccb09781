"""The SNMP poller against snmpsim: counters that wrap, an agent that restarts, an agent
with only 32-bit counters and hrProcessorLoad, and one that answers garbage."""

from __future__ import annotations

import asyncio
import time

import pytest
from pysnmp.hlapi.v3arch.asyncio import (
    CommunityData,
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    UdpTransportTarget,
    set_cmd,
)
from pysnmp.proto.rfc1902 import Counter32, Integer32, TimeTicks

from probes.errors import AgentRestart, GarbageResponse
from probes.snmp import SnmpPoller
from probes.snmp_auth import Credentials
from tests.probes.snmp_agents import Snmpsim

RATE = 40_000_000  # bytes/s on the wrapping interface: a 32-bit counter wraps every ~107 s
START = 2**32 - 2 * RATE  # ... so start it 2 s before the wrap

# community "wrap": sysUpTime counts from 0 when the simulator starts (so a restart sends
# it back); eth0 has only Counter32 octets that wrap; eth1 has Counter64 too (preferred).
WRAP = f"""\
1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=0
1.3.6.1.2.1.2.2.1.2.1|4|eth0
1.3.6.1.2.1.2.2.1.2.2|4|eth1
1.3.6.1.2.1.2.2.1.5.1|66|1000000000
1.3.6.1.2.1.2.2.1.10.1|65:numeric|rate={RATE},initial={START},max=4294967296,wrap=1
1.3.6.1.2.1.2.2.1.10.2|65:numeric|rate=1000,initial=5
1.3.6.1.2.1.2.2.1.16.1|65:numeric|rate=1000,initial=0
1.3.6.1.2.1.2.2.1.16.2|65:numeric|rate=1000,initial=0
1.3.6.1.2.1.25.3.3.1.2.196608|2|30
1.3.6.1.2.1.25.3.3.1.2.196609|2|50
1.3.6.1.2.1.31.1.1.1.1.2|4|eth1
1.3.6.1.2.1.31.1.1.1.6.2|70:numeric|rate=2000,initial=10000000000000
1.3.6.1.2.1.31.1.1.1.10.2|70:numeric|rate=3000,initial=0
"""
# community "wide": 12 interfaces, more rows than the poller's first max-repetitions,
# followed in the MIB by another column the cut must not take for interface data
WIDE = "1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=0\n" + "".join(
    f"1.3.6.1.2.1.2.2.1.2.{k}|4|port{k}\n" for k in range(1, 13)) + "".join(
    f"1.3.6.1.2.1.2.2.1.10.{k}|65:numeric|rate={100 * k},initial=0\n" for k in range(1, 13)) + "".join(
    f"1.3.6.1.2.1.2.2.1.16.{k}|65|{k}\n" for k in range(1, 13)) + "".join(
    f"1.3.6.1.2.1.2.2.1.17.{k}|65|999999\n" for k in range(1, 13))
# community "garbage": sysUpTime is a string
GARBAGE = """\
1.3.6.1.2.1.1.3.0|4|not a number
1.3.6.1.2.1.2.2.1.10.1|65|1
"""
# community "broken": values an agent can change under us (snmpset, snmpsim's writecache):
# ifInOctets as an Integer (a broken agent), a real Counter32 out, hrProcessorLoad
BROKEN = """\
1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=0
1.3.6.1.2.1.2.2.1.2.1|4|eth0
1.3.6.1.2.1.2.2.1.10.1|2:writecache|value=1000
1.3.6.1.2.1.2.2.1.16.1|65:numeric|rate=1000,initial=0
1.3.6.1.2.1.25.3.3.1.2.196608|2:writecache|value=30
"""
# community "cpus": UCD CPU counters (half busy) and a garbage ssCpuNumCpus
CPUS = """\
1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=0
1.3.6.1.4.1.2021.11.50.0|65:numeric|rate=50,initial=1000
1.3.6.1.4.1.2021.11.52.0|65:numeric|rate=0,initial=1000
1.3.6.1.4.1.2021.11.53.0|65:numeric|rate=50,initial=1000
1.3.6.1.4.1.2021.11.67.0|2|2147483647
"""
# community "reset": 32-bit counters set by the tests (the agent keeps running, sysUpTime
# goes on); r10m says 10 Mbit/s, nospeed says 0 (unknown).  writecache keeps set values by
# OID across communities, hence ifIndexes no other community uses.
RESET = f"""\
1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=0
1.3.6.1.2.1.2.2.1.2.11|4|r10m
1.3.6.1.2.1.2.2.1.2.12|4|nospeed
1.3.6.1.2.1.2.2.1.5.11|66|10000000
1.3.6.1.2.1.2.2.1.5.12|66|0
1.3.6.1.2.1.2.2.1.10.11|65:writecache|value={2**32 - 5000}
1.3.6.1.2.1.2.2.1.10.12|65:writecache|value={2**32 - 20000}
1.3.6.1.2.1.2.2.1.16.11|65:numeric|rate=1000,initial=0
1.3.6.1.2.1.2.2.1.16.12|65:numeric|rate=1000,initial=0
1.3.6.1.2.1.31.1.1.1.19.11|67:writecache|value=0
1.3.6.1.2.1.31.1.1.1.19.12|67:writecache|value=0
"""
IN_OCTETS, DISC_TIME = "1.3.6.1.2.1.2.2.1.10", "1.3.6.1.2.1.31.1.1.1.19"
# community "negup": sysUpTime an Integer below zero
NEGUP = "1.3.6.1.2.1.1.3.0|2|-5\n1.3.6.1.2.1.2.2.1.10.1|65|1\n"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    data = tmp_path_factory.mktemp("snmprec")
    for name, text in (("broken", BROKEN), ("cpus", CPUS), ("negup", NEGUP), ("reset", RESET)):
        (data / f"{name}.snmprec").write_text(text)
    (data / "wrap.snmprec").write_text(WRAP)
    (data / "garbage.snmprec").write_text(GARBAGE)
    (data / "wide.snmprec").write_text(WIDE)
    try:
        agent = Snmpsim(data)
    except FileNotFoundError as exc:
        pytest.skip(f"snmpsim is not installed: {exc}")
    yield agent
    agent.stop()


def poller(sim, community="wrap", **kw) -> SnmpPoller:
    return SnmpPoller(f"udp:127.0.0.1:{sim.port}", Credentials(community=community), label="sim",
                      timeout=2.0, retries=1, **kw)


def test_counter32_wrap_gives_the_true_rate(sim):
    """eth0's 32-bit counter wraps during the polls: every rate stays near RATE."""
    p = poller(sim)
    try:
        raw, rates = [], []
        deadline = time.time() + 20
        p.poll_sync()
        raw.append(p.last_readings["interfaces"]["eth0"]["in"][0])
        while time.time() < deadline and not (len(raw) > 2 and min(raw[1:]) < raw[0]):
            time.sleep(0.7)
            out = {s.object: s for s in p.poll_sync()}
            raw.append(p.last_readings["interfaces"]["eth0"]["in"][0])
            rates.append(out["sim/if/eth0/in"].value)
            assert p.last_readings["interfaces"]["eth0"]["in"][1] == 32
        assert any(b < a for a, b in zip(raw, raw[1:], strict=False)), f"counter never wrapped: {raw}"
        # request-to-response jitter on a loaded machine moves single rates a little;
        # a mishandled wrap would be off by 2^32 / 0.7 s, ~150 times RATE
        assert all(0.5 * RATE < r < 1.5 * RATE for r in rates), rates
    finally:
        p.close()


def test_64bit_counters_preferred_and_hr_processor_load_fallback(sim):
    p = poller(sim)
    try:
        p.poll_sync()
        time.sleep(0.5)
        out = {s.object: s for s in p.poll_sync()}
        eth1 = p.last_readings["interfaces"]["eth1"]
        assert eth1["in"][1] == 64 and eth1["out"][1] == 64
        assert out["sim/if/eth1/in"].value == pytest.approx(2000, rel=0.5)
        assert out["sim/if/eth1/out"].value == pytest.approx(3000, rel=0.5)
        # no ssCpuRaw here: host CPU is the sum of hrProcessorLoad percentages
        assert out["sim/cpu"].value == pytest.approx(0.8)
    finally:
        p.close()


def test_agent_restart_is_detected_and_never_a_rate(sim):
    p = poller(sim)
    try:
        p.poll_sync()
        time.sleep(1.5)
        assert p.poll_sync()
        before = p.last_readings["uptime"]
        port, data = sim.port, sim.data_dir
        sim.stop()
        sim.__init__(data, port=port)  # same agent, same port, fresh start
        with pytest.raises(AgentRestart, match="restarted"):
            p.poll_sync()
        assert p.last_readings["uptime"] < before
        time.sleep(1.0)
        out = p.poll_sync()  # rates again, from the new baseline
        # A rate against the old baseline would be a false wrap, about 2**32 over the time
        # since the old baseline: tens of times RATE;
        # the margin is for request-to-answer jitter on a loaded machine (1.58x seen at
        # load 10 with 0.5 s between polls).
        assert out and all(s.value < 2 * RATE for s in out), out
    finally:
        p.close()


def test_garbage_uptime_is_garbage_response(sim):
    p = poller(sim, community="garbage")
    try:
        with pytest.raises(GarbageResponse, match="sysUpTime"):
            p.poll_sync()
    finally:
        p.close()


def test_long_table_is_followed_then_polled_in_one_request(sim):
    """12 interfaces > the first max-repetitions: the first poll follows the unfinished
    columns with further GETBULKs (never GETNEXT), cuts each at its subtree, and adapts,
    so every later poll is a single request (snmpsim answers at most 64 varbinds, which
    13 repetitions of 4 columns fit)."""
    p = poller(sim, community="wide", cpu=False)
    try:
        p.poll_sync()
        first = p.requests
        assert first >= 2 and p.max_repetitions >= 13
        assert sorted(p.last_readings["interfaces"]) == sorted(f"port{k}" for k in range(1, 13))
        assert all(v["out"] == (int(n[4:]), 32) for n, v in p.last_readings["interfaces"].items())
        time.sleep(0.5)
        out = {s.object: s.value for s in p.poll_sync()}
        assert p.requests == first + 1
        assert out["sim/if/port12/in"] == pytest.approx(1200, rel=0.5)
        assert out["sim/if/port12/out"] == 0.0
    finally:
        p.close()


def _set(sim, community: str, *values: tuple[str, object]) -> None:
    """SET values in one request (atomic for the next poll) with pysnmp: net-snmp's
    snmpset has no Counter32 type, and snmpsim's writecache keeps a value only of the
    record's own type."""

    async def go():
        engine = SnmpEngine()
        try:
            target = await UdpTransportTarget.create(("127.0.0.1", sim.port), timeout=2, retries=1)
            err, status, _, _ = await set_cmd(engine, CommunityData(community), target, ContextData(),
                                              *(ObjectType(ObjectIdentity(o), v) for o, v in values))
            assert not err and not status, (err, status)
        finally:
            engine.close_dispatcher()

    asyncio.run(go())


def test_garbage_values_give_no_sample_and_no_spike(sim):
    """A counter that turns negative (an Integer where a Counter32 belongs) read as a
    32-bit wrap: a rate of 4 GB/s.  A load of 100,000 % or -50 % became a CPU of 1,000 or
    -0.5.  Such values are dropped and counted; the rest of the poll is kept."""
    p = poller(sim, community="broken")
    try:
        p.poll_sync()
        assert p.last_readings["interfaces"]["eth0"]["in"] == (1000, 32)
        _set(sim, "broken", ("1.3.6.1.2.1.2.2.1.10.1", Integer32(-5)))
        _set(sim, "broken", ("1.3.6.1.2.1.25.3.3.1.2.196608", Integer32(100_000)))
        time.sleep(0.3)
        out = {s.object: s.value for s in p.poll_sync()}
        assert "sim/if/eth0/in" not in out and "sim/cpu" not in out, out
        assert "sim/if/eth0/out" in out  # the good column of the same poll is kept
        assert p.discarded == 2 and "Integer" in p.last_discarded
        _set(sim, "broken", ("1.3.6.1.2.1.25.3.3.1.2.196608", Integer32(-50)))
        time.sleep(0.3)
        out = {s.object: s.value for s in p.poll_sync()}
        assert "sim/cpu" not in out and "sim/if/eth0/in" not in out, out
        _set(sim, "broken", ("1.3.6.1.2.1.2.2.1.10.1", Integer32(2000)))
        _set(sim, "broken", ("1.3.6.1.2.1.25.3.3.1.2.196608", Integer32(40)))
        time.sleep(0.3)
        p.poll_sync()  # the counter's first good reading is a baseline, not a rate
        time.sleep(0.3)
        out = {s.object: s.value for s in p.poll_sync()}
        assert out["sim/if/eth0/in"] == 0.0 and out["sim/cpu"] == pytest.approx(0.4)
    finally:
        p.close()


def test_garbage_cpu_count_is_no_spike(sim):
    """ssCpuNumCpus of 2^31-1 multiplied a half-busy reading into a CPU of ~10^9."""
    p = poller(sim, community="cpus", interfaces=False)
    try:
        p.poll_sync()
        time.sleep(1.0)
        (cpu,) = p.poll_sync()
        assert 0 < cpu.value < 2, cpu  # one CPU (from the tick count), half busy
        assert "ssCpuNumCpus" in p.last_discarded
    finally:
        p.close()


def test_negative_uptime_is_garbage_response(sim):
    p = poller(sim, community="negup")
    try:
        with pytest.raises(GarbageResponse, match="sysUpTime"):
            p.poll_sync()
    finally:
        p.close()


# -- 32-bit counters that reset while the agent runs -------------------------------------------


def _moved(samples, name: str) -> int | None:
    """The counter increase a sample stands for (rate x its interval: exact, no timing)."""
    s = {x.object: x for x in samples}.get(f"sim/if/{name}/in")
    return None if s is None else round(s.value * (s.end - s.start))


def test_counter32_reset_is_no_spike_and_a_wrap_within_the_speed_counts(sim):
    """r10m (10 Mbit/s): a lower reading implying 8 kB over the interval is a wrap; one
    implying ~4 GB in well under a second is 100,000 times what the link carries: a reset
    (counters cleared, sysUpTime still counting), read as a wrap it was a fake spike.
    It gives no sample; the next interval is measured from the new reading."""
    p = poller(sim, community="reset", cpu=False)
    oid = f"{IN_OCTETS}.11"
    try:
        p.poll_sync()  # baseline at 2^32 - 5000
        assert p.last_readings["interfaces"]["r10m"]["in"] == (2**32 - 5000, 32)
        _set(sim, "reset", (oid, Counter32(3000)))
        assert _moved(p.poll_sync(), "r10m") == 8000  # wrapped: 5000 + 3000
        _set(sim, "reset", (oid, Counter32(53_000)))
        assert _moved(p.poll_sync(), "r10m") == 50_000
        _set(sim, "reset", (oid, Counter32(1000)))  # reset
        out = p.poll_sync()
        assert _moved(out, "r10m") is None, out
        assert p.discontinuities == 1
        assert all(s.value >= 0 for s in out)
        _set(sim, "reset", (oid, Counter32(21_000)))
        assert _moved(p.poll_sync(), "r10m") == 20_000  # measured normally again
    finally:
        p.close()


def test_counter32_unknown_speed_judged_by_recent_rates(sim):
    """nospeed (ifSpeed 0): a wrap is accepted when it implies at most twice the recent
    traffic; a reset implying ~4 GB after intervals of ~10 kB is not."""
    p = poller(sim, community="reset", cpu=False)
    oid = f"{IN_OCTETS}.12"
    try:
        p.poll_sync()  # baseline at 2^32 - 20000
        time.sleep(0.5)
        _set(sim, "reset", (oid, Counter32(2**32 - 10_000)))
        assert _moved(p.poll_sync(), "nospeed") == 10_000
        time.sleep(0.5)
        _set(sim, "reset", (oid, Counter32(5000)))
        assert _moved(p.poll_sync(), "nospeed") == 15_000  # a wrap, like the traffic before it
        time.sleep(0.5)
        _set(sim, "reset", (oid, Counter32(2000)))  # reset
        assert _moved(p.poll_sync(), "nospeed") is None
        time.sleep(0.5)
        _set(sim, "reset", (oid, Counter32(9000)))
        assert _moved(p.poll_sync(), "nospeed") == 7000
    finally:
        p.close()


def test_counter_discontinuity_time_drops_the_interval(sim):
    """ifCounterDiscontinuityTime changed: the counters of that interface were
    re-created in this interval, so even a reading that went up is no rate (both
    directions); the other interface and the next interval are measured as usual."""
    p = poller(sim, community="reset", cpu=False)
    try:
        p.poll_sync()
        first = p.requests
        out = {s.object for s in p.poll_sync()}
        assert p.requests == first + 1  # one round trip per poll: no speeds asked again
        assert {"sim/if/r10m/out", "sim/if/nospeed/out"} <= out
        before = p.last_readings["interfaces"]["r10m"]["in"][0]
        _set(sim, "reset", (f"{IN_OCTETS}.11", Counter32(before + 4000)),
             (f"{DISC_TIME}.11", TimeTicks(p.last_readings["uptime"] + 1)))
        out = {s.object for s in p.poll_sync()}
        assert not {"sim/if/r10m/in", "sim/if/r10m/out"} & out, out
        assert "sim/if/nospeed/out" in out and p.discontinuities == 2
        _set(sim, "reset", (f"{IN_OCTETS}.11", Counter32(before + 6000)))
        assert _moved(p.poll_sync(), "r10m") == 2000
    finally:
        p.close()
