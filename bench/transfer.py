"""Does what the simulator teaches hold on real processes?

Two networks of one recipe (same simulated scenarios, same seed), one trained on the
simulator alone and one on the simulator plus the real training recordings (the peer),
scored in the same run on real recordings neither has seen, next to the shipped network.
How alike simulated and real activity look is `bench/realism.py`'s question.

Then a second question on the same recipe: do *more* real recordings, of
more topologies, help?  The training topologies the recipe leaves out are split into two
folds; each fold's recordings are added to the recipe and the network is scored on the
other fold, so every row is scored by a network that has not seen its topology.

    python bench/transfer.py [--scenarios 1600 --seed 31 --cache DIR] [--write]   # about 30 min
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

from modeler import training
from modeler.estimator import DependencyModeler, labels_for
from modeler.metrics import evaluate

ROOT = Path(__file__).resolve().parent.parent
TRAINING = ROOT / "examples" / "testbeds"
HELD_OUT = ROOT / "bench" / "data" / "testbeds"
#: The real recordings of the shipped network's recipe (docs/MODELING.md, Training).
RECIPE = ("chain", "fanout", "diamond-high", "diamond-low", "deep-high", "deep-low",
          "pipeline-high", "pipeline-low")
STEPS = (None, 2.0)  # the recording's own grid (1 s for 0.5 s data) and 2 s
#: The recipe's `pipeline-*` recordings as the shipped network was trained on them (they
#: were re-recorded later, in commit 23fca92).
PIPELINE_BEFORE = "23fca92^"


def recipe_recordings(work: Path) -> list[Path]:
    """The shipped recipe's recordings, `pipeline-*` taken from git history as trained on."""
    out = []
    for name in RECIPE:
        if name.startswith("pipeline-"):
            target = work / f"{name}-before-23fca92"
            target.mkdir(parents=True, exist_ok=True)
            try:
                for f in ("activity.csv", "truth.json"):
                    blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{PIPELINE_BEFORE}:examples/testbeds/{name}/{f}"],
                                          check=True, capture_output=True).stdout
                    (target / f).write_bytes(blob)
                out.append(target)
                continue
            except (subprocess.CalledProcessError, FileNotFoundError):
                print(f"note: no git history; using the re-recorded {name}", file=sys.stderr)
        out.append(TRAINING / name)
    return out


def topology_of(directory: Path) -> str:
    return directory.name.removesuffix("-high").removesuffix("-low")


#: The recipe's topologies recorded once more (at both loads): more real data, no new shapes.
SAME_TOPOLOGIES = ("chain-high", "chain-low", "fanout-high", "fanout-low")
#: Folds of the training topologies the recipe leaves out, fixed (alphabetical halves)
#: before anything was scored.
FOLDS = {"A": ("broker", "cached", "collider", "layered"), "B": ("mesh", "shortcut", "tree", "twopath")}
MEMBERS = 3  # as shipped


def unseen_recordings() -> dict[str, list[Path]]:
    """Real recordings of topologies the recipe's recordings do not have, by group."""
    seen = {topology_of(TRAINING / r) for r in RECIPE}
    spare = sorted(d for d in TRAINING.iterdir() if (d / "truth.json").exists() and topology_of(d) not in seen)
    held = sorted(d for d in HELD_OUT.iterdir() if (d / "truth.json").exists())
    return {"training topologies the recipe leaves out": spare, "held-out testbeds": held}


def fold_recordings(fold: str) -> list[Path]:
    return [TRAINING / f"{t}-{load}" for t in FOLDS[fold] for load in ("high", "low")]


def _train(scenarios: int, seed: int, cache: str | None, recordings: list[Path] | None, out: str,
           members: int = 1) -> str:
    """``recordings``: None for the simulator alone, else added to the recipe's."""
    real = [] if recordings is None else recipe_recordings(Path(out).parent) + recordings
    with threadpool_limits(1):  # two fits side by side on two cores, not four threads fighting
        training.train(scenarios, seed, real, cache=cache, members=members).save(out)
    return out


def mean_row(rows: list[dict]) -> str:
    return f"{np.mean([r['skeleton_f1'] for r in rows]):.3f} / {np.mean([r['f1'] for r in rows]):.3f}"


def ensemble_specs() -> dict[str, list[Path]]:
    """The recordings each ensemble adds to the recipe's: none (the recipe itself), the
    recipe's topologies recorded again, and those plus one fold."""
    same = [TRAINING / n for n in SAME_TOPOLOGIES]
    return {"recipe": [], "same": same, "A": same + fold_recordings("A"), "B": same + fold_recordings("B")}


def first_member(path: str, out: Path) -> str:
    """The ensemble's first network alone: exactly what a one-member training run of the
    same recipe and seed fits (``training.train`` fits member k with seed + k), so it is
    taken from the ensemble rather than fitted twice."""
    model = DependencyModeler.load(path)
    model.network_.members = []
    model.save(out)
    return str(out)


