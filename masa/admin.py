"""Operator actions from outside the agents: what the CLI, the demo and tests call.

Each function opens its own short-lived connections, so it is safe from any thread.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import Pyro5.errors

from masa import config, naming
from masa.config import Settings
from masa.errors import AgentNotFound, PayloadTooLarge
from masa.naming import NameService
from masa.security import Proxy


def _ns(settings: Settings) -> NameService:
    config.apply(settings)
    return NameService(settings)


def host_proxy(settings: Settings, host: str, timeout: float | None = None, wait: float = 5.0) -> Proxy:
    ns = _ns(settings)
    try:
        uri = ns.lookup(naming.host_name(host), wait=wait)
    finally:
        ns.close()
    return Proxy(uri, settings.secret, timeout=timeout or settings.call_timeout)


@contextmanager
def _sized(what: str) -> Iterator[None]:
    """Pyro5 refuses a message over ``MASA_MAX_MESSAGE`` with a bare ProtocolError (before
    sending it, or on reading the answer); say which call it was, as PayloadTooLarge."""
    try:
        yield
    except Pyro5.errors.ProtocolError as exc:
        if "too large" not in str(exc):
            raise
        raise PayloadTooLarge(f"{what}: message too large ({exc}); "
                              "MASA_MAX_MESSAGE limits every message") from None


def where(settings: Settings, agent: str) -> str:
    """The host an agent is registered on."""
    ns = _ns(settings)
    try:
        ns.lookup(naming.agent_name(agent), wait=2.0)
        _, meta = ns.lookup_meta(naming.agent_name(agent))
        if not meta.get("host"):
            raise AgentNotFound(f"agent {agent!r} is registered without a host tag")
        return meta["host"]
    finally:
        ns.close()


def move(settings: Settings, agent: str, target: str) -> dict:
    host_proxy(settings, target, wait=1.0)._pyroRelease()  # unknown target: say so before anything
    with host_proxy(settings, where(settings, agent), timeout=settings.call_timeout + 10) as h:
        return h.move(agent, target)


LIFECYCLE = ("suspend", "resume", "terminate")


def lifecycle(settings: Settings, agent: str, action: str) -> str:
    """Suspend, resume or terminate ``agent`` on the host it is registered on; that host's
    name.  A suspended agent stays registered (callers get ``AgentSuspended``, not a wait),
    so it is found for ``resume`` the same way."""
    if action not in LIFECYCLE:
        raise ValueError(f"unknown lifecycle action {action!r} (one of {', '.join(LIFECYCLE)})")
    host = where(settings, agent)
    host_call(settings, host, action, agent)
    return host


def create(settings: Settings, host: str, kind: str, name: str, agent_settings: dict | None = None,
           domain: str | None = None) -> dict:
    with host_proxy(settings, host) as h, _sized(f"create {name!r} on host {host!r}"):
        return h.create(kind, name, agent_settings or {}, domain)


def host_call(settings: Settings, host: str, method: str, *args: Any) -> Any:
    with host_proxy(settings, host) as h, _sized(f"{method} on host {host!r}"):
        return getattr(h, method)(*args)


def _registry(settings: Settings) -> Proxy:
    """A proxy to the broker's node-list registry (use it in a ``with``)."""
    ns = _ns(settings)
    try:
        uri = ns.lookup(naming.REGISTRY, wait=2.0)
    finally:
        ns.close()
    return Proxy(uri, settings.secret, timeout=settings.call_timeout)


def node_list(settings: Settings, type_: str | None = None, domain: str | None = None) -> list[dict]:
    with _registry(settings) as registry:
        return registry.nodes(type_, domain)


def forget(settings: Settings, name: str) -> str:
    """Remove a host or agent that is gone for good from the node list; returns its name."""
    with _registry(settings) as registry:
        return registry.forget(name)


def agent_names(settings: Settings) -> set[str]:
    """Every agent the deployment knows of: registered with the broker now, or in the
    node list (a host restarting or down; its agents come back under these names)."""
    names = set(find_agents(settings))
    names |= {naming.short(n["name"]) for n in node_list(settings, "agent")}
    return names


def require_known(settings: Settings, agent: str) -> None:
    """Raise AgentNotFound at once for a name the deployment has never heard of (a typo),
    rather than let a call wait out the deadline that gives an agent restarting or moving
    the time to come back.  A broker that cannot be asked is left to the call to report."""
    try:
        known = agent_names(settings)
    except Exception:  # noqa: BLE001
        return
    if naming.short(agent) in known:
        return
    close = difflib.get_close_matches(naming.short(agent), sorted(known), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        (f"; known agents: {', '.join(sorted(known)[:10])}" if known else "; no agents are known")
    raise AgentNotFound(f"no agent named {agent!r} is registered or in the node list{hint}")


def find_agents(settings: Settings, kind: str | None = None, domain: str | None = None,
                host: str | None = None) -> dict[str, tuple[str, dict[str, str]]]:
    ns = _ns(settings)
    try:
        meta = {k: v for k, v in (("kind", kind), ("domain", domain), ("host", host)) if v}
        found = ns.find(naming.AGENT_PREFIX, **meta)
    finally:
        ns.close()
    return {naming.short(n): v for n, v in found.items()}
