"""Standing-request semantics: the source's partial check, the requester's full check."""

import numpy as np
import pytest

from agents.standing import (
    Predicate,
    all_hold,
    filtered,
    parse_predicates,
    series_from_rows,
)
from masa.activity import Series
from masa.errors import BadRequest


def test_predicate_grammar():
    assert Predicate.parse("*/cpu > 0.2") == Predicate("*/cpu", ">", 0.2)
    assert Predicate.parse(">= -1e-3") == Predicate("*", ">=", -0.001)
    assert Predicate.parse("h/if/eth0/in != 0") == Predicate("h/if/eth0/in", "!=", 0.0)
    for bad in ["cpu is hot", "> x", "", "cpu >", "import os", 3, "a > 1 > 2"]:
        with pytest.raises(BadRequest):
            Predicate.parse(bad)


def test_a_predicate_filters_only_the_objects_its_glob_matches():
    """One rule at the source and at the requester: every predicate that applies holds."""
    values = np.array([0.05, 0.3, 0.9])
    preds = parse_predicates(["*/cpu > 0.2", "*/cpu < 0.5"])
    np.testing.assert_array_equal(all_hold(preds, "h/cpu", values), [False, True, False])
    # predicates about other objects neither admit nor exclude this one: it passes
    other = parse_predicates(["*/if/* > 100"])
    np.testing.assert_array_equal(all_hold(other, "h/cpu", values), [True, True, True])
    # no predicate at all: everything passes
    np.testing.assert_array_equal(all_hold([], "h/cpu", values), [True, True, True])
    # the source's filter (the default check) keeps an object no predicate applies to
    cpu = Series("n1/cpu", "cpu", [0, 1, 2], [1, 2, 3], [0.1, 0.6, 0.9])
    app = Series("n1/app/py", "cpu", [0, 1], [1, 2], [0.1, 0.2])
    out = {s.object: s for s in filtered([cpu, app], ["n1/cpu", "n1/app/py"], parse_predicates(["*/cpu > 0.5"]))}
    np.testing.assert_array_equal(out["n1/cpu"].value, [0.6, 0.9])
    np.testing.assert_array_equal(out["n1/app/py"].value, [0.1, 0.2])


def test_filtered_by_objects_and_predicates():
    a = Series("h/cpu", "cpu", [0, 1, 2], [1, 2, 3], [0.1, 0.5, 0.9])
    b = Series("h/if/eth0/in", "B/s", [0, 1], [1, 2], [10, 20])
    out = filtered([a, b], ["*/cpu"], parse_predicates(["> 0.3"]))
    assert [s.object for s in out] == ["h/cpu"]
    np.testing.assert_array_equal(out[0].value, [0.5, 0.9])
    assert filtered([a, b], ["nothing*"], []) == []


def test_series_from_rows_groups_by_object_in_time_order():
    rows = [("a", "cpu", 0, 1, 0.1), ("a", "cpu", 1, 2, 0.2), ("b", "B/s", 0, 2, 5.0)]
    out = {s.object: s for s in series_from_rows(rows)}
    np.testing.assert_array_equal(out["a"].value, [0.1, 0.2])
    assert out["b"].unit == "B/s" and len(out["b"]) == 1


class _Holder:
    """Just the parts of an agent an Inbox touches (its state and lock)."""

    def __init__(self):
        import threading

        self.state, self.lock, self.name = {}, threading.RLock(), "sub"


def test_inbox_takes_only_the_tail_of_a_longer_repeat():
    from agents.standing import Inbox

    inbox = Inbox(_Holder())
    inbox.subs["r"] = {"seq": 0, "until": 0.0, "objects": None, "predicates": []}
    kept: list = []
    first = Series("a", "cpu", [0, 1], [1, 2], [1, 2])
    assert inbox.accept("r", "src", 1, 2.0, [first.to_wire()], keep=kept.extend) == 1
    assert [len(s) for s in kept] == [2]
    # the same batch again (the ack was lost): nothing new
    kept.clear()
    assert inbox.accept("r", "src", 1, 2.0, [first.to_wire()], keep=kept.extend) == 1
    assert kept == []
    # regenerated up to a later horizon: only what lies past 2.0 is new
    longer = Series("a", "cpu", [0, 1, 2, 3], [1, 2, 3, 4], [1, 2, 3, 4])
    assert inbox.accept("r", "src", 1, 4.0, [longer.to_wire()], keep=kept.extend) == 1
    assert len(kept) == 1
    np.testing.assert_array_equal(kept[0].start, [2, 3])
    assert inbox.subs["r"]["until"] == 4.0
    with pytest.raises(BadRequest, match="no standing request"):
        inbox.accept("other", "src", 1, 1.0, [], keep=kept.extend)