def folds_table(nets: dict[str, str]) -> list[str]:
    """More real recordings against the recipe's, each fold scored by networks blind to it."""
    other = {"A": "B", "B": "A"}
    columns = ("shipped", "recipe", "same", "other")
    table = ["| validation rows | shipped network (for reference) | the recipe's 8 recordings (the peer) "
             "| + the recipe's topologies recorded again (4) | + the other fold's topologies (4 + 8) |",
             "|---|---|---|---|---|"]
    everything: dict[str, list[dict]] = {c: [] for c in columns}
    for fold in FOLDS:
        dirs = fold_recordings(fold)
        cells = {}
        for label, net in (("shipped", None), ("recipe", nets["recipe"]), ("same", nets["same"]),
                           ("other", nets[other[fold]])):
            rows = [score(net, d, step) for d in dirs for step in STEPS]
            everything[label] += rows
            cells[label] = mean_row(rows)
        table.append(f"| fold {fold}: {', '.join(FOLDS[fold])} ({len(dirs)} x {len(STEPS)} steps) | "
                     + " | ".join(cells[c] for c in columns) + " |")
        print(table[-1], flush=True)
    table.append(f"| all ({len(everything['shipped'])}) | " + " | ".join(mean_row(everything[c]) for c in columns) + " |")
    print(table[-1], flush=True)
    return table


def score(path: str | None, directory: Path, step: float | None) -> dict:
    """Skeleton and directed F1, the share of found dependencies pointing the right way,
    and the ranking quality (AUC) of the dependency probability over all pairs."""
    series, truth = training.read_recording(directory)
    m = DependencyModeler.load(path, step=step)
    sc = m.score_pairs(series)
    g = m.decide(sc)
    r = evaluate(g, truth)
    true = set(map(tuple, truth))
    found = [(a, b) in true for a, b in g.edges if (a, b) in true or (b, a) in true]
    y = labels_for(sc.names, sc.pairs, truth) > 0
    auc = roc_auc_score(y, sc.adjacency) if 0 < y.sum() < len(y) else float("nan")
    return {"skeleton_f1": r["skeleton_f1"], "f1": r["f1"], "oriented": found, "auc": auc}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=1600)
    ap.add_argument("--seed", type=int, default=31)
    ap.add_argument("--cache", help="keep simulated feature blocks here (masa train --cache; default: under --work)")
    ap.add_argument("--work", default="/tmp/masa-transfer", help="where the networks are written")
    ap.add_argument("--write", action="store_true", help="update bench/RESULTS.md")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    cache = args.cache or str(work / "cache")
    training.simulated_blocks(args.scenarios, args.seed, cache=cache)  # once, before the processes read it
    with ProcessPoolExecutor(2) as pool:
        jobs = {"simulator only": pool.submit(_train, args.scenarios, args.seed, cache, None,
                                              str(work / "simulator only.npz"))}
        jobs |= {k: pool.submit(_train, args.scenarios, args.seed, cache, recs, str(work / f"more-real-{k}.npz"),
                                MEMBERS) for k, recs in ensemble_specs().items()}
        ensembles = {k: job.result() for k, job in jobs.items()}
    nets: dict[str, str | None] = {
        "simulator only": ensembles.pop("simulator only"),
        "simulator + real": first_member(ensembles["recipe"], work / "simulator + real.npz"),
        "shipped network": None}
    print(f"trained in {time.time() - t0:.0f} s", flush=True)

    groups = unseen_recordings()
    table = ["| recordings | network | skeleton F1 | directed F1 | found dependencies pointing the right way | AUC of the dependency probability |",
             "|---|---|---|---|---|---|"]
    for group, dirs in groups.items():
        for label, net in nets.items():
            rows = [score(net, d, step) for d in dirs for step in STEPS]
            oriented = [x for r in rows for x in r["oriented"]]
            line = (f"| {group} ({len(dirs)} x {len(STEPS)} steps) | {label} | "
                    f"{np.mean([r['skeleton_f1'] for r in rows]):.3f} | {np.mean([r['f1'] for r in rows]):.3f} | "
                    f"{np.mean(oriented):.3f} ({len(oriented)}) | {np.nanmean([r['auc'] for r in rows]):.3f} |")
            table.append(line)
            print(line, flush=True)
    folds = folds_table(ensembles)
    if args.write:
        sys.path.insert(0, str(ROOT))
        from bench.results import update_section

        update_section("Transfer: simulator to real processes", (
            f"`python bench/transfer.py --write`: two networks of one recipe ({args.scenarios} simulated "
            f"scenarios, seed {args.seed}, one member each), trained in the same run: on the simulator "
            "alone, and on the simulator plus the shipped recipe's 8 real recordings (the peer); the "
            "shipped network (3 members) for reference. Scored on real recordings of topologies "
            "none of them has seen, at the recording's own grid and at 2 s. What the figures say is read in "
            "## Accuracy (from `bench/accuracy_notes.md`).\n\n" + "\n".join(table)
            + ("\n\nDo more real recordings, of more topologies, help? The training topologies "
               "the recipe leaves out in two folds; four ensembles of the shipped recipe (3 members) trained in this "
               "run: the recipe itself (the peer), plus the recipe's own topologies recorded again, and plus "
               "those and one fold's recordings, scored on the other fold, so no row is scored by a network "
               "that has seen its topology. "
               "Skeleton / directed F1, recordings x 2 steps (read in ## Accuracy, eleventh round).\n\n"
               + "\n".join(folds))))


if __name__ == "__main__":
    main()
