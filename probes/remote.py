"""The external probe: a meter served to collectors where no agent host may run.

A router or a locked-down server gets no agent host, but a small process (``masa probe``)
can run beside it or poll it; a collector elsewhere reads it over the same authenticated
Pyro5 connection as everything else.  The probe keeps nothing: each ``sample()`` returns
the rates since the previous call, so exactly one collector should read a probe.

Whatever a caller sends or the meter does, the answer is a clear error and the probe goes
on serving: arguments are refused by name (never quoted whole), a meter's failure crosses
the wire as a :class:`~probes.errors.ProbeError` whose text is cut short, and rows are
checked to be plain data that fits one message.  Otherwise Pyro5 fails while *sending*
the answer (a class the caller cannot rebuild, an object in an exception, a message over
the size limit) and the caller sees only "unsupported serialized class" or a dropped
connection, which a collector takes for a dead probe.
"""

from __future__ import annotations

import logging
import numbers
import threading
import traceback

import click
import Pyro5.api
from Pyro5.serializers import SerializerBase

from masa import config
from masa.config import Settings
from masa.errors import BadRequest, PayloadTooLarge, brief, cut
from masa.naming import NameService
from masa.security import Daemon, Proxy
from probes.errors import AgentRestart, AuthFailure, GarbageResponse, ProbeError, ProbeTimeout

log = logging.getLogger("masa.probe")

PREFIX = "masa.probe."
ROW_OVERHEAD = 64  # msgpack bytes of one row besides its two strings (3 floats, headers)

#: the probe errors a collector tells apart: rebuilt as themselves on the caller's side
#: (both sides import this module), where Pyro5 would refuse an unknown class
WIRE_ERRORS = (ProbeError, ProbeTimeout, AuthFailure, GarbageResponse, AgentRestart)
_BY_NAME = {f"{cls.__module__}.{cls.__name__}": cls for cls in WIRE_ERRORS}
for _name in _BY_NAME:
    SerializerBase.register_dict_to_class(
        _name, lambda classname, data: SerializerBase.make_exception(_BY_NAME[classname], data))


def _no_arguments(op: str, args: tuple, kwargs: dict) -> None:
    """Refuse arguments with a message that names them briefly: Python's own TypeError
    quotes an unknown keyword whole, and an answer quoting a 15 MB name outgrows the
    message limit, so the caller saw a dropped connection instead."""
    if args or kwargs:
        got = [f"{len(args)} positional"] if args else []
        if kwargs:
            got.append("keyword " + ", ".join(brief(k) for k in list(kwargs)[:3])
                       + (f" and {len(kwargs) - 3} more" if len(kwargs) > 3 else ""))
        raise BadRequest(f"probe operation {op}() takes no arguments (got {'; '.join(got)})")


@Pyro5.api.expose
class ProbeServant:
    def __init__(self, meter, name: str) -> None:
        self._meter, self._name = meter, name
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self.calls = 0

    def sample(self, *args, **kwargs) -> list[list]:
        """The meter's rows as plain ``[object, unit, start, end, value]`` lists."""
        _no_arguments("sample", args, kwargs)
        with self._lock:
            self.calls += 1
            try:
                rows = self._meter.sample()
            except Exception as exc:  # noqa: BLE001 - any meter failure goes back as a ProbeError
                raise self._failed(exc) from None
            out = self._plain(rows)
            self._last_error = None
            return out

    def describe(self, *args, **kwargs) -> dict:
        _no_arguments("describe", args, kwargs)
        return {"name": self._name, "kind": type(self._meter).__name__, "calls": self.calls}

    def _failed(self, exc: Exception) -> ProbeError:
        """What the caller gets for a meter's exception: a probe error it can rebuild,
        with plain attributes and a text cut short.  Logged here once per distinct failure
        (with the traceback for a bug), not once per tick."""
        known = type(exc) in WIRE_ERRORS
        text = cut(str(exc) if known else f"probe {self._name}: meter failed: {type(exc).__name__}: {exc}")
        if text != self._last_error:  # the traceback's frames, not its (uncut) last line
            where = "" if known else "\n" + "".join(traceback.format_tb(exc.__traceback__))[-4000:]
            log.warning("%s%s", text, where)
        self._last_error = text
        err = (type(exc) if known else ProbeError)(text)
        if known and isinstance(getattr(exc, "target", None), str):
            err.target = exc.target
        return err

    def _plain(self, rows) -> list[list]:
        """Rows as plain data, refused whole if one is not a sample (an object in it would
        fail on the caller's side as an unknown class) or if they outgrow one message
        (the daemon would drop the connection mid-answer)."""
        limit = Pyro5.config.MAX_MESSAGE_SIZE
        out, size, row = [], 0, rows
        try:
            for row in rows:
                obj, unit, *times = row
                if (not isinstance(obj, str) or not isinstance(unit, str) or len(times) != 3
                        or not all(isinstance(x, numbers.Real) for x in times)):
                    raise ValueError
                out.append([obj, unit, float(times[0]), float(times[1]), float(times[2])])
                size += len(obj.encode()) + len(unit.encode()) + ROW_OVERHEAD
        except (TypeError, ValueError):
            raise self._failed(ProbeError(f"probe {self._name}: the meter returned an unusable row: "
                                          f"{brief(row)} (want object, unit, start, end, value)")) from None
        if limit and size > limit - 4096:
            raise PayloadTooLarge(f"probe {self._name}: {len(out)} rows, about {size} bytes, exceed the "
                                  f"message limit of {limit} bytes (MASA_MAX_MESSAGE): use --per-process "
                                  "name or none, or a narrower --match")
        return out


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
