"""``masa model``: ask a running modeler about its dependency model from the shell.

Every subcommand is one call of the modeler's dependency-model interface through an
``AgentRef`` (so it finds the modeler wherever it runs), printed as a readable table or,
with ``--json``, exactly as the interface answers, for scripts.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from masa.errors import MasaError


def _call(modeler: str, interface: str, op: str, **kwargs: Any) -> Any:
    from masa import admin, config
    from masa.config import Settings
    from masa.ref import AgentRef

    settings = Settings.from_env()
    config.apply(settings)
    try:
        admin.require_known(settings, modeler)
        return AgentRef(modeler, settings).call(interface, op, {k: v for k, v in kwargs.items() if v is not None})
    except MasaError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=1, sort_keys=True))


def _edges(rows: list[dict], key: str, empty: str) -> None:
    if not rows:
        click.echo(empty)
    for e in rows:
        click.echo(f"{e[key]:40s} confidence {e.get('confidence', 1.0):.2f}  {e.get('evidence', '')}")


def _confidence(ctx: click.Context, param: click.Parameter, value: float) -> float:
    """The interface's own check (nan or above 1 would silently keep nothing)."""
    from modeler.interface import check_confidence

    try:
        return check_confidence(value, "--min-confidence")
    except MasaError:
        raise click.BadParameter(f"{value!r} is not a confidence between 0 and 1") from None


#: The options every question about one model version shares.
VERSION = click.option("--version", type=int, help="A model version (default: the latest).")
MIN_CONFIDENCE = click.option("--min-confidence", type=float, default=0.0, show_default=True,
                              callback=_confidence,
                              help="Only dependencies at least this confident (0 to 1).")
AS_JSON = click.option("--json", "as_json", is_flag=True, help="The interface's answer as JSON, for scripts.")


