"""What a move carries, and what a re-used request id means, on real processes.

* A moved source keeps its history: ``report(since=0)`` after the move answers what was
  held before it (the default store is a file that stays on the old host), even when
  nobody subscribes to the source.  Within a small move package the newest part travels,
  always with what no subscriber has acknowledged, and ``history_from`` says where it
  begins; if even the unacknowledged part cannot travel, the move fails and nothing is
  lost.
* A request id re-opened at another source is a new stream: the old source quits it (or
  drops it when its next batch is refused), and no sample of the new stream is dropped as
  a repeat of the old one's."""

import threading
import time

import pytest

from agents.source import ActivitySource, columns, rows_of
from agents.standing import Inbox, Subscriptions
from masa.activity import Series
from masa.errors import BadRequest, MoveFailed, NotSubscribed
from tests.cluster import Cluster

KINDS = ("feeder=tests.agents.source_kinds:FeederAgent",
         "smallmove=tests.agents.source_kinds:SmallMoveFeederAgent")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("masa"), {"c1": {"domain": "C"}, "c2": {"domain": "C"}}, kinds=KINDS)
    with c:
        yield c


def held(answer: dict) -> set[tuple[str, float]]:
    """``(object, end)`` of every sample of a report answer."""
    out = set()
    for w in answer["series"]:
        s = Series.from_wire(w)
        out |= {(s.object, float(e)) for e in s.end}
    return out


def rows(obj: str, t0: float, n: int, step: float) -> list[list]:
    return [[obj, "cpu", t0 + i * step, t0 + (i + 1) * step, float(i)] for i in range(n)]


def keys(data: list[list]) -> set[tuple[str, float]]:
    return {(r[0], r[3]) for r in data}


# -- the history a move carries ----------------------------------------------------------


def test_a_moved_recorder_nobody_subscribes_to_keeps_its_history(cluster):
    cluster.create("c1", "feeder", "feed-rec")
    cluster.create("c1", "recorder", "rec-moved")
    feeder, rec = cluster.ref("feed-rec", timeout=20), cluster.ref("rec-moved", timeout=20)
    start = rec.configure("subscribe_to", request="hist", source="feed-rec")["resume_until"]
    time.sleep(0.5)  # the samples below end after the stream began, and before now
    before = rows("c1/a", start, 200, 0.002) + rows("c1/b", start, 200, 0.002)
    feeder.query("feed", rows=before)
    cluster.wait(lambda: held(rec.query("report", since=0)) >= keys(before), timeout=30)
    assert rec.query("status")["requests"] == []  # nobody subscribes to the recorder

    cluster.move("rec-moved", "c2")
    assert cluster.where("rec-moved") == "c2"
    answer = rec.query("report", since=0)
    assert held(answer) == keys(before)  # all of it travelled, the store stayed on c1
    assert "history_from" not in answer and rec.query("status")["history_from"] is None

    after = rows("c1/a", time.time() - 0.2, 100, 0.001)  # it goes on recording on c2
    feeder.query("feed", rows=after)
    cluster.wait(lambda: held(rec.query("report", since=0)) >= keys(after), timeout=30)
    assert held(rec.query("report", since=0)) == keys(before) | keys(after)


def test_a_moved_collector_nobody_subscribes_to_keeps_its_history(cluster):
    cluster.create("c1", "collector", "col-moved", interval=0.2, per_process="none")
    col = cluster.ref("col-moved", timeout=20)
    cluster.wait(lambda: len({e for _, e in held(col.query("report", since=0))}) >= 10, timeout=30)
    before = held(col.query("report", since=0))
    cluster.move("col-moved", "c2")
    assert cluster.where("col-moved") == "c2"
    # everything metered on c1 is still reported, and what c2 meters comes on top
    cluster.wait(lambda: len(held(col.query("report", since=0))) > len(before) + 5, timeout=30)
    after = held(col.query("report", since=0))
    assert before <= after
    assert max(e for _, e in after) > max(e for _, e in before)


