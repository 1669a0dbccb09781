"""Serving the Flask app from inside a modeler agent, on a thread of its host process.

Werkzeug's threaded server (Flask's own) runs while the agent runs on this host: it is
stopped before a move and started again where the agent arrives, on a new port, which
``status()["http"]`` reports.
"""

from __future__ import annotations

import threading
from typing import Any

from werkzeug.serving import make_server

from masa import admin
from masa.naming import short
from masa.ref import AgentRef
from modeler.web.app import create_app
from modeler.web.auth import web_token


class WebServer:
    def __init__(self, app: Any, bind: str, port: int) -> None:
        self._server = make_server(bind, port, app, threaded=True)
        self.url = f"http://{bind}:{self._server.server_port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name=f"http-{self._server.server_port}")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve_agent(agent: Any) -> WebServer:
    """The supervision page and HTTP/JSON interface of ``agent`` (a running modeler)."""
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
    return WebServer(app, agent.settings.get("http_bind", "127.0.0.1"), int(agent.settings["http"]))
