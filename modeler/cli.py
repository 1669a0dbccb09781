"""``masa infer``, ``masa evaluate`` and ``masa train``: the researchers' interface.

Registered through the ``masa.commands`` entry-point group, so the platform CLI loads
this module only when one of these commands is used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
import numpy as np

from masa.activity import ActivityError, read_csv

#: below this many grid intervals a model is markedly less accurate on held-out testbeds
#: (bench/RESULTS.md, ## Accuracy against recording length), so `masa infer` says so
FEW_BINS = 240


@click.command("infer")
@click.argument("activity", type=click.Path(dir_okay=False))
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@click.option("--format", "fmt", type=click.Choice(["json", "graphml", "dot"]), default=None,
              help="Output format (default: from the suffix of --out, else JSON).")
@click.option("--connections", type=click.Path(dir_okay=False),
              help="Connection evidence: source,target[,count] between objects (a testbed's "
                   "connections.csv), or the socket log of `masa collect procfs --connections`.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="The network to decide with, a file from `masa train` (default: the shipped one).")
@click.option("--step", type=float, default=None,
              help="Grid step in seconds (default: the data's own sampling step, at least 1 s).")
def infer(activity: str, out: str, fmt: str | None, connections: str | None,
          model_path: str | None, step: float | None) -> None:
    """Infer the dependency model of recorded ACTIVITY.

    ACTIVITY is a CSV with the columns time,object,value (value: the activity in the
    interval ending at time) or start,end,object,value."""
    from modeler import evidence, export
    from modeler.estimator import DependencyModeler

    writable(out)
    try:
        series = read_csv(activity)
        export.check_writable(series, export.format_for(out, fmt))
        conn = evidence.read_connections(connections, series) if connections else None
        model = DependencyModeler.load(model_path or None, step=step)
        for line in input_notes(series, conn, connections):
            click.echo(f"note: {line}", err=True)
        g = model.predict(series, conn)
    except (ActivityError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    used = export.write(g, out, fmt)
    click.echo(f"{plural(g.number_of_nodes(), 'object')}, {plural(g.number_of_edges(), 'dependency')} "
               f"-> {out} ({used})")
    if g.graph["observed_bins"] < FEW_BINS:
        click.echo(f"note: the model rests on {g.graph['observed_bins']} intervals of activity; with fewer "
                   f"than {FEW_BINS} it misses and invents markedly more dependencies (bench/RESULTS.md, "
                   "## Accuracy against recording length): record longer if you can", err=True)


#: Largest value of a series below which it reads as nearly constant: the statistics'
#: floors are absolute (1e-12 on variances), so values of 1e-9 already lose confidence and
#: 1e-12 none is found; real rates (a CPU tick per minute, a byte per second) are far above.
TINY = 1e-6


def input_notes(series: dict, conn: dict | None, path: str | None) -> list[str]:
    """What in the input will make the model other than its user may think: said before
    the model is built, never silently."""
    notes = []
    negative = sorted(name for name, s in series.items() if len(s.value) and s.value.min() < 0)
    if negative:
        notes.append(f"{plural(len(negative), 'object')} with negative activity ({', '.join(negative[:3])}"
                     f"{', ...' if len(negative) > 3 else ''}): activity is a rate, and the volume "
                     "cues of the direction assume it is never below 0")
    tiny = sorted(name for name, s in series.items() if len(s.value) and 0 < np.abs(s.value).max() < TINY)
    if tiny:
        notes.append(f"{plural(len(tiny), 'object')} whose activity never reaches {TINY:g} ({', '.join(tiny[:3])}"
                     f"{', ...' if len(tiny) > 3 else ''}): the model takes so little for nearly constant "
                     "and finds less or nothing; rescale (e.g. to per-second units)")
    groups = recorded_together(series)
    if len(groups) > 1:
        apart = sorted(name for group in groups[1:] for name in group)
        notes.append(f"{plural(len(apart), 'object')} ({', '.join(apart[:3])}{', ...' if len(apart) > 3 else ''}) "
                     f"share no recorded time with {', '.join(groups[0][:3])}{', ...' if len(groups[0]) > 3 else ''}: "
                     "their pairs rest on gap fill and cannot be judged (a clock or time zone off?)")
    if conn is not None:
        unknown = sorted({name for pair in conn for name in pair} - set(series))
        known = [count for pair, count in conn.items() if set(pair) <= set(series)]
        if unknown:
            notes.append(f"{path} names {plural(len(unknown), 'object')} the activity does not hold "
                         f"({', '.join(unknown[:3])}{', ...' if len(unknown) > 3 else ''}): ignored")
        if not any(count > 0 for count in known):  # a count of 0 is a connection never seen
            what = "has only counts of 0 between" if known else "joins no two"
            notes.append(f"{path} {what} objects of the activity: every pair counts as watched "
                         "and not connected, which weighs against every dependency")
    return notes


def recorded_together(series: dict) -> list[list[str]]:
    """Objects in groups whose recorded spans overlap, the largest group first: a pair
    across two groups was never observed at once (one host's clock an hour off), and its
    "no dependency" is no evidence, so it must be said rather than read as one."""
    spans = sorted((s.start[0], s.end[-1], name) for name, s in series.items() if len(s))
    groups: list[list[str]] = []
    reach = -float("inf")
    for start, end, name in spans:
        if start >= reach:
            groups.append([])
        groups[-1].append(name)
        reach = max(reach, end)
    return sorted((sorted(g) for g in groups), key=len, reverse=True)


def plural(n: int, word: str) -> str:
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1] + 'ies' if word.endswith('y') else word + 's'}"


def writable(out: str) -> None:
    """Fail before the work, not after it, when the result could not be written."""
    parent = Path(out).resolve().parent
    if not parent.is_dir():
        raise click.ClickException(f"cannot write {out}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (Path(out).exists() and not os.access(out, os.W_OK)):
        raise click.ClickException(f"cannot write {out}: permission denied")


@click.command("evaluate")
@click.argument("model", type=click.Path(dir_okay=False))
@click.argument("truth", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
def evaluate(model: str, truth: str, as_json: bool) -> None:
    """Score a MODEL (node-link JSON) against TRUTH ({"edges": [[caller, callee], ...]})."""
    from modeler import export, metrics
    from modeler.training import read_truth

    try:
        g = export.read_model(model)
        edges = read_truth(truth)
        # names as `masa train` takes them (check_truth): null or 3 is no object name
        bad = [e for e in edges if not (isinstance(e, list) and len(e) == 2 and all(isinstance(v, str) for v in e))]
        if bad:
            raise ValueError(f"{truth}: every edge must be [caller, callee], two object names, got {bad[0]!r}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    truth_edges = [tuple(e) for e in edges]
    # the scores compare ids as strings (a model's id 1 is the truth's "1"), so does the note
    missing = sorted({n for e in truth_edges for n in e} - {str(v) for v in g})
    if missing:
        click.echo(f"note: the model has no object {', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''} "
                   f"({plural(len(missing), 'object')} of the truth): are they named alike?", err=True)
    scores = metrics.evaluate(g, truth_edges)
    if as_json:
        click.echo(json.dumps(scores))
        return
    for key, value in scores.items():
        click.echo(f"{key:20s} {value:.3f}" if isinstance(value, float) else f"{key:20s} {value}")


@click.command("train")
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="Where to write the network (.npz).")
@click.option("--scenarios", type=click.IntRange(2), default=1600, show_default=True,
              help="Simulated recordings to train on.")
@click.option("--recording", "recordings", multiple=True, type=click.Path(file_okay=False),
              help="A testbed directory (activity.csv + truth.json) to add; repeatable.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--cache", type=click.Path(file_okay=False),
              help="Directory keeping the simulated feature blocks (.npz) between runs.")
@click.option("--members", type=click.IntRange(1, 9), default=1, show_default=True,
              help="Networks in the ensemble (same data, seeds SEED, SEED+1, ...).")
def train(out: str, scenarios: int, recordings: tuple[str, ...], seed: int, cache: str | None,
          members: int) -> None:
    """Train the dependency network on simulated and recorded data.

    Progress goes to stderr: a bar on a terminal, a line per tenth of each stage otherwise.
    The network keeps what it was trained on, with which libraries and when (meta
    trained_on, trained_with, trained_at)."""
    from masa.progress import Progress
    from modeler import training

    writable(out)
    with Progress() as progress:
        try:
            model = training.train(scenarios, seed, recordings, progress=progress, cache=cache,
                                   members=members)
        except (ActivityError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    model.save(out)
    click.echo(f"trained on {scenarios} simulated + {len(recordings)} recorded -> {Path(out)}")
