"""CPU of processes, applications and the host, and interface traffic, from ``/proc``.

A plain meter: construct, call :meth:`ProcfsProbe.sample` periodically, get
:class:`~probes.samples.Sample` records (rates over the interval since the previous
call).  The first call only sets the baseline and returns nothing.

Why deltas are safe here:

* a process is identified by ``(pid, starttime)``, so a PID reused by a new process is a
  new process, never a delta against the old one's CPU time;
* a process that started after the previous sample has all its CPU time inside this
  interval, so it is counted from zero (short-lived workers are not lost);
* a process that exited simply drops out (its CPU since the last sample is unknowable
  from ``/proc``; it is never turned into a negative or a spike);
* counters that go backwards (an interface re-created) yield no sample.

Raw ``/proc`` parsing rather than psutil on this path: see ``bench/collection.py`` —
it is about twice as fast per process, and this runs every second for every process.
The connection evidence lives in :mod:`probes.connections` and is re-exported here.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterable

from masa.activity import BYTES_PER_S, CPU, check_label
from probes import procread
from probes.connections import Connection, ConnectionProbe, read_connections
from probes.rules import ProcessFacts, Rule, classify, parse_rules
from probes.samples import Sample, safe_name, to_series

__all__ = [
    "Connection",
    "ConnectionProbe",
    "PatternError",
    "ProcfsProbe",
    "Rule",
    "Sample",
    "parse_rules",
    "read_connections",
    "to_series",
]

PER_PROCESS = ("pid", "name", "none")


class PatternError(ValueError):
    """``match`` is not a regular expression."""


class ProcfsProbe:
    """Samples CPU per process and per application, host CPU and interface bytes.

    ``per_process``: ``"pid"`` gives one object per process (``host/proc/NAME/PID``),
    ``"name"`` sums processes of the same name (``host/proc/NAME``), ``"none"`` gives
    only applications and host objects.  ``match`` (a regular expression searched in the
    process name and command line) limits which processes get per-process objects;
    ``rules`` group processes into applications (``host/app/APP``).
    """

    def __init__(
        self,
        rules: Iterable[Rule] | str = (),
        *,
        host: str | None = None,
        per_process: str = "pid",
        match: str | None = None,
        host_cpu: bool = True,
        interfaces: bool = True,
        proc: str = procread.PROC,
    ) -> None:
        if per_process not in PER_PROCESS:
            raise ValueError(f"per_process must be one of {PER_PROCESS}")
        self.rules = parse_rules(rules) if isinstance(rules, str) else list(rules)
        self.host = check_label(host) if host else socket.gethostname().split(".")[0]
        self.per_process = per_process
        try:
            self.match = re.compile(match) if match else None
        except (re.error, TypeError) as exc:
            raise PatternError(f"bad regular expression {match!r}: {exc}") from None
        self.host_cpu = host_cpu
        self.interfaces = interfaces
        self.proc = proc
        # (pid, starttime) -> ticks used (utime + stime) at the previous sample
        self._ticks: dict[tuple[int, int], int] = {}
        # (pid, starttime, comm) -> (application or None, per-process object or None)
        self._labels: dict[tuple[int, int, str], tuple[str | None, str | None]] = {}
        self._prev_wall: float | None = None
        self._prev_boot: float = 0.0
        self._prev_cpu: procread.CpuTimes | None = None
        self._prev_dev: dict[str, tuple[int, int]] = {}

    # -- public --------------------------------------------------------------------------

    def sample(self) -> list[Sample]:
        """Rates over the interval since the previous call ([] on the first call)."""
        wall = time.time()
        boot = procread.boot_clock()
        stats = procread.read_all_stats(self.proc)
        cpu = procread.read_cpu_times(self.proc) if self.host_cpu else None
        dev = procread.read_net_dev(self.proc) if self.interfaces else {}
        out: list[Sample] = []
        if self._prev_wall is not None and wall > self._prev_wall:
            out = self._rates(stats, cpu, dev, self._prev_wall, wall, boot - self._prev_boot)
        self._remember(stats, cpu, dev, wall, boot)
        return out

    @property
    def process_count(self) -> int:
        """Processes seen by the last sample."""
        return len(self._ticks)

    def label(self, st: procread.ProcStat) -> tuple[str | None, str | None]:
        """The application and the process object a process is metered under (either may
        be None), cached per process: evidence about a process (its connections) must be
        named exactly as its activity is."""
        key = (st.pid, st.starttime, st.comm)
        label = self._labels.get(key)
        if label is None:
            facts = ProcessFacts(st.pid, st.comm, self.proc)
            app = classify(self.rules, facts) if self.rules else None
            obj = None
            if self.per_process != "none" and (
                self.match is None or self.match.search(st.comm) or self.match.search(facts.cmdline)
            ):
                name = safe_name(st.comm)
                obj = f"{self.host}/proc/{name}/{st.pid}" if self.per_process == "pid" else f"{self.host}/proc/{name}"
            label = self._labels[key] = (app, obj)
        return label

    # -- internals -----------------------------------------------------------------------

    def _rates(
        self,
        stats: list[procread.ProcStat],
        cpu: procread.CpuTimes | None,
        dev: dict[str, tuple[int, int]],
        t0: float,
        t1: float,
        boot_dt: float,
    ) -> list[Sample]:
        dt = boot_dt if boot_dt > 0 else t1 - t0
        # starttime is truncated to whole ticks: a process started after the previous
        # sample has starttime >= the tick that sample fell in
        born_after = int(self._prev_boot * procread.CLK_TCK)
        per_obj: dict[str, float] = {}
        per_app: dict[str, float] = {r.app: 0.0 for r in self.rules}
        for st in stats:
            used = st.utime + st.stime
            before = self._ticks.get((st.pid, st.starttime))
            if before is None:
                if st.starttime < born_after:
                    continue  # existed before but unseen (e.g. first seen now): no baseline
                before = 0  # born inside this interval: all its CPU time is ours
            delta = used - before
            if delta < 0:
                continue
            app, obj = self.label(st)
            rate = delta / procread.CLK_TCK / dt
            if obj is not None:
                per_obj[obj] = per_obj.get(obj, 0.0) + rate
            if app is not None:
                per_app[app] += rate
        out = [Sample(o, CPU, t0, t1, v) for o, v in per_obj.items()]
        out += [Sample(f"{self.host}/app/{a}", CPU, t0, t1, v) for a, v in per_app.items()]
        if cpu is not None and self._prev_cpu is not None:
            d_total = cpu.total - self._prev_cpu.total
            d_busy = cpu.busy - self._prev_cpu.busy
            if d_total > 0 and d_busy >= 0:
                out.append(Sample(f"{self.host}/cpu", CPU, t0, t1, cpu.ncpu * d_busy / d_total))
        for name, (rx, tx) in dev.items():
            prev = self._prev_dev.get(name)
            if prev is None or rx < prev[0] or tx < prev[1]:
                continue
            base = f"{self.host}/if/{safe_name(name)}"
            out.append(Sample(f"{base}/in", BYTES_PER_S, t0, t1, (rx - prev[0]) / dt))
            out.append(Sample(f"{base}/out", BYTES_PER_S, t0, t1, (tx - prev[1]) / dt))
        return out

    def _remember(self, stats, cpu, dev, wall: float, boot: float) -> None:
        self._ticks = {(st.pid, st.starttime): st.utime + st.stime for st in stats}
        if len(self._labels) > 2 * len(self._ticks) + 1024:  # forget dead processes' labels
            alive = self._ticks.keys()
            self._labels = {k: v for k, v in self._labels.items() if (k[0], k[1]) in alive}
        self._prev_wall, self._prev_boot, self._prev_cpu, self._prev_dev = wall, boot, cpu, dev
