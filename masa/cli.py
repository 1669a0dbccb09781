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
            command = plugins[name].load()
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
