"""Fast workload simulator: activity series with a known call graph, for training volume.

Real testbed recordings take minutes each; the network needs thousands of labelled
topologies.  The simulator reproduces what makes the problem hard on real systems:
requests flowing through a call graph with partial call probabilities, per-request work
with noise, independent bursty client populations and slow common trends, internal
activity unrelated to any call, CPU tick quantisation, sampling jitter and
unsynchronised host clocks.  It can meter CPU (like the procfs probe) or request counts
(like cloud metrics such as PetShop's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import networkx as nx
import numpy as np
from scipy.signal import lfilter

from masa.activity import CPU, REQUESTS_PER_S, Series

#: Kernel CPU accounting granularity (USER_HZ = 100).
TICK = 0.01

SHAPES = ("chain", "fanout", "shared_db", "tree", "dag", "apps")


@dataclass
class Scenario:
    """One simulated recording and its ground truth (``caller -> callee`` edges)."""

    series: dict[str, Series]
    truth: list[tuple[str, str]]
    connections: list[tuple[str, str]] = field(default_factory=list)
    step: float = 1.0
    info: dict = field(default_factory=dict)  # how it was drawn, e.g. {"regime": "plain"}


# -- topologies ------------------------------------------------------------------------


def _chain(rng: np.random.Generator, n: int) -> nx.DiGraph:
    return nx.path_graph(max(n, 2), create_using=nx.DiGraph)


def _fanout(rng: np.random.Generator, n: int) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_edges_from((0, k) for k in range(1, max(n, 3)))
    return g


def _tree(rng: np.random.Generator, n: int) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_node(0)
    for k in range(1, max(n, 3)):
        g.add_edge(int(rng.integers(0, k)), k)
    return g


def _dag(rng: np.random.Generator, n: int) -> nx.DiGraph:
    """Layered DAG: fronts call middles call back-ends, some back-ends shared."""
    n = max(n, 4)
    g = nx.DiGraph()
    g.add_nodes_from(range(n))
    for k in range(1, n):
        parents = rng.choice(k, size=min(k, 1 + int(rng.random() < 0.35)), replace=False)
        for p in parents:
            g.add_edge(int(p), k)
    return g


def _shared_db(rng: np.random.Generator, n: int) -> nx.DiGraph:
    apps = max(2, n // 3)
    g = nx.DiGraph()
    db = 0
    for a in range(apps):
        front, back = 1 + 2 * a, 2 + 2 * a
        g.add_edge(front, back)
        g.add_edge(back, db)
        if rng.random() < 0.3:
            g.add_edge(front, db)
    return g


def _apps(rng: np.random.Generator, n: int) -> nx.DiGraph:
    g = nx.DiGraph()
    offset = 0
    while offset < n:
        size = int(rng.integers(2, 7))
        sub = [_chain, _fanout, _tree, _dag][int(rng.integers(0, 4))](rng, size)
        g = nx.union(g, nx.relabel_nodes(sub, {v: v + offset for v in sub}))
        offset += sub.number_of_nodes()
    return g


_BUILDERS = {
    "chain": _chain, "fanout": _fanout, "shared_db": _shared_db,
    "tree": _tree, "dag": _dag, "apps": _apps,
}


def random_topology(rng: np.random.Generator, n_services: int | None = None,
                    shape: str | None = None, *, always: float = 0.25,
                    p_min: float = 0.15) -> nx.DiGraph:
    """A call graph (edge caller -> callee) with per-service work and per-edge call odds:
    a share ``always`` of the edges is called on every request, the others with a
    probability drawn from ``[p_min, 0.95]``."""
    shape = shape or SHAPES[int(rng.integers(0, len(SHAPES)))]
    n = n_services or int(rng.integers(3, 16))
    g = _BUILDERS[shape](rng, n)
    g = nx.relabel_nodes(g, {v: f"svc{v}" for v in g})
    for v in g:
        g.nodes[v]["work"] = float(np.exp(rng.uniform(np.log(0.001), np.log(0.04))))
    for e in g.edges:
        g.edges[e]["p"] = 1.0 if rng.random() < always else float(rng.uniform(p_min, 0.95))
        g.edges[e]["calls"] = 1 if rng.random() < 0.8 else int(rng.integers(2, 4))
    g.graph["shape"] = shape
    return g


# -- load ------------------------------------------------------------------------------


def _onoff(rng: np.random.Generator, n: int, dt: float) -> np.ndarray:
    """Markov ON/OFF modulation with heavy-tailed periods: the burstiness of real users."""
    out = np.empty(n)
    pos, on = 0, rng.random() < 0.5
    mean_on, mean_off = rng.uniform(3, 60), rng.uniform(3, 120)
    high = rng.uniform(2, 10)
    while pos < n:
        length = max(1, int(rng.pareto(1.8) * (mean_on if on else mean_off) / dt) + 1)
        out[pos : pos + length] = high if on else 1.0
        pos += length
        on = not on
    return out


def _ar1(rng: np.random.Generator, n: int, dt: float, tau: float, sigma: float) -> np.ndarray:
    """Log-normal AR(1) modulation with time constant ``tau`` seconds."""
    a = np.exp(-dt / max(tau, dt))
    e = rng.normal(0, sigma * np.sqrt(1 - a * a), n)
    return np.exp(lfilter([1.0], [1.0, -a], e))


def _trend(rng: np.random.Generator, t: np.ndarray, span: float) -> np.ndarray:
    period = span * rng.uniform(0.2, 1.5)
    return 1.0 + rng.uniform(0.2, 0.9) * np.sin(2 * np.pi * t / period + rng.uniform(0, 6.3))


def _client_rate(rng: np.random.Generator, t: np.ndarray, dt: float, base: float,
                 common: np.ndarray | None) -> np.ndarray:
    rate = base * _onoff(rng, len(t), dt) * _ar1(rng, len(t), dt, rng.uniform(2, 200) * max(dt, 0.1) * 10, 0.5)
    if rng.random() < 0.4:
        rate *= _trend(rng, t, t[-1] + dt)
    if common is not None:
        rate *= common
    return rate


# -- metering --------------------------------------------------------------------------


def _meter(rng: np.random.Generator, amount: np.ndarray, dt: float, step: float,
           seconds: float, quantum: float, offset: float, name: str, unit: str) -> Series:
    """Sample the cumulative amount like a probe: jittered instants, quantised counters."""
    cum = np.concatenate([[0.0], np.cumsum(amount)])
    fine_t = dt * np.arange(len(cum))
    k = np.arange(1, int(seconds / step) + 1)
    inst = k * step + rng.normal(0, 0.02 * step, len(k))
    inst = np.clip(np.sort(inst), dt, fine_t[-1])
    inst = np.concatenate([[0.0], inst])
    counter = np.interp(inst, fine_t, cum)
    if quantum > 0:
        counter = np.floor(counter / quantum) * quantum
    dtimes = np.diff(inst)
    good = dtimes > 1e-6
    rate = np.diff(counter)[good] / dtimes[good]
    times = inst[1:][good] + offset
    return Series.from_points(name, unit, times, rate, first_interval=step)


# -- the simulation ---------------------------------------------------------------------


def simulate(topology: nx.DiGraph, seconds: float, step: float, *, load: str = "low",
             metric: str = "cpu", rng: np.random.Generator | None = None,
             background: int = 3, clients_as_objects: bool = False,
             common_trend: bool = False, clock_skew: float = 0.5,
             external_share: float = 0.2, call_cost: float = 0.0,
             internal: tuple[float, float] = (0.02, 0.8), work_cv2: tuple[float, float] = (0.05, 1.0),
             rates: tuple[float, float] | None = None, busy: tuple[float, float] = (0.02, 0.6)) -> Scenario:
    """Run requests through ``topology`` for ``seconds`` and meter every service.

    ``load`` scales client rates ("low" or "high"); ``metric`` is "cpu" (CPU seconds per
    second with tick quantisation) or "requests" (requests served per second).
    ``call_cost`` is the caller's CPU seconds per outgoing call (socket work: real callers
    pay for their calls); ``internal`` the range of the share of internal work (timers,
    GC) relative to request work; ``work_cv2`` the range of the squared coefficient of
    variation of per-request work; ``rates`` the range of a client population's base
    rate in requests/s (default by ``load``: 1-15 low, 15-120 high); ``busy`` the range of
    a service's mean CPU share, which caps its per-request work."""
    rng = rng or np.random.default_rng()
    dt = min(max(step / 10.0, 0.05), 60.0)
    n = int(np.ceil(seconds / dt)) + 2
    t = dt * np.arange(n)
    order = list(nx.topological_sort(topology))
    common = None
    if common_trend:  # one load generator behind all clients, as in many test rigs
        common = _trend(rng, t, seconds)
        if rng.random() < 0.5:
            common = common * _ar1(rng, n, dt, step * rng.uniform(1, 10), rng.uniform(0.2, 0.8))
    base_range = rates or ((1.0, 15.0) if load == "low" else (15.0, 120.0))

    requests = {v: np.zeros(n) for v in order}
    client_objects: dict[str, np.ndarray] = {}
    for v in order:
        external = topology.in_degree(v) == 0 or rng.random() < external_share
        if external:
            base = rng.uniform(*base_range) / (1 if topology.in_degree(v) == 0 else 4)
            arrivals = rng.poisson(_client_rate(rng, t, dt, base, common) * dt).astype(float)
            requests[v] += arrivals
            if clients_as_objects and topology.in_degree(v) == 0:
                client_objects[f"client_{v}"] = arrivals
    truth: list[tuple[str, str]] = []
    outgoing = {v: np.zeros(n) for v in order}
    for v in order:
        for callee in topology.successors(v):
            e = topology.edges[v, callee]
            made = rng.binomial(requests[v].astype(np.int64), e["p"]).astype(float) * e["calls"]
            delay = int(rng.random() < topology.nodes[v]["work"] / dt)
            if delay:
                made = np.concatenate([np.zeros(delay), made[:-delay]])
            requests[callee] += made
            outgoing[v] += made
            truth.append((v, callee))

    hosts = int(rng.integers(1, 4))
    offsets = rng.uniform(-clock_skew, clock_skew, hosts) if clock_skew > 0 else np.zeros(hosts)
    series: dict[str, Series] = {}
    for v in order:
        host = int(rng.integers(0, hosts))
        if metric == "cpu":
            # keep services below saturation: a pegged CPU carries no signal
            rate = max(float(requests[v].mean()) / dt, 1e-9)
            work = min(topology.nodes[v]["work"], rng.uniform(*busy) / rate)
            amount = _cpu(rng, requests[v], work, t, dt, internal, work_cv2)
            if call_cost > 0:
                amount = np.minimum(amount + outgoing[v] * call_cost * rng.uniform(0.5, 2.0), 2.0 * dt)
            series[v] = _meter(rng, amount, dt, step, seconds, TICK, offsets[host], v, CPU)
        else:
            amount = requests[v] * _ar1(rng, n, dt, 50 * dt, 0.05)
            series[v] = _meter(rng, amount, dt, step, seconds, 0.0, offsets[host], v, REQUESTS_PER_S)
    for name, arrivals in client_objects.items():
        callee = name.removeprefix("client_")
        truth.append((name, callee))
        amount = arrivals * (0.001 if metric == "cpu" else 1.0)
        quantum = TICK if metric == "cpu" else 0.0
        series[name] = _meter(rng, amount, dt, step, seconds, quantum, offsets[0], name,
                              CPU if metric == "cpu" else REQUESTS_PER_S)
    for b in range(background):
        name = f"bg{b}"
        amount = _background(rng, t, dt, common, seconds)
        quantum = TICK if metric == "cpu" else 0.0
        series[name] = _meter(rng, amount, dt, step, seconds, quantum, offsets[0], name,
                              CPU if metric == "cpu" else REQUESTS_PER_S)
    return Scenario(series, truth, list(truth), step,
                    {"shape": topology.graph.get("shape", "custom"), "load": load, "metric": metric})


