"""Settings and arguments of the collection layer's agents refused where they arrive,
with BadRequest naming what is wrong, instead of being taken and breaking later (a prune
deleting everything, a store that cannot be opened after a restart, a stalled scheduler,
a delivery that always fails, a checkpoint that cannot be saved); and object lists
bounded, so one request can neither overrun the store's SQL variables nor keep an agent
matching globs past its watchdog.

Real processes (a broker and two hosts) where agents are concerned; plain calls for the
checks and helpers on their own (an int beyond 64 bits no longer gets through the wire)."""

import re
import threading
import time
from types import SimpleNamespace

import pytest

from agents.evidence import check as check_connections
from agents.placement import Policy
from agents.preprocess import check as check_step
from agents.source import check_report
from agents.standing import Inbox, _union, matches
from masa.activity import Series
from masa.checks import MAX_OBJECTS
from masa.errors import BadRequest
from masa.store import Store
from probes.snmp_meter import check_settings as check_snmp

NAN, INF = float("nan"), float("inf")
TOO_MANY = [f"b1/none{i}" for i in range(MAX_OBJECTS + 1)]


def settings(pair, name):
    return pair.ref(name).query("describe")["settings"]


def agents_on(pair, host):
    return {a["name"] for a in pair.host(host, "agents")}


@pytest.fixture(scope="module")
def col(pair):
    """A collector on b1 (no connection evidence: less work for a shared machine)."""
    pair.create("b1", "collector", "col-in", interval=1.5, per_process="none", connections_every=0)
    return pair.ref("col-in")


# -- collector settings -------------------------------------------------------------------


@pytest.mark.parametrize(("setting", "bad", "said"), [
    ("retention", -5, "retention must be a positive number of seconds, not int -5"),
    ("retention", "abc", "retention must be a positive number of seconds, not str 'abc'"),
    ("retention", NAN, "retention must be a positive number"),
    ("store", "not a url", "store must be a database URL"),
    ("store", "nosuchdb://host/db", "store must be a database URL"),
    ("store", 5, "store must be a database URL"),
    ("connections_every", NAN, "connections_every must be a number of seconds between 0.05 and 86400 "
                               "(or 0: no connection evidence), not float nan"),
    ("connections_every", INF, "connections_every must be a number of seconds between 0.05"),
    ("connections_every", 1e-310, "connections_every must be a number of seconds between 0.05"),
    ("connections_every", 2 * 86400, "connections_every must be a number of seconds between 0.05"),
    ("interval", True, "interval must be a number of seconds between 0.05 and 3600, not bool True"),
])
def test_a_bad_collector_setting_is_refused_at_create_and_at_reconfigure(pair, col, setting, bad, said):
    with pytest.raises(BadRequest, match="^" + re.escape(said)):
        pair.create("b1", "collector", "col-bad", **{setting: bad})
    assert "col-bad" not in agents_on(pair, "b1")
    before = settings(pair, "col-in")
    with pytest.raises(BadRequest, match="^" + re.escape(said)):
        col.configure("reconfigure", **{setting: bad})
    assert settings(pair, "col-in") == before


def test_a_setting_equal_to_the_old_one_but_of_another_type_is_checked_too(pair):
    """``True == 1.0``: a reconfigure that compared values alone stored ``interval=True``
    on a collector sampling every 1.0 s without asking the collector."""
    pair.create("b1", "collector", "col-one", interval=1.0, per_process="none", connections_every=0)
    with pytest.raises(BadRequest, match="interval must be a number"):
        pair.ref("col-one").configure("reconfigure", interval=True)
    assert settings(pair, "col-one")["interval"] == 1.0
    assert type(settings(pair, "col-one")["interval"]) is float
    pair.host("b1", "terminate", "col-one")


