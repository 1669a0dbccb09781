"""Mediation benchmark: report cache, cascade per-hop cost, domain join.

    ./run bench mediation [--quick]

* Report latency through a mediator on a cache hit vs a miss, next to the named peer:
  the same report asked of the collector directly.
* Samples per second of a cold report through a cascade of 0, 1, 2, 3 mediators (real
  processes, each hop on another host than the one below): the per-hop cost.
* Domain join of 100 series x 10,000 intervals (misaligned, with gaps): the restarted
  sweep of ``agents.domain_join.join`` vs the plain numpy reference (every member looked
  up on every segment), same data, same run, with the largest difference between them.

Figures are medians; the latest go to bench/RESULTS.md ("## Mediation").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.domain_join import join, reference_join  # noqa: E402
from bench.results import update_section  # noqa: E402
from masa.activity import Series  # noqa: E402
from masa.local import LocalCluster  # noqa: E402


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def samples_in(answer: dict) -> int:
    return sum(len(w["end"]) // 8 for w in answer["series"])


def cache_latency(c: LocalCluster, history: float, n: int) -> dict:
    """Disjoint historical windows: each first request is a miss, its repeat a hit."""
    col, med = c.ref("col"), c.ref("cache-med")
    now = col.query("report", objects=["none"])["until"]
    step = history / n
    windows = [(now - history + i * step, now - history + (i + 1) * step) for i in range(n)]
    direct, miss, hit, size = [], [], [], []
    for a, b in windows:
        direct.append(timed(lambda a=a, b=b: col.query("report", since=a, until=b)))
        miss.append(timed(lambda a=a, b=b: med.query("report", since=a, until=b)))
        hit.append(timed(lambda a=a, b=b: med.query("report", since=a, until=b)))
        size.append(samples_in(med.query("report", since=a, until=b)))
    stats = med.query("status")["cache"]
    return {"direct_ms": 1e3 * statistics.median(direct), "miss_ms": 1e3 * statistics.median(miss),
            "hit_ms": 1e3 * statistics.median(hit), "samples": int(statistics.median(size)),
            "hits": stats["hits"], "fetches": stats["fetches"]}


def cascade_throughput(c: LocalCluster, depth: int, runs: int, since: float, until: float) -> tuple[float, int]:
    """Samples/s of a cold report through ``depth`` fresh mediators (caches empty)."""
    hosts = ["m1", "m2", "m1"]
    rates, count = [], 0
    for r in range(runs):
        below = "col"
        for d in range(depth):
            name = f"hop{depth}-{d}-{r}"
            c.create(hosts[d % len(hosts)], "mediator", name, sources=[below])
            below = name
        ref = c.ref(below, timeout=60)
        ref.query("catalog")  # catalogs are fetched before the clock starts
        t = time.perf_counter()
        answer = ref.query("report", since=since, until=until)
        seconds = time.perf_counter() - t
        count = samples_in(answer)
        rates.append(count / seconds)
    return statistics.median(rates), count


def join_data(members: int, n: int, seed: int = 1) -> list[Series]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(members):
        step = rng.uniform(0.5, 2.0)
        ends = rng.uniform(0, step) + np.cumsum(rng.uniform(0.8, 1.2, n) * step)
        starts = np.concatenate([[ends[0] - step], ends[:-1]])
        keep = rng.random(n) > 0.05  # 5 % of the samples missing: gaps
        out.append(Series(f"h{i}/cpu", "cpu", starts[keep], ends[keep], rng.uniform(0, 1, n)[keep]))
    return out


def join_bench(members: int, n: int, runs: int) -> dict:
    data = join_data(members, n)
    fast = [timed(lambda: join(data, "D/cpu", "cpu")) for _ in range(runs)]
    ref = [timed(lambda: reference_join(data, "D/cpu", "cpu")) for _ in range(runs)]
    a, b = join(data, "D/cpu", "cpu"), reference_join(data, "D/cpu", "cpu")
    same = np.array_equal(a.start, b.start) and np.array_equal(a.end, b.end)
    return {"n": n, "sweep_s": statistics.median(fast), "numpy_s": statistics.median(ref), "segments": len(a),
            "same_segments": same, "max_diff": float(np.max(np.abs(a.value - b.value)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and fewer runs (a smoke run)")
    args = parser.parse_args()
    runs = 2 if args.quick else 5
    history = 6.0 if args.quick else 20.0

    join_res = join_bench(100, 2_000 if args.quick else 10_000, 1 if args.quick else 3)
    print("join", join_res, flush=True)

    with tempfile.TemporaryDirectory() as home, \
            LocalCluster(Path(home), {"b1": {"domain": "B"}, "m1": {}, "m2": {}}, call_timeout=60) as c:
        c.create("b1", "collector", "col", interval=0.2, per_process="pid")
        c.create("m1", "mediator", "cache-med", sources=["col"])
        time.sleep(history + 1)
        cache = cache_latency(c, history, 10 if args.quick else 20)
        print("cache", cache, flush=True)
        until = c.ref("col").query("report", objects=["none"])["until"]
        since = until - history
        cascade = {d: cascade_throughput(c, d, runs, since, until) for d in (0, 1, 2, 3)}
        print("cascade", cascade, flush=True)

    update_section("Mediation", markdown(join_res, cache, cascade, runs, args.quick))


def markdown(j: dict, cache: dict, cascade: dict, runs: int, quick: bool) -> str:
    base = cascade[0][0]
    lines = [
        f"`bench/mediation.py` ({'quick run' if quick else 'full run'}; medians; real processes on loopback).",
        "",
        f"**Report cache** (windows of ~{cache['samples']} samples, {cache['fetches']} fetches below "
        f"for {cache['hits']} hits). Peer: the same report asked of the collector directly.",
        "",
        "| report | median ms | vs collector directly |",
        "|---|---:|---:|",
        f"| collector directly (peer) | {cache['direct_ms']:.2f} | 1.00x |",
        f"| mediator, cache miss | {cache['miss_ms']:.2f} | {cache['miss_ms'] / cache['direct_ms']:.2f}x |",
        f"| mediator, cache hit | {cache['hit_ms']:.2f} | {cache['hit_ms'] / cache['direct_ms']:.2f}x |",
        "",
        f"**Cascade** (cold report of {cascade[0][1]} samples, fresh mediators each run, {runs} runs). "
        "Peer: depth 0, the collector itself.",
        "",
        "| mediators | samples/s | vs depth 0 | added ms per hop |",
        "|---:|---:|---:|---:|",
    ]
    for d, (rate, count) in cascade.items():
        per_hop = "" if d == 0 else f"{1e3 * (count / rate - cascade[0][1] / base) / d:.1f}"
        lines.append(f"| {d} | {rate:,.0f} | {rate / base:.2f}x | {per_hop} |")
    lines += [
        "",
        f"**Domain join** of 100 series x {j['n']:,} intervals "
        f"(misaligned, 5 % gaps; {j['segments']:,} segments). Peer: plain numpy reference.",
        "",
        "| join | median s | speed-up |",
        "|---|---:|---:|",
        f"| numpy reference (peer) | {j['numpy_s']:.3f} | 1.00x |",
        f"| restarted sweep (`agents.domain_join.join`) | {j['sweep_s']:.3f} | {j['numpy_s'] / j['sweep_s']:.1f}x |",
        "",
        f"Same segments: {j['same_segments']}; largest value difference {j['max_diff']:.1e}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
