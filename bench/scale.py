"""Scale benchmark: objects x 2,000 intervals to a finished dependency model.

Each size runs in a fresh subprocess so that peak memory (ru_maxrss) is its own.  The
named peer measured in the same run is a plain Pearson correlation matrix of the same
grid (numpy ``corrcoef``), the cheapest association any method must at least compute.
Data: many small simulated applications (chains, fan-outs, shared databases) plus
background processes, 1 s sampling.

Usage: ``python bench/scale.py [--sizes 100,1000,5000] [--write]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINS = 2000


def one(n: int) -> dict:
    import numpy as np

    from modeler.estimator import DependencyModeler
    from modeler.grid import align
    from modeler.metrics import evaluate
    from modeler.simulator import random_topology, simulate

    rng = np.random.default_rng(n)
    topo = random_topology(rng, int(n * 0.9), "apps")
    sc = simulate(topo, seconds=BINS, step=1.0, rng=rng, background=n - topo.number_of_nodes(),
                  clock_skew=0.3, external_share=0.4)
    model = DependencyModeler.default()
    t0 = time.perf_counter()
    g = model.predict(sc.series)
    t_masa = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = align(sc.series)
    np.corrcoef(grid.values)
    t_corr = time.perf_counter() - t0
    r = evaluate(g, sc.truth)
    return {
        "objects": len(sc.series), "bins": grid.n_bins, "seconds": t_masa, "pearson_seconds": t_corr,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "screened_share": g.graph["screened_pairs"] / g.graph["candidate_pairs"],
        "skeleton_f1": r["skeleton_f1"], "f1": r["f1"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--write", action="store_true", help="replace the Scale section of bench/RESULTS.md (its notes kept)")
    ap.add_argument("--notes", type=Path, default=ROOT / "bench" / "scale_notes.md",
                    help="what the figures say, written under the table (kept by hand)")
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one)))
        return
    lines = ["## Scale", "",
             f"`python bench/scale.py --write`: N objects x {BINS} intervals (1 s) to a finished model, "
             "default network, 2 cores; peer = numpy Pearson matrix of the same grid. "
             "Goal for 1,000 objects: <= 30 s and <= 2 GB.", "",
             "| objects | masa seconds | Pearson seconds | ratio | peak MB | pairs screened out | "
             "skeleton F1 | directed F1 |", "|---|---|---|---|---|---|---|---|"]
    for n in (int(s) for s in args.sizes.split(",")):
        proc = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True)
        if proc.returncode:
            lines.append(f"| {n} | failed: {proc.stderr.strip().splitlines()[-1]} | | | | | | |")
        else:
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            lines.append(f"| {r['objects']} | {r['seconds']:.1f} | {r['pearson_seconds']:.2f} | "
                         f"{r['seconds'] / max(r['pearson_seconds'], 1e-9):.0f}x | {r['peak_mb']:.0f} | "
                         f"{100 * r['screened_share']:.1f}% | {r['skeleton_f1']:.2f} | {r['f1']:.2f} |")
        print(lines[-1], flush=True)
    lines.append("")
    if args.write:
        sys.path.insert(0, str(ROOT))  # run as a script, bench/ itself is on the path
        from bench.results import update_section

        update_section("Scale", "\n".join(lines[2:]), notes=args.notes)


if __name__ == "__main__":
    main()