def _cpu(rng: np.random.Generator, req: np.ndarray, work: float, t: np.ndarray, dt: float,
         internal_range: tuple[float, float], cv2_range: tuple[float, float]) -> np.ndarray:
    """CPU seconds per fine slot: gamma-distributed per-request work plus internal work
    (timers, garbage collection) that has nothing to do with any caller."""
    cv2 = rng.uniform(*cv2_range)
    shape = np.maximum(req / cv2, 1e-9)
    busy = np.where(req > 0, rng.gamma(shape, work * cv2), 0.0)
    mean_busy = max(float(busy.mean()), 1e-6)
    internal = np.zeros_like(busy)
    share = float(np.exp(rng.uniform(*np.log(internal_range))))
    kind = rng.integers(0, 3)
    if kind == 0:  # periodic housekeeping
        period = rng.uniform(5, 120)
        internal += (np.mod(t, period) < max(dt, period * 0.05)) * mean_busy * share * 20
    elif kind == 1:  # random pauses
        internal += rng.poisson(dt / rng.uniform(5, 60), len(t)) * mean_busy * share * 30
    internal += mean_busy * share * _ar1(rng, len(t), dt, rng.uniform(5, 100), 0.6)
    return np.minimum(busy + internal, 2.0 * dt)


def _background(rng: np.random.Generator, t: np.ndarray, dt: float, common: np.ndarray | None,
                seconds: float) -> np.ndarray:
    """An unrelated process: cron job, batch burst, noisy daemon or trend follower."""
    level = rng.uniform(0.01, 0.3) * dt
    kind = int(rng.integers(0, 4))
    if kind == 0:
        period = rng.uniform(10, max(20, seconds / 4))
        x = (np.mod(t + rng.uniform(0, period), period) < period * rng.uniform(0.05, 0.3)).astype(float)
    elif kind == 1:
        x = _onoff(rng, len(t), dt) - 1.0
    elif kind == 2:
        x = _ar1(rng, len(t), dt, rng.uniform(1, 60), 0.8)
    else:
        x = _trend(rng, t, seconds) * _ar1(rng, len(t), dt, 10, 0.3)
    if common is not None and rng.random() < 0.5:
        x = x * common
    return level * (x + 0.05) * rng.gamma(4.0, 0.25, len(t))


