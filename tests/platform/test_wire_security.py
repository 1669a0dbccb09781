"""What a daemon accepts from the wire before and after authentication.

Against real processes (the module's cluster: a name server and hosts h1, h2, h3), with
raw sockets speaking Pyro5's protocol where an attacker would: a captured handshake
replayed elsewhere, a compressed or non-msgpack message, silent connections, a silent TLS
client; and the configuration side: empty secrets, ``masa tls init`` run twice.
"""

import contextlib
import marshal
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import replace

import Pyro5.errors
import Pyro5.socketutil
import pytest
from Pyro5 import protocol, serializers

from masa import config, naming
from masa.config import load_secret
from masa.errors import MasaError
from masa.ref import AgentRef
from masa.security import Daemon, Proxy
from masa.supervisor import free_port
from masa.tls import make_certificates
from tests.cluster import ROOT, Cluster, attempt, wait

MSGPACK = serializers.serializers["msgpack"]
NO_CORRELATION = b"\0" * 16


def _address(cluster, host):
    h, _, p = cluster.host(host, "info")["address"].split("@", 1)[1].rpartition(":")
    return h, int(p)


def _ns_address(settings):
    return settings.ns_host, settings.ns_port


def _hello_for(uri, secret):
    """The hello masa's Proxy sends on its next connection to ``uri`` (what a sniffer sees)."""
    proxy = Proxy(uri, secret)
    try:
        return proxy._pyroHandshake
    finally:
        proxy._pyroRelease()


def _message(msgtype, data, serializer_id=MSGPACK.serializer_id, flags=0, seq=1):
    header = struct.pack(protocol._header_format, b"PYRO", protocol.PROTOCOL_VERSION, msgtype,
                         serializer_id, flags, seq, len(data), 0, NO_CORRELATION, 0,
                         protocol._magic_number)
    return header + data


def _read(sock, size):
    buf = b""
    while len(buf) < size:
        try:
            chunk = sock.recv(size - len(buf))
        except (ConnectionResetError, ssl.SSLError):
            return None
        if not chunk:
            return None
        buf += chunk
    return buf


def _answer(sock):
    """``(type, serializer id, decoded payload)`` of the next message; None if the peer
    closed the connection instead (reads with the socket's own timeout)."""
    header = _read(sock, protocol._header_size)
    if header is None:
        return None
    fields = struct.unpack(protocol._header_format, header)
    msgtype, serializer_id, flags, size, annotations = fields[2], fields[3], fields[4], fields[6], fields[7]
    payload = _read(sock, size + annotations)
    assert payload is not None, "connection closed in the middle of an answer"
    data = payload[annotations:]
    if flags & protocol.FLAGS_COMPRESSED:
        data = zlib.decompress(data)
    return msgtype, serializer_id, serializers.serializers_by_id[serializer_id].loads(data)


@contextlib.contextmanager
def _raw(addr, timeout=10.0):
    sock = socket.create_connection(addr, timeout=timeout)
    try:
        yield sock
    finally:
        sock.close()


def _connect(addr, hello, object_id, serializer=MSGPACK):
    """Send one connect message; return the daemon's answer (see ``_answer``)."""
    with _raw(addr) as sock:
        sock.sendall(_message(protocol.MSG_CONNECT, serializer.dumps(
            {"handshake": hello, "object": object_id}), serializer.serializer_id))
        return _answer(sock)


def _refusal(answer):
    assert answer is not None, "the daemon closed the connection without an answer"
    msgtype, serializer_id, text = answer
    assert msgtype == protocol.MSG_CONNECTFAIL, f"accepted: {answer}"
    assert serializer_id == MSGPACK.serializer_id
    return text


# --- 1. a captured handshake is good for its own daemon and object, once ---------------

