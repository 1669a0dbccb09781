"""Connection evidence pieces: the store's observations (SQLite and PostgreSQL), answers
merged and selected as mediators do, and a real listening socket as the sampler names it."""

from __future__ import annotations

import os
import socket

import pytest

from agents import evidence
from masa.store import Store
from probes.connections import endpoint, local_addresses, namespace_scope
from probes.procfs import ProcfsProbe


@pytest.fixture
def store(store_url: str):
    s = Store(store_url)
    yield s
    s.close()


def test_observations_count_up_and_widen_their_time_span(store: Store) -> None:
    store.observe("connection", [("a", "10.0.0.1:80", 2, 10.0), ("a", "10.0.0.1:80", 1, 12.0), ("b", "x:1", 1, 5.0)])
    store.observe("connection", [("a", "10.0.0.1:80", 3, 8.0)])
    store.observe("listening", [("10.0.0.1:80", "c", 1, 11.0)])
    assert store.observations("connection") == [("a", "10.0.0.1:80", 6.0, 8.0, 12.0), ("b", "x:1", 1.0, 5.0, 5.0)]
    assert store.observations("connection", since=6.0) == [("a", "10.0.0.1:80", 6.0, 8.0, 12.0)]
    assert store.observations("listening") == [("10.0.0.1:80", "c", 1.0, 11.0, 11.0)]  # kinds apart
    # rows carried from another store replace rather than add up (no double count)
    store.observe("connection", [("a", "10.0.0.1:80", 4, 20.0)], replace=True)
    assert store.observations("connection", subjects=["a"]) == [("a", "10.0.0.1:80", 6.0, 8.0, 20.0)]
    assert store.prune_observations(10.0) == 1
    assert [r[0] for r in store.observations("connection")] == ["a"]


def test_kept_and_held_round_trip_for_a_move(store: Store, tmp_path) -> None:
    evidence.keep(store, [(evidence.CONNECTION, "a", "e:1", 2.0, 5.0), (evidence.CONNECTION, "a", "e:1", 1.0, 9.0),
                          (evidence.WATCHED, "a", "", 1.0, 9.0)])
    with Store(f"sqlite:///{tmp_path / 'other.db'}") as other:
        evidence.keep(other, evidence.held(store), replace=True)
        evidence.keep(other, evidence.held(store), replace=True)  # twice: still not counted twice
        assert other.observations(evidence.CONNECTION) == store.observations(evidence.CONNECTION)
        assert evidence.answer(other, 0.0, 9.0, None) == {
            "edges": [["a", "e:1", 3.0]], "listening": [], "watched": ["a"], "until": 9.0}


def test_merge_keeps_one_observation_once_and_select_filters_by_object() -> None:
    a = {"edges": [["h/proc/x", "e:1", 3.0]], "listening": [["e:2", "h/proc/y"]], "watched": ["h/proc/x"], "until": 20.0}
    b = {"edges": [["h/proc/x", "e:1", 5.0], ["g/proc/z", "e:2", 1.0]], "listening": [], "watched": ["g/proc/z"],
         "until": 10.0}
    none = evidence.empty()
    merged = evidence.merge([a, b, none])
    assert merged == {"edges": [["g/proc/z", "e:2", 1.0], ["h/proc/x", "e:1", 5.0]],
                      "listening": [["e:2", "h/proc/y"]], "watched": ["g/proc/z", "h/proc/x"], "until": 10.0}
    assert evidence.merge([none]) == none
    only = evidence.select(merged, ["h/*"])
    assert only["edges"] == [["h/proc/x", "e:1", 5.0]] and only["listening"] == [["e:2", "h/proc/y"]]
    assert only["watched"] == ["h/proc/x"]


def test_a_wildcard_listener_is_named_under_every_local_address() -> None:
    srv = socket.create_server(("0.0.0.0", 0))
    try:
        port = srv.getsockname()[1]
        rows = evidence.ConnectionSampler(ProcfsProbe(host="t", per_process="pid")).sample()
        ours = {(ep, obj) for kind, ep, obj, _n, _t in rows
                if kind == evidence.LISTENING and ep.split("@")[0].endswith(f":{port}")}
        assert {obj for _ep, obj in ours} == {f"t/proc/{socket_owner_name()}/{os.getpid()}"}
        scope = namespace_scope()
        names = {ep for ep, _obj in ours}
        assert endpoint("127.0.0.1", port, scope) in names  # loopback, scoped to this namespace
        assert names == {endpoint(a, port, scope) for a in local_addresses() if ":" not in a}
    finally:
        srv.close()


def socket_owner_name() -> str:
    """This process's name as the procfs probe writes it."""
    from probes.procread import read_stat
    from probes.samples import safe_name

    return safe_name(read_stat(os.getpid()).comm)
