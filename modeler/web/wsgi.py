"""Werkzeug's threaded server, bounded for a page anyone who reaches its port can talk to.

Werkzeug's own server (Flask's development server) waits for a request forever and
starts a thread for every connection: unauthenticated clients that open connections
and send nothing (or half a request) held a thread and a descriptor each in the agent
host's process, without limit, and kept them after the page was closed; that endangers
every agent on the host.  Here a connection silent for :attr:`Handler.timeout` s is
closed, at most :attr:`Server.max_connections` are served at once (a new one beyond is
closed at once), and closing the server closes the connections it still holds.

Imported only when a page is built (werkzeug takes seconds to import on a busy host).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from typing import Any

from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler


class Handler(WSGIRequestHandler):
    #: s a connection may stay silent, mid-request or between keep-alive requests
    #: (socketserver sets it on the socket); the page's browser just connects again
    timeout = 10.0

    def _for_api(self) -> bool:
        """The request line names /api: taken from the raw line, since errors such as a
        too long line (414) or too many headers (431) come before the path is parsed."""
        parts = getattr(self, "raw_requestline", b"").split(b" ", 2)
        target = parts[1] if len(parts) > 1 else b""
        return target == b"/api" or target.startswith((b"/api/", b"/api?"))

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Errors the HTTP layer answers before the app sees the request answer JSON
        ``{"error"}`` under /api too, like every other answer there."""
        if self._for_api():
            short, long = self.responses.get(code, ("Error", ""))
            text = json.dumps({"error": f"{message or short}: {explain or long}"})
            # the stdlib fills this in with %: no placeholders left, the JSON goes out as is
            self.error_message_format = text.replace("%", "%%")
            self.error_content_type = "application/json"
        super().send_error(code, message, explain)


class Server(ThreadedWSGIServer):
    #: connections served at once (a thread each); the page itself uses a handful
    max_connections = 64

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # first: werkzeug's constructor already calls server_close
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self._held: set[socket.socket] = set()
        self._held_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # full: closed now rather than one thread more
            return
        with self._held_lock:
            self._held.add(request)
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._held_lock:
                self._held.discard(request)
            self._slots.release()

    def server_close(self) -> None:
        """Also end the connections still open: a closed page answers nobody."""
        super().server_close()
        with self._held_lock:
            held = list(self._held)
        for request in held:
            with contextlib.suppress(OSError):
                request.shutdown(socket.SHUT_RDWR)
