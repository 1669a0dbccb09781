"""The external probe: a meter served to collectors where no agent host may run.

A router or a locked-down server gets no agent host, but a small process (``masa probe``)
can run beside it or poll it; a collector elsewhere reads it over the same authenticated
Pyro5 connection as everything else.  The probe keeps nothing: each ``sample()`` returns
the rates since the previous call, so exactly one collector should read a probe.
"""

from __future__ import annotations

import logging
import threading

import click
import Pyro5.api

from masa import config
from masa.config import Settings
from masa.naming import NameService
from masa.security import Daemon, Proxy

log = logging.getLogger("masa.probe")

PREFIX = "masa.probe."


@Pyro5.api.expose
class ProbeServant:
    def __init__(self, meter, name: str) -> None:
        self._meter, self._name = meter, name
        self._lock = threading.Lock()
        self.calls = 0

    def sample(self) -> list[tuple]:
        with self._lock:
            self.calls += 1
            return [tuple(s) for s in self._meter.sample()]

    def describe(self) -> dict:
        return {"name": self._name, "kind": type(self._meter).__name__, "calls": self.calls}


def serve(name: str, meter, settings: Settings, bind: str = "127.0.0.1", port: int = 0,
          stop: threading.Event | None = None) -> None:
    config.apply(settings)
    stop = stop or threading.Event()
    daemon = Daemon(settings.secret, host=bind, port=port)
    uri = daemon.register(ProbeServant(meter, name), PREFIX + name)
    ns = NameService(settings)
    ns.register(PREFIX + name, uri, {"masa:probe"})
    ns.close()
    log.info("probe %s at %s", name, uri)
    try:
        daemon.requestLoop(lambda: not stop.is_set())
    finally:
        daemon.sock.close()


def connect(name: str, settings: Settings, wait: float = 5.0) -> Proxy:
    config.apply(settings)
    ns = NameService(settings)
    try:
        uri = ns.lookup(PREFIX + name, wait=wait)
    finally:
        ns.close()
    return Proxy(uri, settings.secret, timeout=settings.call_timeout)


@click.command("probe")
@click.argument("name")
@click.option("--label", help="Object prefix (default: this machine's name).")
@click.option("--match", help="Regular expression: processes that get their own objects.")
@click.option("--per-process", type=click.Choice(["pid", "name", "none"]), default="name", show_default=True)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Address to serve on.")
@click.option("--port", default=0, type=int, help="Port (0: any free port).")
def probe_command(name: str, label: str | None, match: str | None, per_process: str, bind: str, port: int) -> None:
    """Serve this machine's procfs meter as external probe NAME for a remote collector."""
    import signal

    from probes.procfs import ProcfsProbe

    try:
        meter = ProcfsProbe(host=label, per_process=per_process, match=match)
    except ValueError as exc:  # the label, the pattern
        raise click.UsageError(str(exc)) from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    click.echo(f"masa probe {name} serving", err=True)
    serve(name, meter, Settings.from_env(), bind, port, stop)