def test_good_collector_settings_are_still_taken(pair, tmp_path):
    col = pair.create("b2", "collector", "col-ok", interval=1.0, per_process="none", connections_every=0,
                      retention=60, store=f"sqlite:///{tmp_path / 'col-ok.db'}")
    assert col["status"] == "running"
    taken = pair.ref("col-ok").configure("reconfigure", connections_every=2.5, retention=1800.5)
    assert taken["connections_every"] == 2.5 and taken["retention"] == 1800.5
    pair.wait(lambda: pair.ref("col-ok").query("catalog"), timeout=20)


# -- subscribe, quit ---------------------------------------------------------------------


@pytest.mark.parametrize(("args", "said"), [
    ({"deliver": ["x"]}, "deliver must name the subscriber's operation"),
    ({"deliver": 5}, "deliver must name the subscriber's operation"),
    ({"deliver": "not an op"}, "deliver must name the subscriber's operation"),
    ({"subscriber": ""}, "invalid subscriber name ''"),
    ({"subscriber": "two words"}, "invalid subscriber name"),
    ({"predicates": {"> 1": 1}}, r"predicates are a list of strings such as \[\"\*/cpu > 0.2\"\], not dict"),
    ({"predicates": 5}, "predicates are a list of strings"),
    ({"predicates": ["> 1e999"]}, "bad number in predicate '> 1e999': it must be finite"),
    ({"predicates": ["> 1"] * 101}, "predicates lists 101 predicates; at most 100"),
    ({"predicates": ["*" * 5000 + " > 1"]}, "a predicate is a string of at most 300 characters, not str '\\*\\*"),
    ({"resume_seq": 1, "resume_until": NAN}, "resume_until must be a finite number"),
    ({"resume_seq": 1.9, "resume_until": 1e9}, "resume_seq must be a whole number from 0 to"),
    ({"resume_seq": -1, "resume_until": 1e9}, "resume_seq must be a whole number"),
    ({"resume_seq": 2**53, "resume_until": 1e9}, "resume_seq must be a whole number"),
    ({"resume_seq": True, "resume_until": 1e9}, "resume_seq must be a whole number"),
    ({"resume_seq": 3}, "resume_seq and resume_until go together"),
    ({"request": ""}, "request must be a non-empty string of at most 1024 characters, not str ''"),
    ({"request": "r" * 1025}, "request must be a non-empty string of at most 1024 characters, not str 'rrr"),
    ({"interval": True}, "interval must be a number of seconds between 0.05 and 3600"),
    ({"objects": TOO_MANY}, f"objects lists {MAX_OBJECTS + 1} names or globs; at most {MAX_OBJECTS}"),
])
def test_a_bad_subscribe_is_refused_and_nothing_is_kept(col, args, said):
    with pytest.raises(BadRequest, match=said) as refused:
        col.query("subscribe", **{"request": "r", "subscriber": "nobody", **args})
    assert len(str(refused.value)) < 300  # the value quoted cut short, however long it is
    assert col.query("status")["requests"] == []
    with pytest.raises(BadRequest, match="request must be a non-empty string"):
        col.query("quit", request=[1])


def test_a_recorder_refuses_a_bad_subscribe_to_and_keeps_nothing(pair, col):
    pair.create("b2", "recorder", "rec-in")
    rec = pair.ref("rec-in")
    for args, said in [({"source": ""}, "invalid source name"),
                       ({"request": ["r"]}, "request must be a non-empty string"),
                       ({"objects": TOO_MANY}, "at most 10000 are accepted"),
                       ({"interval": NAN}, "interval must be a number")]:
        with pytest.raises(BadRequest, match=said):
            rec.configure("subscribe_to", **{"request": "r", "source": "col-in", **args})
    assert rec.query("subscriptions_status") == {}
    with pytest.raises(BadRequest, match="request must be a non-empty string"):
        rec.configure("unsubscribe", request={"r": 1})


