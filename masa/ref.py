"""Reference an agent by name, wherever it currently runs.

A caller never holds an address: the reference resolves the name through the location
broker, remembers the answer, and when the agent has moved (``AgentMoved`` carries the
new address), its host has died or restarted, or the name is not registered yet, it
looks again and retries until the call's deadline.  Queries arriving during a move are
therefore answered, not dropped.

A query may be sent again whenever its connection fails (queries only read).  A configure
operation is sent again only when it certainly was not sent, or was answered without
being run (``AgentMoved``, ``AgentNotHere``, an unknown object): its connection is made,
or a kept one checked, before the request goes out, and once the request has gone out a
lost connection raises ``OutcomeUnknown`` instead of running the operation a second time.

Pyro5 proxies belong to one thread, so each thread gets its own proxy; the resolved
address is shared by all threads of the process.
"""

from __future__ import annotations

import select
import threading
import time
from typing import Any

import Pyro5.errors

from masa.agent import CONFIGURE, QUERY
from masa.config import Settings
from masa.errors import (
    AgentMoved,
    AgentNotFound,
    AgentNotHere,
    BadRequest,
    MasaError,
    OutcomeUnknown,
    PayloadTooLarge,
    QueryTimeout,
    Redirect,
    brief,
)
from masa.naming import NameService, agent_name, short
from masa.security import Proxy

MAX_REDIRECTS = 8  # a longer chain of "ask X instead" is a loop
#: longest wait for one call: a host gives a handler at most an hour anyway, and a socket
#: timeout beyond about 9e9 s overflows, which Pyro5 reports as a connection failure
#: that would be retried until a deadline centuries away
MAX_CALL_TIMEOUT = 86400.0

_locations: dict[str, str] = {}  # agent name -> last known URI, shared by all refs
_locations_lock = threading.Lock()
_local = threading.local()


def _name_service(settings: Settings) -> NameService:
    ns = getattr(_local, "ns", None)
    if ns is None or ns.settings is not settings:
        ns = _local.ns = NameService(settings)
    return ns


def _budget(timeout: Any) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= MAX_CALL_TIMEOUT:
        raise BadRequest(f"a call's timeout is a number of seconds in (0, {MAX_CALL_TIMEOUT:g}], not {brief(timeout)}")
    return float(timeout)


