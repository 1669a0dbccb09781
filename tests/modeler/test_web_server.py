"""The page's HTTP server on real sockets: silent connections are closed, connections are
bounded, a closed page holds none, and errors of the HTTP layer answer JSON under /api
(the app behind it is a stub; the real page on real processes is in tests/e2e)."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request

import pytest

from modeler.web import wsgi
from modeler.web.app import create_app
from modeler.web.server import WebServer

TIMEOUT = 0.5
CAP = 4


def stub(interface: str, op: str, **kw):
    return {"op": op}


@pytest.fixture
def web(monkeypatch):
    monkeypatch.setattr(wsgi.Handler, "timeout", TIMEOUT)
    monkeypatch.setattr(wsgi.Server, "max_connections", CAP)
    server = WebServer(create_app(stub, lambda: [], None, "mod"), "127.0.0.1", 0)
    yield server
    server.stop()


def connect(web: WebServer, send: bytes = b"") -> socket.socket:
    parts = urllib.parse.urlsplit(web.url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=5)
    if send:
        sock.sendall(send)
    return sock


def closed(sock: socket.socket, within: float) -> bool:
    """The server closed ``sock`` (nothing to read but its end) within ``within`` s."""
    sock.settimeout(within)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


def test_a_half_sent_request_is_closed_after_the_timeout(web):
    sock = connect(web, b"GET /api/status HTTP/1.1\r\nHost: x\r\n")  # the headers never end
    try:
        assert not closed(sock, TIMEOUT / 5)  # waited for a while, as for a slow client
        assert closed(sock, TIMEOUT + 3)
    finally:
        sock.close()


def test_connections_beyond_the_cap_are_closed_at_once_and_threads_stay_bounded(web):
    before = threading.active_count()
    held = [connect(web) for _ in range(5 * CAP)]
    try:
        time.sleep(TIMEOUT / 3)
        assert threading.active_count() - before <= CAP
        assert sum(closed(s, 0.05) for s in held) >= 4 * CAP  # refused ones: ended at once
        deadline = time.monotonic() + TIMEOUT + 5
        while threading.active_count() > before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert threading.active_count() == before  # the silent ones timed out: no thread left
    finally:
        for s in held:
            s.close()
    with urllib.request.urlopen(web.url + "api/status", timeout=5) as r:  # slots came back
        assert json.loads(r.read()) == {"op": "status"}


def test_closing_the_page_ends_the_connections_it_holds(web, monkeypatch):
    monkeypatch.setattr(wsgi.Handler, "timeout", 60.0)  # not the timeout: the close ends it
    sock = connect(web, b"GET /api/status HTTP/1.1\r\n")
    try:
        time.sleep(0.2)
        web.stop()
        assert closed(sock, 3)
    finally:
        sock.close()


def test_a_too_long_request_line_or_too_many_headers_answer_json_under_api(web):
    cases = {414: b"GET /api/model?object=" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
             431: b"GET /api/status HTTP/1.1\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(150))
             + b"\r\n"}
    for code, request in cases.items():
        sock = connect(web, request)
        try:
            status, headers, body = answer(sock)
        finally:
            sock.close()
        assert status == code and headers["Content-Type"] == "application/json", (code, headers)
        assert json.loads(body)["error"]
    sock = connect(web, b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n")  # the page keeps HTML
    try:
        status, headers, _ = answer(sock)
    finally:
        sock.close()
    assert status == 414 and headers["Content-Type"].startswith("text/html")
