"""The store's node list, against SQLite and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event, inspect, text
from sqlalchemy.exc import IntegrityError

from masa.store import Node, Store

A, B = "masa.host.a", "masa.host.b"


def agent(n: int | str, status: str = "up", kind: str = "echo", domain: str = "d1") -> dict:
    return {"name": f"masa.agent.{n}", "kind": kind, "domain": domain, "status": status}


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = Store(store_url)
    yield s
    s.close()


def by_name(store: Store) -> dict[str, dict]:
    return {n["name"]: n for n in store.nodes()}


def test_schema_created_on_first_start(store_url: str) -> None:
    with Store(store_url) as s:
        assert "nodes" in inspect(s.engine).get_table_names()
        assert s.nodes() == []
        s.record_heartbeat(A, "d1", "PYRO:host@10.0.0.1:9000", {}, [agent(1)], now=1.0)
    # A second start finds the schema and the data, and creates nothing anew.
    with Store(store_url) as s:
        assert [n["name"] for n in s.nodes()] == ["masa.agent.1", A]


def test_a_host_restarted_faster_than_the_sweeper_still_shows_it(store: Store) -> None:
    """A supervisor brings a killed host back within the down-detection window: never seen
    down, its new process start time is what tells the node list it restarted."""
    store.record_heartbeat(A, "d1", "PYRO:h@a:1", {"started": 100.0}, [], now=10.0)
    store.record_heartbeat(A, "d1", "PYRO:h@a:1", {"started": 100.0}, [], now=11.0)
    assert store.node(A)["since"] == 10.0
    store.record_heartbeat(A, "d1", "PYRO:h@a:1", {"started": 111.5}, [], now=12.0)
    assert (store.node(A)["status"], store.node(A)["since"]) == ("up", 12.0)


def test_heartbeat_upserts(store: Store) -> None:
    res = {"cpu": 0.25, "mem": 1024, "agents": 2}
    assert store.record_heartbeat(A, "d1", "PYRO:h@a:1", res, [agent(1), agent(2)], now=10.0)

    host = store.node(A)
    assert host == {
        "name": A, "type": "host", "kind": "host", "domain": "d1", "location": "PYRO:h@a:1",
        "status": "up", "last_heartbeat": 10.0, "since": 10.0, "info": res,
    }  # fmt: skip
    a1 = store.node("masa.agent.1")
    assert a1 is not None
    assert (a1["type"], a1["kind"], a1["location"], a1["status"]) == ("agent", "echo", A, "up")
    assert [n["name"] for n in store.nodes()] == ["masa.agent.1", "masa.agent.2", A]

    # Known and up: not "came back"; heartbeat time moves, ``since`` stays.
    res2 = {"cpu": 0.5}
    assert not store.record_heartbeat(
        A, "d1", "PYRO:h@a:2", res2, [agent(1), agent(2, "suspended")], now=20.0
    )
    nodes = by_name(store)
    assert nodes[A]["last_heartbeat"] == 20.0 and nodes[A]["since"] == 10.0
    assert nodes[A]["info"] == res2 and nodes[A]["location"] == "PYRO:h@a:2"
    assert nodes["masa.agent.1"]["since"] == 10.0
    assert nodes["masa.agent.2"]["status"] == "suspended"
    assert nodes["masa.agent.2"]["since"] == 20.0

    # An agent the host no longer reports has gone (terminated or moved away).
    store.record_heartbeat(A, "d1", "PYRO:h@a:2", res2, [agent(2)], now=30.0)
    nodes = by_name(store)
    assert nodes["masa.agent.1"]["status"] == "gone"
    assert nodes["masa.agent.1"]["since"] == 30.0
    # Staying gone does not move ``since`` again.
    store.record_heartbeat(A, "d1", "PYRO:h@a:2", res2, [], now=40.0)
    nodes = by_name(store)
    assert nodes["masa.agent.1"]["since"] == 30.0
    assert nodes["masa.agent.2"]["status"] == "gone"


def test_agent_moved_between_hosts(store: Store) -> None:
    store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2)], now=1.0)
    store.record_heartbeat(B, "d1", "b", {}, [], now=1.0)

    # A's stale view ("moving") arrives after B already runs it: ignored.
    store.record_heartbeat(B, "d1", "b", {}, [agent(1)], now=2.0)
    store.record_heartbeat(A, "d1", "a", {}, [agent(1, "moving"), agent(2)], now=3.0)
    a1 = store.node("masa.agent.1")
    assert a1 is not None
    assert (a1["location"], a1["status"], a1["last_heartbeat"]) == (B, "up", 2.0)

    # A's next heartbeat no longer lists it, and must not mark it gone: it lives on B.
    store.record_heartbeat(A, "d1", "a", {}, [agent(2)], now=4.0)
    a1 = store.node("masa.agent.1")
    assert a1 is not None and (a1["location"], a1["status"]) == (B, "up")

    # Moving back: A claims it again, B's next heartbeat leaves it be.
    store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2)], now=5.0)
    store.record_heartbeat(B, "d1", "b", {}, [], now=6.0)
    a1 = store.node("masa.agent.1")
    assert a1 is not None and (a1["location"], a1["status"]) == (A, "up")


def test_stale_host_down_with_its_agents_and_back(store: Store) -> None:
    store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2, "suspended"), agent(3)], now=0.0)
    store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2, "suspended")], now=10.0)
    store.record_heartbeat(B, "d1", "b", {}, [agent(4)], now=50.0)

    assert store.mark_stale_down(now=60.0, max_age=30.0) == [A]
    nodes = by_name(store)
    assert (nodes[A]["status"], nodes[A]["since"]) == ("down", 60.0)
    assert nodes["masa.agent.1"]["status"] == "down"
    assert nodes["masa.agent.2"]["status"] == "down"
    assert nodes["masa.agent.3"]["status"] == "gone"  # already gone stays gone
    assert nodes[B]["status"] == "up" and nodes["masa.agent.4"]["status"] == "up"
    # Idempotent: a down host is not reported again.
    assert store.mark_stale_down(now=61.0, max_age=30.0) == []

    assert store.record_heartbeat(A, "d1", "a", {}, [agent(1)], now=70.0) is True
    nodes = by_name(store)
    assert (nodes[A]["status"], nodes[A]["since"]) == ("up", 70.0)
    assert nodes["masa.agent.1"]["status"] == "up"
    assert nodes["masa.agent.2"]["status"] == "gone"  # did not come back with its host
    assert store.record_heartbeat(A, "d1", "a", {}, [agent(1)], now=80.0) is False


def test_failing_write_leaves_nothing_half_done(store: Store) -> None:
    store.record_heartbeat(A, "d1", "a", {"cpu": 0.1}, [agent(1), agent(2)], now=1.0)
    before = store.nodes()

    # The host upsert and the first agents are valid; the database refuses the last.
    bad = [agent(1, "suspended"), agent(3), agent(9, status="exploded")]
    with pytest.raises(IntegrityError):
        store.record_heartbeat(A, "d1", "a-new", {"cpu": 0.9}, bad, now=2.0)
    assert store.nodes() == before

    # The same through session(): an exception after valid writes rolls them back.
    with pytest.raises(RuntimeError), store.session() as s:
        s.add(Node(name="masa.host.c", type="host", kind="host", status="up", info={}))
        s.flush()
        raise RuntimeError("boom")
    assert store.nodes() == before


def test_set_status_nodes_filters_and_forget(store: Store) -> None:
    store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2, domain="d2")], now=1.0)
    store.record_heartbeat(B, "d2", "b", {}, [agent(3, kind="relay", domain="d2")], now=1.0)

    assert store.set_status("masa.agent.1", "moving", now=5.0) is True
    assert store.set_status("masa.agent.1", "moving", now=6.0) is True
    a1 = store.node("masa.agent.1")
    assert a1 is not None and (a1["status"], a1["since"]) == ("moving", 5.0)
    assert store.set_status("masa.agent.nope", "up", now=5.0) is False
    with pytest.raises(ValueError):
        store.set_status("masa.agent.1", "sleepy", now=5.0)

    assert [n["name"] for n in store.nodes(type="host")] == [A, B]
    assert [n["name"] for n in store.nodes(domain="d2")] == [
        "masa.agent.2", "masa.agent.3", B,
    ]  # fmt: skip
    assert [n["name"] for n in store.nodes(type="agent", domain="d2")] == [
        "masa.agent.2", "masa.agent.3",
    ]  # fmt: skip

    assert store.forget("masa.agent.3") is True
    assert store.forget("masa.agent.3") is False
    assert store.node("masa.agent.3") is None


def test_heartbeat_with_many_agents_is_a_few_statements(store: Store) -> None:
    store.record_heartbeat(A, "d1", "a", {}, [agent(i) for i in range(60)], now=1.0)
    statements: list[str] = []

    def count(_conn, _cursor, sql, *_args) -> None:
        statements.append(sql)

    event.listen(store.engine, "before_cursor_execute", count)
    try:
        agents = [agent(i, "suspended" if i % 2 else "up") for i in range(10, 60)]
        store.record_heartbeat(A, "d1", "a", {}, agents, now=2.0)
    finally:
        event.remove(store.engine, "before_cursor_execute", count)
    assert len(statements) <= 5, statements
    nodes = by_name(store)
    assert sum(n["status"] == "gone" for n in nodes.values()) == 10
    assert sum(n["status"] == "suspended" for n in nodes.values()) == 25


def test_portable_upsert_path_behaves_the_same(tmp_path: Path) -> None:
    """Dialects without ON CONFLICT take the read-then-write path; run it on SQLite."""
    with Store(str(tmp_path / "p.db")) as store:
        store._native_upsert_dialects = ()
        assert store.record_heartbeat(A, "d1", "a", {}, [agent(1), agent(2)], now=1.0)
        assert not store.record_heartbeat(A, "d1", "a", {}, [agent(1, "suspended")], now=2.0)
        store.record_heartbeat(B, "d1", "b", {}, [agent(1)], now=3.0)
        store.record_heartbeat(A, "d1", "a", {}, [agent(1, "moving")], now=4.0)
        nodes = by_name(store)
        assert (nodes["masa.agent.1"]["location"], nodes["masa.agent.1"]["status"]) == (B, "up")
        assert nodes["masa.agent.1"]["since"] == 3.0
        assert nodes["masa.agent.2"]["status"] == "gone"
        assert nodes[A]["since"] == 1.0 and nodes[A]["last_heartbeat"] == 4.0


def test_two_stores_on_one_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "shared" / "masa.db"
    writer, reader = Store(str(path)), Store(f"sqlite:///{path}")
    try:
        assert writer.url == reader.url == f"sqlite:///{path}"
        with writer.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert reader.nodes() == []
        writer.record_heartbeat(A, "d1", "a", {}, [agent(1)], now=1.0)
        assert [n["name"] for n in reader.nodes()] == ["masa.agent.1", A]
        # Both directions, and a reader holding an open read transaction blocks nothing.
        with reader._read() as rs:
            rs.execute(text("SELECT count(*) FROM nodes")).scalar_one()
            writer.set_status("masa.agent.1", "suspended", now=2.0)
        reader.set_status(A, "down", now=3.0)
        assert writer.node(A)["status"] == "down"  # type: ignore[index]
        assert reader.node("masa.agent.1")["status"] == "suspended"  # type: ignore[index]
    finally:
        writer.close()
        reader.close()


def test_postgres_fixture_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """A missing or broken PostgreSQL must give a reason, never a silent pass."""
    from tests import fixtures_pg

    monkeypatch.setattr(fixtures_pg, "_bindir", lambda: None)
    with pytest.raises(fixtures_pg.PostgresUnavailable, match="no server binaries"):
        fixtures_pg.running_postgres().__enter__()
    monkeypatch.setattr(fixtures_pg, "_bindir", lambda: Path("/nonexistent/bin"))
    with pytest.raises(fixtures_pg.PostgresUnavailable, match="initdb failed"):
        fixtures_pg.running_postgres().__enter__()