def test_a_captured_hello_is_refused_by_every_other_daemon_and_object(cluster):
    secret = cluster.settings.secret
    h1, h2, ns = _address(cluster, "h1"), _address(cluster, "h2"), _ns_address(cluster.settings)
    hello = _hello_for(f"PYRO:masa.host.h1@{h1[0]}:{h1[1]}", secret)
    # the same object id on two daemons of the machine: only the port tells them apart
    daemon_hello = _hello_for(f"PYRO:Pyro.Daemon@{h1[0]}:{h1[1]}", secret)
    for addr, object_id, captured in [(h2, "masa.host.h2", hello), (ns, "Pyro.NameServer", hello),
                                      (h2, "masa.host.h1", hello), (h1, "Pyro.Daemon", hello),
                                      (h2, "Pyro.Daemon", daemon_hello), (ns, "Pyro.Daemon", daemon_hello)]:
        text = _refusal(_connect(addr, captured, object_id))
        assert text.startswith("authentication failed:") and "another daemon or object" in text
    # the daemon and object it was made for take it once (so the raw client above is sound)
    msgtype, _, answer = _connect(h1, hello, "masa.host.h1")
    assert msgtype == protocol.MSG_CONNECTOK and "mac" in answer["handshake"]
    assert "replayed handshake" in _refusal(_connect(h1, hello, "masa.host.h1"))
    assert _connect(h1, daemon_hello, "Pyro.Daemon")[0] == protocol.MSG_CONNECTOK
    # and honest clients go on working everywhere
    with Proxy(f"PYRO:masa.host.h2@{h2[0]}:{h2[1]}", secret, timeout=5) as p:
        assert p.ping()
    assert naming.NameService(cluster.settings).lookup("masa.host.h1", wait=0)


def test_a_hello_recorded_before_a_restart_is_refused_after_it(tmp_path):
    from masa.security import RESTART_TOLERANCE

    with Cluster(tmp_path / "home", {}) as c:  # just the name server, restarted below
        ns = _ns_address(c.settings)
        hello = _hello_for(f"PYRO:Pyro.NameServer@{ns[0]}:{ns[1]}", c.settings.secret)
        recorded = time.time()
        assert _connect(ns, hello, "Pyro.NameServer")[0] == protocol.MSG_CONNECTOK  # the honest use
        assert "replayed handshake" in _refusal(_connect(ns, hello, "Pyro.NameServer"))
        time.sleep(max(0.0, recorded + RESTART_TOLERANCE + 0.5 - time.time()))
        child = c.sup.children["ns"]
        child.kill()
        child.start()
        c.sup.wait_for(naming.REGISTRY, 30, child, check=c.sup._our_broker)
        text = _refusal(_connect(ns, hello, "Pyro.NameServer"))
        assert text.startswith("authentication failed: handshake made") and "before this daemon started" in text
        with Proxy(f"PYRO:Pyro.NameServer@{ns[0]}:{ns[1]}", c.settings.secret, timeout=5) as p:
            assert naming.REGISTRY in p.list(prefix="masa.")


# --- 2. compressed messages are refused on their header --------------------------------

def test_a_compressed_message_is_refused_before_it_is_inflated(cluster):
    ns = _ns_address(cluster.settings)
    bomb = zlib.compress(b"\0" * (64 << 20), 9)  # 64 KiB on the wire, 64 MiB inflated
    with _raw(ns) as sock:
        sock.sendall(_message(protocol.MSG_CONNECT, bomb, flags=protocol.FLAGS_COMPRESSED))
        assert "refused: compressed message" in _refusal(_answer(sock))
    # nor is a big plain one read and decoded before authentication: refused on its header
    with _raw(ns) as sock:
        # the header alone, announcing 1 MiB: the refusal comes before any of it is read
        # (sending the payload too would race the daemon closing the connection)
        sock.sendall(_message(protocol.MSG_CONNECT, b"\0" * (1 << 20))[:protocol._header_size])
        assert "refused: connect message of 1048576 bytes" in _refusal(_answer(sock))
    # an honest client that compresses gets the reason (its connect message is compressed)
    h1 = _address(cluster, "h1")
    Pyro5.config.COMPRESSION = True
    try:
        with pytest.raises(Pyro5.errors.CommunicationError, match="compressed message"), \
                Proxy(f"PYRO:masa.host.h1@{h1[0]}:{h1[1]}", cluster.settings.secret, timeout=5) as p:
            p.ping()
    finally:
        Pyro5.config.COMPRESSION = False
    # after authentication a compressed call ends the connection, and nothing else
    secret = cluster.settings.secret
    hello = _hello_for(f"PYRO:masa.host.h1@{h1[0]}:{h1[1]}", secret)
    with _raw(h1) as sock:
        sock.sendall(_message(protocol.MSG_CONNECT, MSGPACK.dumps({"handshake": hello, "object": "masa.host.h1"})))
        assert _answer(sock)[0] == protocol.MSG_CONNECTOK
        call = zlib.compress(MSGPACK.dumpsCall("masa.host.h1", "ping", (), {}))
        sock.sendall(_message(protocol.MSG_INVOKE, call, flags=protocol.FLAGS_COMPRESSED, seq=2))
        assert _answer(sock) is None
    with Proxy(f"PYRO:masa.host.h1@{h1[0]}:{h1[1]}", secret, timeout=5) as p:
        assert p.ping()


