"""The node list kept in a real PostgreSQL server instead of SQLite."""

import pytest

from masa.store import Store
from tests.cluster import Cluster


@pytest.mark.postgres
def test_heartbeats_land_in_postgresql(tmp_path, postgres_url):
    with Cluster(tmp_path, {"p1": {"domain": "P"}, "p2": {"domain": "P"}}, store=postgres_url) as c:
        c.create("p2", "echo", "pg-echo")
        c.wait(lambda: c.nodes().get("masa.agent.pg-echo", {}).get("status") == "up")
        c.move("pg-echo", "p1")
        c.wait(lambda: c.nodes()["masa.agent.pg-echo"]["location"] == "masa.host.p1")
        c.kill("p2")
        c.wait(lambda: c.nodes()["masa.host.p2"]["status"] == "down")
        # read back directly from the database, not through the registry
        store = Store(postgres_url)
        try:
            rows = {n["name"]: n for n in store.nodes()}
        finally:
            store.close()
    assert rows["masa.host.p1"]["status"] == "up" and rows["masa.host.p1"]["domain"] == "P"
    assert rows["masa.host.p2"]["status"] == "down"
    assert rows["masa.agent.pg-echo"]["location"] == "masa.host.p1"