def test_inbox_moves_the_position_only_after_the_samples_are_kept():
    """A checkpoint taken while a batch is being stored must not hold a position past
    samples not stored yet (a crash there would lose them for good); a failed store
    leaves the position where it was, so the source sends the batch again."""
    from agents.standing import Inbox

    inbox = Inbox(_Holder())
    inbox.subs["r"] = {"seq": 3, "until": 10.0, "objects": None, "predicates": []}
    batch = [Series("a", "cpu", [10], [11], [0.5]).to_wire()]
    seen = []

    def keep(kept):
        seen.append(dict(inbox.subs["r"]))  # what a checkpoint at this moment would hold
        raise OSError("disk full")

    with pytest.raises(OSError):
        inbox.accept("r", "src", 4, 11.0, batch, keep=keep)
    assert seen[0]["seq"] == 3 and seen[0]["until"] == 10.0
    assert inbox.subs["r"]["seq"] == 3 and inbox.subs["r"]["until"] == 10.0
    assert inbox.accept("r", "src", 4, 11.0, batch, keep=lambda kept: None) == 4
    assert inbox.subs["r"]["until"] == 11.0


def test_a_request_opened_during_a_delivery_pass_waits_for_its_history():
    """A mediator re-subscribed from an older position must fetch that history from below
    before it can send it up.  ``anchor`` lowers its horizon when the request opens; a
    delivery pass already under way must not cut the new request against the horizon it
    read before (that cut an empty batch over the missing history and acknowledged it)."""
    import threading

    from agents.standing import Subscriptions

    class Source(_Holder):
        complete = 200.0
        sent: list = []

        def ref(self, name):
            holder = self

            class Peer:
                def query(self, op, **kw):
                    holder.sent.append((kw["request"], kw["until"]))
                    return kw["seq"]
            return Peer()

    src = Source()
    subs = Subscriptions(src, lambda since, until: [])
    reading, release = threading.Event(), threading.Event()

    def horizon():  # the pass reads its horizon, then stalls before cutting batches
        value = src.complete
        reading.set()
        release.wait(5)
        return value

    def lower(start):
        src.complete = min(src.complete, start)

    passing = threading.Thread(target=subs.deliver_all, kwargs={"horizon": horizon})
    passing.start()
    assert reading.wait(5)
    opened = threading.Thread(target=subs.subscribe, args=("late", "up"),
                              kwargs={"resume_seq": 3, "resume_until": 100.0, "anchor": lower})
    opened.start()
    release.set()
    passing.join(5)
    opened.join(5)
    assert not passing.is_alive() and not opened.is_alive()
    assert src.complete == 100.0 and "late" in subs.requests
    assert src.sent == []  # nothing cut over (100, 200] before the history arrived
    assert subs.deliver_all(horizon=lambda: src.complete) == 0
    src.complete = 130.0  # the history came in up to 130: now it is sent
    assert subs.deliver_all(horizon=lambda: src.complete) == 1 and src.sent == [("late", 130.0)]


