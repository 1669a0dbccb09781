"""The ``masa`` command line.

The platform's own commands live here; the layers above contribute theirs through the
``masa.commands`` entry-point group, loaded only when used, so ``masa --help`` stays fast
and the platform imports nothing from ``agents/``, ``probes/`` or ``modeler/``.
"""

from __future__ import annotations

import logging
import sys
from importlib.metadata import entry_points

import click

from masa import __version__


class _PluginGroup(click.Group):
    """A click group that also offers the commands registered by other packages."""

    def _plugins(self) -> dict:
        return {ep.name: ep for ep in entry_points(group="masa.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in (plugins := self._plugins()):
            try:
                command = plugins[name].load()
            except Exception as exc:  # a broken plugin must not take the whole CLI down
                return _unavailable(name, plugins[name].value, exc)
        return command


def _unavailable(name: str, target: str, exc: Exception) -> click.Command:
    def fail() -> None:
        raise click.ClickException(f"command {name!r} could not be loaded from {target}: {exc}")

    command = click.Command(name, callback=fail, help=f"(unavailable: {exc})",
                            context_settings={"ignore_unknown_options": True})
    command.masa_unavailable = True
    return command


class _OneLineErrors(_PluginGroup):
    """Turns any failure into one line on stderr; ``--debug`` keeps the traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001 - the whole point is one readable line
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"masa: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_OneLineErrors)
@click.version_option(__version__, prog_name="masa")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logging.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """masa: mobile agents that build dependency models from activity data."""
    ctx.obj = {"debug": debug}
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _private_files() -> None:
    """A daemon's files (checkpoints holding agents' settings, SNMP keys among them; stores;
    logs) are the user's alone, as the secret is: created 0600, folders 0700."""
    import os

    os.umask(0o077)


def _settings():
    from masa.config import Settings

    return Settings.from_env()


def _parse_value(text: str):
    """``key=value`` values: JSON when it parses (numbers, lists, true), else a string."""
    import json

    try:
        return json.loads(text)
    except ValueError:
        return text


def _kv(pairs: tuple[str, ...]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}")
        out[key] = _parse_value(value)
    return out


def _print_json(data) -> None:
    import json

    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@main.command()
@click.option("--store", "store_url", help="SQLAlchemy URL or SQLite path of the node list (default: MASA_HOME/masa.db).")
def ns(store_url: str | None) -> None:
    """Run the location broker (Pyro5 name server) and the node-list registry."""
    import os

    from masa.nameserver import serve

    _private_files()
    settings = _settings()
    click.echo(f"masa name server on {settings.ns_address}", err=True)
    serve(settings, store_url)
    os._exit(0)  # the store is closed; don't wait for workers parked on idle connections


@main.command()
@click.argument("name")
@click.option("--domain", default="", help="Management domain of this host.")
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=0, type=int, help="Port (0: any free port).")
@click.option("--allow", multiple=True, help="Agent kinds this host accepts (repeatable; default: all installed).")
@click.option("--no-restore", is_flag=True, help="Do not bring back the agents of the last run.")
def host(name: str, domain: str, bind: str, port: int, allow: tuple[str, ...], no_restore: bool) -> None:
    """Run an agent host NAME (refused while a host of that name is running)."""
    import os
    import signal

    from masa import kinds
    from masa.errors import UnknownKind
    from masa.host import AgentHost

    try:
        kinds.check(allow)
    except UnknownKind as exc:
        raise click.BadParameter(str(exc), param_hint="'--allow'") from None
    _private_files()
    h = AgentHost(name, domain, _settings(), list(allow) or None, bind, port)
    h.claim_name()  # a host of this name that answers: one-line error, exit 1
    signal.signal(signal.SIGTERM, lambda *_: h.stop())
    click.echo(f"masa host {name} ({domain or 'no domain'}) at {h.control_uri}", err=True)
    signal.signal(signal.SIGINT, lambda *_: h.stop())
    h.run(restore=not no_restore)
    os._exit(0)  # state is saved; don't wait for workers parked on idle client connections


