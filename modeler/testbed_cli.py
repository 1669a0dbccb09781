"""``masa testbed``: record real service processes with a known call graph."""

from __future__ import annotations

import signal

import click

from modeler.testbed import (
    LOADS,
    TOPOLOGIES,
    TRAINING_TOPOLOGIES,
    TopologyError,
    check_nice,
    load_topology,
    rate_scale,
    record,
)
from modeler.testbed_service import set_priority


@click.group("testbed")
def testbed() -> None:
    """Testbeds with ground truth, for training and validating dependency models."""


@testbed.command("list")
def list_topologies() -> None:
    """The built-in topologies."""
    for name, topo in TOPOLOGIES.items():
        n_edges = sum(len(s.get("calls") or {}) for s in topo["services"].values())
        use = "training" if name in TRAINING_TOPOLOGIES else "held out"
        click.echo(f"{name:10s} {len(topo['services']):3d} services {n_edges:3d} calls  {use}")
    click.echo("load levels: " + ", ".join(f"{k} (client rates x{v:g})" for k, v in LOADS.items()))


@testbed.command("record")
@click.argument("topology")
@click.option("--seconds", type=click.FloatRange(5), default=120, show_default=True,
              help="How long to record; minutes, not seconds, make good models (docs/MODELING.md).")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False),
              help="Directory to write activity.csv, truth.json, connections.csv, topology.json and machine.json.")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=0.5, show_default=True,
              help="Sampling interval of the procfs probe, seconds.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seeds the clients' ON/OFF schedules and arrivals and the background jobs (same seed: same bursts).")
@click.option("--load", "load", metavar="low|high|SCALE", default=None,
              help=f"Load level: {', '.join(f'{k} (client rates x{v:g})' for k, v in LOADS.items())}, "
                   "or a number that scales every client rate. Default: the topology's own "
                   "'load', else high.")
@click.option("--nice", type=int, default=None,
              help="Run the testbed's processes and this recorder at this nice value (with Linux "
                   "autogroups, also the recorder's session, i.e. the shell it runs in); negative "
                   "(root only) keeps a recording from being starved by other work on the machine.")
def record_cmd(topology: str, seconds: float, out: str, interval: float, seed: int, load: str | None,
               nice: int | None) -> None:
    """Run TOPOLOGY (built-in name or JSON file) and record activity, truth, connections."""
    from masa.progress import Progress

    if load is not None:
        try:
            rate_scale(load)
        except TopologyError as exc:
            raise click.BadParameter(str(exc), param_hint="'--load'") from None
    try:
        check_nice(nice)
    except TopologyError as exc:
        raise click.BadParameter(str(exc), param_hint="'--nice'") from None
    try:
        topo = load_topology(topology)
    except TopologyError as exc:
        raise click.ClickException(str(exc)) from None
    if nice is not None:
        # the sampling loop keeps time too: this process and its session's autogroup, or
        # the testbed's own (reniced) processes starve it
        set_priority(nice)
    def stop(signum, _frame):
        raise click.ClickException(f"stopped by signal {signum}; the testbed's processes were stopped")

    # SIGTERM (and SIGINT, which shells ignore in background jobs) stop the recording
    # through record()'s cleanup, so no service, client or background process outlives it
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, stop)
    with Progress(f"recording {topology}") as progress:
        info = record(topo, seconds, out, interval=interval, seed=seed, load=load, nice=nice,
                      tick=progress.update)
    click.echo(f"{info['objects']} objects, {info['edges']} true edges, "
               f"{info['connections']} observed connections, load {info['load']} "
               f"(client rates x{info['rate_scale']:g}) -> {out}")
