"""End-to-end benchmark: from starting the processes to the first dependency models.

    .venv/bin/python bench/endtoend.py [--services 12] [--record]

The two-domain scenario on real processes on loopback: a name server and three hosts
(domain A: a1, a2; domain B: b1), a recorder per domain serving a recorded two-domain
workload (A's services call B's front service; replayed from a store so every run sees
the same activity), B's domain agent, a neural agent on a2 and on b1, a local modeler
per domain using both neural agents, and an enterprise modeler that reuses the local
models.  It prints the time from start to each first model and how each modeling run
divided its time between collection (report queries to the sources, including their
transport), transport of pair batches to and from the neural agents, and modeling
(features, network evaluation inside the neural agents, decision).  No assertion:
figures and ratios only; the peer is the same modeling of domain A in one process
(``DependencyModeler.predict``), measured in the same run.  ``--record`` writes them to
bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.results import update_section  # noqa: E402
from masa.local import LocalCluster  # noqa: E402
from tests.e2e.scenario import fill, two_domains  # noqa: E402  (the tests' scenario)

HOSTS = {"a1": {"domain": "A"}, "a2": {"domain": "A"}, "b1": {"domain": "B"}}


def wait_version(c: LocalCluster, name: str, number: int, timeout: float = 300.0) -> dict:
    ref = c.ref(name, timeout=60)

    def done() -> dict | None:
        st = ref.query("status")
        if st["job"].get("state") == "failed":
            raise RuntimeError(f"{name}: {st['job'].get('error')}")
        return st if (st["latest"] or 0) >= number else None

    c.wait(done, timeout=timeout, every=0.05)
    return ref.query("versions_list")[number - 1]


def shares(head: dict) -> dict[str, float]:
    """Seconds of one run in collection, batch transport and modeling."""
    s, pool = head["info"]["seconds"], head["info"]["pool"]
    agents = max(1, len(pool["by_agent"]))
    compute = pool["compute_seconds"] / agents  # the agents ran in parallel
    transport = max(0.0, s["score"] - compute) if pool["batches"] and not pool["local"] else 0.0
    modeling = s["features"] + s["decide"] + (s["score"] - transport)
    return {"collection": s["collect"], "transport": transport, "modeling": modeling, "total": s["total"]}


def run(services: int) -> list[str]:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, LocalCluster(Path(tmp), HOSTS, call_timeout=60.0) as c:
        t_up = time.perf_counter()
        sc = two_domains(n_a=services, n_b=services, seconds=600.0)
        a = {k: s for k, s in sc.series.items() if k.startswith("a/")}
        b = {k: s for k, s in sc.series.items() if k.startswith("b/")}
        c.create("a1", "recorder", "rec-a", store=fill(Path(tmp) / "a.db", a))
        c.create("b1", "recorder", "rec-b", store=fill(Path(tmp) / "b.db", b))
        c.create("b1", "domain", "dom-b", sources=["rec-b"], label="B")
        c.create("a2", "neural", "nn-a")
        c.create("b1", "neural", "nn-b")
        pool = ["nn-a", "nn-b"]
        c.create("a1", "modeler", "mod-a", sources=["rec-a"], pool=pool, window=900.0, http=None)
        c.create("b1", "modeler", "mod-b", sources=["rec-b"], pool=pool, window=900.0, http=None)
        c.create("a1", "modeler", "ent", sources=["rec-a", {"agent": "dom-b", "objects": ["B/*"]}],
                 submodels=["mod-a", "mod-b"], pool=pool, window=900.0, http=None)
        t_deployed = time.perf_counter()
        c.ref("mod-a").configure("run")
        c.ref("mod-b").configure("run")
        heads = {"mod-a": wait_version(c, "mod-a", 1), "mod-b": wait_version(c, "mod-b", 1)}
        t_local = time.perf_counter()
        c.ref("ent").configure("run")
        heads["ent"] = wait_version(c, "ent", 1)
        t_ent = time.perf_counter()

    # The named peer: the same modeling of domain A in one process, no agents at all.
    from modeler.estimator import DependencyModeler

    est = DependencyModeler.default()
    t_peer = time.perf_counter()
    est.predict(a)
    peer_s = time.perf_counter() - t_peer
    local_s = heads["mod-a"]["info"]["seconds"]["total"]

    lines = [
        f"scenario: {services} services per domain + B as one object; {len(sc.series)} objects, "
        f"{heads['mod-a']['info']['objects']} in A",
        f"processes up (name server + 3 hosts): {t_up - t0:6.2f} s",
        f"agents deployed (8 agents):           {t_deployed - t_up:6.2f} s",
        f"start -> first local models:          {t_local - t0:6.2f} s",
        f"start -> first enterprise model:      {t_ent - t0:6.2f} s",
        "",
        "| run | pairs scored | total s | collection | transport | modeling |",
        "|---|---|---|---|---|---|",
    ]
    for name, head in heads.items():
        sh = shares(head)
        tot = max(sh["total"], 1e-9)
        lines.append(f"| {name} | {head['info']['pairs_scored']} of {head['info']['candidate_pairs']} | "
                     f"{sh['total']:.3f} | {sh['collection'] / tot:.0%} | {sh['transport'] / tot:.0%} | "
                     f"{sh['modeling'] / tot:.0%} |")
    lines.append("")
    lines.append(f"peer, same run: domain A modeled in one process (DependencyModeler.predict, no agents) "
                 f"{peer_s:.3f} s; mod-a through its sources and two neural agents {local_s:.3f} s "
                 f"({local_s / max(peer_s, 1e-9):.2f}x)")
    ent = heads["ent"]["info"]
    full = ent["candidate_pairs"]
    lines.append("")
    lines.append(f"enterprise reuse: scored {ent['pairs_scored']} of {full} pairs "
                 f"({ent['pairs_scored'] / max(full, 1):.0%}); the rest came from sub-models "
                 f"{ent['submodels']}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=12, help="services per domain")
    parser.add_argument("--record", action="store_true", help="write the figures to bench/RESULTS.md")
    args = parser.parse_args()
    lines = run(args.services)
    print("\n".join(lines))
    if args.record:
        update_section("End to end (start to first model)", "\n".join(lines))


if __name__ == "__main__":
    main()
