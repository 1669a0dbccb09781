"""A step handed down (``hand_step``) changes no sample, before or after the hand-off.

Real processes: a collector, ``medlow`` in front of it, and above it ``medtop`` and its
``twin`` with the same steps (normalise, then smooth).  ``medtop`` hands the normalise
step to ``medlow``; ``twin`` does not, but its source changes under it all the same.
Everything both hand out, by report and by standing request, must equal the steps applied
once to the collector's own samples, sample by sample."""

import time

import pytest

from agents import preprocess
from masa.errors import BadRequest
from tests.agents.mediation_helpers import assert_same_samples, recorded, series, window
from tests.cluster import Cluster

STEPS = [{"step": "normalise", "scale": 2}, {"step": "smooth", "window": 3}]
TAGS = ["normalise(offset=0.0,scale=2.0)", "smooth(window=3.0)"]


def test_hand_step_keeps_every_sample_before_and_after_the_hand_off(tmp_path):
    with Cluster(tmp_path, {"b1": {"domain": "B"}, "m1": {"domain": "A"}}) as c:
        c.create("b1", "collector", "col", interval=0.3, per_process="none")
        c.create("m1", "mediator", "medlow", sources=["col"])
        for name in ("medtop", "twin"):
            c.create("m1", "mediator", name, sources=["medlow"], steps=STEPS)
        c.create("m1", "recorder", "above")
        c.ref("above").configure("subscribe_to", request="r", source="medtop", objects=["b1/cpu"])
        c.wait(lambda: len(recorded(c, "above", "b1/cpu")) >= 8, timeout=30)
        since = recorded(c, "above", "b1/cpu").end[0] - 1e-6
        for name in ("medtop", "twin"):  # both now hold raw samples in their report caches
            assert series(c.ref(name).query("report", objects=["b1/cpu"], since=since))["b1/cpu"]

        with pytest.raises(BadRequest):  # not a step of medtop's
            c.ref("medtop").configure("hand_step", step={"step": "smooth", "window": 9}, to="medlow")
        with pytest.raises(BadRequest):  # not a source of medtop's
            c.ref("medtop").configure("hand_step", step=STEPS[0], to="col")
        handed = time.time()
        assert c.ref("medtop").configure("hand_step", step=STEPS[0], to="medlow") == [TAGS[1]]
        (below,) = [e for e in c.ref("medlow").query("catalog") if e["object"] == "b1/cpu"]
        assert below["applied"] == [TAGS[0]]
        for name in ("medtop", "twin"):  # each step applied once on the way up, as before
            (entry,) = [e for e in c.ref(name).query("catalog") if e["object"] == "b1/cpu"]
            assert sorted(entry["applied"]) == TAGS

        # the stream passes the hand-off by more than the smoothing window
        c.wait(lambda: recorded(c, "above", "b1/cpu").end[-1] > handed + 4, timeout=30)
        raw = series(c.ref("col").query("report", objects=["b1/cpu"], since=since - 60))["b1/cpu"]
        want = preprocess.apply([preprocess.check(s) for s in STEPS], raw)

        for name in ("medtop", "twin"):
            answer = c.ref(name).query("report", objects=["b1/cpu"], since=since, until=float(raw.end[-1]))
            assert answer["until"] > handed + 3, (name, answer["until"] - handed)
            (wire,) = answer["series"]
            assert sorted(wire["applied"]) == TAGS
            assert_same_samples(series(answer)["b1/cpu"], window(want, since, answer["until"]), rtol=1e-9)
            before = c.ref(name).query("report", objects=["b1/cpu"], since=since, until=handed)
            assert_same_samples(series(before)["b1/cpu"], window(want, since, before["until"]), rtol=1e-9)

        got = recorded(c, "above", "b1/cpu")
        assert got.start[0] < handed < got.end[-1] - 4
        assert_same_samples(got, window(want, since, float(got.end[-1])), rtol=1e-9)