@contextlib.contextmanager
def _fake_daemon(reply):
    """A one-connection server answering the connect message with ``reply`` bytes."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)

    def serve():
        with contextlib.suppress(OSError):
            conn, _ = server.accept()
            with conn:
                conn.settimeout(10)
                header = _read(conn, protocol._header_size)
                fields = struct.unpack(protocol._header_format, header)
                _read(conn, fields[6] + fields[7])
                conn.sendall(reply)
                _read(conn, 1)  # until the client hangs up

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"PYRO:masa.host.fake@127.0.0.1:{server.getsockname()[1]}"
    finally:
        server.close()
        thread.join(15)


def test_a_client_refuses_compressed_or_non_msgpack_answers(cluster):
    answer = {"handshake": {"mac": "0" * 64}, "meta": {"methods": ["ping"], "oneway": [], "attrs": []}}
    compressed = _message(protocol.MSG_CONNECTOK, zlib.compress(MSGPACK.dumps(answer)),
                          flags=protocol.FLAGS_COMPRESSED)
    in_marshal = _message(protocol.MSG_CONNECTOK, marshal.dumps(answer),
                          serializers.serializers["marshal"].serializer_id)
    for reply, reason in [(compressed, "refused: compressed message"),
                          (in_marshal, r"refused: serializer id 2 \(marshal\); masa accepts msgpack only")]:
        with _fake_daemon(reply) as uri, pytest.raises(Pyro5.errors.ProtocolError, match=reason), \
                Proxy(uri, cluster.settings.secret, timeout=5) as p:
            p._pyroBind()


# --- 3. msgpack only, before and after authentication -----------------------------------

def test_other_serializers_are_refused_before_and_after_authentication(cluster):
    secret = cluster.settings.secret
    h2 = _address(cluster, "h2")
    uri = f"PYRO:masa.host.h2@{h2[0]}:{h2[1]}"
    for name in ("marshal", "serpent", "json"):
        ser = serializers.serializers[name]
        # no secret needed to get this far: the payload is never decoded
        text = _refusal(_connect(h2, {"v": 2, "ts": "0", "nonce": "n", "mac": "m"}, "masa.host.h2", ser))
        assert text == (f"refused: serializer id {ser.serializer_id} ({name}); "
                        f"masa accepts msgpack only")
        # a client with the secret but another serializer is refused with the reason
        with Proxy(uri, secret, timeout=5) as p:
            p._pyroSerializer = name
            with pytest.raises(Pyro5.errors.CommunicationError, match="masa accepts msgpack only"):
                p.ping()
    # authenticated in msgpack, then a call in marshal: the connection ends, unanswered
    hello = _hello_for(uri, secret)
    with _raw(h2) as sock:
        sock.sendall(_message(protocol.MSG_CONNECT, MSGPACK.dumps({"handshake": hello, "object": "masa.host.h2"})))
        assert _answer(sock)[0] == protocol.MSG_CONNECTOK
        ser = serializers.serializers["marshal"]
        sock.sendall(_message(protocol.MSG_INVOKE, ser.dumpsCall("masa.host.h2", "ping", (), {}),
                              ser.serializer_id, seq=2))
        assert _answer(sock) is None
    with Proxy(uri, secret, timeout=5) as p:
        assert p.ping()


def test_a_full_pool_is_refused_with_a_clear_error_in_msgpack(cluster):
    """The pool-full denial is written before the daemon reads the client's serializer id:
    in msgpack, masa's clients still get its text."""
    h2 = _address(cluster, "h2")
    uri = f"PYRO:masa.host.h2@{h2[0]}:{h2[1]}"
    held, refusal = [], None
    try:
        for _ in range(cluster.settings.threadpool + 20):  # authenticated: each holds a worker
            p = Proxy(uri, cluster.settings.secret, timeout=10)
            try:
                p._pyroBind()
            except Pyro5.errors.CommunicationError as exc:
                refusal = str(exc)
                break
            held.append(p)
    finally:
        for p in held:
            p._pyroRelease()
    assert refusal is not None and "no free workers" in refusal, refusal

    def ping():
        with Proxy(uri, cluster.settings.secret, timeout=5) as p:
            return p.ping()

    assert wait(lambda: attempt(ping), timeout=30)