def test_a_delivery_with_a_position_that_is_no_number_is_refused():
    """A batch moves the subscriber's position: NaN there compares false for ever."""
    inbox = Inbox(SimpleNamespace(state={}, lock=threading.RLock(), name="sub"))
    inbox.subs["r"] = {"seq": 0, "until": 0.0, "objects": None, "predicates": []}
    for seq, until, said in [(1, NAN, "until must be a finite number"), (True, 1.0, "seq must be a whole number"),
                             (1.5, 1.0, "seq must be a whole number")]:
        with pytest.raises(BadRequest, match=said):
            inbox.accept("r", "src", seq, until, [], keep=lambda kept: None)
    assert inbox.subs["r"]["seq"] == 0 and inbox.subs["r"]["until"] == 0.0


# -- report, connections: finite times, bounded object lists ------------------------------


@pytest.mark.parametrize("call", [lambda t: check_report(None, t, None), lambda t: check_report(None, 0.0, t),
                                  lambda t: check_connections(t, None)])
def test_a_time_beyond_a_float_is_a_bad_request_not_an_overflow(call):
    with pytest.raises(BadRequest, match="must be a finite number of seconds since the epoch, not int 1000000"):
        call(10**400)


@pytest.fixture(scope="module")
def crowded(pair, tmp_path_factory):
    """A recorder whose store holds MAX_OBJECTS + 1 objects (one sample each), and a
    mediator in front of it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('crowded') / 'rec.db'}"
    end = time.time() - 100
    with Store(url) as store:
        store.add_samples([(f"b1/o{i:05d}", "cpu", end - 1, end, float(i)) for i in range(MAX_OBJECTS + 1)])
    pair.create("b1", "recorder", "rec-crowded", store=url)
    pair.create("b1", "mediator", "med-crowded", sources=["rec-crowded"])
    return pair


def objects_in(answer):
    return {w["object"]: Series.from_wire(w) for w in answer["series"]}


def test_a_report_of_the_most_exact_names_allowed_is_answered_in_full(crowded):
    """MAX_OBJECTS exact names go to the store as one SQL variable each: all answered."""
    rec = crowded.ref("rec-crowded", timeout=60)
    names = [f"b1/o{i:05d}" for i in range(1, MAX_OBJECTS + 1)]
    got = objects_in(rec.query("report", objects=names))
    assert sorted(got) == names and got["b1/o09999"].value.tolist() == [9999.0]
    with pytest.raises(BadRequest, match=f"objects lists {MAX_OBJECTS + 1} names or globs; at most {MAX_OBJECTS}"):
        rec.query("report", objects=[*names, "b1/o00000"])
    with pytest.raises(BadRequest, match=f"at most {MAX_OBJECTS}"):
        rec.query("connections", objects=TOO_MANY)


def test_a_mediator_over_more_objects_than_one_report_takes_asks_in_parts(crowded):
    med = crowded.ref("med-crowded", timeout=60)
    got = objects_in(med.query("report", since=0))
    assert len(got) == MAX_OBJECTS + 1 and got["b1/o10000"].value.tolist() == [10000.0]


def test_a_report_with_the_most_globs_allowed_is_answered_without_a_restart(crowded):
    """Every held object is matched against every glob: as one expression, not 10**8
    matches (a report of 120,000 globs used to run past the watchdog, which restarted
    the agent)."""
    rec = crowded.ref("rec-crowded", timeout=60)
    before = next(a for a in crowded.host("b1", "agents") if a["name"] == "rec-crowded")["restarts"]
    globs = [f"b1/o*{i}x" for i in range(MAX_OBJECTS - 1)] + ["b1/o0000?"]
    got = objects_in(rec.query("report", objects=globs))
    assert sorted(got) == [f"b1/o0000{i}" for i in range(10)]
    assert next(a for a in crowded.host("b1", "agents") if a["name"] == "rec-crowded")["restarts"] == before


def test_matching_many_globs_is_one_scan_per_object():
    """A list of globs is compiled once into one expression and reused for every object
    (matched glob by glob, 10,000 globs x 3,000 objects took about 20 s)."""
    globs = [f"zz*{i}" for i in range(MAX_OBJECTS)]
    _union.cache_clear()
    hits = [o for o in (f"h/proc/p{i}/cpu" for i in range(3000)) if matches(globs, o)]
    assert hits == [] and _union.cache_info().misses == 1 and _union.cache_info().hits == 2999
    assert matches(["h/*", "x"], "h/cpu") and not matches([], "h/cpu") and matches(None, "h/cpu")
    assert matches(["[!a]/cpu"], "b/cpu") and not matches(["[!a]/cpu"], "a/cpu")


# -- mediator and domain settings ---------------------------------------------------------


@pytest.mark.parametrize(("kind", "args", "said"), [
    ("mediator", {"max_lag": NAN}, "max_lag must be a positive number of seconds, not float nan"),
    ("mediator", {"cache_retain": INF}, "cache_retain must be a positive number"),
    ("mediator", {"placement_every": 1e-310}, "placement_every must be a number of seconds between 0.05 and 86400"),
    ("mediator", {"own_load": "abc"}, "own_load must be a number between 0 and 1"),
    ("mediator", {"own_load": 2}, "own_load must be a number between 0 and 1"),
    ("mediator", {"placement": 5}, "placement must be a dict of margin, dwell"),
    ("mediator", {"placement": {"margin": NAN}}, "placement needs finite numbers"),
    ("mediator", {"placement": {"dwell": INF}}, "placement settings must be numbers"),
    ("mediator", {"hosts": "b1"}, "hosts must be a list of host names"),
    ("mediator", {"successor": ""}, "invalid successor name"),
    ("mediator", {"sources": ["col-in", ""]}, "invalid source name"),
    ("mediator", {"retention": -1}, "retention must be a positive number"),
    ("mediator", {"steps": [{"step": "resample", "period": 1e-6}]}, "resample period must be a number of seconds >= 0.05"),
    ("domain", {"members": TOO_MANY}, f"members lists {MAX_OBJECTS + 1} names or globs"),
])
def test_a_bad_mediator_setting_is_refused(pair, kind, args, said):
    with pytest.raises(BadRequest, match=said):
        pair.create("b2", kind, "med-bad", **{"sources": ["col-in"], **args})
    assert "med-bad" not in agents_on(pair, "b2")


def test_a_mediator_refuses_a_request_whose_ids_below_would_be_refused_below(pair, col):
    """Its request below adds its own and its source's names; refused below, the stream
    up would wait for that history for ever."""
    pair.create("b2", "mediator", "med-ids", sources=["col-in"])
    med = pair.ref("med-ids")
    with pytest.raises(BadRequest, match="request is too long for med-ids"):
        med.query("subscribe", request="r" * 1010, subscriber="nobody")
    assert med.query("status")["requests"] == []
    with pytest.raises(BadRequest, match="invalid successor name"):
        med.configure("hand_over", to="")


def test_step_and_policy_numbers_are_checked():
    for bad in [{"step": "resample", "period": 1.0, "origin": NAN}, {"step": "resample", "period": 1.0,
                                                                     "min_coverage": "abc"},
                {"step": "smooth", "window": INF}, {"step": "filter", "objects": TOO_MANY},
                {"step": "nope", "junk": "x" * 10_000}]:
        with pytest.raises(BadRequest) as refused:
            check_step(bad)
        assert len(str(refused.value)) < 300
    assert check_step({"step": "resample", "period": 5})["period"] == 5.0
    for bad in [5, "margin", {"margin": NAN}, {"cooldown": INF}, {"dwell": NAN}]:
        with pytest.raises(BadRequest):
            Policy.from_settings(bad)
    assert Policy.from_settings({"margin": "0.5"}).margin == 0.5


def test_snmp_settings_of_the_wrong_type_are_quoted_cut_short():
    for bad in [{"community": ["public"] * 10_000}, {"timeout": "x" * 10_000}, {"retries": [1] * 10_000}]:
        with pytest.raises(ValueError, match="must be") as refused:
            check_snmp({"target": "udp:127.0.0.1:161", **bad})
        assert len(str(refused.value)) < 200
