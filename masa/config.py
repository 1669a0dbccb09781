"""Settings shared by every masa process, from the environment with safe defaults.

One place decides how Pyro5 is configured (serializer, pools, limits, TLS) so that a
host, the name server and a command-line client can never disagree about the wire.  It
also narrows what this process accepts from the wire (:func:`guard_wire`): msgpack only,
never compressed, checked on a message's header before its payload is read, and calls that
carry plain data only (no objects rebuilt from the wire, no msgpack extensions).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path

import msgpack
import Pyro5
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers

from masa.errors import BadRequest, MasaError, brief

#: msgpack carries bytes natively (activity arrays travel without base64) and is the
#: fastest of Pyro5's pickle-free serializers.
SERIALIZER = "msgpack"
#: the only serializer id this process accepts on a received message
SERIALIZER_ID = Pyro5.serializers.serializers[SERIALIZER].serializer_id
#: shortest shared secret (an empty or truncated secret file is refused)
MIN_SECRET = 8
#: largest connect message (the hello and an object id: well under 1 KiB from masa): before
#: authentication nobody gets to make a daemon read and decode MASA_MAX_MESSAGE bytes
MAX_CONNECT_MESSAGE = 64 * 1024


def _home() -> Path:
    return Path(os.environ.get("MASA_HOME") or Path.home() / ".masa")


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=_home)
    ns_host: str = "127.0.0.1"
    ns_port: int = 9090
    secret: bytes = b""
    tls_dir: Path | None = None
    max_message: int = 16 * 1024 * 1024
    call_timeout: float = 10.0
    #: least time a handler may run before the host's watchdog restarts its agent from its
    #: last checkpoint (0: ``call_timeout``).  A caller's shorter timeout only ends its own
    #: wait: an impatient client must not be able to restart an agent.
    watchdog: float = 0.0
    idle_timeout: float = 60.0
    heartbeat: float = 1.0
    tick: float = 0.05  # resolution of a host's scheduler and watchdog
    threadpool: int = 160

    @classmethod
    def from_env(cls, **overrides) -> Settings:
        env = os.environ
        base = cls()
        ns = env.get("MASA_NS", f"{base.ns_host}:{base.ns_port}")
        host, _, port = ns.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise MasaError(f"MASA_NS={ns}: expected HOST:PORT of the name server, e.g. 127.0.0.1:9090")
        tls = env.get("MASA_TLS_DIR")
        s = replace(
            base,
            ns_host=host or base.ns_host,
            ns_port=int(port),
            tls_dir=Path(tls) if tls else None,
            max_message=int(env.get("MASA_MAX_MESSAGE", base.max_message)),
            call_timeout=float(env.get("MASA_CALL_TIMEOUT", base.call_timeout)),
            watchdog=float(env.get("MASA_WATCHDOG", base.watchdog)),
            heartbeat=float(env.get("MASA_HEARTBEAT", base.heartbeat)),
            idle_timeout=float(env.get("MASA_IDLE_TIMEOUT", base.idle_timeout)),
            tick=float(env.get("MASA_TICK", base.tick)),
        )
        s = replace(s, **overrides)
        if not s.secret:
            s = replace(s, secret=load_secret(s.home))
        return s

    @property
    def watchdog_floor(self) -> float:
        """The shortest deadline a host's watchdog grants a handler."""
        return self.watchdog if self.watchdog > 0 else self.call_timeout

    @property
    def ns_address(self) -> str:
        return f"{self.ns_host}:{self.ns_port}"

    def child_env(self) -> dict[str, str]:
        """Environment that makes a child process use these same settings."""
        env = dict(os.environ)
        env.update({
            "MASA_HOME": str(self.home),
            "MASA_NS": self.ns_address,
            "MASA_SECRET": self.secret.decode(),
            "MASA_HEARTBEAT": str(self.heartbeat),
            "MASA_MAX_MESSAGE": str(self.max_message),
            "MASA_CALL_TIMEOUT": str(self.call_timeout),
            "MASA_WATCHDOG": str(self.watchdog),
            "MASA_IDLE_TIMEOUT": str(self.idle_timeout),
            "MASA_TICK": str(self.tick),
        })
        if self.tls_dir:
            env["MASA_TLS_DIR"] = str(self.tls_dir)
        return env


class SecretFileMissing(MasaError):
    """``MASA_SECRET_FILE`` names a file that does not exist."""


class WeakSecret(MasaError):
    """The shared secret is empty or too short to be one."""


def check_secret(secret: bytes, source: str, minimum: int = MIN_SECRET) -> bytes:
    """``secret``, unless it is shorter than ``minimum`` bytes (``source`` says where it
    came from): with an empty secret anybody could compute every MAC."""
    if len(secret) < minimum:
        what = "is empty" if not secret else f"has only {len(secret)} bytes"
        raise WeakSecret(f"the shared secret from {source} {what}; it needs at least {minimum} "
                         f"bytes (an empty or truncated file? copy the deployment's secret there)")
    return secret