class AgentRef:
    """A by-name handle on an agent: ``ref.query("op", arg=...)``, ``ref.configure(...)``."""

    def __init__(self, name: str, settings: Settings, timeout: float | None = None) -> None:
        self.name = short(name)
        self.settings = settings
        self.timeout = _budget(timeout or settings.call_timeout)
        self._ns_name = agent_name(name)
        self._local = threading.local()
        self.retries = 0  # how often a call had to find the agent again (moves, restarts)
        self.redirected_from: list[str] = []  # agents that told us to ask this one instead

    def __repr__(self) -> str:
        return f"AgentRef({self.name!r})"

    # -- the two interfaces -------------------------------------------------------------

    def query(self, op: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        return self.call(QUERY, op, kwargs, timeout)

    def configure(self, op: str, /, timeout: float | None = None, **kwargs: Any) -> Any:
        return self.call(CONFIGURE, op, kwargs, timeout)

    def push(self, op: str, /, **kwargs: Any) -> None:
        """One-way query: returns once sent, never waits for the agent.  Pushes are how
        data flows *up* a cascade, so a cycle of agents can never block on itself."""
        self._attempt(lambda proxy: proxy.push(op, kwargs), self.timeout)

    def call(self, interface: str, op: str, kwargs: dict, timeout: float | None = None) -> Any:
        budget = _budget(timeout) if timeout else self.timeout
        what = f"{self.name}.{op}" if isinstance(op, str) else self.name
        return self._attempt(lambda proxy: proxy.invoke(interface, op, kwargs, budget), budget,
                             once=what if interface == CONFIGURE else None)

    def release(self) -> None:
        proxy = getattr(self._local, "proxy", None)
        if proxy is not None:
            proxy._pyroRelease()
        self._local.proxy = self._local.uri = self._local.timeout = None

    # -- finding the agent --------------------------------------------------------------

    def _attempt(self, send, budget: float, once: str | None = None):
        """Call ``send(proxy)`` until it is answered or the deadline passes, following the
        agent.  ``once``: the call (``agent.op``) must not run twice (a configure
        operation): it is sent again only if it certainly was not sent before, else
        ``OutcomeUnknown``."""
        deadline = time.monotonic() + budget
        delay = 0.01
        last: Exception | None = None
        redirects = 0
        local = self._local
        while True:
            local.sent = False
            try:
                proxy = self._proxy(deadline)
                if local.timeout != budget:  # a socket option: set only when it changes
                    proxy._pyroTimeout = local.timeout = budget
                if once is not None:
                    self._connect(proxy)  # any failure up to here: nothing was sent
                answer = send(proxy)
                local.used = time.monotonic()
                return answer
            except Redirect as redirect:
                redirects += 1
                if redirects > MAX_REDIRECTS:
                    raise Redirect(f"more than {MAX_REDIRECTS} redirects from {self.name!r}") from None
                self._follow(str(redirect.args[1]))
                continue
            except AgentMoved as moved:
                self._relocate(str(moved.args[1]) if len(moved.args) > 1 else None)
                last = moved
                continue  # the new address is known: no need to wait
            except AgentNotHere as exc:
                last = exc
                self._relocate(None)
            except Pyro5.errors.TimeoutError:
                self.release()
                if once is not None and local.sent:
                    raise QueryTimeout(f"{once} did not answer within {budget:g} s; the operation may "
                                       "or may not have taken effect") from None
                raise QueryTimeout(f"agent {self.name!r} did not answer within {budget:g} s") from None
            except Pyro5.errors.ProtocolError as exc:
                self.release()
                if "too large" in str(exc):
                    raise PayloadTooLarge(f"message to/from {self.name!r} too large: {exc}") from None
                raise
            except Pyro5.errors.DaemonError as exc:  # "unknown object": moved or host restarted
                last = exc
                self._relocate(None)
            except Pyro5.errors.CommunicationError as exc:  # host down, restarting or moving
                last = exc
                self._relocate(None)
                if once is not None and local.sent:
                    # The request went out whole: the host may have run it before the
                    # connection dropped (it died, or restarted, mid-call).  Sending it again
                    # could run it twice; only the caller can tell whether that is harmless.
                    raise OutcomeUnknown(
                        f"{once}: the connection to its host was lost after the request was sent "
                        f"({type(exc).__name__}: {exc}); the operation may or may not have taken "
                        "effect and is not sent again: query the agent to find out") from None
            except AgentNotFound as exc:
                last = exc
            self.retries += 1
            left = deadline - time.monotonic()
            if left <= 0:
                if isinstance(last, MasaError):
                    raise last
                raise AgentNotFound(f"agent {self.name!r} unreachable: {last}")
            time.sleep(min(delay, left))
            delay = min(delay * 2, 0.25)

    def _connect(self, proxy: Proxy) -> None:
        """Have ``proxy`` connected before a request that must not be sent twice goes out,
        so that failing to connect (refused, no such host, handshake) is told apart from
        losing the connection after the request was sent (``local.sent``).  A kept
        connection is used only if its host has not closed it meanwhile (it restarted, or
        closed the connection as idle: the request would be written into a closed
        connection and its loss would look like a host dying mid-call) and it has not been
        idle for half the idle timeout (a host closing it just as the request goes out)."""
        local = self._local
        conn = proxy._pyroConnection
        if conn is not None and (time.monotonic() - getattr(local, "used", 0.0) > self.settings.idle_timeout / 2
                                 or _closed_by_peer(conn.sock)):
            proxy._pyroRelease()
            conn = None
        if conn is None:
            proxy._pyroBind()
            conn = proxy._pyroConnection
            local.used = time.monotonic()
        if not getattr(conn, "_masa_counts_sent", False):
            plain = conn.send

            def send(data: bytes) -> None:
                plain(data)  # raises unless all of it went out
                local.sent = True

            conn.send = send
            conn._masa_counts_sent = True

    def _proxy(self, deadline: float) -> Proxy:
        local = self._local
        uri = _locations.get(self.name)
        if uri is not None and getattr(local, "uri", None) == uri:
            return local.proxy
        if uri is None:
            uri = str(_name_service(self.settings).lookup(self._ns_name, deadline=deadline))
            with _locations_lock:
                _locations[self.name] = uri
        self.release()
        local.proxy, local.uri, local.timeout = Proxy(uri, self.settings.secret), uri, None
        return local.proxy

    def _follow(self, name: str) -> None:
        """Switch this reference to another agent for good ("ask X from now on")."""
        self.release()
        self.redirected_from.append(self.name)
        self.name, self._ns_name = short(name), agent_name(name)

    def _relocate(self, uri: str | None) -> None:
        self.release()
        with _locations_lock:
            if uri:
                _locations[self.name] = uri
            else:
                _locations.pop(self.name, None)


def _closed_by_peer(sock: Any) -> bool:
    """Whether an idle connection has something to read: the peer closed it (end of file,
    or a reset), or sent what nobody asked for.  Either way it is not used for a call."""
    try:
        poller = select.poll()  # not select(): a busy process has descriptors past 1024
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):  # closed here already
        return True