def everything(source) -> tuple[set[tuple[str, float]], float | None]:
    """All samples a source reports, paged through (a feeder's pages are small), and the
    ``history_from`` of the first page."""
    answer = source.query("report", since=0)
    out, first = held(answer), answer.get("history_from")
    for _ in range(1000):
        since = answer["until"]
        answer = source.query("report", since=since)
        out |= held(answer)
        if answer["until"] <= since:
            return out, first
    raise AssertionError("paging did not end")


def history(end: float) -> list[list]:
    """3,000 samples of two objects, 2 s apart, the newest ending at ``end``: more than the
    small feeder's move package holds (some 1,200)."""
    return rows("x/a", end - 3000, 1500, 2.0) + rows("x/b", end - 3000, 1500, 2.0)


def small_feeder_waiting(cluster, name: str, request: str, waiting: float) -> tuple:
    """A small-package feeder on c1 holding :func:`history`, of which the newest
    ``waiting`` seconds no subscriber (gone, of ``request``) has acknowledged: its ref, the rows, the
    acknowledged position."""
    cluster.create("c1", "smallmove", name)
    feeder = cluster.ref(name, timeout=20)
    end = time.time() - 100
    data = history(end)
    feeder.query("feed", rows=data)
    feeder.query("subscribe", request=request, subscriber=f"ghost-{request}", resume_seq=1,
                 resume_until=end - waiting)
    return feeder, data, end - waiting


def test_a_move_carries_the_newest_history_that_fits_and_all_unacknowledged(cluster):
    feeder, data, acked = small_feeder_waiting(cluster, "feed-cap", "cap", 400)  # 400 samples wait

    cluster.move("feed-cap", "c2")
    assert cluster.where("feed-cap") == "c2"
    got, cut = everything(feeder)
    assert cut <= acked  # everything not acknowledged travelled ...
    assert got == {k for k in keys(data) if k[1] > cut}  # ... in the newest part, whole
    assert 400 < len(got) < len(data)  # more than it had to, less than all
    assert feeder.query("status")["history_from"] == cut
    assert "history_from" not in feeder.query("report", since=cut)  # nothing missing after it
    assert feeder.query("status")["requests"] == ["cap"]


def test_a_move_that_cannot_carry_the_unacknowledged_fails_and_loses_nothing(cluster):
    feeder, data, _ = small_feeder_waiting(cluster, "feed-stuck", "stuck", 2600)  # more than a package holds

    with pytest.raises(MoveFailed, match="no subscriber has acknowledged"):
        cluster.move("feed-stuck", "c2")
    assert cluster.where("feed-stuck") == "c1"  # it stays, and holds everything
    got, cut = everything(feeder)
    assert got == keys(data) and cut is None
    status = feeder.query("status")
    assert status["requests"] == ["stuck"] and status["history_from"] is None

    # once nobody waits for those samples it moves, with the newest history that fits
    assert feeder.query("quit", request="stuck")
    cluster.move("feed-stuck", "c2")
    got, cut = everything(feeder)
    assert got == {k for k in keys(data) if k[1] > cut}
    assert 0 < len(got) < len(data)


def test_carried_columns_are_the_activity_wire_form():
    data = [("h/a", "cpu", 0.0, 1.0, 0.5), ("h/a", "cpu", 1.0, 2.0, 0.25), ("h/b", "B/s", 0.0, 2.0, 9.0)]
    wire = columns(data)
    assert {w["object"]: len(Series.from_wire(w)) for w in wire} == {"h/a": 2, "h/b": 1}
    assert sorted(rows_of(wire)) == sorted(data)
    with pytest.raises(BadRequest, match="malformed"):
        rows_of([{**wire[0], "end": b"\0" * 7}])