@main.command()
@click.option("--type", "type_", type=click.Choice(["host", "agent"]), help="Only hosts or only agents.")
@click.option("--domain", help="Only this domain.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def nodes(type_: str | None, domain: str | None, as_json: bool) -> None:
    """Print the node list: every host and agent, where it is, when it was last heard of."""
    import time

    from rich.table import Table

    from masa import admin
    from masa.progress import console

    rows = admin.node_list(_settings(), type_, domain)
    if as_json:
        _print_json(rows)
        return
    table = Table("name", "type", "kind", "domain", "location", "status", "last heartbeat")
    now = time.time()
    from masa.naming import short

    for r in rows:
        age = f"{now - r['last_heartbeat']:.1f} s ago" if r.get("last_heartbeat") else "-"
        colour = {"up": "green", "down": "red"}.get(r["status"], "yellow")
        location = short(r.get("location") or "") if r["type"] == "agent" else r.get("location") or ""
        table.add_row(short(r["name"]), r["type"], r.get("kind") or "", r.get("domain") or "", location, f"[{colour}]{r['status']}[/]", age)
    console().print(table)


@main.command()
@click.argument("names", nargs=-1, required=True)
def forget(names: tuple[str, ...]) -> None:
    """Remove hosts or agents that are gone for good from the node list (not one that is up)."""
    from masa import admin

    settings = _settings()
    for name in names:
        click.echo(f"forgot {admin.forget(settings, name)}")


@main.command()
@click.option("--kind", help="Only agents of this kind.")
@click.option("--domain", help="Only agents of this domain.")
def agents(kind: str | None, domain: str | None) -> None:
    """List the agents registered with the location broker."""
    from masa import admin

    for name, (uri, meta) in sorted(admin.find_agents(_settings(), kind=kind, domain=domain).items()):
        click.echo(f"{name:24} {meta.get('kind', ''):12} {meta.get('domain', ''):8} {meta.get('host', ''):10} {uri}")


@main.command()
@click.argument("agent")
@click.argument("target_host")
def move(agent: str, target_host: str) -> None:
    """Move AGENT to TARGET_HOST (two-phase handover; on failure it stays where it was)."""
    from masa import admin

    r = admin.move(_settings(), agent, target_host)
    click.echo(f"moved {r['agent']} from {r['from']} to {r['to']} in {r['seconds'] * 1e3:.1f} ms")


def _lifecycle_command(action: str, past: str, why: str) -> None:
    @main.command(name=action, help=f"{action.capitalize()} AGENT where it runs: {why}")
    @click.argument("agent")
    def command(agent: str) -> None:
        from masa import admin

        settings = _settings()
        admin.require_known(settings, agent)
        click.echo(f"{past} {agent} on {admin.lifecycle(settings, agent, action)}")


_lifecycle_command("suspend", "suspended",
                   "its calls and tasks stop (callers are told), its state is kept at once.")
_lifecycle_command("resume", "resumed", "a suspended agent goes on where it stopped.")
_lifecycle_command("terminate", "terminated",
                   "it stops for good and its name goes from the broker; its data stays in its store.")


@main.command()
@click.argument("agent")
@click.argument("operation")
@click.argument("args", nargs=-1)
@click.option("--configure", "interface", flag_value="configure", help="Call the configuration interface.")
@click.option("--timeout", default=10.0, show_default=True, help="Deadline in seconds.")
def query(agent: str, operation: str, args: tuple[str, ...], interface: str | None, timeout: float) -> None:
    """Call OPERATION on AGENT with key=value ARGS; prints the answer as JSON."""
    from masa import admin, config
    from masa.ref import AgentRef

    settings = _settings()
    config.apply(settings)
    admin.require_known(settings, agent)
    ref = AgentRef(agent, settings, timeout=timeout)
    _print_json(_readable(ref.call(interface or "query", operation, _kv(args))))



_WIRE_SERIES = {"object", "unit", "start", "end", "value"}


def _readable(data):
    """An answer made fit for JSON: activity series in wire form (``masa.activity``)
    become lists of numbers, other bytes base64 text (``"base64:..."``)."""
    import base64

    if isinstance(data, dict):
        if data.keys() == _WIRE_SERIES and all(isinstance(data[k], bytes) for k in ("start", "end", "value")):
            from masa.activity import Series

            try:
                s = Series.from_wire(data)
            except (ValueError, TypeError, KeyError):
                pass
            else:
                return {"object": s.object, "unit": s.unit, "start": s.start.tolist(),
                        "end": s.end.tolist(), "value": s.value.tolist()}
        return {k: _readable(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_readable(v) for v in data]
    if isinstance(data, (bytes, bytearray, memoryview)):
        return "base64:" + base64.b64encode(bytes(data)).decode("ascii")
    return data


@main.command()
@click.argument("topology", type=click.Path(exists=True, dir_okay=False))
def deploy(topology: str) -> None:
    """Create the agents of a TOPOLOGY file on the running hosts (idempotent)."""
    from masa import topology as topo

    t = topo.load(topology)
    for line in topo.deploy(t, _settings()):
        click.echo(line)


@main.command()
@click.argument("topology", type=click.Path(exists=True, dir_okay=False))
@click.option("--deploy/--no-deploy", "do_deploy", default=True, help="Also create the topology's agents.")
def up(topology: str, do_deploy: bool) -> None:
    """Start the name server and hosts of TOPOLOGY as child processes; restart any that die.
    Ctrl-C, SIGTERM or SIGHUP (the session closed) stops them all."""
    from masa import topology as topo
    from masa.supervisor import Supervisor, exit_on_stop_signals

    t = topo.load(topology)
    _private_files()
    exit_on_stop_signals()  # until watch() takes over: a signal while starting stops the children
    with Supervisor(t, _settings()) as sup:
        sup.start()
        if do_deploy:
            for line in topo.deploy(t, sup.settings):
                click.echo(line, err=True)
        click.echo(f"up: name server + {len(t.hosts)} hosts; Ctrl-C stops them", err=True)
        sup.watch()


@main.group()
def tls() -> None:
    """TLS certificates for encrypted connections (set MASA_TLS_DIR to use them)."""


@tls.command("init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--host", "hosts", multiple=True, default=["127.0.0.1", "localhost"], show_default=True,
              help="Address or DNS name the certificate is valid for (repeatable).")
@click.option("--force", is_flag=True, help="Replace an existing CA (every machine then needs the new files).")
def tls_init(directory: str, hosts: tuple[str, ...], force: bool) -> None:
    """Create a CA and a certificate signed by it in DIRECTORY (an existing CA is kept
    unless --force)."""
    from pathlib import Path

    from masa.tls import make_certificates

    for path in make_certificates(Path(directory), list(hosts), overwrite=force):
        click.echo(path)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--platform", "platform_only", is_flag=True,
              help="Only the platform demo: 3 hosts, a cascade, agents moving under query load.")
@click.option("--moves", default=12, show_default=True, help="With --platform: how often the counter agent moves.")
@click.pass_context
def demo(ctx: click.Context, platform_only: bool, moves: int) -> None:
    """Run the founding scenario (masa scenario: two domains, a router, the dependency
    model); its options pass through: --short, --netns, --out (see masa scenario --help).
    --platform: the platform alone."""
    if not platform_only and ctx.get_parameter_source("moves") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--moves belongs to the platform demo: add --platform")
    scenario = None if platform_only else main.get_command(ctx.parent, "scenario")
    if scenario is not None and not getattr(scenario, "masa_unavailable", False):
        with scenario.make_context("masa demo", list(ctx.args), parent=ctx.parent) as sub:
            return scenario.invoke(sub)
    if ctx.args:
        raise click.UsageError(f"unexpected arguments for the platform demo: {' '.join(ctx.args)}")
    from masa.demo import run

    result = run(moves=moves)
    if result["failed"] or result["lost"]:
        raise click.ClickException(f"demo saw {len(result['failed'])} failed and {result['lost']} lost queries")
