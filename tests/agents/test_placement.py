"""The placement policy: moves to clearly better hosts, never oscillates on noise."""

import pytest

from agents.placement import Policy, decide, restart, spare
from masa.errors import BadRequest


def res(busy, cpus=2, load=None):
    return {"cpu_percent": busy, "cpus": cpus, "load1": cpus * busy / 100 if load is None else load}


def run(current, frames, policy, own=0.0, local=None, dt=10.0):
    """Evaluate the policy over successive host readings; follow its moves."""
    memo, moves = {}, []
    for i, hosts in enumerate(frames):
        target = decide(current, hosts, local or {}, memo, i * dt, policy, own)
        if target:
            moves.append(target)
            current = target
    return moves


def test_moves_to_a_host_with_more_spare_cpu_after_dwell():
    frames = [{"a": res(90), "b": res(10)}] * 5
    assert run("a", frames, Policy(dwell=3, cooldown=0)) == ["b"]
    assert run("a", frames[:2], Policy(dwell=3, cooldown=0)) == []  # not yet convinced


def test_noise_around_equal_load_never_moves():
    frames = [{"a": res(50 + (i % 2) * 20), "b": res(70 - (i % 2) * 20)} for i in range(50)]
    assert run("a", frames, Policy(margin=0.25, dwell=1, cooldown=0)) == []


def test_own_load_counted_against_the_target_prevents_ping_pong():
    # a mediator using 40% of a host: wherever it runs, that host looks 40% busier
    def frames_for(where):
        return {h: res(30 + (40 if h == where else 0)) for h in ("a", "b")}

    policy = Policy(margin=0.1, dwell=1, cooldown=0)
    current, moves, memo = "a", [], {}
    for i in range(20):
        target = decide(current, frames_for(current), {}, memo, float(i), policy, own=0.4)
        if target:
            moves.append(target)
            current = target
    assert moves == []
    # the same readings without knowing its own load: it chases itself back and forth
    current, memo, naive = "a", {}, []
    for i in range(20):
        target = decide(current, frames_for(current), {}, memo, float(i), policy, own=0.0)
        if target:
            naive.append(target)
            current = target
    assert len(naive) > 5


def test_cooldown_limits_moves():
    frames = [{"a": res(95), "b": res(5)} if i % 2 == 0 else {"a": res(5), "b": res(95)} for i in range(40)]
    policy = Policy(margin=0.1, dwell=1, cooldown=100)
    moves = run("a", frames, policy, dt=10.0)
    assert 1 <= len(moves) <= 4  # at most one per 100 s over 400 s


def test_restart_counts_the_dwell_afresh_and_a_move_starts_the_cooldown():
    better = {"a": res(90), "b": res(10)}
    policy = Policy(dwell=3, cooldown=50)
    memo = {}
    for t in (0.0, 1.0):
        assert decide("a", better, {}, memo, t, policy) is None
    restart(memo)  # a new policy: the two rounds seen so far no longer count
    assert [decide("a", better, {}, memo, t, policy) for t in (2.0, 3.0)] == [None, None]
    assert decide("a", better, {}, memo, 4.0, policy) == "b"
    memo = {"candidate": "b", "streak": 2}
    restart(memo, moved_at=10.0)  # moved by hand at t=10: no self-move before t=60
    assert [decide("a", better, {}, memo, t, policy) for t in (11.0, 12.0, 13.0, 59.0)] == [None] * 4
    assert decide("a", better, {}, memo, 60.0, policy) == "b"


def test_locality_to_sources_attracts_the_mediator():
    frames = [{"a": res(20), "b": res(30)}] * 4
    assert run("a", frames, Policy(dwell=2, cooldown=0), local={"b": 1.0}) == ["b"]
    assert run("a", frames, Policy(dwell=2, cooldown=0, w_local=0)) == []


def test_spare_and_settings():
    assert spare(res(25, cpus=4)) == pytest.approx(0.75)
    assert spare({"cpu_percent": 10, "cpus": 2, "load1": 3.0}) == 0.0  # a queue: no spare CPU
    assert Policy.from_settings({"margin": "0.5", "dwell": 2}).margin == 0.5
    with pytest.raises(BadRequest):
        Policy.from_settings({"margins": 1})
    with pytest.raises(BadRequest):
        Policy.from_settings({"dwell": 0})