def test_a_store_every_host_reaches_carries_nothing(tmp_path):
    """A PostgreSQL store is where the next host looks as well: nothing travels.  A SQLite
    file, even one named in the settings, is this host's own: the history travels."""

    def bare(url):
        agent = ActivitySource("bare", "", {"settings": {"store": url, "retention": 3600.0}})
        agent._store_lock, agent._store = threading.Lock(), None
        agent.subscriptions = Subscriptions(agent, lambda since, until: [])
        return agent

    assert bare("postgresql://nowhere.invalid/masa")._pack() is None  # never opened
    local = bare(f"sqlite:///{tmp_path / 'own.db'}")
    now = time.time()
    local.store.add_samples([("h/a", "cpu", now - 2, now - 1, 0.5)])
    carry = local._pack()
    local.release()
    assert rows_of(carry["series"]) == [("h/a", "cpu", now - 2, now - 1, 0.5)] and carry["from"] is None


# -- a request id re-opened at another source -------------------------------------------


def switching(cluster, first: str, second: str, recorder: str, obj: str, n: int) -> tuple:
    """Feeders ``first`` (on c1) and ``second`` (on c2), and ``recorder`` subscribed as
    request "r" to ``first``, which has delivered ``n`` samples of ``obj``: refs to the
    three and those samples."""
    cluster.create("c1", "feeder", first)
    cluster.create("c2", "feeder", second)
    cluster.create("c2", "recorder", recorder)
    one, two = cluster.ref(first, timeout=20), cluster.ref(second, timeout=20)
    rec = cluster.ref(recorder, timeout=20)
    start = rec.configure("subscribe_to", request="r", source=first)["resume_until"]
    time.sleep(0.3)
    early = rows(obj, start, n, 0.002)
    one.query("feed", rows=early)
    cluster.wait(lambda: held(rec.query("report", since=0)) >= keys(early), timeout=30)
    return one, two, rec, early


def test_a_request_reopened_at_another_source_is_a_new_stream(cluster):
    a, b, rec, early = switching(cluster, "feed-a", "feed-b", "rec-switch", "a/x", 100)
    seq = rec.query("subscriptions_status")["r"]["seq"]
    assert seq >= 1

    # the same request to the same source again (a keep-alive, a restart): the same stream
    rec.configure("subscribe_to", request="r", source="feed-a")
    assert rec.query("subscriptions_status")["r"]["seq"] == seq
    assert "r" in a.query("status")["requests"]

    # to another source: a new stream, and the old source no longer serves it
    opened = rec.configure("subscribe_to", request="r", source="feed-b")
    status = rec.query("subscriptions_status")["r"]
    assert status["source"] == "feed-b" and status["seq"] == opened["resume_seq"] == 0
    assert "r" not in a.query("status")["requests"]
    time.sleep(0.3)
    late_b = rows("b/x", opened["resume_until"], 100, 0.002)
    late_a = rows("a/x", time.time() - 0.2, 50, 0.002)  # A goes on, nobody asks it now
    a.query("feed", rows=late_a)
    b.query("feed", rows=late_b)
    cluster.wait(lambda: held(rec.query("report", since=0)) >= keys(late_b), timeout=30)
    time.sleep(1.5)  # several delivery rounds of A
    assert held(rec.query("report", since=0)) == keys(early) | keys(late_b)


def test_an_old_source_out_of_reach_at_the_switch_drops_the_request_at_its_next_batch(cluster):
    c, d, rec, early = switching(cluster, "feed-c", "feed-d", "rec-stale", "c/x", 50)

    cluster.host("c1", "suspend", "feed-c")  # it cannot be told to quit
    try:
        opened = rec.configure("subscribe_to", request="r", source="feed-d")  # nor does it fail this
    finally:
        cluster.host("c1", "resume", "feed-c")
    assert "r" in c.query("status")["requests"]
    time.sleep(0.3)
    late_c = rows("c/x", time.time() - 0.2, 50, 0.002)
    c.query("feed", rows=late_c)  # its next batch is refused: it drops the request
    cluster.wait(lambda: "r" not in c.query("status")["requests"], timeout=30)
    assert "NotSubscribed" in c.query("status")["last_delivery_error"]
    late_d = rows("d/x", opened["resume_until"], 50, 0.002)
    d.query("feed", rows=late_d)
    cluster.wait(lambda: held(rec.query("report", since=0)) >= keys(late_d), timeout=30)
    assert held(rec.query("report", since=0)) == keys(early) | keys(late_d)


