"""A modeler's supervision page over the agent's life: opened at create, restore and
arrival, moved or closed by ``reconfigure``, closed before a move and at stop.

The port is bound at once, in the call that asks for it, so a port that is taken refuses
the create or reconfigure with its number; the Flask app is built on a thread, because
importing Flask takes seconds on a busy host and must not hold up that call.  Where
nobody can be told (a restore, an arrival) a port that cannot be bound leaves the agent
running without its page: :attr:`Page.error` says why, and it is tried again.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from masa.agent import Agent
from masa.errors import BadRequest

#: s between attempts to open the page's port again after it could not be bound where
#: the modeler was restored or arrived (a create or reconfigure is refused instead)
RETRY = 5.0
#: s to wait for the thread that builds the page's app when the page is closed
JOIN = 30.0

log = logging.getLogger("masa.modeler")


class Page:
    def __init__(self, agent: Agent) -> None:
        self._agent = agent
        self._lock = threading.Lock()
        self._web = None  # the WebServer, once its app is built
        self._gen = 0  # which opening is current (a closed one stops its own server)
        self._spec: tuple[str, int] | None = None  # (bind, http setting) served now
        self._thread: threading.Thread | None = None
        self._retry_at = 0.0
        self.url: str | None = None
        self.error: str | None = None  # why the page is not served although asked for

    def _wanted(self) -> tuple[str, int] | None:
        s = self._agent.settings
        return None if s.get("http") is None else (s.get("http_bind") or "127.0.0.1", s["http"])

    def open(self, sock: Any = None) -> None:
        """Serve the page as the settings say; the port is bound now (unless ``sock`` is
        already bound to it): a port that is taken raises :class:`BadRequest` naming it."""
        want = self._wanted()
        if want is None:
            return
        from modeler.web.server import listen, url_of

        if sock is None:
            sock = listen(want[0], int(want[1]))
        with self._lock:
            self._gen += 1
            self._spec, self.error = want, None
            self.url = url_of(want[0], sock.getsockname()[1])
            self._thread = threading.Thread(target=self._serve, args=(sock, self._gen), daemon=True,
                                            name=f"web-{self._agent.name}")
            self._thread.start()

    def open_or_report(self) -> None:
        """:meth:`open` where nobody can be told: a failure is kept in :attr:`error`."""
        self._retry_at = time.monotonic() + RETRY
        try:
            self.open()
        except BadRequest as exc:
            with self._lock:
                self.error = str(exc)
            log.warning("modeler %s: %s", self._agent.name, exc)

    def retry(self) -> None:
        """Try again, every :data:`RETRY` s, a page that could not be opened."""
        if self.error is not None and self._wanted() is not None and time.monotonic() >= self._retry_at:
            self.open_or_report()

    def _serve(self, sock: Any, gen: int) -> None:
        try:
            from modeler.web.server import serve_agent

            web = serve_agent(self._agent, sock)
        except BaseException as exc:  # noqa: BLE001 - reported in status, never lost in a thread
            sock.close()
            with self._lock:
                if gen == self._gen:
                    self.url = None
                    self.error = f"the page could not be started: {type(exc).__name__}: {exc}"
            log.warning("modeler %s: page not started", self._agent.name, exc_info=True)
            return
        with self._lock:
            if gen == self._gen:
                self._web = web
                return
        web.stop()  # closed (or reopened elsewhere) while it was being built

    def close(self) -> None:
        with self._lock:
            self._gen += 1
            web, thread = self._web, self._thread
            self._web = self._thread = self._spec = self.url = self.error = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(JOIN)  # it stops the server it built: no longer current
        if web is not None:
            web.stop()

    def switch(self) -> None:
        """Follow changed ``http``/``http_bind`` settings (reconfigure): the old page
        keeps serving until the new port is bound, unless the new port is the one it
        holds; ``http`` None closes the page."""
        want = self._wanted()
        with self._lock:
            same = want == self._spec and self.error is None
        if same:
            return  # e.g. the platform putting back settings a refused reconfigure never applied
        if want is None:
            self.close()
            return
        from modeler.web.server import listen

        try:
            sock = listen(want[0], int(want[1]))
        except BadRequest:
            held = self.url
            if not (held and want[1] and held.endswith(f":{want[1]}/")):
                raise  # taken by someone else: the old page serves on
            sock = None  # the port our own page holds (another bind address): take it over
        self.close()
        self.open(sock)
