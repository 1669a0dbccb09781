"""``masa collect``: record activity from the command line into the modeler's CSV."""

from __future__ import annotations

import sys

import click

from probes.collect import Progress, record_procfs, record_snmp


def _progress_line(kind: str, seconds: float, interval: float):
    """A rich progress bar on stderr; returns (callback, context manager)."""
    from rich.console import Console
    from rich.progress import BarColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    bar = Bar(TextColumn(f"[bold]{kind}[/]"), BarColumn(), TextColumn("{task.description}"),
              TimeRemainingColumn(), console=Console(stderr=True), transient=False)
    total = int(seconds / interval + 1e-9) + 1
    task = bar.add_task("starting", total=total)

    def update(p: Progress) -> None:
        text = f"{p.ticks}/{total} ticks, {len(p.objects)} objects, {p.rows} rows"
        if p.connections:
            text += f", {p.connections} connections"
        if p.errors:
            text += f", [red]{p.errors} errors[/] ({p.last_error[:60]})"
        if p.late:
            text += f", {p.late} late"
        bar.update(task, completed=p.ticks, description=text)

    return update, bar


def _check(interval: float, seconds: float, connections_every: float | None = None) -> None:
    """Written so that NaN fails every test (``nan < interval`` is false too)."""
    if not 0.05 <= interval <= 3600:
        raise click.BadParameter("must be between 0.05 and 3600 seconds", param_hint="--interval")
    if not interval <= seconds < float("inf"):
        raise click.BadParameter("must be a finite number of seconds, at least one interval", param_hint="--seconds")
    if connections_every is not None and not 0.05 <= connections_every <= 86400:
        raise click.BadParameter("must be between 0.05 and 86400 seconds (each sample costs tens of ms)",
                                 param_hint="--connections-every")


def _summary(p: Progress, out: str) -> None:
    click.echo(f"wrote {p.rows} rows for {len(p.objects)} objects to {out}"
               + (f" ({p.errors} failed polls, last: {p.last_error})" if p.errors else ""), err=True)


@click.group()
def collect() -> None:
    """Record activity (procfs or SNMP) into a long CSV: time,object,value.

    value is the rate over the interval ending at time: CPU in cores (1.0 = one core
    busy), interface traffic in bytes/s."""


@collect.command()
@click.option("--match", help="Regular expression: per-process objects only for matching name/command line.")
@click.option("--group", "rules", help="Application rules APP=KIND:PATTERN[,...];... or @FILE "
              "(kinds: name, cmdline, cgroup, unit, user).")
@click.option("--per-process", type=click.Choice(["pid", "name", "none"]), default="pid", show_default=True,
              help="One object per process (pid), per process name (name), or none.  pid suits one "
              "recording; agents default to name, since pids change over days.")
@click.option("--label", help="Host part of object ids (default: this host's name).")
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between samples.")
@click.option("--seconds", type=float, required=True, help="How long to record.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True)
@click.option("--connections", type=click.Path(dir_okay=False, writable=True),
              help="Also record TCP connections (process -> endpoint) into this CSV.")
@click.option("--connections-every", type=float, default=10.0, show_default=True,
              help="Seconds between connection samples (they cost tens of ms).")
def procfs(match, rules, per_process, label, interval, seconds, out, connections, connections_every) -> None:
    """CPU of processes, applications (--group) and the host, and interface traffic."""
    from masa.activity import ActivityError
    from probes.procfs import PatternError, ProcfsProbe
    from probes.rules import RuleError

    _check(interval, seconds, connections_every)
    try:
        probe = ProcfsProbe(rules or (), host=label, per_process=per_process, match=match)
    except RuleError as exc:
        raise click.BadParameter(str(exc), param_hint="--group") from None
    except PatternError as exc:
        raise click.BadParameter(str(exc), param_hint="--match") from None
    except ActivityError as exc:
        raise click.BadParameter(str(exc), param_hint="--label") from None
    update, bar = _progress_line("procfs", seconds, interval)
    with bar:
        p = record_procfs(probe, out, interval, seconds, connections=connections,
                          connections_every=connections_every, on_tick=update)
    _summary(p, out)
    if connections and not _connections_complete():
        click.echo("note: not root, so sockets of other users' processes are listed without pid", err=True)


def _connections_complete() -> bool:
    from probes.connections import ConnectionProbe

    return ConnectionProbe().complete


@collect.command()
@click.argument("targets", nargs=-1, required=True)
@click.option("--community", help="SNMPv2c community.")
@click.option("--v3-user", help="SNMPv3 user (USM).")
@click.option("--auth-key", help="SNMPv3 authentication passphrase.")
@click.option("--priv-key", help="SNMPv3 privacy passphrase.")
@click.option("--auth-protocol", type=click.Choice(["MD5", "SHA", "SHA-256", "SHA-512"]), default="SHA", show_default=True)
@click.option("--priv-protocol", type=click.Choice(["AES", "AES-256"]), default="AES", show_default=True)
@click.option("--label", help="Object-id prefix (one target only; default: the target's host).")
@click.option("--timeout", type=float, default=1.0, show_default=True, help="Seconds per try.")
@click.option("--retries", type=int, default=1, show_default=True)
@click.option("--interval", type=float, default=10.0, show_default=True, help="Seconds between polls.")
@click.option("--seconds", type=float, required=True, help="How long to record.")
@click.option("--out", type=click.Path(dir_okay=False, writable=True), required=True)
def snmp(targets, community, v3_user, auth_key, priv_key, auth_protocol, priv_protocol, label,
         timeout, retries, interval, seconds, out) -> None:
    """Host CPU and interface traffic of SNMP agents (TARGETS: udp:HOST:PORT ...), polled
    concurrently with one GETBULK each per interval."""
    from probes.snmp import SnmpPoller
    from probes.snmp_meter import check_settings

    _check(interval, seconds)
    if label and len(targets) > 1:
        raise click.BadParameter("only with a single target", param_hint="--label")
    given = {"community": community, "v3_user": v3_user, "auth_key": auth_key, "priv_key": priv_key,
             "auth_protocol": auth_protocol, "priv_protocol": priv_protocol, "label": label,
             "timeout": timeout, "retries": retries}
    try:  # the same check as SNMP collector agents get (probes.snmp_meter.check_settings)
        pollers = [SnmpPoller(t, check_settings({**given, "target": t}), label=label, timeout=timeout,
                              retries=retries) for t in targets]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    update, bar = _progress_line("snmp", seconds, interval)
    with bar:
        p = record_snmp(pollers, out, interval, seconds, on_tick=update)
    _summary(p, out)
    if p.errors and not p.rows:
        sys.exit(1)
