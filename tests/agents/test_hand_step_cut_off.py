"""A hand-off whose ``adopt_step`` call is cut off by the death of the source's host.

``adopt_step`` is idempotent, so the mediator handing the step asks again once the source
is back, instead of giving up with "may or may not have taken effect" and leaving its
operator to find out which."""

import threading

from tests.agents.mediation_helpers import recorded
from tests.cluster import Cluster, wait

HOLDING = "holdmed=tests.agents.source_kinds:HoldingMediatorAgent"
SMOOTH = {"step": "smooth", "window": 3}


def test_a_hand_step_cut_off_by_the_sources_host_dying_is_completed_when_it_is_back(tmp_path):
    with Cluster(tmp_path, {"b1": {"domain": "B"}, "l1": {"domain": "A"}, "m1": {"domain": "A"}},
                 kinds=(HOLDING,)) as c:
        c.create("b1", "collector", "col", interval=0.3, per_process="none")
        c.create("l1", "holdmed", "lower", sources=["col"])
        c.create("m1", "mediator", "upper", sources=["lower"], steps=[SMOOTH])
        c.create("m1", "recorder", "above")
        c.ref("above").configure("subscribe_to", request="r", source="upper", objects=["b1/cpu"])
        c.wait(lambda: len(recorded(c, "above", "b1/cpu")) >= 3, timeout=30)

        folder = tmp_path / "hosts" / "l1"
        (folder / "hold-adopt").touch()
        outcome: dict = {}

        def hand() -> None:
            try:
                outcome["answer"] = c.ref("upper", timeout=60).configure("hand_step", step=SMOOTH, to="lower")
            except Exception as exc:  # noqa: BLE001
                outcome["error"] = exc

        caller = threading.Thread(target=hand)
        caller.start()
        wait(lambda: (folder / "adopting").exists(), timeout=30)
        c.kill("l1")
        (folder / "hold-adopt").unlink()  # the restarted host's adopt_step goes through at once
        c.restart("l1")
        caller.join(90)
        assert outcome == {"answer": []}, outcome  # nothing left to do at upper
        (entry,) = [e for e in c.ref("lower").query("catalog") if e["object"] == "b1/cpu"]
        assert entry["applied"] == ["smooth(window=3.0)"]
        count = len(recorded(c, "above", "b1/cpu"))
        c.wait(lambda: len(recorded(c, "above", "b1/cpu")) >= count + 3, timeout=30)  # the stream goes on