def load_secret(home: Path) -> bytes:
    """The shared secret: ``MASA_SECRET``, else ``MASA_SECRET_FILE``, else ``HOME/secret``.

    A missing ``HOME/secret`` is created (mode 0600) so that a single-machine setup works
    without ceremony; a multi-machine deployment copies that file to every machine.  A file
    named explicitly by ``MASA_SECRET_FILE`` is never created: a mistyped path would
    otherwise give this process a secret of its own that no peer shares.  A secret (variable
    or file) shorter than ``MIN_SECRET`` bytes is refused (:class:`WeakSecret`): a
    ``touch``ed or truncated file would otherwise give every process the key ``b""``."""
    if os.environ.get("MASA_SECRET"):
        return check_secret(os.environ["MASA_SECRET"].encode(), "MASA_SECRET")
    explicit = os.environ.get("MASA_SECRET_FILE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise SecretFileMissing(
                f"MASA_SECRET_FILE={explicit} {what}; point it at the deployment's secret file "
                f"(MASA_HOME/secret of the machine that created it: copy that file here), or unset "
                f"MASA_SECRET_FILE to use {home / 'secret'} (created if missing)")
        return check_secret(path.read_text().strip().encode(), f"MASA_SECRET_FILE={explicit}")
    path = home / "secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return check_secret(path.read_text().strip().encode(), str(path))


def apply(settings: Settings) -> None:
    """Configure Pyro5 for this process.  Every masa entry point calls this first."""
    c = Pyro5.config
    c.SERIALIZER = SERIALIZER
    c.SERVERTYPE = "thread"
    c.THREADPOOL_SIZE = settings.threadpool
    c.THREADPOOL_SIZE_MIN = 8
    c.COMMTIMEOUT = settings.idle_timeout  # server side: idle connections free their worker
    c.MAX_MESSAGE_SIZE = settings.max_message
    c.DETAILED_TRACEBACK = False
    c.SOCK_NODELAY = True
    c.COMPRESSION = False  # and compressed messages are refused (guard_wire)
    c.MAX_RETRIES = 0
    c.NS_HOST, c.NS_PORT = settings.ns_host, settings.ns_port
    if settings.tls_dir:
        d = settings.tls_dir
        c.SSL = True
        c.SSL_CACERTS = str(d / "ca.pem")
        c.SSL_SERVERCERT = c.SSL_CLIENTCERT = str(d / "cert.pem")
        c.SSL_SERVERKEY = c.SSL_CLIENTKEY = str(d / "key.pem")
        c.SSL_REQUIRECLIENTCERT = True
    else:
        c.SSL = False
    guard_wire()


def _check_received(msg: Pyro5.protocol.ReceivingMessage) -> None:
    """Refuse a received message on its header, before its payload is read or inflated."""
    if msg.type == Pyro5.protocol.MSG_CONNECT and msg.data_size + msg.annotations_size > MAX_CONNECT_MESSAGE:
        raise Pyro5.errors.ProtocolError(
            f"refused: connect message of {msg.data_size + msg.annotations_size} bytes "
            f"(at most {MAX_CONNECT_MESSAGE})")
    if msg.flags & Pyro5.protocol.FLAGS_COMPRESSED:
        raise Pyro5.errors.ProtocolError(
            "refused: compressed message (masa never compresses; inflating it would be unbounded)")
    # a ping's payload is never deserialized (Pyro5's own ping uses the id 42)
    if msg.serializer_id != SERIALIZER_ID and msg.type != Pyro5.protocol.MSG_PING:
        name = next((n for n, ser in Pyro5.serializers.serializers.items()
                     if ser.serializer_id == msg.serializer_id), "unknown")
        raise Pyro5.errors.ProtocolError(
            f"refused: serializer id {msg.serializer_id} ({name}); masa accepts {SERIALIZER} only")


def guard_wire() -> None:
    """Make every message this process receives (server and client side, before and after
    authentication) pass :func:`_check_received` as soon as its header is parsed.

    Pyro5 decodes whatever serializer a peer names (marshal included) and inflates a
    compressed payload without bound (``ReceivingMessage.add_payload``).  Patching the
    class once covers ``protocol.recv_stub`` everywhere; idempotent."""
    cls = Pyro5.protocol.ReceivingMessage
    if getattr(cls, "_masa_guarded", False):
        return
    parse = cls.__init__

    def __init__(self, header, payload=None):  # noqa: N807 - replaces Pyro5's constructor
        parse(self, header)
        _check_received(self)
        if payload is not None:
            self.add_payload(payload)

    cls.__init__ = __init__
    cls._masa_guarded = True
    ser = Pyro5.serializers.serializers[SERIALIZER]
    ser.loadsCall = lambda data: msgpack.unpackb(
        ser._convertToBytes(data), raw=False, object_hook=_plain_mapping, ext_hook=_no_extension)


def _plain_mapping(obj: dict) -> dict:
    """A call's arguments are plain data.  Pyro5's decoder would rebuild any mapping that
    names one of its classes: a ``Proxy`` whose next copy (a host snapshots an agent's
    state) connects wherever the caller chose, a ``Daemon``, an exception."""
    if "__class__" in obj:
        raise BadRequest(f"a call carries plain data only, not objects ({brief(obj['__class__'])})")
    return obj


def _no_extension(code: int, data: bytes) -> object:
    """Pyro5's msgpack extensions (ints beyond 64 bits, complex, dates) decode to values
    an agent's checkpoint cannot hold: refused at the door, not at the next checkpoint."""
    raise BadRequest(f"a call carries plain data only (msgpack extension {code}: an integer beyond "
                     "64 bits, a complex number or a date)")