class _Agent:
    """The parts of an agent an Inbox or Subscriptions touch; ``ref`` reaches fake peers
    that log their calls, answer ``subscribe`` from the position sent, fail while named in
    ``down`` and answer ``deliver`` with ``refuse`` when it is set."""

    def __init__(self):
        self.state, self.lock, self.name = {}, threading.RLock(), "me"
        self.calls, self.down, self.refuse = [], set(), None

    def ref(self, name):
        agent = self

        class Peer:
            def query(self, op, **kw):
                agent.calls.append((name, op, kw))
                if name in agent.down:
                    raise ConnectionError(f"{name} is down")
                if op == "subscribe":
                    return {"request": kw["request"], "resume_seq": kw.get("resume_seq", 0),
                            "resume_until": kw.get("resume_until", 100.0)}
                if op == "deliver" and agent.refuse is not None:
                    raise agent.refuse
                return kw.get("seq", True)
        return Peer()


def batch(t0: float, t1: float) -> list[dict]:
    return [Series("a/x", "cpu", [t0], [t1], [1.0]).to_wire()]


def test_inbox_reopens_a_request_at_another_source_afresh():
    agent, kept = _Agent(), []
    inbox = Inbox(agent)
    inbox.subscribe("r", "A")
    assert inbox.accept("r", "A", 1, 110.0, batch(100, 110), keep=kept.extend) == 1
    inbox.subscribe("r", "A")  # the same source: the same stream, sent with its position
    assert agent.calls[-1][:2] == ("A", "subscribe") and agent.calls[-1][2]["resume_seq"] == 1
    assert (inbox.subs["r"]["seq"], inbox.subs["r"]["until"]) == (1, 110.0)

    agent.down.add("A")  # the old source cannot be reached: tried once, briefly, quietly
    entry = inbox.subs["r"]
    assert inbox.subscribe("r", "B")["resume_seq"] == 0
    assert agent.calls[-2][:2] == ("B", "subscribe") and "resume_seq" not in agent.calls[-2][2]
    assert agent.calls[-1] == ("A", "quit", {"timeout": Inbox.QUIT_TIMEOUT, "request": "r"})
    assert inbox.subs["r"] is not entry and (inbox.subs["r"]["seq"], inbox.subs["r"]["until"]) == (0, 100.0)
    with pytest.raises(NotSubscribed, match="re-opened at .B.: batches from .A. are no longer taken"):
        inbox.accept("r", "A", 2, 120.0, batch(110, 120), keep=kept.extend)
    assert inbox.accept("r", "B", 1, 105.0, batch(100, 105), keep=kept.extend) == 1
    with pytest.raises(NotSubscribed, match="no standing request"):
        inbox.accept("gone", "B", 1, 105.0, [], keep=kept.extend)


def test_a_source_drops_a_request_its_subscriber_does_not_hold():
    src = _Agent()
    subs = Subscriptions(src, lambda since, until: [])
    subs.subscribe("r", "sub")
    stale = subs.requests["r"]
    subs.subscribe("r", "sub")  # re-opened meanwhile: a refusal of the old one keeps it
    src.refuse = NotSubscribed("no standing request 'r' here")
    assert subs._send("r", stale, stale["acked_until"] + 1)
    assert "r" in subs.requests
    fresh = subs.requests["r"]
    assert subs._send("r", fresh, fresh["acked_until"] + 1)  # nothing to retry ...
    assert "r" not in subs.requests and "r" not in subs.retry  # ... it is gone
    src.refuse = BadRequest("something else")  # any other refusal: retried later, kept
    subs.subscribe("r", "sub")
    assert not subs._send("r", subs.requests["r"], time.time() + 1)
    assert "r" in subs.requests
