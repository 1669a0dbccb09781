"""``masa scenario``: the founding scenario on one machine, on loopback, in a few minutes.

Domain A (three hosts with real service processes; its administrator wants the detailed
model), a central server, domain B (two services seen from outside as one object, through
its domain agent) and a router read over SNMP (a real ``snmpd`` when installed).  The call
graph of the services is known, so the model the agents build can be scored against it:

    clients -> a-web (a1) -> a-app (a2) -> a-db (a3)
                              a-app (a2) -> c-auth (srv) -> b-front (b1) -> b-store (b1)

Data path: procfs collectors on every host, a mediator in front of domain A's collectors,
a domain agent joining domain B's members into ``B/cpu``, an SNMP collector for the router.
The procfs collectors also sample which service holds TCP connections to which endpoint;
that connection evidence travels the same path (``connections``), and the modelers
combine it with activity, so every edge says what it rests on.
Domain A's own modeler (``mod-a``) builds A's detailed model; the enterprise modeler on the
central server reuses it as a sub-model and scores only the remaining pairs (A with the
central server, B and the router), both with a pool of neural agents on other hosts.
Agents are started by kind name, as an operator would: this module never imports
``agents/``.  Every process it starts is stopped again, on success, error or Ctrl-C.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import signal
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
import networkx as nx
from rich.console import Console
from rich.table import Table

from masa import admin
from masa.local import LocalCluster, wait
from masa.progress import console as output_console
from masa.supervisor import Supervisor
from modeler import export, interface, metrics
from modeler.scenario_netns import Netns, NetnsUnavailable
from modeler.scenario_procs import Processes, Router, free_port, wait_listening
from probes.snmpd import snmpd_path

#: host -> domain ("central" is the central server's own domain)
HOSTS: dict[str, str] = {"a1": "A", "a2": "A", "a3": "A", "srv": "central", "b1": "B"}
#: service -> (host, CPU ms per request, {called service: call probability})
SERVICES: dict[str, tuple[str, float, dict[str, float]]] = {
    "a-web": ("a1", 4, {"a-app": 0.7}),
    "a-app": ("a2", 6, {"a-db": 0.8, "c-auth": 0.5}),
    "a-db": ("a3", 3, {}),
    "c-auth": ("srv", 4, {"b-front": 0.6}),
    "b-front": ("b1", 3, {"b-store": 0.8}),
    "b-store": ("b1", 5, {}),
}
#: independent client populations: (target service, mean requests/s)
CLIENTS: list[tuple[str, float]] = [("a-web", 12), ("c-auth", 3), ("b-front", 4), ("a-db", 3)]
#: unrelated CPU work metered like a service (a decoy: no dependency touches it)
BACKGROUND: dict[str, str] = {"a-batch": "a3"}
DOMAIN_B_LABEL = "B"
ROUTER = "router"
#: seconds between the collectors' samples of TCP connections (activity: every interval)
CONNECTIONS_EVERY = 2.0


def object_of(service: str) -> str:
    """The model object a service shows up as: per process in domain A and on the central
    server, the collective object of domain B (its inside is B's own business)."""
    host = SERVICES[service][0] if service in SERVICES else BACKGROUND[service]
    return f"{DOMAIN_B_LABEL}/cpu" if HOSTS[host] == "B" else f"{host}/proc/{service}"


def truth_edges() -> set[tuple[str, str]]:
    """The known call graph at the model's granularity (edge = caller depends on callee);
    calls inside domain B disappear into its one object."""
    out = set()
    for name, (_, _, calls) in SERVICES.items():
        for dep in calls:
            a, b = object_of(name), object_of(dep)
            if a != b:
                out.add((a, b))
    return out


def activity_alone(g: nx.DiGraph, head: dict, g_a: nx.DiGraph, head_a: dict) -> set[tuple[str, str]]:
    """The edges the two modelers would have decided without connection evidence: each
    version records what the evidence added and removed against activity alone."""

    def undo(edges: set, info: dict) -> set:
        ev = info.get("connections") or {}
        return (edges - {tuple(e) for e in ev.get("added", [])}) | {tuple(e) for e in ev.get("removed", [])}

    own = {(a, b) for a, b, sub in g.edges(data="submodel") if sub is None}
    return undo(own, head["info"]) | undo(set(g_a.edges), head_a.get("info", {}))


class Scenario:
    """One run: ``start`` the processes and agents, ``collect``, ``model``, ``report``;
    ``stop`` (always called) ends every process started."""

    def __init__(self, console: Console, out: Path, seconds: float, interval: float, netns: bool = False) -> None:
        self.console, self.out, self.seconds, self.interval = console, out, seconds, interval
        self.netns = netns
        self.net: Netns | None = None
        self._tmp = tempfile.mkdtemp(prefix="masa-scenario-")
        self.home = Path(self._tmp)
        self.procs = Processes(tag=str(self.home))
        self.router: Router | None = None
        self.cluster: LocalCluster | None = None
        self.sources: list[Any] = []
        self.head_a: dict = {}

    # -- processes and agents -------------------------------------------------------------

    def start(self) -> None:
        c = self.console
        c.print(f"[bold]masa scenario[/]: state in {self.home}")
        if self.netns:
            self.net = Netns(list(HOSTS))
            try:
                self.net.up()
            except NetnsUnavailable as exc:
                raise click.ClickException(f"--netns: cannot create network namespaces here ({exc}); "
                                           "run without --netns (loopback) or as root") from None
            c.print(f"network namespaces: bridge {self.net.bridge} ({self.net.gateway}/24: name server, "
                    "router, clients); " + ", ".join(f"{h} {a}" for h, a in self.net.address.items()))
        with c.status("starting the name server and 5 agent hosts as separate processes..."):
            t0 = time.perf_counter()
            cl = LocalCluster(self.home, {h: {"domain": d} for h, d in HOSTS.items()},
                              heartbeat=0.5, call_timeout=30.0)
            if self.net is not None:  # the same processes, each host inside its namespace
                cl.settings = replace(cl.settings, ns_host=self.net.gateway)
                cl.sup = Supervisor(cl.topology, cl.settings, log_dir=self.home / "logs")
                for h, child in cl.sup.children.items():
                    if h in HOSTS:
                        child.argv = [*self.net.prefix(h), *child.argv, "--bind", self.net.address[h]]
            self.cluster = cl
            cl.__enter__()
        c.print(f"[green]up[/] in {time.perf_counter() - t0:.1f} s: name server on "
                f"{cl.settings.ns_address}; hosts " +
                ", ".join(f"{h} (domain {d}) on {self.addr(h)}" for h, d in HOSTS.items()))
        self._start_services()
        self._start_router()
        self._start_agents()

    def addr(self, host: str) -> str:
        """Where a host's processes serve: its namespace's address, or loopback."""
        return self.net.address[host] if self.net is not None else "127.0.0.1"

    def _inside(self, host: str) -> list[str] | None:
        return self.net.prefix(host) if self.net is not None else None

    def _start_services(self) -> None:
        ports = {name: free_port() for name in SERVICES}
        at = {name: self.addr(SERVICES[name][0]) for name in SERVICES}
        for name, (host, work, calls) in SERVICES.items():
            self.procs.spawn("service", {"name": name, "bind": at[name], "port": ports[name], "work_ms": work,
                                         "calls": [{"host": at[d], "port": ports[d], "p": p}
                                                   for d, p in calls.items()]}, self._inside(host))
        wait_listening((at[n], ports[n]) for n in SERVICES)
        for k, (target, rate) in enumerate(CLIENTS):  # outside every host, like real users
            self.procs.spawn("client", {"name": f"sc-cl{k}", "host": at[target], "port": ports[target],
                                        "rate": rate, "seed": 100 + k})
        for k, (name, host) in enumerate(BACKGROUND.items()):
            self.procs.spawn("background", {"name": name, "kind": "random", "period_s": 5, "seed": 200 + k},
                             self._inside(host))
        table = Table("service", "host", "domain", "address", "calls", title="services (real processes)")
        for name, (host, _, calls) in SERVICES.items():
            table.add_row(name, host, HOSTS[host], f"{at[name]}:{ports[name]}",
                          ", ".join(f"{d} (p={p})" for d, p in calls.items()) or "-")
        for name, host in BACKGROUND.items():
            table.add_row(name, host, HOSTS[host], "-", "unrelated background work")
        self.console.print(table)
        self.console.print(f"clients: {', '.join(f'{r:g} req/s -> {t}' for t, r in CLIENTS)} "
                           "(bursty, independent)")

    def _start_router(self) -> None:
        if snmpd_path() is None:
            self.console.print("[yellow]notice[/]: snmpd is not installed (Debian: apt-get install snmpd); "
                               "the router is left out and collection is procfs-only")
            return
        try:
            if self.net is not None:
                self.router = Router(self.home / "snmpd", self.net.gateway, self.net.gateway.rsplit(".", 1)[0] + ".0/24")
            else:
                self.router = Router(self.home / "snmpd")
        except (OSError, RuntimeError) as exc:
            self.console.print(f"[yellow]notice[/]: snmpd did not start ({exc}); "
                               "the router is left out and collection is procfs-only")
            return
        self.console.print(f"router: snmpd answering SNMP v2c on {self.router.target}")

    def _services_on(self, host: str) -> list[str]:
        return [n for n, (h, _, _) in SERVICES.items() if h == host] + \
               [n for n, h in BACKGROUND.items() if h == host]

    def _start_agents(self) -> None:
        assert self.cluster is not None
        c, cl = self.console, self.cluster
        placed: list[tuple[str, str, str, str]] = []

        def create(host: str, kind: str, name: str, role: str, **settings: Any) -> None:
            cl.create(host, kind, name, **settings)
            placed.append((name, kind, host, role))

        with c.status("creating agents..."):
            for host in HOSTS:
                names = self._services_on(host)
                create(host, "collector", f"col-{host}",
                       f"procfs: {', '.join(names)} + host CPU, interfaces; TCP connections",
                       interval=self.interval, per_process="name", match=f"^({'|'.join(names)})$",
                       connections_every=CONNECTIONS_EVERY)
            if self.router is not None:
                create("srv", "collector", ROUTER, f"SNMP {self.router.target}", probe="snmp",
                       target=self.router.target, community=Router.COMMUNITY, label=ROUTER,
                       interval=max(1.0, self.interval))
            create("a1", "mediator", "med-a", "domain A's collectors, cached",
                   sources=[f"col-{h}" for h, d in HOSTS.items() if d == "A"])
            create("b1", "domain", "dom-b", f"domain B as one object ({DOMAIN_B_LABEL}/cpu)",
                   sources=[f"col-{h}" for h, d in HOSTS.items() if d == "B"], label=DOMAIN_B_LABEL,
                   members=[f"{h}/proc/*" for h, d in HOSTS.items() if d == "B"])
            create("a3", "neural", "nn-1", "scores pairs for the modeler")
            create("b1", "neural", "nn-2", "scores pairs for the modeler")
            self.sources = [{"agent": "med-a", "objects": ["*/proc/*"]},
                            {"agent": "col-srv", "objects": ["srv/proc/*"]},
                            {"agent": "dom-b", "objects": [f"{DOMAIN_B_LABEL}/*"]}]
            if self.router is not None:
                self.sources.append({"agent": ROUTER, "objects": None})
            common = {"window": self.seconds + 30.0, "every": 3600.0, "http": None, "pool_timeout": 30.0,
                      "batch_rows": 64}
            create("a1", "modeler", "mod-a", "domain A's detailed model, for A's administrator",
                   sources=[self.sources[0]], pool=["nn-1"], **common)
            create("srv", "modeler", "enterprise", "the whole: reuses mod-a, B as one object, router",
                   sources=self.sources, submodels=["mod-a"], pool=["nn-1", "nn-2"], **common)
        table = Table("agent", "kind", "host (domain)", "what", title="agents")
        for name, kind, _host, role in placed:
            where = admin.where(cl.settings, name)
            table.add_row(name, kind, f"{where} ({HOSTS[where]})", role)
        c.print(table)

    # -- collection and modeling ----------------------------------------------------------

    def collect(self) -> None:
        """Let the collectors meter for ``seconds``, showing what reaches the modeler's sources."""
        assert self.cluster is not None
        refs = {s["agent"]: (self.cluster.ref(s["agent"], 30), s["objects"]) for s in self.sources}
        counts = dict.fromkeys(refs, 0)
        since = dict.fromkeys(refs, time.time())
        t0 = time.monotonic()
        with self.console.status("collecting...") as status:
            while (left := self.seconds - (time.monotonic() - t0)) > 0:
                time.sleep(min(3.0, left))
                for name, (ref, objects) in refs.items():
                    try:
                        answer = ref.query("report", objects=objects, since=since[name])
                    except Exception:  # noqa: BLE001 - progress display only; the modeler reports real failures
                        continue
                    counts[name] += sum(len(w["end"]) // 8 for w in answer["series"])
                    since[name] = max(since[name], float(answer.get("until") or since[name]))
                status.update(f"collecting: {time.monotonic() - t0:.0f}/{self.seconds:g} s; samples so far: " +
                              ", ".join(f"{n} {k}" for n, k in counts.items()))
        self.console.print(f"collected {self.seconds:g} s: samples through " +
                           ", ".join(f"{n}: {k}" for n, k in counts.items()))
        for name, (ref, objects) in refs.items():
            cat = [e["object"] for e in ref.query("catalog")]
            shown = [o for o in cat if objects is None or any(fnmatch.fnmatchcase(o, g) for g in objects)]
            self.console.print(f"  {name} offers {len(cat)} objects; the enterprise modeler takes {len(shown)}: "
                               f"{', '.join(shown[:8])}{' ...' if len(shown) > 8 else ''}")
            conn = ref.query("connections", objects=objects)
            self.console.print(f"    connection evidence: {len(conn['edges'])} outgoing (object, endpoint), "
                               f"{len(conn['listening'])} listening endpoints, {len(conn['watched'])} objects watched")

    def model(self) -> tuple[nx.DiGraph, dict, nx.DiGraph]:
        """Domain A's modeler first, then the enterprise modeler, which takes A's finished
        model as it is and scores only the pairs it does not cover."""
        g_a, self.head_a = self._run("mod-a")
        g, head = self._run("enterprise")
        return g, head, g_a

    def _run(self, name: str) -> tuple[nx.DiGraph, dict]:
        assert self.cluster is not None
        mod = self.cluster.ref(name, 30)
        mod.configure("run")
        with self.console.status(f"modeling ({name})...") as status:
            def done() -> dict | None:
                st = mod.query("status")
                job = st["job"]
                pool = job.get("pool") or {}
                status.update(f"modeling ({name}): {job.get('state')}; objects {job.get('objects', '?')}, "
                              f"pairs {job.get('pairs', '?')}, batches by agent {pool.get('by_agent', {})}")
                return st if st["latest"] and job.get("state") in ("done", "failed") else None

            st = wait(done, timeout=240, every=0.5)
        if st["job"]["state"] == "failed":
            raise click.ClickException(f"the modeling run of {name} failed: {st['job'].get('error')}")
        head = mod.query("versions_list")[-1]
        g = interface.from_json(mod.query("model")["model"])
        info = head["info"]
        reused = f"; reused {', '.join(f'{k} v{v}' for k, v in info['submodels'].items())}" \
            if info.get("submodels") else ""
        self.console.print(f"{name} on {self.cluster.where(name)}: model version {head['version']}, "
                           f"{info['objects']} objects, {g.number_of_edges()} dependencies; "
                           f"{info['pairs_scored']} of {info['candidate_pairs']} pairs scored by neural agents "
                           f"{info['pool']['by_agent']}{reused}, {info['seconds']['total']:.1f} s")
        ev = info.get("connections") or {}
        if ev.get("used"):
            changed = "; ".join(f"{what}: {', '.join(f'{a} -> {b}' for a, b in ev[what])}"
                                for what in ("added", "removed") if ev.get(what)) or "no edge changed"
            self.console.print(f"  connection evidence used: {ev['pairs']} connected pairs, {ev['watched']} objects "
                               f"watched, sources {ev['sources']}; against activity alone: {changed}")
        else:
            self.console.print(f"  no connection evidence (sources: {ev.get('sources', {})}): activity alone")
        return g, head

    # -- the result ---------------------------------------------------------------------

    def report(self, g: nx.DiGraph, head: dict, g_a: nx.DiGraph) -> dict:
        c = self.console
        c.print("domain A's detailed model (mod-a): " + (", ".join(
            f"{a} -> {b} ({d['confidence']:.2f}, {d.get('evidence', 'activity')})"
            for a, b, d in sorted(g_a.edges(data=True))) or "no dependencies"))
        truth = truth_edges()
        truth_objects = {v for e in truth for v in e} | {object_of(n) for n in BACKGROUND}
        seen = head["info"]["objects_by_source"]
        c.print("the enterprise modeler saw: " + "; ".join(f"{s}: {', '.join(objs)}" for s, objs in seen.items()))

        table = Table("depends", "on", "confidence", "evidence", "from", "vs truth",
                      title="dependency model (enterprise)")
        for a, b, conf in sorted(g.edges(data="confidence"), key=lambda e: -(e[2] or 0)):
            if a in truth_objects and b in truth_objects:
                verdict = "[green]right[/]" if (a, b) in truth else \
                    "[yellow]reversed[/]" if (b, a) in truth else "[red]wrong[/]"
            else:
                verdict = "no truth (router)" if ROUTER in (a.split("/")[0], b.split("/")[0]) else "no truth"
            table.add_row(a, b, f"{conf:.2f}" if conf is not None else "-",
                          g.edges[a, b].get("evidence", "activity"), g.edges[a, b].get("submodel", "enterprise"),
                          verdict)
        c.print(table)

        scored = g.subgraph([v for v in g if v in truth_objects])
        m = metrics.evaluate(scored, truth)
        missed = sorted(truth - set(scored.edges))
        wrong = sorted(set(scored.edges) - truth)
        c.print(f"[bold]compared with the known truth[/] ({len(truth)} dependencies among "
                f"{len(truth_objects)} service objects): precision {m['precision']:.2f}, "
                f"recall {m['recall']:.2f}, F1 {m['f1']:.2f} (skeleton F1 {m['skeleton_f1']:.2f}, SHD {m['shd']})")
        c.print("  found: " + (", ".join(f"{a} -> {b}" for a, b in sorted(truth & set(scored.edges))) or "none"))
        c.print("  missed: " + (", ".join(f"{a} -> {b}" for a, b in missed) or "none"))
        c.print("  wrong or reversed: " + (", ".join(f"{a} -> {b}" for a, b in wrong) or "none"))
        alone = nx.DiGraph(sorted(activity_alone(g, head, g_a, self.head_a)))
        alone.add_nodes_from(g)
        m_alone = metrics.evaluate(alone.subgraph([v for v in alone if v in truth_objects]), truth)
        c.print(f"  from activity alone (this run's decision without connection evidence, from the versions' "
                f"provenance): precision {m_alone['precision']:.2f}, recall {m_alone['recall']:.2f}, "
                f"F1 {m_alone['f1']:.2f}")
        if self.router is not None:
            carries = ("its ports carry the hosts' traffic (" + ", ".join(
                f"{self.net.port(h)} = {h}" for h in HOSTS) + ")") if self.net is not None \
                else "its interfaces carry all loopback traffic"
            c.print(f"  the router's objects have no known truth: {carries}, so edges to them are "
                    "plausible but not scored")

        self.out.mkdir(parents=True, exist_ok=True)
        files = []
        for fmt in export.FORMATS:
            path = self.out / f"model.{fmt}"
            export.write(g, path, fmt)
            export.write(g_a, self.out / f"domain-a.{fmt}", fmt)
            files.append(path)
        (self.out / "truth.json").write_text(json.dumps(
            {"edges": sorted(map(list, truth)), "objects": sorted(truth_objects)}, indent=1) + "\n")
        summary = {"metrics": m, "metrics_activity_alone": m_alone, "objects_by_source": seen, "router": self.router is not None,
                   "version": head["version"], "pool": head["info"]["pool"], "seconds": self.seconds,
                   "submodels": head["info"]["submodels"],
                   "domain_a_edges": sorted(map(list, g_a.edges)),
                   "netns": None if self.net is None else {
                       "bridge": self.net.bridge, "namespaces": self.net.names, "addresses": self.net.address},
                   "connections": head["info"].get("connections"),
                   "edges": [[a, b, d.get("confidence"), d.get("evidence", "activity")]
                             for a, b, d in g.edges(data=True)]}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        c.print(f"model files: {', '.join(str(p) for p in files)} "
                f"(domain A's: domain-a.*; truth.json and summary.json beside them)")
        return summary

    # -- shutdown -------------------------------------------------------------------------

    def stop(self) -> None:
        """Everything this run started, whatever state it is in; one step failing does not
        keep the others from running."""
        steps = [("hosts and name server", self._stop_cluster), ("services", self.procs.stop),
                 ("snmpd", lambda: self.router and self.router.stop()),
                 ("network namespaces", lambda: self.net and self.net.down())]
        failed = []
        with self.console.status("shutting down agents, hosts, name server, services, snmpd..."):
            for what, step in steps:
                try:
                    step()
                except Exception as exc:  # noqa: BLE001 - reported, and the next step still runs
                    failed.append(f"{what}: {exc!r}")
        shutil.rmtree(self._tmp, ignore_errors=True)
        if failed:
            self.console.print(f"[red]shutdown problems[/]: {'; '.join(failed)}")
        else:
            self.console.print("[green]stopped[/]: no process of this run is left")

    def _stop_cluster(self) -> None:
        if self.cluster is not None:
            cluster, self.cluster = self.cluster, None
            cluster.__exit__(None, None, None)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # SIGTERM takes the same clean way out as Ctrl-C


def run(seconds: float, interval: float, out: Path, console: Console | None = None,
        netns: bool = False) -> dict:
    """The whole scenario; returns the summary written to ``out/summary.json``."""
    console = console or output_console()
    previous = signal.signal(signal.SIGTERM, _interrupt)
    sc = Scenario(console, out, seconds, interval, netns)
    try:
        t0 = time.perf_counter()
        sc.start()
        sc.collect()
        g, head, g_a = sc.model()
        summary = sc.report(g, head, g_a)
        console.print(f"[green]done[/] in {time.perf_counter() - t0:.0f} s")
        return summary
    finally:
        try:
            sc.stop()
        finally:
            signal.signal(signal.SIGTERM, previous)


@click.command("scenario")
@click.option("--seconds", type=float, default=None,
              help="Collection time before the model (default 150; 20 with --short).")
@click.option("--short", is_flag=True, help="A quick run (about a minute) for tests.")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), default=Path("masa-scenario"),
              show_default=True, help="Directory for the model files (JSON, GraphML, DOT).")
@click.option("--netns", is_flag=True, help="Each host in its own network namespace (needs root).")
def scenario(seconds: float | None, short: bool, out: Path, netns: bool) -> None:
    """The founding scenario: domains A and B, a central server and a router, collected,
    mediated and modeled by agents on this machine; the model is compared with the truth."""
    if seconds is None:
        seconds = 20.0 if short else 150.0
    if not 5 <= seconds < float("inf"):  # nan compares false both ways
        raise click.BadParameter("at least 5 s of activity are needed, and a finite time", param_hint="--seconds")
    try:
        run(seconds, 0.5, out, netns=netns)
    except KeyboardInterrupt:
        Console().print("[yellow]interrupted[/]: everything was shut down")
        raise SystemExit(130) from None


__all__ = ["scenario", "run", "truth_edges", "object_of", "HOSTS", "SERVICES"]