def random_scenario(rng: np.random.Generator, *, step: float | None = None,
                    metric: str | None = None, n_services: int | None = None,
                    shape: str | None = None, bins: int | None = None) -> Scenario:
    """A scenario drawn from the training distribution: many shapes, loads, sampling steps
    (0.5 s to 5-minute bins), metrics, background processes and trends."""
    if step is None:
        step = float(rng.choice([0.5, 1.0, 1.0, 2.0, 2.0, 5.0, 10.0, 60.0, 300.0, 300.0, 300.0]))
    if metric is None:
        metric = "requests" if (step >= 60 and rng.random() < 0.8) or rng.random() < 0.15 else "cpu"
    bins = bins or int(np.exp(rng.uniform(np.log(150), np.log(1500))))  # minutes to hours
    if n_services is None and rng.random() < (0.5 if step >= 60 else 0.25):
        # large applications like PetShop's 40 components (cloud metrics: coarse bins)
        n_services = int(rng.integers(16, 40))
    if metric == "cpu" and step <= 2.0 and rng.random() < 0.5:
        # the regime of real service processes (what the testbeds meter; bench/realism.py):
        # few requests per second, so a callee is a noisy thinning of its caller rather than
        # a copy; a few per cent of a core each; many services with clients of their own;
        # little internal work, steady per-request cost, callers paying for their calls
        load = str(rng.choice(["low", "high"]))
        sc = simulate(
            random_topology(rng, n_services, shape, always=0.1, p_min=0.3),
            seconds=bins * step, step=step, load=load,
            metric=metric, rng=rng, background=int(rng.integers(0, 5)),
            clients_as_objects=False, common_trend=rng.random() < 0.1,
            clock_skew=float(rng.choice([0.0, 0.0, 0.3])), external_share=float(rng.uniform(0.3, 0.9)),
            call_cost=float(np.exp(rng.uniform(np.log(2e-4), np.log(3e-3)))),
            internal=(0.003, 0.15), work_cv2=(0.02, 0.3),
            rates=(0.5, 4.0) if load == "low" else (2.0, 12.0), busy=(0.005, 0.2),
        )
        sc.info["regime"] = "real processes"
        return sc
    topo = random_topology(rng, n_services, shape)
    sc = simulate(
        topo, seconds=bins * step, step=step, load=str(rng.choice(["low", "high"])),
        metric=metric, rng=rng, background=int(rng.integers(0, 6)),
        clients_as_objects=rng.random() < 0.4, common_trend=rng.random() < (0.7 if step >= 60 else 0.3),
        clock_skew=float(rng.choice([0.0, 0.3, 1.0])), external_share=float(rng.uniform(0.1, 0.6)),
    )
    sc.info["regime"] = "plain"
    return sc
