"""``masa infer``, ``masa evaluate`` and ``masa train``: the researchers' interface.

Registered through the ``masa.commands`` entry-point group, so the platform CLI loads
this module only when one of these commands is used.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

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
              help="connections.csv (source,target[,count]) from the procfs probe.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="A network trained with `masa train` (default: the shipped one).")
@click.option("--step", type=float, default=None, help="Grid step in seconds (default: the data's).")
def infer(activity: str, out: str, fmt: str | None, connections: str | None,
          model_path: str | None, step: float | None) -> None:
    """Infer the dependency model of recorded ACTIVITY (CSV: time,object,value)."""
    from modeler import evidence, export
    from modeler.estimator import DependencyModeler

    try:
        series = read_csv(activity)
        conn = evidence.read_connections(connections) if connections else None
        model = DependencyModeler.load(model_path or None, step=step)
        g = model.predict(series, conn)
    except (ActivityError, ValueError, FileNotFoundError) as exc:
        raise click.ClickException(str(exc)) from None
    used = export.write(g, out, fmt)
    click.echo(f"{g.number_of_nodes()} objects, {g.number_of_edges()} dependencies -> {out} ({used})")
    if g.graph["bins"] < FEW_BINS:
        click.echo(f"note: the model rests on {g.graph['bins']} intervals of activity; with fewer than "
                   f"{FEW_BINS} it misses and invents markedly more dependencies (bench/RESULTS.md, "
                   "## Accuracy against recording length): record longer if you can", err=True)


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
        bad = [e for e in edges if not (isinstance(e, list) and len(e) == 2)]
        if bad:
            raise ValueError(f"{truth}: every edge must be [caller, callee], got {bad[0]!r}")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    scores = metrics.evaluate(g, [tuple(map(str, e)) for e in edges])
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

    with Progress() as progress:
        try:
            model = training.train(scenarios, seed, recordings, progress=progress, cache=cache,
                                   members=members)
        except (ActivityError, ValueError) as exc:
            raise click.ClickException(str(exc)) from None
    model.save(out)
    click.echo(f"trained on {scenarios} simulated + {len(recordings)} recorded -> {Path(out)}")
