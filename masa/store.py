"""The platform's store: the node list now, activity data, requests and models later.

One SQLAlchemy ``DeclarativeBase`` holds every table, so a later table is one more class
below and appears on the next start (``create_all`` only adds missing tables; changing an
existing table needs a migration). By default the store is a SQLite file that one process
(the registry beside the name server) writes and others (``masa nodes``) read, hence WAL
and a busy timeout; any SQLAlchemy URL works, PostgreSQL through psycopg 3 being the
tested alternative.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy import insert as sa_insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql import case

from masa.errors import BadRequest, cut

__all__ = [
    "AGENT",
    "HOST",
    "LostFile",
    "NODE_STATUSES",
    "NODE_TYPES",
    "Base",
    "Node",
    "SampleRow",
    "Store",
    "check_url",
    "default_url",
    "discard_sqlite_leftovers",
]

HOST = "host"
AGENT = "agent"
NODE_TYPES = (HOST, AGENT)
NODE_STATUSES = ("up", "down", "suspended", "moving", "gone")

#: Rows per multi-row INSERT: far below SQLite's and PostgreSQL's bound-parameter limits.
_CHUNK = 500
_SQLITE_BUSY_TIMEOUT_MS = 30_000


def default_url() -> str:
    """Where the store lives when no URL is given.

    ``MASA_STORE`` (URL or path) lets a test or a deployment move it without new
    options everywhere; otherwise a per-user state file, since the registry and
    ``masa nodes`` run as the same user on the name-server machine.
    """
    env = os.environ.get("MASA_STORE")
    if env:
        return env
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(Path.home(), ".local", "state")
    return os.path.join(state, "masa", "masa.db")


class Base(DeclarativeBase):
    """The one declarative base: every store table derives from it so one
    ``create_all`` makes the whole schema."""


def _in(values: Iterable[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


class Node(Base):
    """A row of the node list: one per host and per agent (the Candle node list table).

    Names carry their type prefix (``masa.host.h1``, ``masa.agent.a1``), so one primary
    key serves both. ``location`` is the host name for an agent and the Pyro address for
    a host. The CHECK constraints let the database, not only this module, refuse
    nonsense, which is what keeps a half-bad heartbeat from being half-written.
    """

    __tablename__ = "nodes"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(128))
    domain: Mapped[str] = mapped_column(String(255), default="")
    location: Mapped[str] = mapped_column(String(1024), default="")
    status: Mapped[str] = mapped_column(String(16))
    last_heartbeat: Mapped[float | None] = mapped_column(Float, nullable=True)
    since: Mapped[float | None] = mapped_column(Float, nullable=True)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    __table_args__ = (
        CheckConstraint(f"type IN ({_in(NODE_TYPES)})", name="ck_nodes_type"),
        CheckConstraint(f"status IN ({_in(NODE_STATUSES)})", name="ck_nodes_status"),
        Index("ix_nodes_location", "location"),
        Index("ix_nodes_type_status", "type", "status"),
    )


class SampleRow(Base):
    """One activity sample: a rate over ``[start, end)`` of one object.

    Indexed on (object, end) because every read is "these objects, samples ending after t"
    (report requests, standing-request batches) and pruning is by ``end``."""

    __tablename__ = "activity"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    object: Mapped[str] = mapped_column(String(512))
    unit: Mapped[str] = mapped_column(String(32), default="")
    start: Mapped[float] = mapped_column(Float)
    end: Mapped[float] = mapped_column(Float)
    value: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ux_activity_object_start", "object", "start", unique=True),
        Index("ix_activity_object_end", "object", "end"),
        Index("ix_activity_end", "end"),
    )


class ObservationRow(Base):
    """Something seen again and again rather than measured over an interval: a relation
    ``subject -> target`` of some ``kind``, with how often and when it was first and last
    seen.  The platform does not interpret kinds or names (the collection layer keeps its
    connection evidence here), so one row per (kind, subject, target) grows only in
    ``count`` and ``last``, however often it is observed."""

    __tablename__ = "observations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(512))
    target: Mapped[str] = mapped_column(String(512), default="")
    count: Mapped[float] = mapped_column(Float, default=0.0)
    first: Mapped[float] = mapped_column(Float)
    last: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        Index("ux_observations_key", "kind", "subject", "target", unique=True),
        Index("ix_observations_kind_last", "kind", "last"),
    )


class CheckpointRow(Base):
    """The last saved state of an agent on a host (standing requests included), so a
    restarted host brings its agents back as they were."""

    __tablename__ = "checkpoints"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(128))
    domain: Mapped[str] = mapped_column(String(255), default="")
    suspended: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    saved: Mapped[float] = mapped_column(Float)


_COLUMNS = (
    "name",
    "type",
    "kind",
    "domain",
    "location",
    "status",
    "last_heartbeat",
    "since",
    "info",
)


def _as_dict(node: Node) -> dict[str, Any]:
    return {c: getattr(node, c) for c in _COLUMNS}


def check_url(value: Any, default: str) -> None:
    """A ``store`` setting: None (``default`` says what that means) or a URL naming a
    database SQLAlchemy knows.  Checked when it is given, not when the store is first
    opened, which may be after a move or a restart; the URL is never quoted back, since
    it may hold a password."""
    if value is None or value == "":
        return
    try:
        make_url(value).get_dialect()
    except Exception:  # noqa: BLE001 - any failure: not a usable URL
        raise BadRequest("store must be a database URL such as sqlite:////PATH/FILE.db or "
                         f"postgresql://USER@HOST/DB (or None: {default})") from None


def _to_url(url: str | None) -> URL:
    """Accepts a URL or a plain path, because operators write paths on the command line."""
    raw = url if url else default_url()
    if "://" not in raw:
        raw = "sqlite:///" + os.path.abspath(os.path.expanduser(raw))
    return make_url(raw)


def _sqlite_file(url: URL) -> Path | None:
    """The file of a SQLite URL (None: in memory, a ``file:`` URI, or not SQLite)."""
    db = url.database if url.get_backend_name() == "sqlite" else None
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).absolute()


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


#: files SQLite keeps beside a database (WAL mode, shared memory, rollback journal)
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def discard_sqlite_leftovers(path: Path) -> list[str]:
    """Remove the WAL, shared-memory and journal files at ``path`` when the database
    itself is gone: they belong to the deleted file, and SQLite would apply a left-over
    WAL or hot journal to a new, empty database of the same name (a corrupt or mixed
    database).  Call it after the store on the deleted file is closed.  Returns the
    names removed."""
    if path.exists():
        return []
    removed = []
    for suffix in SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        try:
            companion.unlink()
            removed.append(companion.name)
        except FileNotFoundError:
            pass
    return removed


class LostFile(NamedTuple):
    """What :meth:`Store.keep_file_in_place` found and did."""

    why: str  #: what happened to the file (:meth:`Store.file_lost`)
    copy_error: str | None  #: why the content could not be copied (None: it was)
    removed: list[str]  #: stale companion files removed at the path


class _Gate:
    """Transactions in flight on one side, a swap of the store's file under them on the
    other: the swap waits until no transaction holds a connection and lets none start
    until it is done.  A connection of the old file closed after the new file is open
    would, as that inode's last, remove the new database's ``-wal`` and ``-shm`` by name
    (what it wrote from then on would be gone at the next start), and a write that
    slipped into the old file after it was copied would be lost.  Costs a lock per
    transaction; only a store whose file is swapped ever waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._users = 0
        self._swapping = False

    @contextmanager
    def use(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if not self._users:
                    self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            while self._swapping:
                self._cond.wait()
            self._swapping = True
            while self._users:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._swapping = False
                self._cond.notify_all()


def _prepare_sqlite(engine: Engine, url: URL,
                    identity: Callable[[], tuple[int, int] | None] = lambda: None) -> None:
    """WAL so readers never block the writer; BEGIN IMMEDIATE for writes so two writers
    queue on the busy timeout instead of failing when a read lock cannot be upgraded.

    A connection opened after the store found its file (``identity``: device and inode)
    must open that same file: once it is deleted, SQLite would create an empty one at the
    path (and apply a WAL left beside it), once it is replaced, open the other file, so
    connections of one store would see different databases, and the content the first
    ones still reach could be copied from the wrong one.  Such a connection is refused."""
    db = url.database
    if db and db != ":memory:" and not db.startswith("file:"):
        Path(db).parent.mkdir(parents=True, exist_ok=True)
    file = _sqlite_file(url)

    @event.listens_for(engine, "do_connect")
    def _same_file(_dialect: Any, _record: Any, _cargs: Any, _cparams: Any) -> None:
        expected = identity() if file is not None else None
        if expected is not None and _identity(file) != expected:
            raise sqlite3.OperationalError(f"unable to open database file: {file} is no longer "
                                           "the file this store opened (deleted or replaced)")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us emit BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED and late).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {_SQLITE_BUSY_TIMEOUT_MS}")
        if db and db != ":memory:":
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        read_only = conn.get_execution_options().get("masa_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


class Store:
    """The platform's database: an engine plus short transactions.

    Every public method is one transaction, so a reader never sees a heartbeat half
    applied. Later tables add methods here (or in helpers taking ``session()``).
    """

    #: Dialects with INSERT .. ON CONFLICT; others take the portable path.
    _native_upsert_dialects: tuple[str, ...] = ("sqlite", "postgresql")

    def __init__(self, url: str | None = None) -> None:
        self._url = _to_url(url)
        self._file = _sqlite_file(self._url)
        self._gate = _Gate()
        self._open()

    def _open(self) -> None:
        """The engine on the URL (a SQLite file is created if missing), and the schema."""
        self._identity: tuple[int, int] | None = None  # any file, while it is made
        kwargs: dict[str, Any] = {"future": True}
        if self._url.get_backend_name() == "sqlite":
            kwargs["connect_args"] = {"timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000}
        else:
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self._url, **kwargs)
        if self.engine.dialect.name == "sqlite":
            _prepare_sqlite(self.engine, self._url, lambda: self._identity)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(masa_read_only=True), expire_on_commit=False
        )
        try:
            Base.metadata.create_all(self.engine)
        except DBAPIError:
            # Two processes starting at once on an empty PostgreSQL database race on
            # CREATE TABLE; the loser finds the tables on a second look.
            Base.metadata.create_all(self.engine)
        self._identity = _identity(self._file) if self._file else None

    @property
    def url(self) -> str:
        """The URL actually used (a path given to the constructor becomes a sqlite URL);
        the password is masked, as it ends up in logs."""
        return self._url.render_as_string(hide_password=True)

    def close(self) -> None:
        """Releases pooled connections so the SQLite file or the PG server can go away."""
        self.engine.dispose()

    @property
    def file(self) -> Path | None:
        """The SQLite file this store was opened on (None: not a file, e.g. PostgreSQL)."""
        return self._file

    def file_lost(self) -> str | None:
        """Why the file at this store's path is no longer the one it writes to (deleted,
        its folder removed, replaced by another file), else None.  An open SQLite
        connection goes on writing to a deleted file's inode without an error, so
        everything written from then on is gone when the process ends; a process that
        keeps state it must find again after a restart asks this and opens the store
        anew (:func:`discard_sqlite_leftovers` first).  One ``stat``."""
        if self._file is None or self._identity is None:
            return None
        now = _identity(self._file)
        if now is None:
            return "was deleted" if self._file.parent.exists() else "was removed with its folder"
        if now != self._identity:
            return "was replaced by another file"
        return None

    def keep_file_in_place(self) -> LostFile | None:
        """If the file was lost (:meth:`file_lost`), put a new one at its path holding
        everything the store's open connections still read, and go on with it; None if
        nothing was lost.  This same object goes on working, so whoever holds it needs
        to do nothing.

        An open SQLite connection goes on reading and writing a deleted file without an
        error, and the next process to open the path finds an empty database: all the
        history written before and since would be gone.  The content is copied with
        SQLite's online backup into a file beside the path, the old connections are
        closed (a closing connection may remove its ``-wal`` and ``-shm`` by name, so this
        happens before any file of the new database exists), stale companions left at the path
        are removed (:func:`discard_sqlite_leftovers`: SQLite would apply them to the new
        file) and the copy is moved to the path.  A file that replaced ours is
        removed first (with its companions), as a deleted one would be.  If the copy
        fails, ``copy_error`` says why and the store goes on with the file at the path
        (a new, empty one if there is none): what is written from then on at least
        survives.  Transactions wait while this runs (:class:`_Gate`)."""
        if self.file_lost() is None:
            return None
        with self._gate.alone():
            why = self.file_lost()  # another thread may have done it meanwhile
            if why is None or self._file is None:
                return None
            path = self._file
            path.parent.mkdir(parents=True, exist_ok=True)
            copy = path.with_name(f".{path.name}.{os.getpid()}.copy")
            try:
                self._copy_into(copy)
                copy_error = None
            except Exception as exc:  # noqa: BLE001 - reported; a new empty file is made all the same
                copy_error = f"{type(exc).__name__}: {cut(str(exc), 200)}"
                for leftover in (copy, *(copy.with_name(copy.name + c) for c in SQLITE_COMPANIONS)):
                    leftover.unlink(missing_ok=True)
            self.engine.dispose()
            if copy_error is None:
                path.unlink(missing_ok=True)  # a file that replaced ours: the copy takes its place
            removed = discard_sqlite_leftovers(path)
            if copy_error is None:
                os.replace(copy, path)
            lost = self._identity
            try:
                self._open()
            except Exception:
                self._identity = lost  # still not this store's file: the next call tries again
                raise
            return LostFile(why, copy_error, removed)

    def _copy_into(self, target: Path) -> None:
        """Everything this store's connections read, into a new SQLite file at
        ``target`` (closed when this returns, no companion files left)."""
        target.unlink(missing_ok=True)
        raw = self.engine.raw_connection()  # an open connection: it still reaches the old file
        try:
            dest = sqlite3.connect(target)
            try:
                raw.driver_connection.backup(dest)
            finally:
                dest.close()
        finally:
            raw.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One write transaction: committed on success, rolled back on any exception."""
        with self._gate.use(), self._sessions() as s, s.begin():
            yield s

    @contextmanager
    def _read(self) -> Iterator[Session]:
        # A deferred transaction on SQLite: readers (``masa nodes``) need no write lock
        # and may not even have write permission on the file.
        with self._gate.use(), self._read_sessions() as s, s.begin():
            yield s

    # ---------------------------------------------------------------- node list

    def record_heartbeat(
        self,
        host: str,
        domain: str,
        address: str,
        resources: dict,
        agents: list[dict],
        now: float,
    ) -> bool:
        """Applies one host heartbeat atomically; True when the host comes (back) up.

        A host whose process start time (``resources["started"]``) changed has restarted,
        even if faster than the sweeper could see it down: its ``since`` moves to now.

        Three statements whatever the number of agents: read the host's old status,
        one multi-row upsert (host and agents), one UPDATE marking agents gone that
        still sit on this host but were not reported. An agent another host has since
        claimed has another location and is therefore left alone. A report of an agent
        as "moving" from a host that is no longer its location is ignored: it is the old
        host's stale view of an agent the new host already runs.
        """
        host_row = {
            "name": host,
            "type": HOST,
            "kind": HOST,
            "domain": domain,
            "location": address,
            "status": "up",
            "last_heartbeat": now,
            "since": now,
            "info": dict(resources),
        }
        by_name: dict[str, dict[str, Any]] = {}
        for a in agents:
            by_name[a["name"]] = {
                "name": a["name"],
                "type": AGENT,
                "kind": a.get("kind", ""),
                "domain": a.get("domain", domain),
                "location": host,
                "status": a.get("status", "up"),
                "last_heartbeat": now,
                "since": now,
                "info": dict(a.get("info") or {}),
            }
        by_name.pop(host, None)
        # Sorted so concurrent heartbeats lock rows in the same order (no PG deadlocks).
        rows = [host_row] + [by_name[n] for n in sorted(by_name)]

        with self.session() as s:
            old = s.execute(select(Node.status, Node.info).where(Node.name == host)).one_or_none()
            before = old.status if old is not None else None
            self._upsert(s, rows)
            started = (old.info or {}).get("started") if old is not None else None
            if started is not None and started != resources.get("started"):
                # restarted within the down-detection window: never seen down, but new
                s.execute(update(Node).where(Node.name == host).values(since=now))
            gone = (
                update(Node)
                .where(Node.type == AGENT, Node.location == host, Node.status != "gone")
                .values(status="gone", since=now)
            )
            if by_name:
                gone = gone.where(Node.name.not_in(list(by_name)))
            s.execute(gone)
        return before != "up"

    def mark_stale_down(self, now: float, max_age: float) -> list[str]:
        """Hosts silent for longer than ``max_age`` go down, and with them their agents,
        since nothing can reach an agent whose host is gone. Returns the hosts changed."""
        cutoff = now - max_age
        with self.session() as s:
            hosts = list(
                s.execute(
                    update(Node)
                    .where(
                        Node.type == HOST,
                        Node.status == "up",
                        Node.last_heartbeat.is_not(None),
                        Node.last_heartbeat < cutoff,
                    )
                    .values(status="down", since=now)
                    .returning(Node.name)
                ).scalars()
            )
            if hosts:
                s.execute(
                    update(Node)
                    .where(
                        Node.type == AGENT,
                        Node.location.in_(hosts),
                        Node.status.not_in(("down", "gone")),
                    )
                    .values(status="down", since=now)
                )
        return sorted(hosts)

    def set_status(self, name: str, status: str, now: float) -> bool:
        """Sets a node's status (``since`` moves only on a real change). False if unknown."""
        if status not in NODE_STATUSES:
            raise ValueError(f"unknown node status {status!r}; expected one of {NODE_STATUSES}")
        with self.session() as s:
            node = s.get(Node, name)
            if node is None:
                return False
            if node.status != status:
                node.status = status
                node.since = now
        return True

    def nodes(self, type: str | None = None, domain: str | None = None) -> list[dict]:
        """The node list as plain dicts (safe to send over Pyro), by type then name."""
        q = select(Node).order_by(Node.type, Node.name)
        if type is not None:
            q = q.where(Node.type == type)
        if domain is not None:
            q = q.where(Node.domain == domain)
        with self._read() as s:
            return [_as_dict(n) for n in s.execute(q).scalars()]

    def node(self, name: str) -> dict | None:
        """One row as a dict, or None."""
        with self._read() as s:
            n = s.get(Node, name)
            return None if n is None else _as_dict(n)

    def forget(self, name: str) -> bool:
        """Removes a row for good (unlike status "gone", which keeps history). False if absent."""
        with self.session() as s:
            return s.execute(sa_delete(Node).where(Node.name == name)).rowcount > 0

    # ---------------------------------------------------------------- internals

    def _upsert(self, s: Session, rows: list[dict[str, Any]]) -> None:
        """Multi-row INSERT .. ON CONFLICT DO UPDATE; ``since`` moves only when the status
        changes. Other dialects get a portable read-then-write path."""
        dialect = self.engine.dialect.name
        if dialect not in self._native_upsert_dialects:
            self._upsert_portable(s, rows)
            return
        ins_fn = sqlite.insert if dialect == "sqlite" else postgresql.insert
        table = Node.__table__
        for i in range(0, len(rows), _CHUNK):
            ins = ins_fn(table).values(rows[i : i + _CHUNK])
            ex = ins.excluded
            stmt = ins.on_conflict_do_update(
                index_elements=[table.c.name],
                set_={
                    "type": ex.type,
                    "kind": ex.kind,
                    "domain": ex.domain,
                    "location": ex.location,
                    "status": ex.status,
                    "last_heartbeat": ex.last_heartbeat,
                    "since": case((table.c.status == ex.status, table.c.since), else_=ex.since),
                    "info": ex.info,
                },
                where=(table.c.location == ex.location) | (ex.status != "moving"),
            )
            s.execute(stmt)

    # -- agent checkpoints --------------------------------------------------------------------

    def save_checkpoints(self, entries: list[dict[str, Any]], now: float,
                         keep: Iterable[str] = ()) -> dict[str, str]:
        """Replace the saved agents by ``entries`` ({name, kind, domain, suspended, state
        as msgpack bytes}) in one transaction: a crash mid-save keeps the previous set.

        The rows of the agents named in ``keep`` (whose state could not be taken now) stay
        as they were.  An entry the database refuses is left out, with its previous row,
        and the others are saved all the same; the answer names the refused ones and why."""
        keep = {k for k in keep if isinstance(k, str)}
        names = [e.get("name") for e in entries]
        rows = [{**e, "saved": now} for e in entries]
        failed: dict[str, str] = {}
        with self.session() as s:
            stay = keep | {n for n in names if isinstance(n, str)}
            if stay:
                s.execute(sa_delete(CheckpointRow).where(CheckpointRow.name.not_in(stay)))
            else:
                s.execute(sa_delete(CheckpointRow))
            if not rows:
                return failed
            try:
                with s.begin_nested():  # a savepoint: one bad row must not cost the others
                    s.execute(sa_delete(CheckpointRow).where(CheckpointRow.name.in_(names)))
                    s.execute(sa_insert(CheckpointRow), rows)
                return failed
            except Exception:  # noqa: BLE001 - find out which rows, below
                pass
            for row in rows:
                try:
                    with s.begin_nested():
                        s.execute(sa_delete(CheckpointRow).where(CheckpointRow.name == row["name"]))
                        s.execute(sa_insert(CheckpointRow), [row])
                except Exception as exc:  # noqa: BLE001
                    failed[str(row.get("name"))] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        return failed

    def load_checkpoints(self) -> list[dict[str, Any]]:
        with self._read() as s:
            rows = s.execute(select(CheckpointRow)).scalars().all()
            return [{"name": r.name, "kind": r.kind, "domain": r.domain,
                     "suspended": r.suspended, "state": r.state} for r in rows]

    # -- activity -------------------------------------------------------------------------

    def add_samples(self, rows: Iterable[tuple[str, str, float, float, float]]) -> int:
        """Append ``(object, unit, start, end, value)`` rows in one transaction.

        A sample already held (same object and start) is skipped, so a stream replayed
        after a restart lands exactly once."""
        batch = [{"object": o, "unit": u, "start": a, "end": b, "value": v} for o, u, a, b, v in rows]
        if batch:
            dialect = self.engine.dialect.name
            if dialect in ("sqlite", "postgresql"):
                mod = sqlite if dialect == "sqlite" else postgresql
                stmt = mod.insert(SampleRow).on_conflict_do_nothing(index_elements=["object", "start"])
            else:
                stmt = sa_insert(SampleRow)
            with self.session() as s:
                for i in range(0, len(batch), _CHUNK):
                    s.execute(stmt, batch[i : i + _CHUNK])
        return len(batch)

    def samples(self, since: float = float("-inf"), until: float | None = None,
                objects: Iterable[str] | None = None) -> list[tuple[str, str, float, float, float]]:
        """Rows with ``since < end <= until``, ordered by object then time."""
        q = select(SampleRow.object, SampleRow.unit, SampleRow.start, SampleRow.end, SampleRow.value)
        q = q.where(SampleRow.end > since)
        if until is not None:
            q = q.where(SampleRow.end <= until)
        return self._rows(q.order_by(SampleRow.object, SampleRow.end), SampleRow.object, objects)

    def activity_objects(self) -> list[tuple[str, str]]:
        """Every ``(object, unit)`` with samples in the store."""
        with self._read() as s:
            return [tuple(r) for r in s.execute(select(SampleRow.object, SampleRow.unit).distinct())]

    def prune_samples(self, before: float) -> int:
        """Drop samples that ended before ``before`` (the retention horizon)."""
        with self.session() as s:
            return s.execute(sa_delete(SampleRow).where(SampleRow.end < before)).rowcount or 0

    # -- observations ---------------------------------------------------------------------

    def observe(self, kind: str, rows: Iterable[tuple[str, str, float, float]],
                replace: bool = False) -> int:
        """Count ``(subject, target, count, seen)`` observations of ``kind`` in one
        transaction: counts add up, ``first``/``last`` widen.  With ``replace`` a held
        row keeps the larger count instead (re-adding rows carried from another store
        must not count them twice)."""
        merged: dict[tuple[str, str], list[float]] = {}
        for subject, target, count, seen in rows:
            held = merged.get((subject, target))
            if held is None:
                merged[(subject, target)] = [float(count), float(seen), float(seen)]
            else:
                held[0] = max(held[0], count) if replace else held[0] + count
                held[1], held[2] = min(held[1], seen), max(held[2], seen)
        batch = [{"kind": kind, "subject": s, "target": t, "count": c, "first": a, "last": b}
                 for (s, t), (c, a, b) in merged.items()]
        if not batch:
            return 0
        table = ObservationRow.__table__
        with self.session() as s:
            dialect = self.engine.dialect.name
            if dialect not in self._native_upsert_dialects:
                self._observe_portable(s, batch, replace)
                return len(batch)
            ins_fn = sqlite.insert if dialect == "sqlite" else postgresql.insert
            for i in range(0, len(batch), _CHUNK):
                ins = ins_fn(table).values(batch[i : i + _CHUNK])
                ex, c = ins.excluded, table.c
                count = case((c.count > ex.count, c.count), else_=ex.count) if replace else c.count + ex.count
                s.execute(ins.on_conflict_do_update(
                    index_elements=[c.kind, c.subject, c.target],
                    set_={"count": count,
                          "first": case((c.first < ex.first, c.first), else_=ex.first),
                          "last": case((c.last > ex.last, c.last), else_=ex.last)}))
        return len(batch)

    def _observe_portable(self, s: Session, batch: list[dict[str, Any]], replace: bool) -> None:
        for row in batch:
            held = s.execute(select(ObservationRow).where(
                ObservationRow.kind == row["kind"], ObservationRow.subject == row["subject"],
                ObservationRow.target == row["target"]).with_for_update()).scalar_one_or_none()
            if held is None:
                s.add(ObservationRow(**row))
                continue
            held.count = max(held.count, row["count"]) if replace else held.count + row["count"]
            held.first, held.last = min(held.first, row["first"]), max(held.last, row["last"])

    def observations(self, kind: str, since: float = float("-inf"),
                     subjects: Iterable[str] | None = None) -> list[tuple[str, str, float, float, float]]:
        """``(subject, target, count, first, last)`` of ``kind`` last seen after ``since``."""
        q = select(ObservationRow.subject, ObservationRow.target, ObservationRow.count,
                   ObservationRow.first, ObservationRow.last)
        q = q.where(ObservationRow.kind == kind, ObservationRow.last > since)
        return self._rows(q.order_by(ObservationRow.subject, ObservationRow.target), ObservationRow.subject, subjects)

    def _rows(self, q: Any, column: Any, among: Iterable[str] | None) -> list[tuple]:
        """Run ``q`` as tuples, limited to rows whose ``column`` is ``among`` the given
        names (``None``: all; an empty list: none, without asking the database)."""
        if among is not None:
            wanted = list(among)
            if not wanted:
                return []
            q = q.where(column.in_(wanted))
        with self._read() as s:
            return [tuple(r) for r in s.execute(q)]

    def prune_observations(self, before: float) -> int:
        """Drop observations last seen before ``before`` (the retention horizon)."""
        with self.session() as s:
            return s.execute(sa_delete(ObservationRow).where(ObservationRow.last < before)).rowcount or 0

    def _upsert_portable(self, s: Session, rows: list[dict[str, Any]]) -> None:
        names = [r["name"] for r in rows]
        existing: dict[str, tuple[str, str, float | None]] = {}
        for i in range(0, len(names), _CHUNK):
            q = select(Node.name, Node.status, Node.location, Node.since).where(
                Node.name.in_(names[i : i + _CHUNK])
            )
            for name, status, location, since in s.execute(q.with_for_update()):
                existing[name] = (status, location, since)
        new, changed = [], []
        for r in rows:
            old = existing.get(r["name"])
            if old is None:
                new.append(r)
                continue
            status, location, since = old
            if r["status"] == "moving" and location != r["location"]:
                continue
            changed.append({**r, "since": since if status == r["status"] else r["since"]})
        if new:
            s.execute(sa_insert(Node), new)
        if changed:
            s.execute(update(Node), changed)
