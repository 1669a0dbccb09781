"""Collection benchmark: what the probes cost, next to named peers in the same run.

procfs: CPU per sample of all processes on the machine (topped up with idle ``sleep``
processes to at least 300) for the project's probe, plain psutil ``process_iter`` and
raw ``/proc`` parsing; the connection sampler next to psutil ``net_connections``.

SNMP: CPU per poll of one agent (snmpsim; a poll reads about 50 varbinds: sysUpTime, UCD
CPU counters, four IF-MIB counter columns, hrProcessorLoad; the count is printed) for the
project's poller, with net-snmp's ``snmpbulkget`` (the same single GETBULK) and
``snmpbulkwalk`` (the same columns walked) as the reference; then 1,000 simulated agents
(each its own poller) polled from one event loop, once per ``--scale`` entry (default:
answered by two snmpsim processes every 30 s, and by snmpd every 10 s).

Standing requests (``--only stream``): samples per second from a collector with a backlog
to a recorder on another host, next to the store read and a bare Pyro5 transfer.

CPU is this process's (or, for net-snmp tools, the children's) user+system time, so the
agents' own cost is not counted.  Usage::

    python bench/collection.py [--only procfs|snmp|scale|stream] [--agents 1000] [--rounds 3] [--write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOAL_PROC_SHARE = 0.01  # of one core, sampling 300 processes at 1 Hz
GOAL_VB_PER_CPU_S = 10_000
GOAL_AGENTS, GOAL_INTERVAL = 1000, 10.0


def cpu() -> float:
    return time.process_time()  # os.times() ticks at 10 ms: too coarse for one sample


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# -- procfs ------------------------------------------------------------------------------

def bench_procfs(reps: int = 30) -> dict:
    import psutil

    from probes import procread
    from probes.connections import ConnectionProbe
    from probes.procfs import ProcfsProbe

    fillers = []
    while len(procread.pids()) < 300 and len(fillers) < 400:
        fillers.append(subprocess.Popen(["sleep", "600"]))
    try:
        n = len(procread.pids())

        def per_sample(fn) -> float:
            fn()
            c0 = cpu()
            for _ in range(reps):
                fn()
            return (cpu() - c0) / reps

        probe = ProcfsProbe("web=name:nginx;db=user:postgres;py=cmdline:python", per_process="pid")
        probe.sample()
        res = {
            "processes": n,
            "probe": per_sample(probe.sample),
            "psutil": per_sample(lambda: [p.info for p in psutil.process_iter(["cpu_times"])]),
            "raw": per_sample(procread.read_all_stats),
        }
        conn = ConnectionProbe()
        res["connections_probe_first"] = per_sample(lambda: ConnectionProbe().sample())
        res["connections_probe_cached"] = per_sample(conn.sample)
        res["connections_psutil"] = per_sample(lambda: psutil.net_connections("tcp"))
        res["sockets"] = len(conn.sample())
        return res
    finally:
        for f in fillers:
            f.kill()
        for f in fillers:
            f.wait()


# -- SNMP: one agent ----------------------------------------------------------------------

BIG = 5000  # varbinds in the long walk that amortizes net-snmp's start-up
N_IF = 7  # interfaces of the simulated agent; a poll then reads 50 varbinds (printed)


def snmprec(i: int = 0, static: bool = False) -> str:
    """An agent with N_IF interfaces, UCD CPU counters and two CPUs.  ``static``: fixed
    counter values (the poller's cost is the same; the simulator's is much lower)."""
    lines = ["1.3.6.1.2.1.1.3.0|67:numeric|rate=100,initial=1000"]
    for k in range(1, N_IF + 1):
        lines.append(f"1.3.6.1.2.1.2.2.1.2.{k}|4|eth{k}")
    for col in (10, 16):
        lines += [f"1.3.6.1.2.1.2.2.1.{col}.{k}|65|{1000 * k + i}" for k in range(1, N_IF + 1)]
    lines += [f"1.3.6.1.2.1.25.3.3.1.2.{196608 + c}|2|{20 + c}" for c in range(2)]
    for col in (1,):
        lines += [f"1.3.6.1.2.1.31.1.1.1.{col}.{k}|4|eth{k}" for k in range(1, N_IF + 1)]
    for col in (6, 10):
        lines += [f"1.3.6.1.2.1.31.1.1.1.{col}.{k}|70:numeric|rate={1000 * k},initial=0" for k in range(1, N_IF + 1)]
    for sub, v in ((50, 1000), (51, 0), (52, 500), (53, 9000), (54, 10), (56, 0), (61, 5), (64, 0)):
        lines.append(f"1.3.6.1.4.1.2021.11.{sub}.0|65:numeric|rate={v // 10 + 1},initial={v}")
    lines.append("1.3.6.1.4.1.2021.11.67.0|2|2")
    if static:
        lines = [lines[0]] + [_static(x) for x in lines[1:]]
    return "\n".join(sorted(lines, key=lambda s: tuple(int(x) for x in s.split("|")[0].split(".")))) + "\n"


def _static(line: str) -> str:
    oid, tag, value = line.split("|", 2)
    if ":numeric" in tag:
        return f"{oid}|{tag.split(':')[0]}|{value.split('initial=')[1]}"
    return line


def start_sim(data_dir: Path):
    from tests.probes.snmp_agents import Snmpsim

    return Snmpsim(data_dir)


def bench_snmp_one(polls: int = 200) -> dict:
    from probes.snmp import SnmpPoller
    from probes.snmp_auth import Credentials

    data = Path(tempfile.mkdtemp(prefix="masa-bench-snmp-"))
    (data / "bench.snmprec").write_text(snmprec())
    sim = start_sim(data)
    big_dir = Path(tempfile.mkdtemp(prefix="masa-bench-big-"))
    rows = [f"1.3.6.1.2.1.2.2.1.10.{k}|65|{k}" for k in range(1, BIG + 1)]
    (big_dir / "bench.snmprec").write_text("\n".join(rows) + "\n")
    big = start_sim(big_dir)
    try:
        target = f"udp:127.0.0.1:{sim.port}"
        poller = SnmpPoller(target, Credentials(community="bench"), label="b", timeout=2, retries=1)
        poller.poll_sync()
        poller.poll_sync()  # warm: names learned, repetitions adapted
        vb0, c0, w0 = poller.varbinds, cpu(), time.perf_counter()
        for _ in range(polls):
            poller.poll_sync()
        ours_cpu, ours_wall = cpu() - c0, time.perf_counter() - w0
        vbs = (poller.varbinds - vb0) / polls
        poller.close()
        res = {"varbinds_per_poll": vbs, "ours_cpu_per_poll": ours_cpu / polls,
               "ours_wall_per_poll": ours_wall / polls}
        # net-snmp reference: the same one GETBULK, and the same columns walked
        env = {**os.environ, "MIBS": ""}
        base = ["-v2c", "-c", "bench", "-On", "-Oq", f"udp:127.0.0.1:{sim.port}"]
        from probes import snmp as S
        from probes import snmp_oids as O

        nonrep = [".".join(map(str, o)) for o in S.NON_REPEATERS]
        cols = [".".join(map(str, o)) for o in (*S.COUNTER_COLUMNS, O.HR_PROCESSOR_LOAD)]
        runs = max(20, polls // 5)

        def cost(cmds: list[list[str]]) -> tuple[float, int]:
            """Children's CPU per run of all ``cmds`` and the varbinds they print."""
            count = sum(len(subprocess.run(c, capture_output=True, text=True, env=env).stdout.splitlines())
                        for c in cmds)
            c0 = children_cpu()
            for _ in range(runs):
                for c in cmds:
                    subprocess.run(c, capture_output=True, env=env)
            return (children_cpu() - c0) / runs, count

        res["snmpbulkget_cpu_per_run"], res["snmpbulkget_varbinds"] = cost(
            [["snmpbulkget", f"-Cn{len(nonrep)}", f"-Cr{N_IF + 1}", *base, *nonrep, *cols]])
        # snmpbulkwalk takes one subtree per process: one run per column, as a poll's worth
        res["snmpbulkwalk_cpu_per_run"], res["snmpbulkwalk_varbinds"] = cost(
            [["snmpbulkwalk", f"-Cr{N_IF + 1}", *base, c] for c in (*nonrep[:1], *cols)])
        # and a long walk in one process, so that start-up is amortized: C's per-varbind cost
        runs = 3
        res["bigwalk_cpu_per_run"], res["bigwalk_varbinds"] = cost(
            [["snmpbulkwalk", "-Cr50", "-v2c", "-c", "bench", "-On", f"udp:127.0.0.1:{big.port}", "1.3.6"]])
        return res
    finally:
        sim.stop()
        big.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(big_dir, ignore_errors=True)


