"""``report`` and ``connections`` of a mediator with a dead source below, on real
processes: answered within the caller's own timeout (shorter than the platform's call
timeout, which a handler waiting on the dead source would spend), with the live sources'
data and the dead one named under ``missing``; passed up a cascade; and once the source is
back, the stretch it missed is asked for again (nothing of it was held as complete).  A
mediator's paged report loses and repeats nothing.  No timing thresholds beyond the
caller's timeout the test is about: every other wait is bounded generously."""

import time
from collections import Counter

import pytest

from agents.domain_join import reference_join
from masa.errors import MasaError
from tests.agents.mediation_helpers import assert_same_samples, restarts, series, window
from tests.cluster import Cluster

#: the platform's call timeout: what a handler waiting on a dead source used to spend
CALL_TIMEOUT = 40.0
#: the caller's own, shorter timeout: the answer must come within it
CALLER = 12.0
HOSTS = {"b1": {"domain": "B"}, "b2": {"domain": "B"}, "m1": {"domain": "A"}, "m2": {"domain": "A"}}
FEEDER = "feeder=tests.agents.source_kinds:FeederAgent"


def collectors(c):
    c.create("b1", "collector", "col1", interval=0.3, per_process="none")
    c.create("b2", "collector", "col2", interval=0.5, per_process="none")


def ask(c, agent, op, **kw):
    return c.ref(agent, timeout=CALLER).query(op, **kw)


def samples_of(c, agent, obj, since):
    got = series(c.ref(agent).query("report", objects=[obj], since=since)).get(obj)
    return 0 if got is None else len(got)


def direct(c, col, obj, since, until):
    """What ``col`` itself holds of ``obj`` in ``(since, until]``."""
    return window(series(c.ref(col).query("report", objects=[obj], since=since - 60, until=until))[obj],
                  since, until)


def unreachable(c, agent):
    return c.ref(agent).query("status")["unreachable"]


def both_known(c, agent):
    c.wait(lambda: {"b1/cpu", "b2/cpu"} <= {e["object"] for e in c.ref(agent).query("catalog")}, timeout=30)


def fill_then_kill_col2(c, agent):
    """A first report through ``agent`` (its cache holds both sources up to its
    ``until``), more samples at col2 after that, then col2's host killed."""
    c.wait(lambda: samples_of(c, "col2", "b2/cpu", 0) >= 4, timeout=30)
    first = ask(c, agent, "report")
    since = min(float(s.start[0]) for s in series(first).values())
    c.wait(lambda: samples_of(c, "col2", "b2/cpu", first["until"]) >= 3, timeout=30)
    c.kill("b2")  # col2's name still points at its dead host
    killed = time.time()
    c.wait(lambda: samples_of(c, "col1", "b1/cpu", killed + 1) >= 2, timeout=30)
    return since, first["until"]


def back(c, agent, until):
    """col2 restarted, answering ``agent`` again, and holding samples past ``until``."""
    c.restart("b2")
    c.wait(lambda: "col2" not in unreachable(c, agent), timeout=60)
    c.wait(lambda: samples_of(c, "col2", "b2/cpu", until) >= 1, timeout=60)


def test_report_and_connections_with_a_dead_source_answer_in_time_and_name_it(tmp_path):
    with Cluster(tmp_path, HOSTS, call_timeout=CALL_TIMEOUT) as c:
        collectors(c)
        c.create("m1", "mediator", "med", sources=["col1", "col2"])
        both_known(c, "med")
        since, _ = fill_then_kill_col2(c, "med")
        # before, the handler asked col2 with the whole call timeout: the caller got QueryTimeout
        answer = ask(c, "med", "report", since=since)
        assert set(answer["missing"]) == {"col2"}
        got = series(answer)
        assert "b1/cpu" in got and all(o.startswith("b1/") for o in got)  # the live source's data, whole
        assert_same_samples(got["b1/cpu"], direct(c, "col1", "b1/cpu", since, answer["until"]))
        evidence = ask(c, "med", "connections")
        assert set(evidence["missing"]) == {"col2"}
        assert {"edges", "listening", "watched", "until"} <= set(evidence)
        # a question col2 has no part in is whole, and says nothing is missing
        only = ask(c, "med", "report", objects=["b1/*"], since=since)
        assert "missing" not in only and "b1/cpu" in series(only)
        # col2 back: the stretch it missed is asked for again, not taken as held
        back(c, "med", answer["until"])
        again = ask(c, "med", "report", since=since, until=answer["until"])
        assert "missing" not in again and again["until"] == answer["until"]
        for obj, col in (("b1/cpu", "col1"), ("b2/cpu", "col2")):
            assert_same_samples(series(again)[obj], direct(c, col, obj, since, answer["until"]))
        assert "missing" not in ask(c, "med", "connections")
        assert restarts(c, "m1", "med") == 0


def test_a_mediator_above_passes_the_mark_up_and_holds_nothing_of_it_as_complete(tmp_path):
    with Cluster(tmp_path, HOSTS, call_timeout=CALL_TIMEOUT) as c:
        collectors(c)
        c.create("m1", "mediator", "mid", sources=["col1", "col2"])
        c.create("m2", "mediator", "top", sources=["mid"])
        both_known(c, "top")
        since, held = fill_then_kill_col2(c, "top")  # top's cache holds b2/cpu up to ``held``
        c.wait(lambda: "col2" in unreachable(c, "mid"), timeout=30)
        answer = ask(c, "top", "report", since=since)
        assert set(answer["missing"]) == {"col2"}  # named by the mediator below, passed up
        assert answer["until"] > held
        got = series(answer)
        assert_same_samples(got["b1/cpu"], direct(c, "col1", "b1/cpu", since, answer["until"]))
        assert got["b2/cpu"].end[-1] <= held  # what top held from before: nothing after it
        assert set(ask(c, "top", "connections")["missing"]) == {"col2"}
        back(c, "mid", answer["until"])
        # the stretch after ``held`` was not taken as complete for b2/cpu: asked again
        again = ask(c, "top", "report", since=since, until=answer["until"])
        assert "missing" not in again and again["until"] == answer["until"]
        for obj, col in (("b1/cpu", "col1"), ("b2/cpu", "col2")):
            assert_same_samples(series(again)[obj], direct(c, col, obj, since, answer["until"]))
        assert len(series(again)["b2/cpu"].since(held)) >= 3  # col2's samples from before its death
        assert restarts(c, "m1", "mid") == 0 and restarts(c, "m2", "top") == 0


