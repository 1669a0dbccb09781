"""Deadlines kept by the kernel (masa.sockets): the same timeouts as Python's, without a
poll per message.  Real loopback sockets, and a real host whose idle timeout frees the
connection of an authenticated client that stopped talking."""

import socket
import ssl
import struct
import threading
import time

import Pyro5.errors
import Pyro5.socketutil
import pytest

from masa.security import Proxy
from masa.sockets import KernelDeadlineSocket, deadline_in_kernel
from tests.cluster import Cluster


@pytest.fixture
def pair():
    """A connected loopback TCP pair (client, server side)."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname(), timeout=5)
    server, _ = listener.accept()
    listener.close()
    yield client, server
    client.close()
    server.close()


def _kernel_deadline(sock, option=socket.SO_RCVTIMEO) -> float:
    """The deadline the kernel keeps (rounded by it to its clock tick)."""
    sec, usec = struct.unpack("@ll", sock.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("@ll")))
    return sec + usec / 1e6


def test_the_deadline_moves_into_the_kernel_and_python_no_longer_polls(pair):
    client, _ = pair
    assert deadline_in_kernel(client, 2.5) is True
    assert type(client) is KernelDeadlineSocket
    assert client.gettimeout() is None  # a blocking socket: Pyro5 takes its sendall/MSG_WAITALL path
    assert _kernel_deadline(client) == pytest.approx(2.5, abs=0.01)
    assert _kernel_deadline(client, socket.SO_SNDTIMEO) == pytest.approx(2.5, abs=0.01)
    client.settimeout(0.25)  # later changes (a caller's new budget) go to the kernel too
    assert client.gettimeout() is None and _kernel_deadline(client) == pytest.approx(0.25, abs=0.01)
    client.settimeout(1e-7)  # rounds up to the kernel's smallest deadline, never to "none"
    assert _kernel_deadline(client) > 0
    client.settimeout(0.9999996)  # microseconds that round up to a whole second
    assert _kernel_deadline(client) == pytest.approx(1.0, abs=0.01)
    client.settimeout(None)
    assert _kernel_deadline(client) == 0.0


def test_a_silent_peer_gives_a_timeout_not_an_endless_retry(pair):
    client, server = pair
    deadline_in_kernel(client, 0.3)
    with pytest.raises(socket.timeout):
        client.recv(10)
    # Pyro5 retries EAGAIN forever; what it gets here is its own TimeoutError
    with pytest.raises(Pyro5.errors.TimeoutError):
        Pyro5.socketutil.receive_data(client, 10)
    # and data that does come is read whole, on the blocking path
    client.settimeout(10.0)
    threading.Timer(0.05, lambda: server.sendall(b"0123456789")).start()
    assert Pyro5.socketutil.receive_data(client, 10) == b"0123456789"


def test_a_peer_that_stops_reading_gives_a_send_timeout(pair):
    client, _ = pair  # the server side never reads
    deadline_in_kernel(client, 0.3)
    chunk = b"x" * (1 << 20)
    with pytest.raises(socket.timeout):
        for _ in range(256):  # bounded: 256 MiB would be far past any socket buffer
            client.sendall(chunk)
    with pytest.raises(Pyro5.errors.TimeoutError):
        for _ in range(256):
            Pyro5.socketutil.send_data(client, chunk)


def test_tls_sockets_keep_pythons_deadline(pair):
    client, _ = pair
    wrapped = ssl.create_default_context().wrap_socket(
        socket.socket(), server_hostname="x", do_handshake_on_connect=False)
    try:
        assert deadline_in_kernel(wrapped, 1.5) is False
        assert wrapped.gettimeout() == 1.5 and not isinstance(wrapped, KernelDeadlineSocket)
    finally:
        wrapped.close()


def test_a_hosts_idle_timeout_still_frees_an_authenticated_connection(tmp_path):
    with Cluster(tmp_path, {"h1": {}}, idle_timeout=3.0) as c:
        uri = c.host("h1", "info")["address"]
        with Proxy(uri, c.settings.secret, timeout=10) as p:
            assert p.ping()
            sock = p._pyroConnection.sock
            assert type(sock) is KernelDeadlineSocket  # the client's deadline is the kernel's too
            connection = p._pyroConnection
            for _ in range(10):  # a connection in use outlives the idle timeout
                time.sleep(0.5)
                assert p.ping()
            assert p._pyroConnection is connection
            # silent for longer than the idle timeout: the host hangs up (EOF here; had it
            # not, the client's own 10 s deadline would raise a timeout instead)
            assert sock.recv(1) == b""
            with pytest.raises(Pyro5.errors.ConnectionClosedError):
                p.ping()  # MAX_RETRIES=0: Pyro5 does not reconnect by itself
