"""Authenticated connections: an HMAC challenge on Pyro5's connection handshake.

The shared secret never crosses the wire.  Pyro5's connect message carries
``{"handshake": hello, "object": OBJECT}``; masa's hello is
``{"v": 2, "ts": TS, "nonce": NONCE, "mac": MAC}`` with

    MAC = HMAC-SHA256(secret, json.dumps(["client", OBJECT, PORT, TS, NONCE]))  (hex)

OBJECT is the Pyro object id the client connects to (the connect message's ``"object"``),
PORT (an integer) the TCP port it connects to (the server takes the port of the socket
that accepted the connection, so host names and aliases do not matter; 0 for a Unix
socket), TS the client's clock (``repr`` of a float) and NONCE 16 fresh random bytes in
hex; the JSON list (Python's default separators) keeps the fields apart whatever they
contain.  The server refuses the connection with ``"authentication failed: ..."`` unless

* ``v`` is 2 (else it names the version: masa versions differ);
* the MAC matches (else: wrong secret, or a hello made for another daemon or object);
* TS is within ``CLOCK_WINDOW`` (300 s) of its clock;
* TS is not older than the daemon's own start minus ``RESTART_TOLERANCE`` (2 s), so a
  hello recorded before a restart cannot be replayed after it (a client whose clock is
  more than 2 s behind is refused for that long after a daemon starts);
* the nonce was not seen before by this daemon process (replay).

It then proves itself with ``{"mac": HMAC-SHA256(secret, json.dumps(["server", NONCE]))}``.
Authentication is mutual, per connection.  A captured hello is good for one connection to
the daemon and object it was made for and no other.  Not covered: the host, so a daemon
on *another machine* listening on the same port and serving the same object id (an agent
that moved there) takes a hello not yet used within the clock window; a hello recorded
less than 2 s before a restart; and a client reaching a daemon through a port forward
that changes the port number cannot authenticate.

Before authentication a daemon also (:meth:`AuthDaemonMixin._handshake`) gives a new
connection ``HANDSHAKE_TIMEOUT`` (5 s) to complete its TLS handshake and send its connect
message, and refuses, on the message header alone, any serializer but msgpack
(``refused: serializer id N (NAME); masa accepts msgpack only``) and any compressed
message (``refused: compressed message ...``); :func:`masa.config.guard_wire` applies
these two to every message this process receives, server or client side, before or after
authentication.  Without TLS the traffic after the handshake is readable on the network;
``MASA_TLS_DIR`` turns on Pyro5's two-way TLS (see :mod:`masa.tls`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import threading
import time
import uuid

import Pyro5.client
import Pyro5.core
import Pyro5.errors
import Pyro5.protocol
import Pyro5.serializers
import Pyro5.server
from Pyro5.callcontext import current_context

from masa import config
from masa.errors import AuthenticationError
from masa.sockets import deadline_in_kernel

log = logging.getLogger("masa.security")

VERSION = 2  # of the hello; a client of another version is refused by name
CLOCK_WINDOW = 300.0  # seconds of clock difference tolerated between machines
RESTART_TOLERANCE = 2.0  # a hello may be this much older than the daemon it reaches
#: seconds a new connection has for its TLS handshake and its connect message (at most
#: the idle timeout); a silent or slow client then frees its worker
HANDSHAKE_TIMEOUT = 5.0
#: the same while the accept thread itself answers "no free workers": it serves everyone
DENY_TIMEOUT = 1.0


def _mac(secret: bytes, *parts: object) -> str:
    return hmac.new(secret, json.dumps(parts).encode(), hashlib.sha256).hexdigest()


def client_hello(secret: bytes, object_id: str, port: int, ts: float | None = None) -> dict:
    """The hello for one connection to ``object_id`` on port ``port``."""
    stamp, nonce = repr(time.time() if ts is None else ts), secrets.token_hex(16)
    return {"v": VERSION, "ts": stamp, "nonce": nonce,
            "mac": _mac(secret, "client", object_id, port, stamp, nonce)}


class _NonceCache:
    """Nonces seen inside the clock window; older ones cannot be replayed anyway."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def fresh(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {n: t for n, t in self._seen.items() if now - t < 2 * CLOCK_WINDOW}
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


