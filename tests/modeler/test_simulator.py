import networkx as nx
import numpy as np

from modeler.simulator import TICK, random_scenario, random_topology, simulate


def test_truth_is_the_call_graph_and_every_service_is_metered():
    rng = np.random.default_rng(0)
    topo = random_topology(rng, 6, "dag")
    sc = simulate(topo, seconds=120, step=1.0, rng=rng, background=2)
    assert set(sc.truth) == set(topo.edges)
    assert set(sc.series) == set(topo.nodes) | {"bg0", "bg1"}
    assert nx.is_directed_acyclic_graph(nx.DiGraph(sc.truth))


def test_cpu_is_quantised_to_kernel_ticks():
    rng = np.random.default_rng(1)
    sc = simulate(random_topology(rng, 3, "chain"), seconds=60, step=1.0, rng=rng, background=0, clock_skew=0)
    s = sc.series["svc0"]
    ticks = s.value * (s.end - s.start) / TICK
    np.testing.assert_allclose(ticks, np.round(ticks), atol=1e-6)


def test_callers_drive_callees():
    """A callee's activity follows its caller's: the signal the modeler must find."""
    rng = np.random.default_rng(2)
    topo = nx.DiGraph([("svc0", "svc1")])
    topo.nodes["svc0"]["work"] = topo.nodes["svc1"]["work"] = 0.005
    topo.edges["svc0", "svc1"].update(p=0.7, calls=1)
    sc = simulate(topo, seconds=600, step=1.0, rng=rng, background=1, clock_skew=0, external_share=0)
    # differences: two slowly drifting series correlate by chance, their changes do not
    a, b, bg = (np.diff(sc.series[k].value[:590]) for k in ("svc0", "svc1", "bg0"))
    assert np.corrcoef(a, b)[0, 1] > 0.3
    assert abs(np.corrcoef(a, bg)[0, 1]) < 0.15


def test_random_scenarios_cover_coarse_request_metrics():
    rng = np.random.default_rng(3)
    sc = random_scenario(rng, step=300.0, metric="requests", bins=200)
    assert all(s.unit == "req/s" for s in sc.series.values())
    assert all((s.value >= 0).all() for s in sc.series.values())


def test_callers_pay_for_their_calls():
    """With a per-call cost a caller's CPU also counts the calls it makes, as a real
    process's socket work does."""
    def run(cost):
        rng = np.random.default_rng(4)
        topo = nx.DiGraph([("svc0", "svc1")])
        topo.nodes["svc0"]["work"] = topo.nodes["svc1"]["work"] = 0.002
        topo.edges["svc0", "svc1"].update(p=1.0, calls=3)
        sc = simulate(topo, seconds=300, step=1.0, rng=rng, background=0, clock_skew=0,
                      external_share=0, call_cost=cost, internal=(0.003, 0.01))
        return sc.series["svc0"].value.mean()

    assert run(2e-3) > 1.5 * run(0.0)


def test_client_rates_and_busy_share_set_the_load_of_a_testbed_like_profile():
    """Real testbed services see a few requests per second and run at a few percent of a
    core; the simulator must be able to draw that regime, not only tens of requests/s."""
    def mean_cpu(**kw):
        rng = np.random.default_rng(6)
        topo = nx.DiGraph([("svc0", "svc1")])
        topo.nodes["svc0"]["work"] = topo.nodes["svc1"]["work"] = 0.002
        topo.edges["svc0", "svc1"].update(p=1.0, calls=1)
        sc = simulate(topo, seconds=300, step=1.0, rng=rng, background=0, clock_skew=0,
                      external_share=0, internal=(0.003, 0.01), **kw)
        return sc.series["svc1"].value.mean()

    quiet = mean_cpu(rates=(1.0, 1.0), busy=(0.9, 0.9))
    busy = mean_cpu(rates=(10.0, 10.0), busy=(0.9, 0.9))
    assert busy > 5 * quiet  # 2 ms a request: ten times the clients, ten times the CPU
    # the busy share caps per-request work: the same requests at a fraction of the CPU
    assert mean_cpu(rates=(10.0, 10.0), busy=(0.003, 0.003)) < busy / 4


def test_call_odds_follow_the_requested_mix():
    rng = np.random.default_rng(7)
    odds = [p for _ in range(30) for *_, p in random_topology(rng, 12, "dag", always=0.1, p_min=0.3).edges(data="p")]
    assert min(odds) >= 0.3
    assert 0.03 < np.mean(np.array(odds) == 1.0) < 0.2


def test_half_the_fine_grained_cpu_scenarios_run_in_the_real_processes_regime():
    """Real testbed services run at a few per cent of a core (bench/realism.py); training
    that never sees that regime learns near-copies where real callees are noisy thinnings."""
    rng = np.random.default_rng(8)
    drawn = [random_scenario(rng, step=1.0, metric="cpu", bins=300) for _ in range(40)]
    regimes = [sc.info["regime"] for sc in drawn]
    assert 10 < regimes.count("real processes") < 30 and set(regimes) == {"real processes", "plain"}

    def service_cpu(regime):
        return np.median([s.value.mean() for sc in drawn if sc.info["regime"] == regime
                          for n, s in sc.series.items() if n.startswith("svc")])
    assert service_cpu("real processes") < 0.1 < service_cpu("plain")
    assert service_cpu("real processes") < service_cpu("plain") / 2
