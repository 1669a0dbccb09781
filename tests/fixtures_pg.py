"""A throwaway PostgreSQL cluster for the tests.

The store must work against a real server, not a mock, so the suite starts its own:
Debian's binaries, a cluster in a temp dir, listening only on 127.0.0.1 on a free port
and on a socket in that dir, trust auth, fsync off (nothing here needs to survive a
crash), stopped with ``-m immediate`` at the end. PostgreSQL refuses to run as root, so
as root the cluster runs as the ``postgres`` OS user.

If PostgreSQL is missing or will not start, the tests that need it are skipped with the
reason; set ``MASA_REQUIRE_POSTGRES=1`` (CI, where ``./run`` installs it) to make that a
failure instead.

Use: ``pytest_plugins = ["tests.fixtures_pg"]`` in the root ``tests/conftest.py`` (or
import ``postgres_url``/``postgres_db`` there); mark tests ``@pytest.mark.postgres``.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresUnavailable", "postgres_db", "postgres_url", "running_postgres", "store_url"]

_START_TIMEOUT = 60
_db_counter = itertools.count()


class PostgresUnavailable(RuntimeError):
    """No server could be had here; the message says why (shown as the skip reason)."""


def _unavailable(reason: str) -> NoReturn:
    msg = f"PostgreSQL not available for the tests: {reason}"
    if os.environ.get("MASA_REQUIRE_POSTGRES"):
        pytest.fail(msg, pytrace=False)
    pytest.skip(msg)


def _bindir() -> Path | None:
    """Newest server binaries: Debian keeps them out of PATH, under a versioned dir."""

    def version(p: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in Path(p).parent.name.split("."))
        except ValueError:
            return (0,)

    candidates = sorted(
        (os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda d: version(d),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0])
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and (Path(out) / "initdb").exists():
            return Path(out)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Cluster:
    """One initdb'd data dir and the server running on it."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="masa-pg-"))
        self.data = self.root / "data"
        self.sockets = self.root / "sock"
        self.log = self.root / "server.log"
        self.port = 0
        self.sockets.mkdir()
        if self.as_root:
            import pwd

            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                self.cleanup()
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' OS user to run it as"
                ) from None
            if shutil.which("runuser") is None:
                self.cleanup()
                raise PostgresUnavailable("running as root and 'runuser' is missing")
            for p in (self.root, self.sockets):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        os.chmod(self.root, 0o700)

    def run(self, *args: str, timeout: float = _START_TIMEOUT) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, check=False
        )

    def log_tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def start(self) -> None:
        try:
            r = self.run(
                "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust",
                "-E", "UTF8", "--no-locale", "--no-sync",
            )  # fmt: skip
        except OSError as exc:  # not root: the binary itself is run, and may be missing
            raise PostgresUnavailable(f"initdb failed: {exc}") from exc
        if r.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {(r.stderr or r.stdout).strip()[-800:]}")
        last = ""
        for _ in range(3):  # the free port may be taken between probing and binding
            self.port = _free_port()
            opts = " ".join(
                [
                    "-c listen_addresses=127.0.0.1",
                    f"-p {self.port}",
                    f"-k {self.sockets}",
                    "-c fsync=off",
                    "-c synchronous_commit=off",
                    "-c full_page_writes=off",
                    "-c max_connections=30",
                    "-c shared_buffers=16MB",
                ]
            )
            r = self.run(
                "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", opts,
                "-w", "-t", str(_START_TIMEOUT), "start",
            )  # fmt: skip
            if r.returncode == 0:
                return
            last = f"{(r.stderr or r.stdout).strip()}\n{self.log_tail()}"
        raise PostgresUnavailable(f"pg_ctl start failed: {last[-1500:]}")

    def stop(self) -> None:
        if self.data.exists():
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", timeout=30)

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _admin_connect(url: str) -> psycopg.Connection:
    import psycopg

    return psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


@contextmanager
def running_postgres() -> Iterator[str]:
    """Starts a private server with an empty database ``masa``, yields its SQLAlchemy
    URL and stops it; raises PostgresUnavailable with the reason if it cannot."""
    bindir = _bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no server binaries (looked in /usr/lib/postgresql/*/bin, pg_config --bindir, PATH);"
            " install Debian's 'postgresql' package (./run setup does)"
        )
    try:
        import psycopg
    except ImportError:
        raise PostgresUnavailable(
            "the psycopg driver is not installed (pip install -e '.[test]')"
        ) from None
    try:
        cluster = _Cluster(bindir)
    except OSError as exc:
        raise PostgresUnavailable(f"cannot prepare a cluster dir: {exc}") from exc
    try:
        try:
            cluster.start()
            url = f"postgresql+psycopg://postgres@127.0.0.1:{cluster.port}/masa"
            with _admin_connect(_sibling(url, "postgres")) as conn:
                conn.execute("CREATE DATABASE masa")
        except (OSError, subprocess.SubprocessError, psycopg.Error) as exc:
            raise PostgresUnavailable(f"{type(exc).__name__}: {exc}\n{cluster.log_tail()}") from exc
        yield url
    finally:
        cluster.stop()
        cluster.cleanup()


def _sibling(url: str, database: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + database


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of database ``masa`` on a private server, for the whole session."""
    try:
        server = running_postgres()
        url = server.__enter__()
    except PostgresUnavailable as exc:
        _unavailable(str(exc))
    try:
        yield url
    finally:
        server.__exit__(None, None, None)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """A fresh, empty database on the session's server, dropped afterwards, so each
    test starts from no schema at all (creating a database costs milliseconds)."""
    name = f"t{os.getpid()}_{next(_db_counter)}"
    admin = _sibling(postgres_url, "postgres")
    with _admin_connect(admin) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _sibling(postgres_url, name)
    finally:
        with _admin_connect(admin) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the store supports; the SQLite one in a dir that
    does not exist yet (the store creates it)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'masa.db'}"
    return request.getfixturevalue("postgres_db")
