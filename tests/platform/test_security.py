"""Authentication, TLS, and bad input answered clearly while the host keeps serving."""

import contextlib
import socket
from dataclasses import replace

import Pyro5.client
import Pyro5.errors
import pytest

from masa import admin
from masa.config import SecretFileMissing, load_secret
from masa.errors import (
    AuthenticationError,
    BadRequest,
    PayloadTooLarge,
    UnknownOperation,
)
from masa.naming import NameService
from masa.ref import AgentRef
from masa.security import Proxy
from masa.tls import make_certificates
from tests.cluster import Cluster


@pytest.fixture(scope="module")
def echo(cluster):
    cluster.create("h1", "echo", "guarded")
    return cluster.ref("guarded")


def _host_address(cluster, host="h1"):
    info = cluster.host(host, "info")
    hostport = info["address"].split("@", 1)[1]
    h, _, p = hostport.rpartition(":")
    return h, int(p)


def test_wrong_secret_is_refused_everywhere(cluster, echo):
    wrong = replace(cluster.settings, secret=b"not-the-secret")
    with pytest.raises(AuthenticationError, match="wrong shared secret"):
        AgentRef("guarded", wrong, timeout=2).query("echo")
    with pytest.raises(AuthenticationError):
        NameService(wrong).lookup("masa.host.h1", wait=0)
    uri = f"PYRO:masa.agent.guarded@{':'.join(map(str, _host_address(cluster)))}"
    with pytest.raises(AuthenticationError), Proxy(uri, b"not-the-secret", timeout=2) as p:
        p.invoke("query", "echo", {}, 1.0)
    assert echo.query("echo")["agent"] == "guarded"


def test_plain_pyro_client_without_handshake_is_refused(cluster, echo):
    h, p = _host_address(cluster)
    with Pyro5.client.Proxy(f"PYRO:masa.agent.guarded@{h}:{p}") as plain:
        plain._pyroTimeout = 2
        with pytest.raises(Pyro5.errors.CommunicationError, match="malformed authentication"):
            plain.invoke("query", "echo", {}, 1.0)


def test_malformed_requests_get_clear_errors_and_host_keeps_serving(cluster, echo):
    with pytest.raises(UnknownOperation, match="no query operation 'frobnicate'"):
        echo.query("frobnicate")
    with pytest.raises(BadRequest, match="unexpected keyword argument 'bogus'"):
        echo.query("echo", bogus=1)
    with pytest.raises(BadRequest, match="size must be between"):
        echo.configure("load_state", size=-5)
    uri = f"PYRO:masa.agent.guarded@{':'.join(map(str, _host_address(cluster)))}"
    with Proxy(uri, cluster.settings.secret, timeout=5) as p:
        with pytest.raises(BadRequest, match="interface"):
            p.invoke("launch", "echo", {}, 1.0)
        with pytest.raises(BadRequest, match="mapping"):
            p.invoke("query", "echo", [1, 2], 1.0)
        with pytest.raises(BadRequest, match="timeout"):
            p.invoke("query", "echo", {}, "soon")
    # raw garbage on the socket: the connection is dropped, nothing else happens
    for junk in (b"GET / HTTP/1.0\r\n\r\n", b"PYRO" + b"\xff" * 60, b"\x00" * 4096):
        with socket.create_connection(_host_address(cluster), timeout=2) as s:
            s.sendall(junk)
            s.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                s.recv(100)
    assert echo.query("echo")["agent"] == "guarded"


def test_oversized_payload_is_refused_with_a_clear_error(cluster, echo):
    big = "x" * (cluster.settings.max_message + 1)
    with pytest.raises(PayloadTooLarge, match="too large"):
        echo.query("echo", payload=big)
    # a client that ignores the limit is cut off by the host, which keeps serving
    uri = f"PYRO:masa.agent.guarded@{':'.join(map(str, _host_address(cluster)))}"
    limit = Pyro5.config.MAX_MESSAGE_SIZE
    Pyro5.config.MAX_MESSAGE_SIZE = limit * 4
    try:
        with Proxy(uri, cluster.settings.secret, timeout=10) as p, \
                pytest.raises(Pyro5.errors.ConnectionClosedError):
            p.invoke("query", "echo", {"payload": big}, 5.0)
    finally:
        Pyro5.config.MAX_MESSAGE_SIZE = limit
    assert echo.query("echo", payload="small")["payload"] == "small"


def test_tls_cluster_serves_and_refuses_clients_without_certificates(tmp_path):
    certs = tmp_path / "tls"
    make_certificates(certs, ["127.0.0.1", "localhost"])
    with Cluster(tmp_path / "home", {"t1": {}, "t2": {}}, tls_dir=certs) as c:
        c.create("t1", "relay", "tr1", next="tr2")
        c.create("t2", "relay", "tr2")
        assert c.ref("tr1").query("chain")["path"] == ["tr1@t1", "tr2@t2"]
        c.move("tr2", "t1")
        assert c.ref("tr1").query("chain")["path"] == ["tr1@t1", "tr2@t1"]
        info = c.host("t1", "info")
        h, _, p = info["address"].split("@", 1)[1].rpartition(":")
        # a plain TCP client speaking Pyro without TLS gets nowhere
        with socket.create_connection((h, int(p)), timeout=2) as s:
            s.sendall(b"PYRO" + b"\x00" * 40)
            s.settimeout(2)
            try:
                data = s.recv(100)
            except (TimeoutError, ConnectionResetError):
                data = b""
            assert not data.startswith(b"PYRO")
        assert admin.node_list(c.settings)


def test_secret_created_only_at_the_default_place(tmp_path, monkeypatch):
    monkeypatch.delenv("MASA_SECRET", raising=False)
    monkeypatch.delenv("MASA_SECRET_FILE", raising=False)
    secret = load_secret(tmp_path / "home")  # the default place: created, mode 0600
    default = tmp_path / "home" / "secret"
    assert default.read_text().strip().encode() == secret and default.stat().st_mode & 0o777 == 0o600
    assert load_secret(tmp_path / "home") == secret
    monkeypatch.setenv("MASA_SECRET_FILE", str(default))  # an explicit file that exists is read
    assert load_secret(tmp_path / "elsewhere") == secret
    typo = tmp_path / "hmoe" / "secret"
    monkeypatch.setenv("MASA_SECRET_FILE", str(typo))
    with pytest.raises(SecretFileMissing, match=f"MASA_SECRET_FILE={typo} does not exist"):
        load_secret(tmp_path / "home")
    assert not typo.exists()
    monkeypatch.setenv("MASA_SECRET_FILE", str(tmp_path))
    with pytest.raises(SecretFileMissing, match="is not a file"):
        load_secret(tmp_path / "home")