def test_a_failing_subscriber_is_retried_with_backoff_and_holds_up_no_other():
    """Dead subscribers are tried again after 1, 2, 4 ... s (capped), the healthy one is
    served on every round, and one that comes back gets everything from its acknowledged
    position on."""
    from agents.standing import MAX_BATCH_SPAN, RETRY_CAP, RETRY_FIRST, Subscriptions

    class Source(_Holder):
        def __init__(self):
            super().__init__()
            self.down = {"ghost1", "ghost2", "ghost3"}
            self.calls: list = []

        def ref(self, name):
            holder = self

            class Peer:
                def query(self, op, **kw):
                    holder.calls.append((name, kw["seq"], kw["until"]))
                    if name in holder.down:
                        raise ConnectionError(f"{name} is unreachable")
                    return kw["seq"]
            return Peer()

    src = Source()
    subs = Subscriptions(src, lambda since, until: [])
    t0 = 1000.0
    for name in ["ghost1", "rec", "ghost2", "ghost3"]:
        subs.subscribe(name, name, resume_seq=0, resume_until=t0)
    tried: dict[str, list[float]] = {"ghost1": [], "ghost2": [], "ghost3": []}
    rounds = 200  # one every 0.5 s
    for r in range(1, rounds + 1):
        now = t0 + 0.5 * r
        first = len(src.calls)
        subs.deliver_all(now=now, horizon=lambda now=now: now)
        this_round = src.calls[first:]
        if r > 1:
            assert this_round[0][0] == "rec"  # who answered last time is served first
        assert [c for c in this_round if c[0] == "rec"] == [("rec", r, now)]  # every round
        for name in tried:
            if any(c[0] == name for c in this_round):
                tried[name].append(now)
    assert subs.requests["rec"]["acked_seq"] == rounds
    expected = [min(RETRY_FIRST * 2 ** k, RETRY_CAP) for k in range(len(tried["ghost1"]) - 1)]
    for name, times in tried.items():
        assert list(np.diff(times)) == expected, name
        assert len(times) < rounds / 10
    assert src.state["delivery_errors"] == sum(len(t) for t in tried.values())
    assert sorted(subs.retry) == ["ghost1", "ghost2", "ghost3"]

    # ghost1 re-subscribes (it came back): served in the next round, from where it acknowledged
    src.down.discard("ghost1")
    subs.subscribe("ghost1", "ghost1")
    now = t0 + 0.5 * (rounds + 1)
    first = len(src.calls)
    subs.deliver_all(now=now, horizon=lambda: now)
    mine = [c for c in src.calls[first:] if c[0] == "ghost1"]
    assert mine[0] == ("ghost1", 1, t0 + MAX_BATCH_SPAN) and mine[-1][2] == now
    assert subs.requests["ghost1"]["acked_until"] == now and "ghost1" not in subs.retry
    # ghost2 comes back without a word: served at its next retry, within the cap
    src.down.discard("ghost2")
    for r in range(rounds + 2, rounds + 2 + int(2 * RETRY_CAP) + 1):
        now = t0 + 0.5 * r
        subs.deliver_all(now=now, horizon=lambda now=now: now)
    assert subs.requests["ghost2"]["acked_until"] == now and "ghost2" not in subs.retry
    assert sorted(subs.retry) == ["ghost3"]


def test_a_pass_serves_requests_round_robin_and_the_next_pass_goes_on(monkeypatch):
    """One batch per request and round: a request with a long backlog takes turns with
    the others instead of draining first.  A pass that runs out of time leaves the rest
    of a backlog to the next pass, even for a request with a long ``interval``."""
    import agents.standing as standing
    from agents.standing import MAX_BATCH_SPAN, Subscriptions

    class Source(_Holder):
        calls: list = []

        def ref(self, name):
            holder = self

            class Peer:
                def query(self, op, **kw):
                    holder.calls.append((name, kw["seq"]))
                    return kw["seq"]
            return Peer()

    src = Source()
    subs = Subscriptions(src, lambda since, until: [])
    now = 10_000.0
    subs.subscribe("a", "a", interval=600.0, resume_seq=0, resume_until=now - 4 * MAX_BATCH_SPAN)
    subs.subscribe("b", "b", resume_seq=0, resume_until=now - 2 * MAX_BATCH_SPAN)
    assert subs.deliver_all(now=now, horizon=lambda: now) == 6
    assert src.calls == [("a", 1), ("b", 1), ("a", 2), ("b", 2), ("a", 3), ("a", 4)]

    src.calls.clear()
    subs.subscribe("c", "c", interval=600.0, resume_seq=0, resume_until=now - 3 * MAX_BATCH_SPAN)
    monkeypatch.setattr(standing, "PASS_BUDGET", 0.0)  # every pass ends after one round
    for k in range(3):
        subs.deliver_all(now=now + k, horizon=lambda: now)
    assert src.calls == [("c", 1), ("c", 2), ("c", 3)]  # its interval did not hold it back
    assert subs.deliver_all(now=now + 3, horizon=lambda: now + 3) == 1  # "b" only: "a", "c" wait 600 s


def test_a_request_id_held_by_one_subscriber_is_refused_to_another():
    """A source keys standing requests by id: a second subscriber choosing the same id
    would otherwise take the first one's stream over (and its position)."""
    from agents.standing import Subscriptions

    subs = Subscriptions(_Holder(), lambda since, until: [])
    subs.subscribe("r", "rec-1", resume_seq=3, resume_until=50.0)
    with pytest.raises(BadRequest, match="held here by subscriber 'rec-1'"):
        subs.subscribe("r", "rec-2")
    assert subs.requests["r"]["subscriber"] == "rec-1" and subs.requests["r"]["acked_seq"] == 3
    assert subs.subscribe("r", "rec-1")["resume_seq"] == 3  # its own subscriber: the same stream