def check_hello(secret: bytes, hello: object, nonces: _NonceCache, *, object_id: object,
                port: int, started: float = 0.0) -> dict:
    """Validate a client's hello for a connection to ``object_id`` on ``port`` of a daemon
    that started at ``started``; return the server's proof or raise AuthenticationError."""
    if not isinstance(hello, dict) or not {"ts", "nonce", "mac"} <= hello.keys():
        raise AuthenticationError("missing or malformed authentication (wrong MASA secret setup?)")
    if hello.get("v") != VERSION:
        raise AuthenticationError(f"authentication failed: handshake version {hello.get('v')!r}, "
                                  f"this daemon speaks {VERSION} (masa versions differ?)")
    ts, nonce, mac = str(hello["ts"]), str(hello["nonce"]), str(hello["mac"])
    if not isinstance(object_id, str) or not hmac.compare_digest(
            mac, _mac(secret, "client", object_id, port, ts, nonce)):
        raise AuthenticationError("authentication failed: wrong shared secret "
                                  "(or a handshake made for another daemon or object)")
    now = time.time()
    try:
        stamp = float(ts)
    except ValueError:
        raise AuthenticationError("authentication failed: bad timestamp") from None
    skew = abs(now - stamp)
    if not skew <= CLOCK_WINDOW:  # also NaN
        raise AuthenticationError(f"authentication failed: clocks differ by {skew:.0f} s")
    if stamp < started - RESTART_TOLERANCE:
        raise AuthenticationError(
            f"authentication failed: handshake made {started - stamp:.0f} s before this daemon "
            f"started (replayed, or the client's clock is behind)")
    if not nonces.fresh(nonce, now):
        raise AuthenticationError("authentication failed: replayed handshake")
    return {"mac": _mac(secret, "server", nonce)}


def refused(exc: Exception) -> AuthenticationError | None:
    """The authentication error behind a refused connection, if that is what it was.

    Pyro5 reports a handshake the server refused as a CommunicationError; retrying it
    would only hide a wrong secret behind a time-out, so callers re-raise this at once."""
    if isinstance(exc, AuthenticationError):
        return exc
    reason = str(exc).partition("rejected:")[2].strip()
    if isinstance(exc, Pyro5.errors.CommunicationError) and "authentication" in reason:
        return AuthenticationError(reason)
    return None


@contextlib.contextmanager
def _auth_errors():
    try:
        yield
    except Pyro5.errors.CommunicationError as exc:
        if auth := refused(exc):
            raise auth from None
        raise


def _local_port(sock) -> int:
    name = sock.getsockname()
    return name[1] if isinstance(name, tuple) else 0  # a Unix socket: no port


