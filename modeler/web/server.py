"""Serving the Flask app from inside a modeler agent, on a thread of its host process.

Werkzeug's threaded server (Flask's own) runs while the agent runs on this host: it is
stopped before a move and started again where the agent arrives, on a new port, which
``status()["http"]`` reports.

The port is bound first, with a plain socket (:func:`listen`), and only then is the
app built on it: a port that is taken is then a :class:`BadRequest` naming the port, at
once, rather than werkzeug's bare "Address already in use" on stderr and a page that
never comes.  Flask and werkzeug are imported only when a server is built (they take
seconds to import on a busy host; binding a port must not wait for them).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

from masa import admin
from masa.errors import BadRequest
from masa.naming import short
from masa.ref import AgentRef
from modeler.web.auth import web_token

#: connections the kernel keeps waiting while the app is built or busy (werkzeug's own)
BACKLOG = 128


def url_of(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind else bind
    return f"http://{host}:{port}/"


def listen(bind: str, port: int) -> socket.socket:
    """A listening TCP socket on ``bind``:``port`` (0: any free port); BadRequest naming
    the address when it cannot be had (taken, not an address of this machine)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does
        sock.bind((bind, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        sock.close()
        what = f"http port {port} on {bind}" if port else f"a free http port on {bind}"
        raise BadRequest(f"cannot serve the page: {what} is not available "
                         f"({exc.strerror or exc}); choose another port with http=PORT "
                         f"(0: any free port)") from None
    return sock


class WebServer:
    """Werkzeug's threaded server (bounded: :mod:`modeler.web.wsgi`) for ``app`` on an already bound socket (``sock``, which
    it takes over), or on ``bind``:``port`` bound here (BadRequest if it cannot be)."""

    def __init__(self, app: Any, bind: str, port: int, sock: socket.socket | None = None) -> None:
        from modeler.web.wsgi import Handler, Server  # werkzeug: only here

        if sock is None:
            sock = listen(bind, port)
        try:
            port = sock.getsockname()[1]
            # the server works on its own duplicate of the descriptor
            self._server = Server(bind, port, app, Handler, fd=sock.fileno())
        finally:
            sock.close()
        self.url = url_of(bind, self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"http-{self._server.server_address[1]}")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_agent(agent: Any, sock: socket.socket | None = None) -> WebServer:
    """The supervision page and HTTP/JSON interface of ``agent`` (a running modeler), on
    ``sock`` if given (bound by the agent to its ``http`` port), else on that port."""
    from modeler.web.app import create_app  # Flask: only here

    settings = agent.ref(agent.name).settings
    ref = AgentRef(agent.name, settings)  # per-thread proxies inside: safe from every request

    def call(interface: str, op: str, **kwargs: Any) -> Any:
        return ref.call(interface, op, kwargs)

    def nodes() -> list[dict]:
        """Hosts and agents by their short names, agents located by host name."""
        return [{**n, "name": short(n["name"]),
                 "location": short(n.get("location") or "") if n["type"] == "agent" else n.get("location")}
                for n in admin.node_list(settings)]

    app = create_app(call, nodes, web_token(settings.secret, agent.name), agent.name)
    bind = agent.settings.get("http_bind") or "127.0.0.1"
    return WebServer(app, bind, int(agent.settings["http"] or 0), sock)
