"""The location broker: names and metadata in the Pyro5 name server.

Hosts register as ``masa.host.<name>``, agents as ``masa.agent.<name>``; metadata tags
(``kind:collector``, ``domain:A``, ``host:h1``) make "all collectors of domain A" one
lookup.  Peers start in any order, so a lookup that finds nothing sleeps and retries with
backoff until its deadline instead of failing at once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import Pyro5.errors
from Pyro5.core import URI

from masa.config import Settings
from masa.errors import AgentNotFound, BadRequest, cut
from masa.security import Proxy

HOST_PREFIX = "masa.host."
AGENT_PREFIX = "masa.agent."
REGISTRY = "masa.registry"


def host_name(name: str) -> str:
    return name if name.startswith(HOST_PREFIX) else HOST_PREFIX + name


def agent_name(name: str) -> str:
    return name if name.startswith(AGENT_PREFIX) else AGENT_PREFIX + name


#: longest host or agent name: the node list keeps ``masa.agent.<name>`` in 255 characters
MAX_NAME = 128
#: no host or agent may be called ``masa.*``: ``masa.agent.X`` is agent X's own object id
RESERVED_PREFIX = "masa."


def check_name(name: object, what: str) -> None:
    """Host and agent names become Pyro5 object ids, URIs, broker names and log lines: no
    separators, no white space or control characters (a URI ends at white space), none
    that would be taken for another object's id, and short enough for the node list."""
    if (not isinstance(name, str) or not 0 < len(name) <= MAX_NAME or name.startswith(RESERVED_PREFIX)
            or not name.isprintable() or any(c.isspace() or c in "/\\:@" for c in name)):
        raise BadRequest(f"invalid {what} name {cut(repr(name), 62)}: 1-{MAX_NAME} printable characters without "
                         f"spaces or any of / \\ : @, not starting with {RESERVED_PREFIX!r}")


def describe(name: str) -> str:
    """``host 'h1'``, ``agent 'a1'`` or the name itself: what an error is about."""
    kind = "host" if name.startswith(HOST_PREFIX) else "agent" if name.startswith(AGENT_PREFIX) else None
    return f"{kind} {short(name)!r}" if kind else repr(name)


def short(name: str) -> str:
    for prefix in (HOST_PREFIX, AGENT_PREFIX):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def tags(**meta: str) -> set[str]:
    return {f"{k}:{v}" for k, v in meta.items() if v is not None}


def untag(metadata: set[str] | list[str]) -> dict[str, str]:
    return dict(m.split(":", 1) for m in metadata if ":" in m)


def backoff(deadline: float, first: float = 0.02, cap: float = 0.5) -> Iterator[int]:
    """Attempt numbers until ``deadline`` (monotonic), sleeping between them."""
    attempt, delay = 0, first
    while True:
        yield attempt
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(delay, left))
        delay = min(delay * 2, cap)


class NameService:
    """A thread-confined client of the name server (one per thread, as Pyro5 wants)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._proxy: Proxy | None = None

    @property
    def proxy(self) -> Proxy:
        if self._proxy is None:
            uri = f"PYRO:Pyro.NameServer@{self.settings.ns_host}:{self.settings.ns_port}"
            self._proxy = Proxy(uri, self.settings.secret, timeout=self.settings.call_timeout)
        return self._proxy

    def close(self) -> None:
        if self._proxy is not None:
            self._proxy._pyroRelease()
            self._proxy = None

    def _call(self, method: str, *args, **kwargs):
        try:
            return getattr(self.proxy, method)(*args, **kwargs)
        except Pyro5.errors.CommunicationError:
            self.close()  # reconnect on the next call
            raise

    def register(self, name: str, uri: str | URI, metadata: set[str]) -> None:
        self._call("register", name, str(uri), safe=False, metadata=metadata)

    def remove(self, name: str, uri: str | URI | None = None) -> bool:
        """Remove ``name``; with ``uri``, only while the name still points at that address
        (a host removes its own registration, never the one another host made since).
        The name server has no compare-and-remove: a re-registration between the look-up
        and the removal is the one case this cannot see.  True if it was removed."""
        if uri is not None:
            try:
                current = self._call("lookup", name)
            except Pyro5.errors.NamingError:
                return False
            if str(current) != str(uri):
                return False
        return bool(self._call("remove", name))

    def lookup(self, name: str, deadline: float | None = None, wait: float = 5.0) -> URI:
        """Resolve ``name``, retrying until ``deadline`` (monotonic) or ``wait`` seconds."""
        deadline = deadline if deadline is not None else time.monotonic() + wait
        last: Exception | None = None
        for _ in backoff(deadline):
            try:
                return self._call("lookup", name)
            except Pyro5.errors.NamingError as exc:
                last = exc
            except Pyro5.errors.CommunicationError as exc:
                last = exc
        what = "name server unreachable" if isinstance(last, Pyro5.errors.CommunicationError) \
            else "not registered"
        raise AgentNotFound(f"{describe(name)} not found ({what}) at {self.settings.ns_address}")

    def lookup_meta(self, name: str) -> tuple[URI, dict[str, str]]:
        uri, meta = self._call("lookup", name, return_metadata=True)
        return uri, untag(meta)

    def find(self, prefix: str = "masa.", **meta: str) -> dict[str, tuple[str, dict[str, str]]]:
        """Names under ``prefix`` whose metadata has every given ``key:value``."""
        wanted = tags(**meta)
        if wanted:
            found = self._call("yplookup", meta_all=wanted, return_metadata=True)
        else:
            try:
                found = self._call("list", prefix=prefix, return_metadata=True)
            except Pyro5.errors.SerializeError:
                found = self._list_untagged(prefix)
        return {
            name: (str(uri), untag(m or ()))
            for name, (uri, m) in found.items()
            if name.startswith(prefix)
        }

    def _list_untagged(self, prefix: str) -> dict[str, tuple[str, set[str]]]:
        """``list`` with metadata when some name was registered without any: Pyro5's name
        server keeps "none" as a ``frozenset``, which it cannot send, so one such name
        fails the whole answer.  Ask for the names alone, take the tags of masa's own
        registrations in one search, and look the rest up one by one."""
        uris = self._call("list", prefix=prefix)
        tagged = self._call("yplookup", meta_any={"masa:agent", "masa:host"}, return_metadata=True)
        found: dict[str, tuple[str, set[str]]] = {}
        for name, uri in uris.items():
            if name in tagged:
                found[name] = (str(uri), set(tagged[name][1] or ()))
                continue
            try:
                _, m = self._call("lookup", name, return_metadata=True)
            except Pyro5.errors.PyroError:
                m = set()
            found[name] = (str(uri), set(m or ()))
        return found
