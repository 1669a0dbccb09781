"""Mediators and domain agents on real processes: the whole chain, cascades, redirects,
moves.  Collectors sample real /proc on hosts of domain B; everything above is checked
against the collectors' own data, sample by sample."""

import subprocess
import sys
import time

import numpy as np
import pytest

from agents import preprocess
from agents.domain_join import reference_join
from masa.activity import Series
from masa.errors import BadRequest
from tests.agents.mediation_helpers import (
    assert_same_samples,
    gaps,
    recorded,
    series,
    taken,
    window,
)
from tests.cluster import Cluster


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """b1, b2: domain B with a collector each (0.3 s and 0.5 s: misaligned); m1, m2: A."""
    hosts = {"b1": {"domain": "B"}, "b2": {"domain": "B"}, "m1": {"domain": "A"}, "m2": {"domain": "A"}}
    with Cluster(tmp_path_factory.mktemp("masa"), hosts) as c:
        c.create("b1", "collector", "col1", interval=0.3, per_process="none")
        c.create("b2", "collector", "col2", interval=0.5, per_process="none")
        yield c


def test_domain_sum_through_a_mediator_to_a_subscriber_equals_member_data(chain):
    c = chain
    c.create("b2", "domain", "dom", sources=["col1", "col2"], members=["*/cpu"])
    c.create("m1", "mediator", "med", sources=["dom"])
    c.create("m2", "recorder", "top")
    c.ref("top").configure("subscribe_to", request="domain", source="med")
    c.wait(lambda: taken(c, "top", "domain") >= 3, timeout=20)
    # a gap in b2's data: a rebuilt meter has no baseline for one interval
    c.ref("col2").configure("reconfigure", match="no-such-process")
    # and one long sample in b1's: a suspended collector meters nothing until resumed
    c.host("b1", "suspend", "col1")
    time.sleep(1.2)
    c.host("b1", "resume", "col1")
    dom = c.ref("dom")
    first = recorded(c, "top", "B/cpu").start[0]
    c.wait(lambda: dom.query("status")["complete_until"] > time.time() - 0.5 and
           recorded(c, "top", "B/cpu").end[-1] > first + 4, timeout=30)
    got = recorded(c, "top", "B/cpu")
    until = got.end[-1]
    answer = dom.query("report", objects=["b1/cpu", "b2/cpu"], since=first - 30, until=until)
    members = series(answer)
    direct = {name: series(c.ref(col).query("report", objects=[name], since=first - 30, until=until + 5))[name]
              for name, col in (("b1/cpu", "col1"), ("b2/cpu", "col2"))}
    # the domain hands out exactly the collectors' samples
    for name in direct:
        assert_same_samples(members[name], window(direct[name], first - 30, answer["until"]))
    assert gaps(direct["b2/cpu"]) >= 1
    lengths = direct["b1/cpu"].end - direct["b1/cpu"].start
    assert lengths.max() > 0.9  # the long sample over the suspension
    # the subscriber's collective series is the exact join of the collectors' samples
    want = window(reference_join(list(direct.values()), "B/cpu", "cpu"), first - 1e-9, until)
    assert_same_samples(got, want, rtol=1e-12)
    # and a report of the collective object says the same
    answer = c.ref("med").query("report", since=first - 1e-9, until=until)
    assert answer["until"] > first
    assert_same_samples(series(answer)["B/cpu"], window(want, first - 1e-9, answer["until"]), rtol=1e-12)
    assert [e["object"] for e in c.ref("med").query("catalog")] == ["B/cpu"]