# -- SNMP: many agents --------------------------------------------------------------------

def bench_snmp_scale(agents: int, interval: float, rounds: int, sims: int = 2, server: str = "snmpsim") -> dict:
    """``agents`` pollers spread over ``sims`` agent processes (snmpsim or snmpd), each
    polled every ``interval`` s with its phase spread evenly; deadline = the interval."""
    from pysnmp.hlapi.v3arch.asyncio import SnmpEngine

    from probes.errors import ProbeError
    from probes.snmp import SnmpPoller
    from probes.snmp_auth import Credentials
    # Every simulated agent is its own SnmpPoller (own target, state, counters) but the
    # simulators are few, one port and one community each: snmpsim's cost per request
    # grows with the communities and the ports it serves (with 100 of either, bursts of
    # requests time out on this machine), and that is the simulator's limit, not ours.
    dirs = [Path(tempfile.mkdtemp(prefix="masa-bench-scale-")) for _ in range(sims)]
    for d in dirs:
        (d / "bench.snmprec").write_text(snmprec(static=True))
    started = time.perf_counter()
    if server == "snmpd":  # net-snmp's agent (C): cheap enough to answer 100 polls/s here
        from tests.probes.snmp_agents import COMMUNITY, Snmpd

        sim_procs, community = [Snmpd() for _ in range(sims)], COMMUNITY
    else:
        sim_procs, community = [start_sim(d) for d in dirs], "bench"
    setup_s = time.perf_counter() - started
    import psutil

    sim_ps = [psutil.Process(s.proc.pid) for s in sim_procs]
    try:
        async def run() -> dict:
            engine = SnmpEngine()
            pollers = [SnmpPoller(f"udp:127.0.0.1:{sim_procs[i % sims].port}", Credentials(community=community),
                                  label=f"a{i}", engine=engine, timeout=2.0, retries=1)
                       for i in range(agents)]
            lat, errors, late, warm, marks = [], [], 0, [], []
            vb_steady = [0]
            t_start = time.time() + 0.5

            async def agent(k: int, p: SnmpPoller) -> None:
                nonlocal late
                for r in range(rounds):
                    due = t_start + r * interval + k * interval / agents
                    delay = due - time.time()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    try:
                        await p.poll()
                    except ProbeError as exc:
                        errors.append(type(exc).__name__)
                    took = time.time() - due
                    if r == 0:
                        warm.append(took)
                        continue
                    lat.append(took)
                    if took > interval:
                        late += 1
                    if r == 1 and k == 0:
                        marks.append((cpu(), time.time()))
                        vb_steady[0] -= sum(q.varbinds for q in pollers)

            sim_cpu0 = sum(sum(p.cpu_times()[:2]) for p in sim_ps)
            await asyncio.gather(*(agent(k, p) for k, p in enumerate(pollers)))
            # steady state: from the first poll of round 1 (round 0 learns names, USM, paths)
            c0, w0 = marks[0]
            ours, wall = cpu() - c0, time.time() - w0
            vb_steady[0] += sum(q.varbinds for q in pollers)
            sim_cpu = sum(sum(p.cpu_times()[:2]) for p in sim_ps) - sim_cpu0
            warm.sort()
            engine.close_dispatcher()
            lat.sort()
            return {
                "agents": agents, "interval": interval, "rounds": rounds, "polls": len(lat),
                "cpu_s": ours, "wall_s": wall, "core_share": ours / wall,
                "varbinds": vb_steady[0],
                "p50_ms": 1000 * lat[len(lat) // 2], "p99_ms": 1000 * lat[int(len(lat) * 0.99)],
                "max_ms": 1000 * lat[-1], "late": late, "errors": len(errors),
                "warm_p50_ms": 1000 * warm[len(warm) // 2], "warm_max_ms": 1000 * warm[-1],
                "warm_late": sum(1 for w in warm if w > interval),
                "error_kinds": sorted(set(errors)), "sim_core_share": sim_cpu / wall, "sim_setup_s": setup_s,
                "server": server, "varbinds_per_poll": vb_steady[0] / max(len(lat), 1),
            }

        return asyncio.run(run())
    finally:
        time.sleep(0.5)  # let late answers drain before the simulators go
        for s in sim_procs:
            s.stop()
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)


# -- standing requests: samples per second from a collector to a subscriber --------------

def bench_stream(objects: int = 200, seconds: int = 3000, runs: int = 3) -> dict:
    """A collector with a backlog of ``objects`` x ``seconds`` samples (1 s each) in its
    store; a recorder on another host subscribes from before the backlog and catches up.

    Delivery capacity, not metering: the backlog goes out in 60-second batches as fast as
    the path allows.  Peers in the same run: reading the same windows from SQLite (what
    the source does per batch) and sending the same wire batches over a bare Pyro5 call."""
    import statistics

    import Pyro5.api

    from agents.standing import series_from_rows
    from bench.platform import BARE_SERVER
    from masa import config
    from masa.local import LocalCluster
    from masa.store import Store
    from masa.supervisor import free_port

    out: dict = {"objects": objects, "seconds": seconds}
    with tempfile.TemporaryDirectory() as home:
        url = f"sqlite:///{home}/backlog.db"
        store = Store(url)
        t0 = time.time() - seconds - 10
        store.add_samples([(f"x/proc/p{o}", "cpu", t0 + i, t0 + i + 1, (i * o) % 7 / 7)
                           for o in range(objects) for i in range(seconds)])
        n = objects * seconds
        t = time.perf_counter()
        batches = [[w.to_wire() for w in series_from_rows(store.samples(t0 + a, t0 + a + 60))]
                   for a in range(-1, seconds, 60)]
        out["read"] = n / (time.perf_counter() - t)
        store.close()
        with LocalCluster(Path(home), {"s1": {}, "s2": {}}) as c:
            config.apply(c.settings)
            port = free_port()
            bare_proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(port)], stdout=subprocess.PIPE, text=True)
            try:
                bare_proc.stdout.readline()
                bare = Pyro5.api.Proxy(f"PYRO:bare@127.0.0.1:{port}")
                t = time.perf_counter()
                for b in batches:
                    bare.invoke("query", "deliver", {"series": b}, 10.0)
                out["transport"] = n / (time.perf_counter() - t)
            finally:
                bare_proc.kill()
            c.create("s1", "collector", "src", interval=3600, store=url)
            rates = []
            for r in range(runs):
                name = f"sink{r}"
                c.create("s2", "recorder", name)
                rec = c.ref(name, timeout=60)
                rec.configure("subscribe_to", request="all", source="src")
                t = time.perf_counter()
                c.ref("src").query("subscribe", request="all", subscriber=name, resume_seq=0, resume_until=t0 - 1)
                end = t0 + seconds
                c.wait(lambda rec=rec, end=end: (rec.query("subscriptions_status")["all"]["until"] or 0) >= end,
                       timeout=600, every=0.05)
                rates.append(n / (time.perf_counter() - t))
            out["delivered"] = statistics.median(rates)
    return out