def test_paging_through_a_mediator_delivers_every_sample_once(tmp_path):
    """Each source's answer is cut at its own page's ``until``; the mediator answers up to
    the earliest of them and keeps the rest in its cache for the next page, which asks
    from there: every sample once, whichever source's page ends first."""
    with Cluster(tmp_path, {"s1": {"domain": "S"}}, kinds=(FEEDER,)) as c:
        t0 = time.time() - 600
        feeds = {  # misaligned ticks, pages of different lengths (PAGE samples each)
            "feed-a": [[f"a/o{i}", "cpu", t0 + k, t0 + k + 1, float(k)] for k in range(40) for i in range(7)],
            "feed-b": [[f"b/o{i}", "cpu", t0 + 0.7 * k + 0.3, t0 + 0.7 * (k + 1) + 0.3, float(i)]
                       for k in range(60) for i in range(3)],
        }
        for name, rows in feeds.items():
            c.create("s1", "feeder", name)
            assert c.ref(name).query("feed", rows=rows) == len(rows)
        c.create("s1", "mediator", "pager", sources=list(feeds))
        c.wait(lambda: len(c.ref("pager").query("catalog")) == 10, timeout=30)
        seen, since, pages = Counter(), 0.0, 0
        while pages < 200:
            answer = c.ref("pager").query("report", since=since)
            pages += 1
            assert "missing" not in answer
            for s in series(answer).values():
                seen.update((s.object, float(e)) for e in s.end)
            if answer["until"] <= since:
                break
            since = answer["until"]
        want = [(r[0], float(r[3])) for rows in feeds.values() for r in rows]
        assert set(seen) == set(want) and sum(seen.values()) == len(want)  # all, none twice
        assert pages > 5  # it really was paged


def test_a_domain_agent_with_a_dead_member_source_names_it(tmp_path):
    """The collective object is then joined from the live members only, and says so."""
    with Cluster(tmp_path, HOSTS, call_timeout=CALL_TIMEOUT) as c:
        collectors(c)
        c.create("m1", "domain", "dom", sources=["col1", "col2"], members=["*/cpu"], label="B")
        c.wait(lambda: {"b1/cpu", "b2/cpu"} <= {e["object"] for e in c.ref("dom").query("members")}, timeout=30)
        since, _ = fill_then_kill_col2(c, "dom")
        answer = ask(c, "dom", "report", since=since)
        assert set(answer["missing"]) == {"col2"}
        want = window(reference_join([direct(c, "col1", "b1/cpu", since - 60, answer["until"] + 60)], "B/cpu", "cpu"),
                      since, answer["until"])
        assert_same_samples(series(answer)["B/cpu"], want, rtol=1e-12)
        assert set(ask(c, "dom", "connections")["missing"]) == {"col2"}
        assert restarts(c, "m1", "dom") == 0


SLOW = "slowfeed=tests.agents.source_kinds:SlowReportFeederAgent"
REFUSING = "refusing=tests.agents.source_kinds:RefusingFeederAgent"


def test_a_slow_source_is_waited_for_and_a_live_refusal_reaches_the_caller(tmp_path):
    """A report below that takes longer than the short 2 s budget is data on its way, not
    a dead source: it is waited for, nothing is named missing and the source is not
    marked unreachable.  And a live source refusing the question is the caller's answer,
    not a source to leave out."""
    with Cluster(tmp_path, {"s1": {"domain": "S"}, "m1": {"domain": "A"}}, kinds=(FEEDER, SLOW, REFUSING)) as c:
        t0 = time.time() - 100
        c.create("s1", "feeder", "quick")
        c.create("s1", "slowfeed", "slow", delay=4.0)
        c.ref("quick").query("feed", rows=[["q/cpu", "cpu", t0 + k, t0 + k + 1, 0.5] for k in range(10)])
        c.ref("slow").query("feed", rows=[["s/cpu", "cpu", t0 + k, t0 + k + 1, 0.25] for k in range(10)])
        c.create("m1", "mediator", "med", sources=["quick", "slow"])
        c.wait(lambda: {"q/cpu", "s/cpu"} <= {e["object"] for e in c.ref("med").query("catalog")}, timeout=30)
        answer = c.ref("med", timeout=30).query("report", since=t0, until=t0 + 10)
        assert "missing" not in answer, answer.get("missing")
        got = series(answer)
        assert len(got["q/cpu"]) == 10 and len(got["s/cpu"]) == 10
        assert answer["until"] == t0 + 10
        assert unreachable(c, "med") == {}
        c.create("s1", "refusing", "refuser")
        c.ref("refuser").query("feed", rows=[["r/cpu", "cpu", t0, t0 + 1, 0.5]])
        c.create("m1", "mediator", "med2", sources=["quick", "refuser"])
        c.wait(lambda: "r/cpu" in {e["object"] for e in c.ref("med2").query("catalog")}, timeout=30)
        with pytest.raises(MasaError, match="refuser refuses reports"):
            c.ref("med2", timeout=30).query("report", since=t0)
        assert unreachable(c, "med2") == {}
