"""The modeler agent: activity from its sources in, versioned dependency models out.

A modeling run (a *job*) collects a window of activity from the sources, fetches the
finished sub-models of other modelers (hierarchical models), computes pair features,
has its pool of neural agents score the pairs nobody else has scored, decides the model
and keeps it as a new version with its provenance.  Jobs run in the agent's own thread,
never inside a handler: a run takes longer than any caller should wait, and a handler
overrunning its deadline is restarted by the host's watchdog.  A job is part of the
agent's state from the moment it is accepted until its version is stored (``open_job``,
checkpointed with the ``run`` that accepted it): a modeler restored after its host
crashed, or arriving from a move, redoes it under the same job number.

Where sources offer connection evidence (``connections``: which object holds TCP
connections to which endpoint), its endpoints are resolved to objects across all sources
and the core combines it with activity; each edge's ``evidence`` then says
``activity``, ``connection`` or both.  Evidence speaks only where it was looked for: a
pair is decided with it when both objects are *watched* (every socket of theirs was
seen, so a missing connection means something) or a connection joins them; any other
pair (a router read over SNMP, a source without the operation) is decided from
activity alone, exactly as without evidence.

An *enterprise* modeler is the same kind with ``submodels``: objects that one sub-model
already covers are not paired with each other again (their edges come from that
sub-model), so only pairs across domains reach the network.  Remote domains appear as
one object each, the collective activity their domain agents serve.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
import threading
import time
from typing import Any

import networkx as nx
import numpy as np

from masa import admin, checks
from masa.activity import Series
from masa.agent import Agent, configure, query
from masa.errors import AgentExists, BadRequest, KindNotAllowed, MasaError, UnknownKind
from masa.naming import HOST_PREFIX, NameService, short
from masa.store import Store, check_url
from modeler import grid, interface
from modeler.agents import scoring
from modeler.agents.neural import load_network
from modeler.agents.page import Page
from modeler.agents.pool import Pool, PoolReport
from modeler.agents.sources import collect, collect_connections, parse_sources, resolve
from modeler.estimator import DependencyModeler, PairScores
from modeler.versions import Provenance, Versions

DEFAULTS: dict[str, Any] = {
    "sources": [], "submodels": [], "window": 600.0, "every": 60.0, "step": None,
    "pool": [], "pool_timeout": 10.0, "batch_rows": 2000, "store": None, "http": 0,
    "http_bind": "127.0.0.1", "autostart": False, "discover": False,
}
#: settings that are yes or no: a string such as "no" must not count as yes
BOOLEANS = ("autostart", "discover")
#: s, the shortest period between scheduled runs: each run stores a whole model version
#: (and the schedule is looked at every 0.5 s), so a shorter one is a unit slip (ms for s)
#: that fills the store, not a wish
MIN_EVERY = 1.0
#: s, the longest window, step and period taken: a year; beyond is a slip (1e300 was taken)
MAX_SPAN = 366 * 86400.0
#: s, the longest wait for one batch: the host cuts a call's deadline to an hour anyway,
#: and a timeout too large for a socket made the pool wait for good
MAX_POOL_TIMEOUT = 3600.0
#: s, the finest grid step taken: finer, a window's grid takes gigabytes long before
#: grid.MAX_CELLS refuses it (the default step is never below grid.MIN_STEP, 1 s)
MIN_STEP = 0.01
#: points per object kept for the supervision page's activity plots
PLOT_POINTS = 240
#: seconds after the last look at the activity plots that they stop being refreshed
LIVE_IDLE = 30.0
#: seconds between refreshes of the plots while someone looks
LIVE_EVERY = 2.0
#: a live refresh runs on the host's shared task pool: never wait long for a source
LIVE_TIMEOUT = 3.0
#: s to wait for a sub-model's answer: one that does not answer by then is scored here,
#: like a sub-model without a model yet, rather than hold up (or fail) the whole run
SUBMODEL_TIMEOUT = 5.0

log = logging.getLogger("masa.modeler")


def _version(value: Any, name: str) -> None:
    """A version number argument: an integer or None (the latest)."""
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise BadRequest(f"{name} must be a version number (an integer), not {value!r}")


def _unusable(series: dict[str, Series]) -> dict[str, str]:
    """Objects whose activity the core cannot take, and why: it refuses a whole run for
    one NaN, inf or huge sample, so one bad object from one source would otherwise stop
    every model; these are left out and named in the version's info instead."""
    out = {}
    for obj, s in series.items():
        if not np.all(np.isfinite(s.value)):
            out[obj] = "activity values that are not finite numbers (NaN or inf)"
        elif len(s.value) and np.max(np.abs(s.value)) > grid.MAX_VALUE:
            out[obj] = f"activity values beyond {grid.MAX_VALUE:g}"
    return out