def test_cascade_of_three_mediators_applies_each_step_once(chain):
    c = chain
    step = {"step": "resample", "period": 1.0}
    c.create("m1", "mediator", "casc1", sources=["col1"], steps=[step])
    c.create("m2", "mediator", "casc2", sources=["casc1"])
    c.create("m1", "mediator", "casc3", sources=["casc2"], steps=[step, {"step": "normalise", "scale": 2}])
    c.create("m2", "recorder", "casc-top")
    c.ref("casc-top").configure("subscribe_to", request="r", source="casc3", objects=["b1/cpu"])
    c.wait(lambda: len(recorded(c, "casc-top", "b1/cpu")) >= 5, timeout=30)
    (entry,) = [e for e in c.ref("casc3").query("catalog") if e["object"] == "b1/cpu"]
    assert entry["applied"] == ["resample(min_coverage=0.5,origin=0.0,period=1.0)",
                                "normalise(offset=0.0,scale=2.0)"]
    got = recorded(c, "casc-top", "b1/cpu")
    for source in ("casc3", "col1"):  # a window running backwards or not finite: refused alike
        with pytest.raises(BadRequest, match=r"until \(50\) is before since \(100\)"):
            c.ref(source).query("report", objects=["b1/cpu"], since=100, until=50)
        with pytest.raises(BadRequest, match="since must be a finite number"):
            c.ref(source).query("report", since=float("nan"))
    # everything the collector holds now (no `until`): the sample running past the last
    # bin's end, which casc1 had when it closed that bin, must be part of the recomputation
    raw = series(c.ref("col1").query("report", objects=["b1/cpu"], since=got.start[0] - 5))["b1/cpu"]
    assert_resampled_once(got, raw, period=1.0, scale=2.0)  # resampled once, halved
    # a report down the cascade agrees with the stream, and the second one is a cache hit
    answer = c.ref("casc3").query("report", objects=["b1/cpu"], since=got.start[0], until=got.end[-1])
    assert answer["until"] >= got.end[-1] - 1  # final up to the last whole bin below
    assert_same_samples(series(answer)["b1/cpu"], window(got, got.start[0], answer["until"]), rtol=1e-12)
    before = c.ref("casc3").query("status")["cache"]
    again = c.ref("casc3").query("report", objects=["b1/cpu"], since=got.start[0] + 1, until=answer["until"])
    after = c.ref("casc3").query("status")["cache"]
    assert after["hits"] == before["hits"] + 1 and after["fetches"] == before["fetches"]
    assert_same_samples(series(again)["b1/cpu"], window(got, got.start[0] + 1, answer["until"]), rtol=1e-12)


def assert_resampled_once(got: Series, raw: Series, period: float, scale: float) -> None:
    """``got`` is ``raw`` resampled once (bins of ``period`` on the whole-second grid, rate =
    activity / covered time, bins under half covered left out) and divided by ``scale``:
    bin by bin at each bin's own place, none missing in between.  ``raw`` must hold every
    sample overlapping the bins (fetch it past ``got.end[-1]``): a bin computed from fewer
    samples than ``raw`` holds, or a step applied twice, fails."""
    assert len(got) and len(raw) and raw.end[-1] >= got.end[-1]
    assert np.all(got.end - got.start == period) and np.all(got.start == np.round(got.start))
    n = int(round((got.end[-1] - got.start[0]) / period))
    rate, covered = raw.resample(got.start[0], period, n)
    k = np.round((got.start - got.start[0]) / period).astype(int)
    assert np.all(covered[k] >= 0.5 - 1e-9), "a bin from less than half its time"
    np.testing.assert_allclose(got.value, rate[k] / covered[k] / scale, rtol=1e-9)
    left_out = sorted(set(np.flatnonzero(covered >= 0.5 + 1e-6)) - set(k))
    assert not left_out, f"bins covered by the raw data but not delivered: {left_out}"


def test_the_resample_check_takes_the_sample_running_past_the_last_bin():
    """The flake this test once had: the raw data for the check was cut at the last bin's
    end, and a bin covered >= 99.9 % was compared as if fully covered, so a collector
    sample that began 0.4 ms before that end made a correct bin differ by 4e-4."""
    t0 = 1_700_000_000.0
    bounds = t0 + np.array([-0.2, 0.1, 0.4, 0.7, 1.0, 1.3, 1.6, 1.9, 2.2, 2.5, 2.8, 3 - 0.0004, 3.3])
    values = np.r_[np.linspace(1.0, 1.3, len(bounds) - 2), 3.0]  # the straddling sample: busier
    raw = Series("x", "cpu", bounds[:-1], bounds[1:], values)
    resample = preprocess.check({"step": "resample", "period": 1.0})
    halve = preprocess.check({"step": "normalise", "scale": 2})
    served = window(preprocess.apply([resample, halve], raw), t0, t0 + 3)  # as a mediator serves
    assert_resampled_once(served, raw, 1.0, 2.0)
    cut = window(raw, -np.inf, served.end[-1])
    with pytest.raises(AssertionError):  # the last bin's own samples are needed to check it
        assert_resampled_once(served, cut, 1.0, 2.0)
    rate, covered = cut.resample(t0 + 2, 1.0, 1)  # the last bin closed before its last sample
    early = np.concatenate([served.value[:-1], rate / covered / 2])
    assert abs(early[-1] / served.value[-1] - 1) > 1e-4
    partial = Series("x", "cpu", served.start, served.end, early)
    with pytest.raises(AssertionError):
        assert_resampled_once(partial, raw, 1.0, 2.0)
    twice = preprocess.apply([halve], served)  # a step applied again
    with pytest.raises(AssertionError):
        assert_resampled_once(twice, raw, 1.0, 2.0)
    gap = Series("x", "cpu", served.start[[0, 2]], served.end[[0, 2]], served.value[[0, 2]])
    with pytest.raises(AssertionError):  # a bin lost on the way
        assert_resampled_once(gap, raw, 1.0, 2.0)