class _QuietPipe(click.Group):
    """``masa model show X | head``: a reader that stops early ends the command quietly,
    as with any Unix tool (status 141, 128 + SIGPIPE), not with a "Broken pipe" error."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # the interpreter flushes stdout once more at exit: let that go nowhere
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)


@click.group("model", cls=_QuietPipe)
def model() -> None:
    """Query a modeler's dependency model: show, deps, impact, path, diff, export, versions,
    run, page."""


@model.command()
@click.argument("modeler")
@VERSION
@click.option("--json", "as_json", is_flag=True, help="Node-link JSON with the version header.")
def show(modeler: str, version: int | None, as_json: bool) -> None:
    """The whole model of MODELER and where it came from."""
    answer = _call(modeler, "query", "model", version=version)
    if as_json:
        _echo_json(answer)
        return
    head, m = answer["version"], answer["model"]
    click.echo(f"{modeler} v{head['version']}: {len(m['nodes'])} objects, {len(m['edges'])} dependencies; "
               f"network {head['network']}; sources {', '.join(head['sources'])}; "
               f"window {head['until'] - head['since']:.0f} s")
    without = _made_without(head.get("info") or {})
    if without:
        click.echo(f"made without {without}")
    for e in sorted(m["edges"], key=lambda e: -e.get("confidence", 1.0)):
        click.echo(f"  {e['source']} -> {e['target']}  {e.get('confidence', 1.0):.2f}")


def _made_without(info: dict) -> str:
    """What a version lacks, from its provenance: agents below a source whose activity the
    run did not get (a mediator's dead source), sub-models it scored itself.  An operator
    reading the model must not take it for complete."""
    parts = [f"{name} ({why})" for name, why in sorted((info.get("sources_unavailable") or {}).items())]
    parts += [f"sub-model {name} ({why})" for name, why in sorted((info.get("submodels_unavailable") or {}).items())]
    return "; ".join(parts)


@model.command()
@click.argument("modeler")
@click.argument("obj", metavar="OBJECT")
@click.option("--dependants", is_flag=True, help="What depends on OBJECT instead.")
@MIN_CONFIDENCE
@VERSION
@AS_JSON
def deps(modeler: str, obj: str, dependants: bool, min_confidence: float, version: int | None,
         as_json: bool) -> None:
    """What OBJECT depends on directly (or, with --dependants, what depends on it)."""
    op = "dependants" if dependants else "dependencies"
    rows = _call(modeler, "query", op, object=obj, min_confidence=min_confidence, version=version)
    if as_json:
        _echo_json(rows)
    else:
        _edges(rows, "source" if dependants else "target",
               f"nothing depends on {obj}" if dependants else f"{obj} depends on nothing")


@model.command()
@click.argument("modeler")
@click.argument("obj", metavar="OBJECT")
@MIN_CONFIDENCE
@VERSION
@AS_JSON
def impact(modeler: str, obj: str, min_confidence: float, version: int | None, as_json: bool) -> None:
    """Everything that transitively depends on OBJECT (what its failure may hit)."""
    rows = _call(modeler, "query", "impact", object=obj, min_confidence=min_confidence, version=version)
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        click.echo(f"nothing depends on {obj}")
    for r in rows:
        click.echo(f"{r['object']:40s} {r['distance']} hop(s)  confidence {r['confidence']:.2f}")


@model.command()
@click.argument("modeler")
@click.argument("source")
@click.argument("target")
@MIN_CONFIDENCE
@VERSION
@AS_JSON
def path(modeler: str, source: str, target: str, min_confidence: float, version: int | None,
         as_json: bool) -> None:
    """The most confident chain of dependencies from SOURCE down to TARGET."""
    answer = _call(modeler, "query", "path", source=source, target=target, min_confidence=min_confidence,
                   version=version)
    if as_json:
        _echo_json(answer)
    elif answer is None:
        raise click.ClickException(f"{source} does not depend on {target} in this model")
    else:
        click.echo(" -> ".join(answer["path"]) + f"  (confidence {answer['confidence']:.2f})")


@model.command()
@click.argument("modeler")
@click.argument("old", type=int)
@click.argument("new", type=int, required=False)
@AS_JSON
def diff(modeler: str, old: int, new: int | None, as_json: bool) -> None:
    """What changed from version OLD to NEW (default: the latest)."""
    d = _call(modeler, "query", "diff", old=old, new=new)
    if as_json:
        _echo_json(d)
        return
    click.echo(f"v{d['from']} -> v{d['to']}")
    for key, sign in (("added_edges", "+"), ("removed_edges", "-")):
        for e in d[key]:
            click.echo(f"{sign} {e['source']} -> {e['target']}  {e.get('confidence', 1.0):.2f}")
    for e in d["changed_edges"]:
        click.echo(f"~ {e['source']} -> {e['target']}  {e['before']:.2f} -> {e['after']:.2f}")
    for key, sign in (("added_objects", "+"), ("removed_objects", "-")):
        for o in d[key]:
            click.echo(f"{sign} object {o}")


@model.command()
@click.argument("modeler")
@click.option("--format", "fmt", type=click.Choice(["json", "graphml", "dot"]), default=None,
              help="Default: from the suffix of --out, else JSON.")
@click.option("--out", "-o", type=click.Path(dir_okay=False), help="File to write (default: stdout).")
@VERSION
def export(modeler: str, fmt: str | None, out: str | None, version: int | None) -> None:
    """The model as GraphML, DOT or node-link JSON."""
    from modeler.export import format_for

    fmt = format_for(out, fmt) if out else (fmt or "json")
    text = _call(modeler, "query", "export", format=fmt, version=version)
    if out:
        Path(out).write_text(text)
        click.echo(f"{modeler} -> {out} ({fmt})")
    else:
        click.echo(text, nl=False)


@model.command()
@click.argument("modeler")
@AS_JSON
def versions(modeler: str, as_json: bool) -> None:
    """Every model version with its provenance."""
    rows = _call(modeler, "query", "versions_list")
    if as_json:
        _echo_json(rows)
        return
    if not rows:
        raise click.ClickException(f"modeler {modeler!r} has no model yet")
    for v in rows:
        info = v["info"]
        without = _made_without(info)
        click.echo(f"v{v['version']}  {info.get('objects')} objects  {info.get('pairs_scored')} pairs scored  "
                   f"network {v['network']}  sources {', '.join(v['sources'])}"
                   + (f"  made without {without}" if without else ""))


@model.command()
@click.argument("modeler")
def run(modeler: str) -> None:
    """Model now (the new version appears when the run finishes)."""
    _echo_json(_call(modeler, "configure", "run"))


@model.command()
@click.argument("modeler")
def page(modeler: str) -> None:
    """The address of MODELER's supervision page, with the token that opens it."""
    from masa.config import Settings
    from masa.naming import short
    from modeler.web.auth import page_url

    about = _call(modeler, "query", "describe")
    if "versions_list" not in about.get("query", []):
        raise click.ClickException(f"{modeler} is not a modeler (it is a {about.get('kind')} agent): "
                                   f"only modelers serve a supervision page")
    status = _call(modeler, "query", "status")
    base = status.get("http")
    if not base:
        if status.get("http_error"):
            raise click.ClickException(f"{modeler} serves no page: {status['http_error']}")
        raise click.ClickException(f"{modeler} serves no page (give it one with "
                                   f"`masa query {modeler} reconfigure --configure http=0`, 0: any free port)")
    click.echo(page_url(base, Settings.from_env().secret, short(modeler)))
