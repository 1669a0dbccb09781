"""How much does simulated activity look like real processes' activity, where it matters?

The network judges chain ends and siblings by whether a third object explains a pair's
association away, so this compares, for every true dependency, the smallest first-order
partial correlation over all third objects and *which* third gives it (the caller of the
dependant, another callee of the dependant, a callee of the dependency, ...), on the
real training recordings (at their own 0.5 s grid; the held-out ones are left alone) and on simulated CPU
scenarios at 0.5 s as training draws them, in each of its two regimes for fine-grained CPU
(the real-processes one: a few requests per second, services at a few per cent of a core,
many services with clients of their own, mostly partial call odds; and the plain one, tens
of requests per second). Also the services' mean CPU: the load regime itself.
(`bench/transfer.py` asks the other question: whether networks trained on it hold up.)

    python bench/realism.py [--scenarios 40] [--write]
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import networkx as nx
import numpy as np

from modeler import training
from modeler.features import first_order_partial, prepare
from modeler.grid import align
from modeler.simulator import random_scenario

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: bench/ itself is on the path, not the root

from bench.results import update_section  # noqa: E402

#: The training recordings only: the held-out ones are for ## Accuracy, never for tuning.
RECORDINGS = [ROOT / "examples" / "testbeds"]
STEP = 0.5


def role(g: nx.DiGraph, a: str, b: str, k: str) -> str:
    """The third object's place relative to the dependency a -> b."""
    if k not in g:
        return "unrelated process"
    for test, name in ((g.has_edge(k, a), "caller of the dependant"),
                       (g.has_edge(a, k), "another callee of the dependant"),
                       (g.has_edge(b, k), "callee of the dependency"),
                       (g.has_edge(k, b), "another caller of the dependency"),
                       (nx.has_path(g, k, a), "further upstream"),
                       (nx.has_path(g, b, k), "further downstream")):
        if test:
            return name
    return "service of the same system, no path"


def explained_away(series: dict, truth: list[tuple[str, str]]) -> list[tuple]:
    """Per true dependency: |r|, min_k |r_ab.k|, the role of that k, |r_ak|, |r_bk|."""
    prep = prepare(align(series))
    names, r = prep.grid.names, prep.r_burst
    idx = {n: i for i, n in enumerate(names)}
    g = nx.DiGraph(truth)
    out = []
    for a, b in truth:
        i, j = idx[a], idx[b]
        thirds = np.array([k for k in range(len(names)) if k not in (i, j)])
        if not len(thirds):
            continue
        rik, rjk = r[i, thirds], r[j, thirds]
        partial = first_order_partial(r[i, j], rik, rjk)
        m = int(np.argmin(partial))
        out.append((abs(r[i, j]), partial[m], role(g, a, b, names[thirds[m]]), abs(rik[m]), abs(rjk[m])))
    return out


def service_cpu(series: dict, truth: list[tuple[str, str]]) -> list[float]:
    return [float(np.mean(series[s].value)) for s in {x for e in truth for x in e}]


def training_draw(rng: np.random.Generator, n: int) -> dict[str, list[tuple[dict, list]]]:
    """``n`` training scenarios of each regime ``random_scenario`` draws fine-grained CPU in."""
    out: dict[str, list[tuple[dict, list]]] = {"real processes": [], "plain": []}
    while min(map(len, out.values())) < n:
        sc = random_scenario(rng, step=STEP, metric="cpu", n_services=int(rng.integers(4, 13)), bins=600)
        group = out[sc.info["regime"]]
        if len(group) < n:
            group.append((sc.series, list(sc.truth)))
    return {f"simulated: training, {regime} regime": recs for regime, recs in out.items()}


def summary(label: str, rows: list[tuple], cpu: list[float]) -> list[str]:
    corr, partial = np.median([x[0] for x in rows]), np.median([x[1] for x in rows])
    q = np.quantile(cpu, [0.1, 0.5, 0.9])
    lines = [f"| {label} | {len(rows)} | {corr:.2f} | {partial:.2f} | {q[1]:.3f} ({q[0]:.3f}-{q[2]:.3f}) |"]
    detail = []
    for name, n in Counter(x[2] for x in rows).most_common():
        sub = [x for x in rows if x[2] == name]
        detail.append(f"| {label} | {name} | {n / len(rows):.0%} | {np.median([x[1] for x in sub]):.2f} | "
                      f"{np.median([x[3] for x in sub]):.2f} | {np.median([x[4] for x in sub]):.2f} |")
    return lines + detail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=40, help="simulated scenarios per regime")
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    groups: dict[str, list[tuple[dict, list]]] = {"real recordings": [
        training.read_recording(d) for root in RECORDINGS for d in sorted(root.iterdir())
        if (d / "truth.json").exists() and (d / "activity.csv").exists()]}
    groups.update(training_draw(np.random.default_rng(args.seed), args.scenarios))
    head = ["| activity | true dependencies | median burst correlation | median smallest first-order partial | services' mean CPU, median (10-90 %) |",
            "|---|---|---|---|---|"]
    roles = ["| activity | the third that explains most away | share | median partial | median abs r with dependant | median abs r with dependency |",
             "|---|---|---|---|---|---|"]
    for label, recs in groups.items():
        rows = [x for s, t in recs for x in explained_away(s, [tuple(e) for e in t])]
        cpu = [c for s, t in recs for c in service_cpu(s, t)]
        first, *detail = summary(label, rows, cpu)
        head.append(first)
        roles += detail
    text = "\n".join(head + [""] + roles)
    print(text)
    if args.write:
        update_section("Realism: simulated vs real activity", (
            f"`python bench/realism.py --write`: every real training recording (`examples/testbeds/`, "
            f"at its own 0.5 s grid; held-out recordings are not used) against {args.scenarios} simulated CPU scenarios at 0.5 s per regime "
            f"of the training draw (seed {args.seed}). What it says is read in ## Accuracy (`bench/accuracy_notes.md`, "
            "fifth and sixth rounds).\n\n" + text))


if __name__ == "__main__":
    main()