def report_stream(st: dict) -> str:
    n = st["objects"] * st["seconds"]
    return "\n".join([
        f"`bench/collection.py --only stream`: a collector with a backlog of {n:,} samples "
        f"({st['objects']} objects x {st['seconds']} s) in its store; a recorder on another host "
        "subscribes from before it and catches up in 60-second batches (median of runs). Peers "
        "measured in the same run: the source's own store read of the same windows, and the same "
        "wire batches sent over a bare Pyro5 call.", "",
        "| path | samples / s | vs delivered |", "| --- | ---: | ---: |",
        f"| standing request, collector -> recorder (read, send, receive, store, ack) | {st['delivered']:,.0f} | 1.00x |",
        f"| peer: SQLite read + series building only | {st['read']:,.0f} | {st['read'] / st['delivered']:.1f}x |",
        f"| peer: the same batches over bare Pyro5 only | {st['transport']:,.0f} | {st['transport'] / st['delivered']:.1f}x |",
    ])


# -- report -------------------------------------------------------------------------------

def report(p: dict | None, s: dict | None, sc: dict | None) -> str:
    out = [f"Machine: {os.cpu_count()} cores, shared. Run: `./run bench collection`.", ""]
    if p:
        n = p["processes"]
        share = lambda sec: sec / n * 300  # noqa: E731 - of one core at 1 Hz, 300 processes
        out += [
            f"**procfs**, one sample of all {n} processes (CPU per sample; share of one core when "
            "sampling 300 processes at 1 Hz; goal < 1 %):", "",
            "| sampler | ms / sample | µs / process | 300 procs @ 1 Hz |",
            "| --- | ---: | ---: | ---: |",
        ]
        for key, name in (("probe", "masa ProcfsProbe.sample (rules, deltas, objects)"),
                          ("psutil", "psutil process_iter(['cpu_times'])"),
                          ("raw", "raw /proc/PID/stat parsing (probes.procread)")):
            out.append(f"| {name} | {1000 * p[key]:.2f} | {1e6 * p[key] / n:.1f} | {100 * share(p[key]):.2f} % |")
        out += ["", f"Connections ({p['sockets']} TCP sockets on the machine): masa ConnectionProbe "
                f"{1000 * p['connections_probe_first']:.1f} ms cold / {1000 * p['connections_probe_cached']:.1f} ms "
                f"with its inode cache; psutil net_connections {1000 * p['connections_psutil']:.1f} ms.", ""]
    if s:
        vb = s["varbinds_per_poll"]
        ours = s["ours_cpu_per_poll"]
        ref = s["snmpbulkget_cpu_per_run"]
        walk = s["snmpbulkwalk_cpu_per_run"]
        c_vb = s["bigwalk_cpu_per_run"] / s["bigwalk_varbinds"]  # C's CPU per varbind, amortized
        out += [
            f"**SNMP, one agent** (snmpsim, {vb:.0f} varbinds per poll: sysUpTime, ssCpuRaw*, "
            "four IF-MIB counter columns, hrProcessorLoad; one GETBULK):", "",
            "| client | CPU ms / poll | varbinds / CPU-s |", "| --- | ---: | ---: |",
            f"| masa SnmpPoller (pysnmp 7, lookupMib=False) | {1000 * ours:.2f} | {vb / ours:,.0f} |",
            f"| net-snmp snmpbulkget, the same GETBULK (a process per poll) | {1000 * ref:.2f} | "
            f"{s['snmpbulkget_varbinds'] / ref:,.0f} |",
            f"| net-snmp snmpbulkwalk, the same OIDs (a process per subtree) | {1000 * walk:.2f} | "
            f"{s['snmpbulkwalk_varbinds'] / walk:,.0f} |",
            f"| net-snmp snmpbulkwalk of {s['bigwalk_varbinds']:,} varbinds in one process (start-up amortized) | "
            f"{1000 * c_vb * vb:.3f} (per {vb:.0f}) | {1 / c_vb:,.0f} |",
            "",
            f"Ratio: per varbind, the pure-Python poller costs {(ours / vb) / c_vb:.0f}x net-snmp's C "
            f"(start-up amortized); per poll it is {ours / ref:.1f}x a one-shot snmpbulkget process. "
            f"Goal ≥ {GOAL_VB_PER_CPU_S:,} varbinds per CPU-second: "
            f"{'met' if vb / ours >= GOAL_VB_PER_CPU_S else 'NOT met'}.", "",
        ]
    if sc:
        out += [
            f"**SNMP, {sc['agents']} agents** (each its own poller, {sc['varbinds_per_poll']:.0f} varbinds per poll; "
            f"answered by 2 {sc['server']} processes"
            f"{', static values' if sc['server'] == 'snmpsim' else ', the real machine'}), "
            f"each polled every {sc['interval']:g} s for {sc['rounds']} rounds from one event loop, phases spread; steady state = rounds 2 and later:", "",
            f"- poller CPU: {sc['cpu_s']:.1f} s over {sc['wall_s']:.1f} s = **{100 * sc['core_share']:.0f} % of one core**; "
            f"{1000 * sc['cpu_s'] / sc['polls']:.2f} ms per poll, {sc['varbinds'] / sc['cpu_s']:,.0f} varbinds per "
            f"CPU-second; at that cost {GOAL_AGENTS} agents every {GOAL_INTERVAL:g} s take "
            f"**{100 * sc['cpu_s'] / sc['polls'] * GOAL_AGENTS / GOAL_INTERVAL:.0f} % of one core** (goal: within one core)",
            f"- {sc['polls']} polls, latency from due time p50 {sc['p50_ms']:.0f} ms, p99 {sc['p99_ms']:.0f} ms, "
            f"max {sc['max_ms']:.0f} ms; **{sc['late']} past their {sc['interval']:g} s deadline**, "
            f"{sc['errors']} errors {sc['error_kinds'] or ''}",
            f"- first round (warm-up: names, USM discovery, adapting repetitions) not counted above: "
            f"p50 {sc['warm_p50_ms']:.0f} ms, max {sc['warm_max_ms']:.0f} ms, {sc['warm_late']} late",
            f"- the agent processes used {100 * sc['sim_core_share']:.0f} % of a core (not counted above)", "",
        ]
    return "\n".join(out)