class AuthDaemonMixin:
    """Mix into a Pyro5 daemon class so every connection must authenticate first."""

    _masa_secret: bytes = b""

    def __init__(self, *args, **kwargs) -> None:
        if not self._masa_secret:
            raise config.WeakSecret("refusing to serve with an empty shared secret: anybody could "
                                    "authenticate")
        config.guard_wire()
        self._masa_nonces = _NonceCache()
        self._masa_started = time.time()  # before the socket listens: no honest hello is older
        super().__init__(*args, **kwargs)
        listening = self.sock
        if isinstance(listening, ssl.SSLSocket):
            # Pyro5 runs the TLS handshake inside accept(), in the accept thread and without
            # a deadline; deferred, it runs in _handshake under HANDSHAKE_TIMEOUT
            listening.do_handshake_on_connect = False

    def validateHandshake(self, conn, data):  # noqa: N802 - Pyro5's name
        """Pyro5's hook, not used: :meth:`_handshake` checks the whole connect message."""
        raise AuthenticationError("missing or malformed authentication (wrong MASA secret setup?)")

    def _handshake(self, conn, denied_reason=None):
        """Pyro5's ``Daemon._handshake``, narrowed.  It is overridden because Pyro5's own

        * reads the connect message under the idle timeout (60 s of a worker, or of the
          accept thread while it denies a connection because the pool is full) and, with
          TLS, leaves the TLS handshake to ``accept()`` (no deadline, in the accept thread);
        * answers a failure that comes before it read the client's serializer id (the
          pool-full denial, a refused header) in marshal, which masa's clients refuse;
        * passes only the hello to ``validateHandshake``, not the object id the MAC covers.

        Here TLS handshake and connect message must arrive within ``HANDSHAKE_TIMEOUT``
        (``DENY_TIMEOUT`` when denying), every answer is msgpack, the idle timeout comes
        back only after success, and no error escapes (the caller closes the connection)."""
        sock = conn.sock
        idle = sock.gettimeout()
        deadline = DENY_TIMEOUT if denied_reason else HANDSHAKE_TIMEOUT
        sock.settimeout(min(deadline, idle) if idle else deadline)
        try:
            if isinstance(sock, ssl.SSLSocket):
                sock.do_handshake()  # plain TCP, no certificate, another CA or silence: out
        except (OSError, ValueError) as exc:
            log.debug("TLS handshake failed: %s", exc)
            return False
        ser = Pyro5.serializers.serializers[config.SERIALIZER]
        seq = 0
        try:
            msg = Pyro5.protocol.recv_stub(conn, [Pyro5.protocol.MSG_CONNECT])
            seq = msg.seq
            if denied_reason:
                raise Pyro5.errors.CommunicationError(denied_reason)
            current_context.correlation_id = (
                uuid.UUID(bytes=bytes(msg.corr_id)) if msg.flags & Pyro5.protocol.FLAGS_CORR_ID
                else uuid.uuid4())
            data = ser.loads(msg.data)
            if not isinstance(data, dict):
                raise AuthenticationError("missing or malformed authentication (wrong MASA secret setup?)")
            proof = check_hello(self._masa_secret, data.get("handshake"), self._masa_nonces,
                                object_id=data.get("object"), port=_local_port(sock),
                                started=self._masa_started)
            daemon_object = self.objectsById[Pyro5.core.DAEMON_NAME]
            answer = {"handshake": proof, "meta": daemon_object.get_metadata(data["object"])}
            payload, msgtype = ser.dumps(answer), Pyro5.protocol.MSG_CONNECTOK
        except (Pyro5.errors.ConnectionClosedError, Pyro5.errors.TimeoutError, OSError) as exc:
            log.debug("handshake failed: %s", exc)
            return False
        except Exception as exc:  # noqa: BLE001 - every refusal is answered with its reason
            log.debug("handshake refused: %s", exc)
            payload, msgtype = ser.dumps(str(exc)), Pyro5.protocol.MSG_CONNECTFAIL
        try:
            reply = Pyro5.protocol.SendingMessage(msgtype, 0, seq, ser.serializer_id, payload,
                                                  annotations=self.annotations())
            conn.send(reply.data)
        except (Pyro5.errors.PyroError, OSError) as exc:
            log.debug("handshake answer not sent: %s", exc)
            return False
        if msgtype != Pyro5.protocol.MSG_CONNECTOK:
            return False
        deadline_in_kernel(sock, idle)
        return True


class Daemon(AuthDaemonMixin, Pyro5.server.Daemon):
    def __init__(self, secret: bytes, **kwargs) -> None:
        self._masa_secret = secret
        super().__init__(**kwargs)


class Proxy(Pyro5.client.Proxy):
    """A Pyro5 proxy that authenticates each new connection with a fresh nonce."""

    def __init__(self, uri, secret: bytes, timeout: float | None = None) -> None:
        config.guard_wire()
        object.__setattr__(self, "_masa_secret", secret)
        object.__setattr__(self, "_masa_nonce", None)
        super().__init__(uri)
        if timeout:
            self._pyroTimeout = timeout

    @property
    def _pyroHandshake(self):  # noqa: N802 - Pyro5's name; read once per connect
        uri = self._pyroUri  # masa's proxies hold PYRO: URIs, the object and port connected to
        hello = client_hello(self._masa_secret, uri.object, uri.port or 0)
        object.__setattr__(self, "_masa_nonce", hello["nonce"])
        return hello

    @_pyroHandshake.setter
    def _pyroHandshake(self, value) -> None:  # noqa: N802 - Pyro5 assigns a default
        pass

    def _pyroValidateHandshake(self, response) -> None:  # noqa: N802
        expected = _mac(self._masa_secret, "server", self._masa_nonce or "")
        if not isinstance(response, dict) or not hmac.compare_digest(
            str(response.get("mac", "")), expected
        ):
            self._pyroRelease()
            raise AuthenticationError("server failed to prove the shared secret")
        # Pyro5's one hook after a connect: the caller's budget is the kernel's from here on
        deadline_in_kernel(self._pyroConnection.sock, self._pyroTimeout)

    # Every path that may open a connection reports a refused handshake as such.
    def _pyroInvoke(self, *args, **kwargs):  # noqa: N802
        with _auth_errors():
            return super()._pyroInvoke(*args, **kwargs)

    def _pyroGetMetadata(self, *args, **kwargs):  # noqa: N802
        with _auth_errors():
            return super()._pyroGetMetadata(*args, **kwargs)

    def _pyroBind(self):  # noqa: N802
        with _auth_errors():
            return super()._pyroBind()

    def __getstate__(self):
        raise TypeError("masa proxies are not serializable; pass agent names instead")