# --- 4. a deadline for the handshake ----------------------------------------------------

def test_silent_connections_are_dropped_and_do_not_lock_clients_out(cluster):
    h3 = _address(cluster, "h3")
    uri = f"PYRO:masa.host.h3@{h3[0]}:{h3[1]}"
    silent = []
    try:
        for _ in range(cluster.settings.threadpool + 10):
            try:
                silent.append(socket.create_connection(h3, timeout=10))
            except OSError:
                break
        assert len(silent) > cluster.settings.threadpool

        def ping():
            with Proxy(uri, cluster.settings.secret, timeout=20) as p:
                return p.ping()

        # an honest client gets in while every silent connection is still open here
        assert wait(lambda: attempt(ping), timeout=40, every=0.5)
        # the daemon hung up on the first silent one (well before the 60 s idle timeout)
        silent[0].settimeout(40)
        with contextlib.suppress(ConnectionResetError):
            assert silent[0].recv(100) == b""
    finally:
        for s in silent:
            s.close()


def test_an_authenticated_connection_keeps_the_idle_timeout(cluster):
    from masa.security import HANDSHAKE_TIMEOUT

    h1 = _address(cluster, "h1")
    with Proxy(f"PYRO:masa.host.h1@{h1[0]}:{h1[1]}", cluster.settings.secret, timeout=5) as p:
        assert p.ping()
        connection = p._pyroConnection
        time.sleep(HANDSHAKE_TIMEOUT + 1.0)
        assert p.ping()  # Pyro5 does not reconnect (MAX_RETRIES=0): the same connection
        assert p._pyroConnection is connection


# --- 6. no empty secrets ------------------------------------------------------------------

def test_an_empty_or_short_secret_is_refused_naming_its_source(tmp_path, monkeypatch):
    monkeypatch.delenv("MASA_SECRET", raising=False)
    monkeypatch.delenv("MASA_SECRET_FILE", raising=False)
    home = tmp_path / "home"
    home.mkdir()
    (home / "secret").write_text("\n")
    with pytest.raises(MasaError, match=f"the shared secret from {home / 'secret'} is empty"):
        load_secret(home)
    for content, what in [("", "is empty"), ("  \n", "is empty"), ("1234567", "has only 7 bytes")]:
        f = tmp_path / "secret-file"
        f.write_text(content)
        monkeypatch.setenv("MASA_SECRET_FILE", str(f))
        with pytest.raises(MasaError, match=f"from MASA_SECRET_FILE={f} {what}; it needs at least 8 bytes"):
            load_secret(home)
    f.write_text("test-secret\n")
    assert load_secret(home) == b"test-secret"
    monkeypatch.setenv("MASA_SECRET", "s3")  # the variable wins over the file, and is checked too
    with pytest.raises(MasaError, match="the shared secret from MASA_SECRET has only 2 bytes"):
        load_secret(home)
    with pytest.raises(MasaError, match="refusing to serve with an empty shared secret"):
        Daemon(b"", host="127.0.0.1", port=0)