NOTES = Path(__file__).with_name("collection_notes.md")  # the hand-kept reading, written under the figures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=["procfs", "snmp", "scale", "stream"])
    ap.add_argument("--agents", type=int, default=GOAL_AGENTS)
    ap.add_argument("--scale", default=f"snmpsim:30,snmpd:{GOAL_INTERVAL:g}",
                    help="many-agent runs as SERVER:INTERVAL,... (SERVER: snmpsim or snmpd)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="update the Collection section of bench/RESULTS.md")
    ap.add_argument("--scale-one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.scale_one:
        server, interval = a.scale_one.split(":")
        print(json.dumps(bench_snmp_scale(a.agents, float(interval), a.rounds, server=server)))
        return
    if a.only in (None, "stream"):
        st = bench_stream()
        print(report_stream(st), flush=True)
        if a.write:
            from bench.results import update_section

            update_section("Collection: standing requests", report_stream(st))
        if a.only == "stream":
            return
    p = bench_procfs() if a.only in (None, "procfs") else None
    if p:
        print(report(p, None, None), flush=True)
    s = bench_snmp_one() if a.only in (None, "snmp") else None
    if s:
        print(report(None, s, None), flush=True)
    scale = []
    if a.only in (None, "scale"):
        for spec in a.scale.split(","):
            # each run in a fresh process: its CPU is its own, and no state of an earlier
            # run (pysnmp's MIB loading, a previous engine) is carried into it
            out = subprocess.run([sys.executable, __file__, "--scale-one", spec, "--agents", str(a.agents),
                                  "--rounds", str(a.rounds)], capture_output=True, text=True, timeout=900)
            if out.returncode != 0:
                raise SystemExit(f"scale run {spec} failed: {out.stderr[-2000:]}")
            scale.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(report(None, None, scale[-1]), flush=True)
    if a.write:
        from bench.results import update_section

        text = report(p, s, None) + "".join("\n" + report(None, None, sc).split("\n", 2)[2] for sc in scale)
        update_section("Collection", text, notes=NOTES)


if __name__ == "__main__":
    main()