def _name(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {value!r}")
    return value


def decide(model: DependencyModeler, scores: PairScores, connections: dict[tuple[str, str], float],
           watched: set[str]) -> tuple[nx.DiGraph, dict[str, list]]:
    """The core's decision, with connection evidence where it was looked for, and what
    the evidence changed against activity alone (``added``, ``removed`` edges).

    The core weighs a pair without an observed connection down (that absence is evidence
    when a probe watched both objects); for pairs no probe watched it would be a verdict
    without evidence, so those keep the activity-only decision."""
    g = scoring.decide(model, scores)
    if not connections and not watched:
        return g, {"added": [], "removed": []}
    activity_only = set(g.edges)
    with_evidence = scoring.decide(model, scores, connections)
    linked = {frozenset(p) for p in connections}

    def informed(a: str, b: str) -> bool:
        return (a in watched and b in watched) or frozenset((a, b)) in linked

    g.remove_edges_from([(a, b) for a, b in activity_only if informed(a, b)])
    g.add_edges_from((a, b, d) for a, b, d in with_evidence.edges(data=True) if informed(a, b))
    g.graph["threshold_with_connections"] = with_evidence.graph.get("threshold")
    return g, {"added": sorted(map(list, set(g.edges) - activity_only)),
               "removed": sorted(map(list, activity_only - set(g.edges)))}


class ModelerAgent(Agent):
    """Settings: ``sources`` (agent names or ``{agent, objects}``), ``submodels`` (modeler
    names), ``window`` (s of activity per model), ``every`` (s between scheduled runs),
    ``step`` (grid step, None: the data's), ``pool`` (neural agent names; empty: score
    here), ``discover`` (also use every registered neural agent), ``pool_timeout`` (s per batch), ``batch_rows``, ``store`` (URL of the version
    store; default ``MASA_HOME/models.db``), ``http`` (port of the
    supervision page, 0: any free port, None: no page), ``autostart`` (schedule at once),
    ``network`` (bytes of a ``masa train`` network; default the shipped one: neural agents
    it starts get the same, and a pool agent holding another network is refused)."""

    def setup(self, **settings: Any) -> None:
        blob = settings.pop("network", None)
        if blob is not None and not isinstance(blob, bytes):
            raise BadRequest("network must be the bytes of a .npz file from `masa train`")
        if blob is not None:
            self.state["network"] = blob  # in state, not settings: travels, stays out of describe()
        # a copy: the defaults' lists (pool, ...) are changed in place later (pool_add), and
        # must not become the defaults of the next modeler created in this process
        merged = {**copy.deepcopy(DEFAULTS), **settings}
        merged["sources"] = parse_sources(merged["sources"])
        self._check(merged)
        super().setup(**merged)
        self.state["running"] = bool(merged["autostart"])
        self._fresh = True  # created now: on_start refuses a page port it cannot bind

    def _check(self, s: dict) -> None:
        """The settings a modeler can run with; the same at create and at reconfigure."""
        unknown = sorted(set(s) - set(DEFAULTS))
        if unknown:
            raise BadRequest(f"unknown modeler setting {', '.join(map(repr, unknown))}; the settings are "
                             f"{', '.join(sorted(DEFAULTS))} (and network, at create only)")
        if not s["sources"]:
            raise BadRequest("a modeler needs 'sources': the agents it reads activity from")
        if self.name in {spec["agent"] for spec in s["sources"]}:
            raise BadRequest("a modeler cannot be its own source")
        checks.number(s["window"], "window", grid.MIN_STEP, MAX_SPAN, unit="seconds")  # shorter: not one grid step
        checks.number(s["every"], "every", MIN_EVERY, MAX_SPAN, unit="seconds")
        checks.number(s["pool_timeout"], "pool_timeout", 0.0, MAX_POOL_TIMEOUT, positive=True, unit="seconds")
        step = s["step"]
        if step is not None and not (checks.finite(step) and MIN_STEP <= step <= s["window"]):
            raise BadRequest(f"step must be a number of seconds (the grid step) of at least {MIN_STEP:g} "
                             f"and at most the window ({s['window']:g}), or None (the data's own), not {step!r}")
        rows = s["batch_rows"]
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 1:
            raise BadRequest(f"batch_rows must be a positive integer (pairs per batch), not {rows!r}")
        for key in BOOLEANS:
            if not isinstance(s[key], bool):
                raise BadRequest(f"{key} must be true or false, not {s[key]!r}")
        for key in ("pool", "submodels"):
            if not isinstance(s[key], list) or not all(isinstance(x, str) and x for x in s[key]):
                raise BadRequest(f"{key} must be a list of agent names")
        if self.name in s["submodels"]:
            raise BadRequest("a modeler cannot be its own sub-model")
        check_url(s["store"], "MASA_HOME/models.db")
        port = s["http"]
        if port is not None and not (isinstance(port, int) and not isinstance(port, bool) and 0 <= port < 65536):
            raise BadRequest("http must be a port number (0: any free port) or None")
        if not isinstance(s["http_bind"], str) or not s["http_bind"]:
            raise BadRequest("http_bind must be an address to serve the page on (e.g. 127.0.0.1)")

    def on_reconfigure(self, changed: dict) -> None:
        # Checked against the settings in force, not against ``changed``: a refused
        # reconfigure is undone by calling this again with the old values, which must pass.
        if "network" in self.settings:
            raise BadRequest("network cannot be changed by reconfigure (the pool's neural agents "
                             "hold the same one); create a new modeler with network=...")
        if self.settings.get("store") != self._store_setting:
            raise BadRequest("store cannot be changed by reconfigure: the versions live there; "
                             "create a new modeler with store=URL (and copy the model_versions table "
                             "to keep the history)")
        if "sources" in changed:
            self.settings["sources"] = parse_sources(self.settings["sources"])
        self._check({**DEFAULTS, **self.settings})  # step: each job copies the estimator with its own
        if "http" in changed or "http_bind" in changed:
            # a port that cannot be bound refuses the reconfigure (BadRequest); the
            # platform then puts the old settings back and calls this again with them
            self._page.switch()

    # -- lifecycle -----------------------------------------------------------------------

    def on_start(self) -> None:
        self._estimator = DependencyModeler(step=self.settings.get("step"))
        self._estimator.network_ = load_network(self.state.get("network"))
        meta = self._estimator.network_.meta
        self._estimator.screen_threshold_ = float(meta.get("screen_threshold", 0.0))
        self._network = self._estimator.network_.ident
        self._versions: Versions | None = None
        self._store_setting = self.settings.get("store")  # the store the versions are in
        self._job_lock = threading.Lock()
        self._job: threading.Thread | None = None
        self._progress: dict[str, Any] = {"state": "idle"}
        self._plots: dict[str, dict] = {}
        self._live: dict[str, Series] = {}
        self._live_until: dict[str, float] = {}  # per source: end of the newest sample
        self._plots_seen = 0.0
        self._layouts: dict[int, dict] = {}  # version -> layout answer
        self._stopping = False
        self._page = Page(self)
        self.state.setdefault("pending", False)  # a run asked for while one was going
        self.state.setdefault("open_job", None)  # {"job", "accepted"}: accepted, no version yet
        self.state.setdefault("last_run", 0.0)
        self.state.setdefault("jobs", 0)
        self.state.setdefault("created_neural", [])
        if getattr(self, "_fresh", False):
            self._fresh = False
            self._page.open()  # a taken port refuses the create, naming the port
        else:
            self._page.open_or_report()  # restored or arrived: the agent runs, status says why not
        self.every(0.5, self._tick, name="schedule")
        self.every(LIVE_EVERY, self._refresh_plots, name="live-plots")

    def _release(self) -> None:
        self._stopping = True
        self._page.close()
        if self._versions is not None:
            self._versions.store.close()
            self._versions = None

    def before_move(self, target: str) -> None:
        # a job cut short here stays in state["open_job"]: the target redoes it
        self._release()

    def after_move(self, source: str) -> None:
        if source == self.host.name:  # the move failed: carry on here
            self._stopping = False
            self._page.open_or_report()

    def on_stop(self) -> None:
        self._release()

    @property
    def versions(self) -> Versions:
        if self._versions is None:
            # default: one file per deployment home, not per host, so versions stay
            # reachable after the modeler moves (across machines, give a PostgreSQL URL)
            home = self.ref(self.name).settings.home
            url = self.settings.get("store") or f"sqlite:///{home / 'models.db'}"
            self._versions = Versions(Store(url))
        return self._versions

    # -- scheduling ------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._stopping:
            return
        self._page.retry()
        if self.state["open_job"] is not None:  # accepted before a crash or a move
            self._launch()
            return
        due = self.state["running"] and time.time() - self.state["last_run"] >= float(self.settings["every"])
        if due or self.state["pending"]:
            self._launch()

    def _launch(self) -> tuple[int, bool] | None:
        """Start the next job unless one runs; returns its number and whether it is a redo.

        The next job is the open one (accepted before a crash or a move, never stored)
        if there is one, redone under its own number; a new one only when none is open,
        so a ``run`` that arrives before the schedule has redone an open job cannot
        replace it.  A new job is recorded in ``state["open_job"]`` before anyone learns
        its number, so the checkpoint the host takes after ``run`` (and every 5 s) holds
        it."""
        with self._job_lock:
            if self._job is not None and self._job.is_alive():
                return None
            with self.lock:
                open_job = self.state["open_job"]
                redo = open_job is not None
                if redo:
                    number = int(open_job["job"])
                else:
                    self.state["pending"] = False
                    self.state["jobs"] += 1
                    number = self.state["jobs"]
                    self.state["open_job"] = {"job": number, "accepted": time.time()}
                self.state["last_run"] = time.time()
            self._job = threading.Thread(target=self._run_job, args=(number, redo), daemon=True,
                                         name=f"job-{self.name}")
            self._job.start()
            return number, redo

    def _stored(self, number: int) -> int | None:
        """The version that job ``number`` (the open one) already stored, if any: a crash
        between storing a version and checkpointing would otherwise repeat it."""
        accepted = float((self.state["open_job"] or {}).get("accepted", 0.0))
        for head in reversed(self.versions.list(self.name)):
            if head["created"] < accepted:
                return None
            if head["info"].get("job") == number:
                return head["version"]
        return None

    def _run_job(self, number: int, redo: bool = False) -> None:
        self._progress = {"state": "collecting", "job": number, "started": time.time()}
        if redo:
            self._progress["redo"] = True
        close = True  # the job is over: no longer open
        with self.lock:  # one snapshot per job: a reconfigure meanwhile applies from the next one
            settings = copy.deepcopy(self.settings)
        try:
            version = (self._stored(number) if redo else None) or self._model_once(number, settings)
            self._progress = {**self._progress, "state": "done", "version": version,
                              "finished": time.time()}
        except Exception as exc:  # noqa: BLE001 - a failed run is reported, the next one tries again
            close = not self._stopping  # cut short by a move or a stop: redone where it runs next
            self._progress = {**self._progress, "state": "failed", "error": f"{type(exc).__name__}: {exc}",
                              "finished": time.time()}
        if close:
            with self.lock:
                open_job = self.state["open_job"]
                if open_job is not None and open_job["job"] == number:
                    self.state["open_job"] = None
        self.host.checkpoint(self)

    # -- one modeling run ----------------------------------------------------------------------

    def _model_once(self, number: int, settings: dict) -> int:
        """One run on ``settings``, the job's snapshot: the activity collected, the
        evidence asked for and the provenance recorded all name the same sources."""
        t_start = time.perf_counter()
        now = time.time()
        window = float(settings["window"])
        series, by_source, sources_missing = collect(self.ref, settings["sources"], now - window)
        t_collected = time.perf_counter()
        self._remember_plots(series, by_source)  # the bad ones too: the page shows what came
        left_out = _unusable(series)
        if left_out:
            log.warning("modeler %s: job %s leaves out %s", self.name, number, left_out)
            series = {o: s for o, s in series.items() if o not in left_out}
            by_source = {a: [o for o in objs if o not in left_out] for a, objs in by_source.items()}

        subs: dict[str, tuple[nx.DiGraph, dict]] = {}
        missing: list[str] = []
        unavailable: dict[str, str] = {}  # why each missing sub-model is missing
        for name in settings["submodels"]:
            # no model there yet, unreachable, not answering within SUBMODEL_TIMEOUT, or
            # not a modeler: score its pairs here this time
            try:
                answer = self.ref(name).query("model", timeout=SUBMODEL_TIMEOUT)
                subs[name] = (interface.from_json(answer["model"]), answer["version"])
            except Exception as exc:  # noqa: BLE001 - a sub-model is a shortcut, never a condition
                missing.append(name)
                unavailable[name] = f"{type(exc).__name__}: {exc}"
        covered = [set(g) for g, _ in subs.values()]
        t_submodels = time.perf_counter()

        keep = None
        if covered:
            def keep(names: list[str], pairs: np.ndarray) -> np.ndarray:
                """Skip a pair when one sub-model already holds both of its objects."""
                member = np.array([[n in c for c in covered] for n in names], dtype=bool)
                both = member[pairs[:, 0]] & member[pairs[:, 1]]
                return ~both.any(axis=1)

        self._progress = {**self._progress, "state": "features", "objects": len(series)}
        estimator = copy.copy(self._estimator)  # shares the network; the job's own step
        estimator.step = settings["step"]
        job = scoring.make_job(estimator, series, keep)
        t_features = time.perf_counter()

        self._progress = {**self._progress, "state": "scoring", "pairs": len(job.pairs)}
        pool = Pool({n: self.ref(n) for n in self._pool_members(settings)}, self._network,
                    estimator.network_, batch_rows=int(settings["batch_rows"]),
                    timeout=float(settings["pool_timeout"]), progress=self._on_batch)
        proba, report = pool.score(job.features)
        t_scored = time.perf_counter()

        answers, outcome, evidence_missing = collect_connections(self.ref, settings["sources"], now - window)
        conn, watched, unresolved = resolve(answers, series)
        g, changed = decide(estimator, scoring.combine(job, proba), conn, watched)
        for name, (sub, head) in subs.items():
            for v, data in sub.nodes(data=True):
                g.add_node(v, **{**data, "submodel": name})
            for a, b, data in sub.edges(data=True):
                if not g.has_edge(a, b):
                    g.add_edge(a, b, **{**data, "submodel": name, "submodel_version": head["version"]})
        for source, objects in by_source.items():
            for obj in objects:
                if obj in g:
                    g.nodes[obj]["source"] = source
        g.graph.update(pairs_scored=len(job.pairs), modeler=self.name)
        t_decided = time.perf_counter()

        info = {
            # objects: whose activity was modeled here; nodes and edges: of the whole model,
            # sub-models' included
            "job": number, "objects": len(series), "nodes": g.number_of_nodes(), "edges": g.number_of_edges(),
            "pairs_scored": int(len(job.pairs)),
            "candidate_pairs": int(job.n_candidates), "pool": report.as_dict(),
            "submodels": {n: h["version"] for n, (_, h) in subs.items()},
            "submodels_missing": missing, "submodels_unavailable": unavailable,
            # agents below the sources (a mediator's dead source) whose activity is not in
            # this run, and why: the model is without them, not complete
            "sources_missing": sorted(sources_missing), "sources_unavailable": sources_missing,
            "objects_by_source": by_source, "objects_left_out": left_out,
            "connections": {"used": bool(conn or watched), "pairs": len(conn), "watched": len(watched),
                            "unresolved_endpoints": unresolved, "sources": outcome,
                            "sources_missing": evidence_missing, **changed},
            "seconds": {"collect": round(t_collected - t_start, 4),
                        "submodels": round(t_submodels - t_collected, 4),
                        "features": round(t_features - t_submodels, 4),
                        "score": round(t_scored - t_features, 4),
                        "decide": round(t_decided - t_scored, 4),
                        "total": round(t_decided - t_start, 4)},
        }
        sources = [s["agent"] for s in settings["sources"]] + list(subs)
        if self._stopping:  # moved or stopped meanwhile: the agent redoes it where it runs now
            raise RuntimeError("agent left this host during the run; not kept")
        return self.versions.add(self.name, g, Provenance(sources, job.t0, job.t1, self._network, info))

    def _pool_members(self, settings: dict) -> list[str]:
        """The job's pool, plus with ``discover`` every neural agent registered now:
        the pool then grows as operators start neural agents and shrinks as they go."""
        names = list(settings["pool"])
        if settings.get("discover"):
            found = admin.find_agents(self.ref(self.name).settings, kind="neural")
            names += sorted(n for n in found if n not in names)
        return names

    def _on_batch(self, report: PoolReport) -> None:
        self._progress = {**self._progress, "pool": report.as_dict()}

    def _remember_plots(self, series: dict[str, Series], by_source: dict[str, list[str]]) -> None:
        with self.lock:
            self._live = dict(series)
            self._live_until = {agent: max(float(series[o].end[-1]) for o in objects)
                                for agent, objects in by_source.items() if objects}
            self._thin()

    def _refresh_plots(self) -> None:
        """Only what is new since the last refresh, and only while someone looks: the
        sources' cost of a live page is one small report per source every few seconds."""
        if time.time() - self._plots_seen > LIVE_IDLE:
            return
        window = float(self.settings["window"])
        horizon = time.time() - window
        for spec in self.settings["sources"]:  # each source from where it stood last time
            agent = spec["agent"]
            since = self._live_until.get(agent, horizon)
            try:
                fresh, _, _ = collect(self.ref, [spec], since, timeout=LIVE_TIMEOUT)
            except MasaError:
                continue  # a source away for now: its plot waits, the others go on
            with self.lock:
                for obj, s in fresh.items():
                    held = self._live.get(obj)
                    self._live[obj] = (s if held is None else held.append(s)).since(horizon)
                    self._live_until[agent] = max(self._live_until.get(agent, since), float(s.end[-1]))
        with self.lock:
            self._thin()

    def _thin(self) -> None:
        plots = {}
        for obj, s in self._live.items():
            if not len(s):
                continue
            k = max(1, -(-len(s) // PLOT_POINTS))
            end, value = s.end[::k], s.value[::k]
            plots[obj] = {"unit": s.unit, "t": [round(float(t), 3) for t in end],
                          "v": [float(v) if math.isfinite(v) else None for v in value]}  # JSON has no inf
        self._plots = plots

    # -- control (configuration interface) ---------------------------------------------------

    @configure
    def run(self) -> dict:
        """Model now (on demand); a run already going is not started twice.  An open job
        (accepted before a crash or a move) is redone first, and this run follows it."""
        launched = self._launch()
        if launched is None or launched[1]:
            with self.lock:
                self.state["pending"] = True  # right after the one going on
                return {"started": False, "job": self.state["jobs"] + 1}
        return {"started": True, "job": launched[0]}

    @configure
    def start(self) -> dict:
        """Model every ``every`` seconds from now on."""
        self.state["running"] = True
        return {"running": True}

    @configure
    def stop(self) -> dict:
        """No more scheduled runs (a run going on finishes)."""
        self.state["running"] = False
        return {"running": False}

    @configure
    def pool_add(self, names: list[str]) -> list[str]:
        """Add existing neural agents to the pool (from the next job on)."""
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise BadRequest("names must be a list of agent names")
        with self.lock:
            pool = self.settings["pool"]
            pool.extend(n for n in names if n not in pool)
            return list(pool)

    @configure
    def pool_remove(self, names: list[str]) -> list[str]:
        """Take neural agents out of the pool (from the next job on); they keep running."""
        if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
            raise BadRequest("names must be a list of agent names")
        with self.lock:
            self.settings["pool"] = [n for n in self.settings["pool"] if n not in names]
            return list(self.settings["pool"])

    @configure
    def pool_grow(self, hosts: list[str], follow: bool = False) -> list[str]:
        """Start one neural agent on each of ``hosts`` and add it to the pool.

        All or nothing: every host is checked first (an unknown one is refused at once,
        by name), and if starting an agent fails, the ones already started are stopped
        again before the error goes to the caller.  Names are ``MODELER-nnK`` with the
        first K not taken by any agent the deployment knows."""
        if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
            raise BadRequest("hosts must be a list of host names")
        settings = self.ref(self.name).settings
        ns = NameService(settings)
        try:
            up = {short(n) for n in ns.find(HOST_PREFIX)}
        finally:
            ns.close()
        unknown = [h for h in dict.fromkeys(hosts) if h not in up]
        if unknown:
            raise BadRequest(f"no host named {', '.join(map(repr, unknown))} is running "
                             f"(hosts up: {', '.join(sorted(up)) or 'none'}); no neural agent started")
        try:  # registered now, or in the node list (a host down: its agents come back)
            known = admin.agent_names(settings)
        except Exception:  # noqa: BLE001 - no node list to ask: the registered ones then
            known = set(admin.find_agents(settings))
        taken = known | set(self.state["created_neural"]) | set(self.settings["pool"])
        made: list[tuple[str, str]] = []
        k = len(self.state["created_neural"])
        try:
            for host in hosts:
                k += 1
                while f"{self.name}-nn{k}" in taken:
                    k += 1
                name = f"{self.name}-nn{k}"
                taken.add(name)
                spec: dict[str, Any] = {"follow": self.name if follow else None}
                if self.state.get("network"):
                    spec["network"] = self.state["network"]
                # (an AgentNotFound or a communication error from here reaches the caller
                # as this op's failure, not as news about this modeler: host.PEER_ROUTING)
                try:
                    admin.create(settings, host, "neural", name, spec)
                except (BadRequest, AgentExists, KindNotAllowed, UnknownKind):
                    raise
                except Exception:
                    made.append((name, host))  # it may have started all the same (a timeout)
                    raise
                made.append((name, host))
        except Exception:
            for name, host in made:  # the state is rolled back: stop what it would forget
                try:
                    admin.host_call(settings, host, "terminate", name)
                except Exception as exc:  # noqa: BLE001 - reported, the original error goes on
                    log.warning("modeler %s: after a failed pool_grow, %s on %s not stopped: %s",
                                self.name, name, host, exc)
            raise
        with self.lock:
            self.state["created_neural"].extend(name for name, _ in made)
        return self.pool_add([name for name, _ in made])

    @configure
    def pool_shrink(self, count: int = 1) -> list[str]:
        """Stop the ``count`` neural agents this modeler started last."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise BadRequest("count must be a positive integer")
        settings = self.ref(self.name).settings
        for _ in range(min(count, len(self.state["created_neural"]))):
            name = self.state["created_neural"].pop()
            self.pool_remove([name])
            # already gone with its host: out of the pool anyway
            with contextlib.suppress(Exception):
                admin.host_call(settings, admin.where(settings, name), "terminate", name)
        return list(self.settings["pool"])

    # -- the dependency-model interface (query) --------------------------------------------------

    def _graph(self, version: int | None) -> tuple[nx.DiGraph, dict]:
        _version(version, "version")
        return self.versions.get(self.name, version)

    @query
    def status(self) -> dict:
        latest = self.versions.latest(self.name)
        return {"name": self.name, "host": self.host.name, "running": self.state["running"],
                "every": self.settings["every"], "pool": list(self.settings["pool"]),
                "network": self._network, "latest": latest, "job": dict(self._progress),
                "http": self._page.url, "http_error": self._page.error,
                "sources": [s["agent"] for s in self.settings["sources"]],
                "submodels": list(self.settings["submodels"])}

    @query
    def model(self, version: int | None = None) -> dict:
        """The whole model (node-link JSON) and its version header with provenance."""
        g, head = self._graph(version)
        return {"version": head, "model": interface.whole(g)}

    @query
    def dependencies(self, object: str, min_confidence: float = 0.0, version: int | None = None) -> list[dict]:
        obj, conf = _name(object, "object"), interface.check_confidence(min_confidence)
        return interface.dependencies(self._graph(version)[0], obj, conf)

    @query
    def dependants(self, object: str, min_confidence: float = 0.0, version: int | None = None) -> list[dict]:
        obj, conf = _name(object, "object"), interface.check_confidence(min_confidence)
        return interface.dependants(self._graph(version)[0], obj, conf)

    @query
    def impact(self, object: str, min_confidence: float = 0.0, version: int | None = None) -> list[dict]:
        obj, conf = _name(object, "object"), interface.check_confidence(min_confidence)
        return interface.impact_set(self._graph(version)[0], obj, conf)

    @query
    def path(self, source: str, target: str, min_confidence: float = 0.0,
             version: int | None = None) -> dict | None:
        a, b = _name(source, "source"), _name(target, "target")
        return interface.path(self._graph(version)[0], a, b, interface.check_confidence(min_confidence))

    @query
    def diff(self, old: int, new: int | None = None) -> dict:
        if old is None:
            raise BadRequest("old must be a version number")
        _version(old, "old")
        _version(new, "new")
        return self.versions.diff(self.name, old, new)

    @query
    def export(self, format: str = "json", version: int | None = None) -> str:
        fmt = _name(format, "format")
        return interface.render(self._graph(version)[0], fmt)

    @query
    def versions_list(self) -> list[dict]:
        """Every version's header (provenance, counts, timings), oldest first."""
        return self.versions.list(self.name)

    @query
    def layout(self, version: int | None = None) -> dict:
        """Node positions in [0, 1]² for drawing the model, computed once per version (the
        page asks on every refresh; a spring layout of hundreds of nodes takes seconds)."""
        g, head = self._graph(version)
        cached = self._layouts.get(head["version"])
        if cached is not None:
            return cached
        pos = nx.spring_layout(g, seed=1) if g.number_of_nodes() else {}
        xs = [p[0] for p in pos.values()] or [0.0]
        ys = [p[1] for p in pos.values()] or [0.0]
        sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        answer = {"version": head["version"],
                  "nodes": {str(v): [round((p[0] - min(xs)) / sx, 4), round((p[1] - min(ys)) / sy, 4)]
                            for v, p in pos.items()}}
        self._layouts = {**dict(list(self._layouts.items())[-7:]), head["version"]: answer}  # the last 8
        return answer

    @query
    def activity(self, objects: list[str] | None = None) -> dict:
        """Activity per object over the model's window, thinned for plotting; kept
        current while asked for (the supervision page asks every few seconds)."""
        if objects is not None and not (isinstance(objects, list) and all(isinstance(o, str) for o in objects)):
            raise BadRequest("objects must be a list of object names")
        self._plots_seen = time.time()
        plots = self._plots
        if objects is None:
            return plots
        return {o: plots[o] for o in objects if o in plots}