def test_masa_ns_with_an_empty_secret_file_does_not_start(tmp_path):
    empty = tmp_path / "empty-secret"
    empty.write_text("")
    env = {**os.environ, "MASA_HOME": str(tmp_path / "home"), "MASA_SECRET_FILE": str(empty),
           "MASA_NS": f"127.0.0.1:{free_port()}", "PYTHONPATH": str(ROOT)}
    env.pop("MASA_SECRET", None)
    proc = subprocess.Popen([sys.executable, "-m", "masa", "ns"], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("masa ns started with an empty secret")
    assert proc.returncode == 1
    assert err.strip().endswith(f"masa: error: the shared secret from MASA_SECRET_FILE={empty} is empty; "
                                "it needs at least 8 bytes (an empty or truncated file? copy the "
                                "deployment's secret there)")


# --- 7. masa tls init -------------------------------------------------------------------------

def test_tls_files_keep_a_private_key_and_an_existing_ca(tmp_path):
    from masa.tls import CertificatesExist

    certs = tmp_path / "tls"
    ca, _, key = make_certificates(certs, ["127.0.0.1"])
    os.chmod(key, 0o644)  # loosened meanwhile (a copy, a umask): a re-run tightens it again
    make_certificates(certs, ["127.0.0.1"], overwrite=True)
    assert key.stat().st_mode & 0o777 == 0o600
    before = ca.read_bytes(), key.read_bytes()
    with pytest.raises(CertificatesExist, match=f"{ca} exists: a new CA would invalidate"):
        make_certificates(certs, ["127.0.0.1"])  # the default keeps the CA
    assert (ca.read_bytes(), key.read_bytes()) == before
    assert sorted(p.name for p in certs.iterdir()) == ["ca.pem", "cert.pem", "key.pem"]
    # the command: refused without --force (one line, exit 1), replaced with it
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    again = subprocess.run([sys.executable, "-m", "masa", "tls", "init", str(certs)], env=env, cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 1 and "a new CA would invalidate" in again.stderr
    assert ca.read_bytes() == before[0]
    forced = subprocess.run([sys.executable, "-m", "masa", "tls", "init", str(certs), "--force"], env=env,
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert forced.returncode == 0, forced.stderr
    assert ca.read_bytes() != before[0] and key.stat().st_mode & 0o777 == 0o600


# --- 5. TLS: the TLS handshake runs in a worker, under the deadline (last: it switches ---
# this process to TLS, restored at the end)

def _fresh_tls_contexts():
    # Pyro5 caches its TLS contexts per process; this process meets a second CA here
    for name in ("__ssl_client_context", "__ssl_server_context"):
        setattr(Pyro5.socketutil, name, None)


def _tls_attempt(addr, context):
    """What a TLS (or plain, ``context=None``) client speaking Pyro gets back."""
    with _raw(addr, timeout=5) as raw:
        try:
            sock = context.wrap_socket(raw, server_hostname="127.0.0.1") if context else raw
            sock.sendall(b"PYRO" + b"\0" * 60)
            return sock.recv(100)
        except (OSError, ssl.SSLError):
            return b""


def test_a_silent_tls_client_does_not_stop_the_daemon_accepting(tmp_path):
    certs, other = tmp_path / "tls", tmp_path / "other-ca"
    make_certificates(certs, ["127.0.0.1", "localhost"])
    make_certificates(other, ["127.0.0.1", "localhost"])
    _fresh_tls_contexts()
    try:
        with Cluster(tmp_path / "home", {"t1": {}}, tls_dir=certs) as c:
            c.create("t1", "echo", "te")
            ns, t1 = _ns_address(c.settings), _address(c, "t1")
            silent = [socket.create_connection(addr, timeout=5) for addr in (ns, t1)]
            try:
                # both daemons go on accepting while the silent connections are open
                assert c.ref("te", timeout=10).query("echo")["agent"] == "te"
                assert c.nodes()[naming.host_name("t1")]["status"] == "up"
                # the TLS handshake still refuses plain TCP, no certificate, another CA
                no_cert = ssl.create_default_context(cafile=str(certs / "ca.pem"))
                other_ca = ssl.create_default_context(cafile=str(certs / "ca.pem"))
                other_ca.load_cert_chain(other / "cert.pem", other / "key.pem")
                for addr in (ns, t1):
                    for context in (None, no_cert, other_ca):
                        assert not _tls_attempt(addr, context).startswith(b"PYRO")
                # the right certificate without the secret: TLS passes, the handshake does not
                wrong = replace(c.settings, secret=b"not-the-secret")
                with pytest.raises(MasaError, match="wrong shared secret"):
                    AgentRef("te", wrong, timeout=5).query("echo")
                # and the silent ones were dropped
                for s in silent:
                    s.settimeout(40)
                    with contextlib.suppress(ConnectionResetError):
                        assert s.recv(100) == b""
            finally:
                for s in silent:
                    s.close()
    finally:
        _fresh_tls_contexts()
        config.apply(config.Settings())  # TLS off again for whatever runs next here
