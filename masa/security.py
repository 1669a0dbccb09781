"""Authenticated connections: an HMAC challenge on Pyro5's connection handshake.

The shared secret never crosses the wire.  The client sends a fresh nonce, a timestamp
and ``HMAC(secret, "client"|ts|nonce)``; the server checks the MAC, the clock window and
that the nonce was not seen before (replay), then proves itself with
``HMAC(secret, "server"|nonce)``.  Authentication is mutual, per connection.  Without TLS
the traffic after the handshake is readable on the network; ``MASA_TLS_DIR`` turns on
Pyro5's two-way TLS (see :mod:`masa.tls`).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time

import Pyro5.client
import Pyro5.errors
import Pyro5.server

from masa.errors import AuthenticationError

CLOCK_WINDOW = 300.0  # seconds of clock difference tolerated between machines


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def client_hello(secret: bytes) -> dict:
    ts, nonce = repr(time.time()), secrets.token_hex(16)
    return {"v": 1, "ts": ts, "nonce": nonce, "mac": _mac(secret, "client", ts, nonce)}


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


def check_hello(secret: bytes, hello: object, nonces: _NonceCache) -> dict:
    """Validate a client's hello; return the server's proof or raise AuthenticationError."""
    if not isinstance(hello, dict) or not {"ts", "nonce", "mac"} <= hello.keys():
        raise AuthenticationError("missing or malformed authentication (wrong MASA secret setup?)")
    ts, nonce, mac = str(hello["ts"]), str(hello["nonce"]), str(hello["mac"])
    if not hmac.compare_digest(mac, _mac(secret, "client", ts, nonce)):
        raise AuthenticationError("authentication failed: wrong shared secret")
    now = time.time()
    try:
        skew = abs(now - float(ts))
    except ValueError:
        raise AuthenticationError("authentication failed: bad timestamp") from None
    if skew > CLOCK_WINDOW:
        raise AuthenticationError(f"authentication failed: clocks differ by {skew:.0f} s")
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


class AuthDaemonMixin:
    """Mix into a Pyro5 daemon class so every connection must authenticate first."""

    _masa_secret: bytes = b""

    def validateHandshake(self, conn, data):  # noqa: N802 - Pyro5's name
        if not hasattr(self, "_masa_nonces"):
            self._masa_nonces = _NonceCache()
        return check_hello(self._masa_secret, data, self._masa_nonces)


class Daemon(AuthDaemonMixin, Pyro5.server.Daemon):
    def __init__(self, secret: bytes, **kwargs) -> None:
        self._masa_secret = secret
        super().__init__(**kwargs)


class Proxy(Pyro5.client.Proxy):
    """A Pyro5 proxy that authenticates each new connection with a fresh nonce."""

    def __init__(self, uri, secret: bytes, timeout: float | None = None) -> None:
        object.__setattr__(self, "_masa_secret", secret)
        object.__setattr__(self, "_masa_nonce", None)
        super().__init__(uri)
        if timeout:
            self._pyroTimeout = timeout

    @property
    def _pyroHandshake(self):  # noqa: N802 - Pyro5's name; read once per connect
        hello = client_hello(self._masa_secret)
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