def test_a_step_handed_down_is_applied_below_and_skipped_here(chain):
    c = chain
    smooth = {"step": "smooth", "window": 2.0}
    c.create("m1", "mediator", "near", sources=["col1"])
    c.create("m2", "mediator", "far", sources=["near"], steps=[smooth])
    assert c.ref("far").configure("hand_step", step=smooth, to="near") == []
    (entry,) = [e for e in c.ref("far").query("catalog") if e["object"] == "b1/cpu"]
    assert entry["applied"] == ["smooth(window=2.0)"]  # once, by "near"
    time.sleep(1.0)
    t = c.ref("col1").query("report", objects=["b1/cpu"])["until"]
    far = c.ref("far").query("report", objects=["b1/cpu"], since=t - 2, until=t)
    near = c.ref("near").query("report", objects=["b1/cpu"], since=t - 2, until=t)
    assert far["until"] == near["until"] > t - 2, (t, far, near, c.ref("far").query("status"))
    assert_same_samples(series(far)["b1/cpu"], series(near)["b1/cpu"], rtol=1e-12)  # not smoothed twice


def test_hand_over_redirects_callers_who_remember_it(chain):
    c = chain
    c.create("m1", "mediator", "old-med", sources=["col1"])
    c.create("m2", "mediator", "new-med", sources=["col1"])
    c.ref("old-med").configure("hand_over", to="new-med")
    ref = c.ref("old-med")
    answer = ref.query("report", objects=["b1/cpu"])
    assert "b1/cpu" in series(answer), answer
    assert ref.name == "new-med" and ref.redirected_from == ["old-med"]
    assert ref.query("status")["host"] == "m2"  # later calls go to new-med directly


def test_a_standing_request_follows_a_hand_over(chain):
    """After "ask X from now on" the subscriber's keep-alive re-opens its request through
    the redirect, at X, from its own position: the stream goes on from X (batches from X
    are taken, not refused as from a stranger), and nothing between is lost."""
    c = chain
    c.create("m1", "mediator", "ho-old", sources=["col1"])
    c.create("m2", "mediator", "ho-new", sources=["col1"])
    c.create("m2", "recorder", "ho-rec")
    c.ref("ho-rec").configure("subscribe_to", request="ho", source="ho-old", objects=["b1/cpu"])
    c.wait(lambda: taken(c, "ho-rec", "ho") >= 2, timeout=30)
    c.ref("ho-old").configure("hand_over", to="ho-new")
    seq = taken(c, "ho-rec", "ho")
    c.wait(lambda: taken(c, "ho-rec", "ho") >= seq + 3, timeout=60)  # the keep-alive: 10 s
    assert c.ref("ho-rec").query("subscriptions_status")["ho"]["source"] == "ho-new"
    assert c.ref("ho-new").query("status")["requests"] == ["ho"]
    got = recorded(c, "ho-rec", "b1/cpu")
    direct = series(c.ref("col1").query("report", objects=["b1/cpu"], since=got.start[0] + 1e-6,
                                        until=got.end[-1]))["b1/cpu"]
    assert_same_samples(got, direct)  # every sample the collector took, once


def test_mediator_moved_mid_stream_loses_and_doubles_nothing(chain):
    c = chain
    c.create("m1", "mediator", "mover", sources=["col1", "col2"])
    c.create("m2", "recorder", "counter")
    c.ref("counter").configure("subscribe_to", request="all", source="mover", objects=["*/cpu"])
    c.wait(lambda: taken(c, "counter", "all") >= 2, timeout=20)
    for target in ("m2", "m1", "b1", "m1"):
        time.sleep(0.7)
        assert c.move("mover", target)["to"] == target
    time.sleep(1.0)
    settle = c.ref("mover").query("status")["complete_until"]
    c.wait(lambda: min(recorded(c, "counter", o).end[-1] for o in ("b1/cpu", "b2/cpu")) >= settle - 1,
           timeout=20)
    for obj, col in (("b1/cpu", "col1"), ("b2/cpu", "col2")):
        got = recorded(c, "counter", obj)
        direct = series(c.ref(col).query("report", objects=[obj], since=got.start[0] + 1e-6,
                                         until=got.end[-1]))[obj]
        assert len(got) >= 8
        assert_same_samples(got, direct)  # every sample the collector took, once


