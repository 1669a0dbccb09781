"""Queries cascade across hosts, and call cycles between agents do not deadlock."""

import threading

from masa import admin


def test_query_cascades_across_three_hosts(cluster):
    cluster.create("h3", "relay", "c3")
    cluster.create("h2", "relay", "c2", next="c3")
    cluster.create("h1", "relay", "c1", next="c2")
    answer = cluster.ref("c1").query("chain", payload={"x": [1, 2.5, "z"]})
    assert answer["path"] == ["c1@h1", "c2@h2", "c3@h3"]
    assert answer["payload"] == {"x": [1, 2.5, "z"]}


def test_call_cycle_between_agents_completes(cluster):
    # y1 -> y2 -> y1 -> y2 ...: each hop is a fresh call into a host already busy with
    # the outer call; it must be served by another worker, not wait for the first.
    cluster.create("h1", "relay", "y1", next="y2")
    cluster.create("h2", "relay", "y2", next="y1")
    results, errors = [], []

    def run():
        try:
            results.append(cluster.ref("y1", timeout=20).query("chain_back", depth=6))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert results == [["y1", "y2", "y1", "y2", "y1", "y2", "y1"]] * 4


def test_lookup_by_metadata(cluster):
    cluster.create("h3", "relay", "meta-b")
    found = admin.find_agents(cluster.settings, kind="relay", domain="B")
    assert "meta-b" in found
    assert all(meta["domain"] == "B" and meta["kind"] == "relay" for _, meta in found.values())
    assert found["meta-b"][1]["host"] == "h3"
