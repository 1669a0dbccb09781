"""Accuracy against recording length: how long must one record before the model holds?

Each held-out testbed recording is cut into consecutive windows of 60, 120, 240 and 900 s (and
kept whole); every window is modeled on its own, by masa (its own threshold) and by the
named peer, partial correlation with the threshold chosen *with* the truth (the best
oracle-threshold baseline on most testbed rows of ## Accuracy).  Means over the windows of
a recording, then over recordings; the ratio masa / peer is of those means.  The same data
and grids as ``bench/accuracy.py`` (the 0.5 s recordings, and resampled to 2 s).

Usage: ``python bench/length.py --testbeds bench/data/testbeds [--write]``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.accuracy import baseline_input, best_from_scores, datasets, partial_corr  # noqa: E402
from masa.activity import Series, span  # noqa: E402
from modeler.estimator import DependencyModeler  # noqa: E402
from modeler.metrics import evaluate  # noqa: E402

LENGTHS = (60.0, 120.0, 240.0, 900.0)
PEER = "partial corr (oracle thr.)"


def windows(series: dict[str, Series], seconds: float) -> list[dict[str, Series]]:
    """Consecutive windows of ``seconds``; a tail shorter than 90 % of a window is dropped so
    every window of one length carries about the same evidence."""
    t0, t1 = span(series.values())
    count = int((t1 - t0) / seconds + 0.1)
    return [{n: s.window(t0 + k * seconds, t0 + (k + 1) * seconds) for n, s in series.items()}
            for k in range(count)]


def window_label(seconds: float) -> str:
    return "whole" if seconds == np.inf else f"{seconds:.0f} s"


def means(rows: list[dict]) -> dict[str, float]:
    """Mean of every field over rows of equal fields (windows of a recording, recordings of a cell)."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def score_window(model: DependencyModeler, part: dict[str, Series], step: float, truth) -> dict:
    masa = evaluate(model.predict(part), truth)
    names, x = baseline_input(part, step)
    peer = best_from_scores(partial_corr(x), names, truth)
    return {"masa_skel": masa["skeleton_f1"], "masa_dir": masa["f1"],
            "peer_skel": peer["skeleton_f1"], "peer_dir": peer["f1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testbeds", type=Path, action="append", default=[],
                    help="directory of testbed recordings (repeatable)")
    ap.add_argument("--write", action="store_true", help="write the table to bench/RESULTS.md")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    started = time.perf_counter()
    # (grid step, recording length to the minute, window length or inf = whole) -> per-recording means
    table: dict[tuple[float, float, float], list[dict]] = {}
    for ds in datasets(args.testbeds):
        if ds["step"] is None:  # PetShop: one 49-hour recording, not a testbed
            continue
        model = DependencyModeler.load(None, step=ds["masa_step"])
        t0, t1 = span(ds["series"].values())
        whole = t1 - t0
        for seconds in (*[s for s in LENGTHS if s < 0.9 * whole], np.inf):
            parts = [ds["series"]] if seconds == np.inf else windows(ds["series"], seconds)
            scores = [score_window(model, p, ds["step"], ds["truth"]) for p in parts]
            mean = means(scores)
            mean["windows"] = len(parts)
            mean["hit"] = float(np.mean([s["masa_skel"] >= 0.9 for s in scores]))
            table.setdefault((ds["step"], round(whole / 60) * 60, seconds), []).append(mean)
            print(f"{ds['name']} {window_label(seconds)}: masa {mean['masa_skel']:.2f}/{mean['masa_dir']:.2f} "
                  f"peer {mean['peer_skel']:.2f}/{mean['peer_dir']:.2f} ({len(parts)} windows)",
                  flush=True)
    lines = [f"`python bench/length.py --testbeds DIR --write` ({time.perf_counter() - started:.0f} s). "
             "Held-out testbed recordings cut into consecutive windows, each modeled alone. "
             f"Peer: {PEER}, its threshold chosen with the truth of each window; masa chooses its "
             "own. Means over windows, then over recordings; *hit* = share of windows where masa's "
             "skeleton F1 reaches 0.9.", "",
             "| grid | recordings | window | recordings x windows | masa skeleton F1 | peer skeleton F1 "
             "| masa / peer | masa directed F1 | peer directed F1 | masa / peer | hit |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for (step, recorded, seconds), rows in sorted(table.items()):
        m = means(rows)
        n_windows = sum(r["windows"] for r in rows)
        lines.append(f"| {step:g} s | {recorded:.0f} s | {window_label(seconds)} | {len(rows)} x {n_windows / len(rows):.1f} | "
                     f"{m['masa_skel']:.3f} | {m['peer_skel']:.3f} | {m['masa_skel'] / m['peer_skel']:.2f} | "
                     f"{m['masa_dir']:.3f} | {m['peer_dir']:.3f} | {m['masa_dir'] / m['peer_dir']:.2f} | "
                     f"{m['hit']:.0%} |")
    print("\n".join(lines))
    if args.write:
        from bench.results import update_section

        update_section("Accuracy against recording length", "\n".join(lines),
                       notes=Path(__file__).with_name("length_notes.md"))


if __name__ == "__main__":
    sys.exit(main())
