"""The location broker process: Pyro5's name server plus the node-list registry.

The registry lives in the broker's process because every host already talks to the
broker; heartbeats land in one place and the store has a single writer (so SQLite is
enough for a single site).  A host silent for longer than ``STALE_FACTOR`` heartbeat
intervals is marked down — checked five times per interval, so within two intervals.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

import Pyro5.api
import Pyro5.nameserver

from masa import config, naming
from masa.config import Settings
from masa.errors import BadRequest
from masa.security import AuthDaemonMixin
from masa.store import Store

log = logging.getLogger("masa.ns")

STALE_FACTOR = 1.6


class _NameServerDaemon(AuthDaemonMixin, Pyro5.nameserver.NameServerDaemon):
    def __init__(self, secret: bytes, **kwargs) -> None:
        self._masa_secret = secret
        super().__init__(**kwargs)


@Pyro5.api.expose
class Registry:
    """Receives heartbeats and answers for the node list."""

    def __init__(self, store: Store, heartbeat: float) -> None:
        self.store = store
        self.heartbeat_interval = heartbeat
        self._lock = threading.Lock()
        self._heard: set[str] = set()  # hosts that have beaten since this broker started

    def heartbeat(self, host: str, domain: str, address: str, resources: dict,
                  agents: list[dict]) -> bool:
        """Record a host's beat; True tells the host to register its names again: when it
        was down, and on its first beat to this broker process.  The node list outlives a
        broker restart in its store, the name table does not; a host whose beat reached a
        restarted broker before its sweeper had marked the host down was told "you were
        up" and never registered again (6 of 12 restarts lost names in a fault hunt)."""
        with self._lock:
            rejoined = self.store.record_heartbeat(host, domain, address, resources, agents, time.time())
            first = host not in self._heard
            self._heard.add(host)
            return rejoined or first

    def nodes(self, type: str | None = None, domain: str | None = None) -> list[dict]:  # noqa: A002
        return self.store.nodes(type=type, domain=domain)

    def pid(self) -> int:
        """The broker's process id: tells a supervisor its own broker from another one
        already serving on the same address."""
        return os.getpid()

    def forget(self, name: str) -> str:
        """Drop a host or agent that is gone for good from the node list (``h1`` means the
        host if there is one, else the agent); one that is up would only come back."""
        with self._lock:
            for full in (name, naming.host_name(name), naming.agent_name(name)):
                node = self.store.node(full)
                if node is not None:
                    break
            else:
                raise BadRequest(f"{name!r} is not in the node list")
            if node["status"] == "up":
                raise BadRequest(f"{node['type']} {naming.short(full)!r} is up: it would be back with "
                                 "its next heartbeat; stop it first")
            self.store.forget(full)
            return full

    def sweep(self) -> list[str]:
        """Mark hosts down that missed their heartbeats.  First the node list's file is put
        back if it was deleted or replaced under the broker (:meth:`Store.keep_file_in_place`),
        with everything it held, as a host does for its own store: the node list would
        otherwise be lost at the broker's next start, and refused connections meanwhile."""
        lost = self.store.keep_file_in_place()
        if lost is not None:
            log.warning("the node list's file %s %s; made it again%s", self.store.file, lost.why,
                        "" if lost.copy_error is None else f", EMPTY ({lost.copy_error})")
        with self._lock:
            down = self.store.mark_stale_down(time.time(), STALE_FACTOR * self.heartbeat_interval)
        for host in down:
            log.warning("host %s missed its heartbeats: marked down", naming.short(host))
        return down


def serve(settings: Settings, store_url: str | None = None) -> None:
    """Run the broker until interrupted."""
    config.apply(settings)
    store = Store(store_url or f"sqlite:///{settings.home / 'masa.db'}")
    daemon = _NameServerDaemon(settings.secret, host=settings.ns_host, port=settings.ns_port)
    registry = Registry(store, settings.heartbeat)
    uri = daemon.register(registry, naming.REGISTRY)
    daemon.nameserver.register(naming.REGISTRY, uri, metadata={"masa:registry"})
    stop = threading.Event()

    def sweeper() -> None:
        while not stop.wait(settings.heartbeat / 5):
            try:
                registry.sweep()
            except Exception:
                log.exception("node-list sweep failed")

    threading.Thread(target=sweeper, name="sweeper", daemon=True).start()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: (stop.set(), daemon.transportServer.wakeup()))
    log.info("name server at %s, store %s", settings.ns_address, store.url)
    try:
        daemon.requestLoop(lambda: not stop.is_set())
    finally:
        stop.set()
        store.close()
        daemon.sock.close()