def test_placement_policy_moves_the_mediator_next_to_its_source_and_stays(chain):
    c = chain
    policy = {"w_cpu": 0.0, "w_local": 1.0, "margin": 0.5, "dwell": 2, "cooldown": 0.0}
    c.create("m1", "mediator", "nomad", sources=["col2"], placement=policy, placement_every=0.5)
    c.wait(lambda: c.where("nomad") == "b2", timeout=20)
    time.sleep(2.5)  # five more evaluations: no reason to leave
    status = c.ref("nomad").query("status")
    assert status["host"] == "b2" and status["moves"] == 1


#: busy 1.5 s, idle 3 s: its idle samples read 0, and so does at least one whole second of
#: each idle phase (the samples at its edges, 0.3 s at most, leave 2.4 s untouched)
BUSY_IDLE = "import time\nwhile True:\n    t = time.time()\n    while time.time() - t < 1.5: pass\n    time.sleep(3.0)\n"


def test_predicates_pushed_down_when_values_pass_unchanged_and_checked_on_the_way_up(chain):
    c = chain
    child = subprocess.Popen([sys.executable, "-c", BUSY_IDLE + "# masa-picky-marker"])
    try:
        c.create("b1", "collector", "col-picky", interval=0.3, match="masa-picky-marker", per_process="pid")
        obj = c.wait(lambda: next((e["object"] for e in c.ref("col-picky").query("catalog")
                                   if e["object"].endswith(f"/{child.pid}")), None), timeout=20)
        c.create("m1", "mediator", "plain", sources=["col-picky"])
        c.create("m1", "mediator", "resampling", sources=["col-picky"],
                 steps=[{"step": "resample", "period": 1.0}])
        wanted = [f"{obj} >= 0.02", f"{obj} < 1.5"]
        for source in ("plain", "resampling"):
            c.create("m2", "recorder", f"picky-{source}")
            c.ref(f"picky-{source}").configure("subscribe_to", request="r", source=source, objects=[obj],
                                               predicates=wanted)
        below = {name: c.ref(name).query("status")["below"] for name in ("plain", "resampling")}
        assert [b["predicates"] for b in below["plain"].values()] == [wanted]  # the collector filters
        assert [b["predicates"] for b in below["resampling"].values()] == [[]]  # values change: all sent
        start = max(c.ref(f"picky-{s}").query("subscriptions_status")["r"]["until"] for s in ("plain", "resampling"))
        c.wait(lambda: min(c.ref(f"picky-{s}").query("subscriptions_status")["r"]["until"]
                           for s in ("plain", "resampling")) > start + 9.0, timeout=40)

        def passes(values):
            return (values >= 0.02) & (values < 1.5)

        # unchanged values: exactly the collector's samples that hold, none of the others
        got = recorded(c, "picky-plain", obj)
        raw = series(c.ref("col-picky").query("report", objects=[obj], since=got.start[0],
                                              until=got.end[-1]))[obj]
        keep = passes(raw.value)
        assert keep.sum() >= 4 and (~keep).sum() >= 4, raw.value  # busy and idle samples both
        np.testing.assert_array_equal(got.end, raw.end[keep])
        np.testing.assert_array_equal(got.value, raw.value[keep])
        # resampled values: checked in full on the way up, the idle seconds left out
        got = recorded(c, "picky-resampling", obj)
        assert len(got) >= 2 and np.all(passes(got.value))
        raw = series(c.ref("col-picky").query("report", objects=[obj], since=got.start[0] - 5))[obj]
        n = int(round((got.end[-1] - got.start[0]) / 1.0))
        rate, covered = raw.resample(got.start[0], 1.0, n)
        whole = covered >= 0.5
        bins = np.full(n, np.nan)
        bins[whole] = rate[whole] / covered[whole]
        k = np.round(got.start - got.start[0]).astype(int)
        np.testing.assert_allclose(got.value, bins[k], rtol=1e-9)  # each a resampled second
        assert np.any(whole & ~passes(np.nan_to_num(bins, nan=-1.0)))  # a second that did not hold...
        left_out = sorted(set(np.flatnonzero(whole & passes(np.nan_to_num(bins, nan=-1.0)))) - set(k))
        assert not left_out, f"seconds that hold but were not delivered: {left_out}"  # ...was the one left out
    finally:
        child.kill()
        child.wait(10)
