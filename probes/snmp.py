"""SNMP poller: host CPU and interface traffic of one agent, one GETBULK per poll.

Asyncio (pysnmp 7, ``pysnmp.hlapi.v3arch.asyncio``) so one event loop polls many
agents concurrently; :meth:`SnmpPoller.poll_sync` wraps it for callers with no loop.

Each poll asks, in a single multi-column GETBULK (never GETNEXT walks), for
sysUpTime and the UCD ``ssCpuRaw*`` counters as non-repeaters, and the IF-MIB columns
``ifHCInOctets``, ``ifHCOutOctets``, ``ifInOctets``, ``ifOutOctets``,
``ifCounterDiscontinuityTime`` and HOST-RESOURCES ``hrProcessorLoad`` as repeaters
(plus ``ifName``/``ifDescr``/``ifSpeed``/``ifHighSpeed`` when the interface set is new
or changed, after a counter reset, and every 360 polls).  Columns are cut where they
leave their subtree, so GETBULK overshoot never leaks into the data.  OIDs are numeric,
``lookupMib=False``.

Rates: per interface the 64-bit counters when the agent has them, else the 32-bit ones
with wrap handling (:mod:`probes.counters`: a lower reading is a wrap only if the rate
it implies fits the interface's speed or recent traffic, else a reset and no sample); a
changed ``ifCounterDiscontinuityTime`` drops that interface's interval; host CPU from ``ssCpuRaw*`` deltas, or
from ``hrProcessorLoad`` (a 1-minute average, served by net-snmp only about a minute
after it starts).  An agent restart (sysUpTime went back) raises
:class:`~probes.errors.AgentRestart` once and never becomes a rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import weakref
from collections import deque
from collections.abc import Iterable, Sequence

from pyasn1.type.univ import Null
from pysnmp.hlapi.v3arch.asyncio import (
    ContextData,
    ObjectIdentity,
    ObjectType,
    SnmpEngine,
    Udp6TransportTarget,
    UdpTransportTarget,
    bulk_cmd,
)
from pysnmp.proto import errind
from pysnmp.proto.rfc1905 import EndOfMibView, NoSuchInstance, NoSuchObject

from masa.activity import BYTES_PER_S, CPU, check_label
from probes import snmp_oids as O
from probes.counters import COUNTER32, counter_delta, uptime_went_back, wrap_plausible
from probes.errors import AgentRestart, AuthFailure, GarbageResponse, ProbeError, ProbeTimeout
from probes.samples import Sample, safe_name
from probes.snmp_auth import Credentials

_AUTH_ERRORS = (
    errind.UnknownUserName, errind.WrongDigest, errind.AuthenticationFailure,
    errind.AuthenticationError, errind.DecryptionError, errind.UnknownSecurityName,
    errind.UnsupportedSecurityLevel, errind.UnknownCommunityName, errind.NotInTimeWindow,
    errind.UnsupportedAuthProtocol, errind.UnsupportedPrivProtocol,
)
_ABSENT = (EndOfMibView, NoSuchInstance, NoSuchObject, Null)
_CPU_KEYS = tuple(O.SS_CPU_RAW)
NON_REPEATERS = (O.SYS_UPTIME, O.SS_CPU_NUM, *O.SS_CPU_RAW.values())
COUNTER_COLUMNS = (O.IF_HC_IN_OCTETS, O.IF_HC_OUT_OCTETS, O.IF_IN_OCTETS, O.IF_OUT_OCTETS,
                   O.IF_COUNTER_DISCONTINUITY)
# read on the first poll, for a new ifIndex, after a counter reset and every REDISCOVER_EVERY
# polls: names and speeds change rarely, so they do not cost every poll a longer answer
INFO_COLUMNS = (O.IF_NAME, O.IF_DESCR, O.IF_SPEED, O.IF_HIGH_SPEED)
REDISCOVER_EVERY = 360  # polls between re-reading interface names (ifIndex may be reused)
RATE_HISTORY = 8  # intervals of each counter kept to judge a 32-bit wrap (no speed known)
MAX_CPUS = 1 << 16  # ssCpuNumCpus beyond this is garbage (Linux's NR_CPUS is at most 8192)


def unsigned(value: object, bits: int) -> int | None:
    """``value`` as a counter reading of ``bits`` bits, or None if it cannot be one.

    A broken agent may send an Integer where a Counter32 belongs (negative, say) or a
    number wider than the column: taken as is, a reading of -5 after 1,000 reads as a
    32-bit wrap, a rate of 4 GB over the interval.  Such a value is dropped instead."""
    try:
        n = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return n if 0 <= n < (1 << bits) else None


def _text(value: object) -> str:
    """A varbind's value for a message: its type and value, cut short."""
    text = value.prettyPrint() if hasattr(value, "prettyPrint") else str(value)
    return f"{type(value).__name__} {text[:40]}"


_OBJECT_TYPES: dict[tuple, ObjectType] = {}


def _object_type(oid: tuple) -> ObjectType:
    """One ObjectType per OID, reused: pysnmp resolves each against its MIB view once and
    then keeps it clean, which saves a tenth of a poll's CPU."""
    ot = _OBJECT_TYPES.get(oid)
    if ot is None:
        if len(_OBJECT_TYPES) > 4096:  # follow-up OIDs of long tables: do not grow forever
            _OBJECT_TYPES.clear()
        ot = _OBJECT_TYPES[oid] = ObjectType(ObjectIdentity(oid))
    return ot


RCVBUF = 4 << 20  # one socket receives every agent's answers: room for bursts
_ENLARGED: weakref.WeakSet = weakref.WeakSet()


def _enlarge_receive_buffer(engine: SnmpEngine, ipv6: bool) -> None:
    """Give the engine's UDP socket a large receive buffer, once.

    All pollers sharing an engine read their answers from one socket; with hundreds of
    agents, answers arrive in bursts (an agent host that was descheduled answers a
    backlog at once) and the default ~200 kB buffer overflows: the kernel drops them
    and they turn into timeouts.  SO_RCVBUFFORCE (root) lifts the rmem_max cap."""
    if engine in _ENLARGED:
        return
    domain = (Udp6TransportTarget if ipv6 else UdpTransportTarget).TRANSPORT_DOMAIN
    try:
        proto = engine.transport_dispatcher.get_transport(domain)
        sock = proto.transport.get_extra_info("socket") if proto and proto.transport else None
    except Exception:  # noqa: BLE001 - no transport yet: try again next poll
        return
    if sock is None:
        return
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, RCVBUF)
            break
        except OSError:
            continue
    _ENLARGED.add(engine)


def parse_target(target: str) -> tuple[str, int, bool]:
    """``udp:HOST:PORT``, ``udp6:[ADDR]:PORT`` or ``HOST[:PORT]`` -> (host, port, ipv6)."""
    text = target.strip()
    ipv6 = text.startswith("udp6:")
    for prefix in ("udp6:", "udp:"):
        if text.startswith(prefix):
            text = text[len(prefix):]
            break
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "161"
        ipv6 = True
    elif text.count(":") > 1:
        host, port, ipv6 = text, "161", True
    else:
        host, _, port = text.partition(":")
        port = port or "161"
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad SNMP target {target!r}: use udp:HOST:PORT")
    return host, int(port), ipv6


class SnmpPoller:
    """Polls one agent; each :meth:`poll` returns rates since the previous poll.

    ``label`` names the objects (``LABEL/cpu``, ``LABEL/if/eth0/in``); by default the
    target's host (with ``_PORT`` when not 161).  ``engine``: share one
    :class:`SnmpEngine` among many pollers on the same event loop (one UDP socket, one
    USM state); by default each poller makes its own on first use.
    """

    def __init__(
        self,
        target: str,
        credentials: Credentials,
        *,
        label: str | None = None,
        timeout: float = 1.0,
        retries: int = 1,
        engine: SnmpEngine | None = None,
        interfaces: bool = True,
        cpu: bool = True,
    ) -> None:
        self.target = target
        self.host, self.port, self.ipv6 = parse_target(target)
        self.credentials = credentials
        self.label = check_label(label) if label else (self.host if self.port == 161 else f"{self.host}_{self.port}")
        self.timeout = timeout
        self.retries = retries
        self.engine = engine
        self._own_engine = engine is None
        self._columns = (COUNTER_COLUMNS if interfaces else ()) + ((O.HR_PROCESSOR_LOAD,) if cpu else ())
        self._cpu = cpu
        self._auth = credentials.pysnmp()
        self._transport = None
        self._context = ContextData()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.max_repetitions = 8  # adapted to the longest column seen
        self.polls = 0
        self.varbinds = 0  # received, for the benchmarks
        self.requests = 0  # GETBULKs sent (tries included): one per poll once adapted
        self.discarded = 0  # values dropped as garbage (a counter that is negative, ...)
        self.last_discarded = ""  # what the last one was
        self._garbage: set[str] = set()
        self._names: dict[int, str] = {}
        self._speed: dict[int, float] = {}  # ifIndex -> bit/s, where the agent says
        self._absent: set[tuple] = set()  # counter columns the agent had no rows of
        self.discontinuities = 0  # intervals dropped: counter reset or discontinuity time changed
        self._need_info = interfaces
        self._reset_state()

    def _reset_state(self) -> None:
        self._prev_t: float | None = None
        self._prev_uptime: int | None = None
        self._prev_if: dict[tuple[int, int], tuple[int, int]] = {}  # (ifIndex, dir) -> (value, bits)
        self._prev_disc: dict[int, int] = {}  # ifIndex -> ifCounterDiscontinuityTime
        self._recent: dict[tuple[int, int], deque] = {}  # (ifIndex, dir) -> last rates (B/s)
        self._prev_cpu: tuple[float, dict[str, int]] | None = None
        self._last_cpu: dict[str, int] = {}

    def attach(self, engine: SnmpEngine) -> None:
        """Poll through ``engine`` (shared with other pollers on the running loop) from
        now on; for pollers built before their event loop existed."""
        if self._own_engine and self.engine is not None:
            self.engine.close_dispatcher()
        self.engine, self._own_engine, self._transport = engine, False, None

    def _silent_hint(self) -> str:
        """What else looks like no answer: net-snmp stays silent for a wrong v2c community,
        and for a v3 request it cannot decrypt (wrong privacy key or protocol)."""
        if self.credentials.community:
            return " (or wrong community: a v2c agent stays silent)"
        if self.credentials.priv_key:
            return " (or wrong privacy key or protocol: net-snmp stays silent when it cannot decrypt)"
        return ""

    def __repr__(self) -> str:
        return f"SnmpPoller({self.target!r}, {self.credentials!r}, label={self.label!r})"

    # -- the request -------------------------------------------------------------------------

    async def _bulk(self, non_rep: Sequence[tuple], columns: Sequence[tuple], reps: int) -> list:
        """One GETBULK, retried here rather than inside pysnmp.

        pysnmp counts its timeouts in timer ticks of its event-loop task, which fall
        behind real time when the loop is busy; its retries then fire for requests whose
        caller already gave up, and with hundreds of agents that retry traffic alone
        keeps the loop overloaded (seen with 1,000 agents: every poll timing out).  So
        pysnmp gets no retries, each try is bounded in real time, and a try given up on
        can no longer send anything."""
        if self.engine is None:
            self.engine = SnmpEngine()
        if self._transport is None:
            cls = Udp6TransportTarget if self.ipv6 else UdpTransportTarget
            try:
                self._transport = await cls.create((self.host, self.port), timeout=self.timeout, retries=0)
            except Exception as exc:  # noqa: BLE001 - resolution errors of all kinds
                raise ProbeError(f"cannot resolve: {exc}", self.target) from None
        oids = [_object_type(o) for o in (*non_rep, *columns)]
        err = None
        for _try in range(self.retries + 1):
            self.requests += 1
            try:
                err, status, index, vbs = await asyncio.wait_for(
                    bulk_cmd(self.engine, self._auth, self._transport, self._context,
                             len(non_rep), reps, *oids, lookupMib=False),
                    self.timeout + 0.1)
            except TimeoutError:
                err = errind.requestTimedOut
                continue
            except Exception as exc:  # noqa: BLE001 - pysnmp raises many kinds on bad input
                raise GarbageResponse(f"unusable response: {exc}", self.target) from None
            finally:
                _enlarge_receive_buffer(self.engine, self.ipv6)
            if not isinstance(err, errind.RequestTimedOut):
                break
        if err:
            if isinstance(err, errind.RequestTimedOut):
                raise ProbeTimeout(f"no answer after {self.retries + 1} tries of {self.timeout:g} s"
                                   f"{self._silent_hint()}", self.target)
            if isinstance(err, _AUTH_ERRORS):
                raise AuthFailure(f"SNMPv3 credentials refused: {err}", self.target)
            raise ProbeError(f"SNMP error: {err}", self.target)
        if status:
            text = status.prettyPrint() if hasattr(status, "prettyPrint") else str(status)
            if "authorization" in text.lower():
                raise AuthFailure(f"agent refused access: {text}", self.target)
            raise GarbageResponse(f"agent error {text} at varbind {index}", self.target)
        return list(vbs)

    async def _fetch(self, columns: tuple) -> tuple[list, dict[tuple, dict[int, object]]]:
        """Non-repeater values and each column's rows ({index: value}), cut at its subtree."""
        non_rep = NON_REPEATERS if self._cpu else (O.SYS_UPTIME,)
        vbs = await self._bulk(non_rep, columns, self.max_repetitions)
        n = len(non_rep)
        if len(vbs) < n:
            raise GarbageResponse(f"expected at least {n} varbinds, got {len(vbs)}", self.target)
        self.varbinds += len(vbs)
        scalars = []
        for want, (name, value) in zip(non_rep, vbs[:n], strict=True):
            t = name.asTuple()
            ok = len(t) == len(want) + 1 and t[: len(want)] == want and not isinstance(value, _ABSENT)
            scalars.append(value if ok else None)
        rows: dict[tuple, dict[int, object]] = {c: {} for c in columns}
        open_cols = list(columns)
        last: dict[tuple, tuple] = {}
        # Follow-up GETBULKs only while some column did not end (table longer than
        # max_repetitions); the repetition count is then raised so the next poll is one.
        for _round in range(16):
            rest = vbs[n:] if _round == 0 else vbs
            m = len(open_cols)
            done = set()
            for i, (name, value) in enumerate(rest):
                col = open_cols[i % m]
                if col in done:
                    continue
                t = name.asTuple()
                if t[: len(col)] != col or isinstance(value, EndOfMibView) or len(t) != len(col) + 1:
                    done.add(col)
                    continue
                last[col] = t
                if not isinstance(value, _ABSENT):
                    rows[col][t[-1]] = value
            unfinished = [c for c in open_cols if c not in done and c in last]
            if not unfinished or len(rest) < m:
                break
            longest = max(len(r) for r in rows.values())
            self.max_repetitions = min(max(self.max_repetitions, longest + 1), 256)
            open_cols = unfinished
            vbs = await self._bulk((), [last[c] for c in open_cols], self.max_repetitions)
            self.varbinds += len(vbs)
            # rebase: the follow-up asks from the last OID seen, column ids stay the same
        longest = max((len(r) for r in rows.values()), default=0)
        if longest + 1 > self.max_repetitions:
            self.max_repetitions = min(longest + 1, 256)
        return scalars, rows

    # -- the poll ---------------------------------------------------------------------------

    async def poll(self) -> list[Sample]:
        """Rates since the previous poll ([] on the first, or after a restart was reported).

        Raises ProbeTimeout, AuthFailure, GarbageResponse or AgentRestart.

        Counter columns the agent had no rows of at the last interface discovery are left
        out (an agent without ifXTable would otherwise answer each with a column's worth of
        overshoot, every poll); each discovery asks for them again."""
        info = self._need_info
        columns = tuple(c for c in self._columns if info or c not in self._absent)
        columns += INFO_COLUMNS if info else ()
        scalars, rows = await self._fetch(columns)
        if info:
            self._absent = {c for c in COUNTER_COLUMNS if c in columns and not rows[c]}
        self._garbage = set()
        try:
            return self._poll(scalars, rows)
        finally:
            if self._garbage:
                self.discarded += len(self._garbage)
                self.last_discarded = sorted(self._garbage)[0]

    def _poll(self, scalars: list, rows: dict) -> list[Sample]:
        now = time.time()
        self.polls += 1
        uptime = unsigned(scalars[0], 32)  # TimeTicks: a negative one would read as a restart
        if uptime is None:
            raise GarbageResponse("no usable sysUpTime in the response", self.target)
        if self._need_info:
            self._learn_info(rows)
        prev_t, prev_up = self._prev_t, self._prev_uptime
        if prev_t is not None and prev_up is not None and uptime_went_back(prev_up, uptime, now - prev_t):
            self._reset_state()
            self._need_info = O.IF_HC_IN_OCTETS in self._columns
            self._remember(now, uptime, scalars, rows)
            raise AgentRestart(f"agent restarted (sysUpTime {prev_up} -> {uptime} ticks); "
                               "counters re-baselined, no rate for this interval", self.target)
        out = self._rates(now, scalars, rows) if prev_t is not None and now > prev_t else []
        self._remember(now, uptime, scalars, rows)
        if self.polls % REDISCOVER_EVERY == 0 and O.IF_HC_IN_OCTETS in self._columns:
            self._need_info = True
        return out

    def _learn_info(self, rows: dict) -> None:
        """Interface names and speeds (bit/s: ifSpeed, or ifHighSpeed where ifSpeed is 0
        or saturated at 2^32-1, i.e. above 4.3 Gbit/s; neither: unknown)."""
        names: dict[int, str] = {}
        for col in (O.IF_DESCR, O.IF_NAME):  # ifName wins over ifDescr
            for idx, v in rows.get(col, {}).items():
                text = v.prettyPrint() if hasattr(v, "prettyPrint") else str(v)
                if text:
                    names[idx] = safe_name(text)
        seen = set()
        for idx in sorted(names):  # two interfaces with one name: keep them apart
            if names[idx] in seen:
                names[idx] = f"{names[idx]}.{idx}"
            seen.add(names[idx])
        self._names = names
        speeds: dict[int, float] = {}
        for idx, v in rows.get(O.IF_HIGH_SPEED, {}).items():
            n = unsigned(v, 32)
            if n:
                speeds[idx] = n * 1e6
        for idx, v in rows.get(O.IF_SPEED, {}).items():
            n = unsigned(v, 32)
            if n and n < COUNTER32 - 1:  # exact below 4.3 Gbit/s (ifHighSpeed rounds to Mbit/s)
                speeds[idx] = float(n)
        self._speed = speeds
        self._need_info = False

    def _if_readings(self, rows: dict) -> dict[tuple[int, int], tuple[int, int]]:
        """(ifIndex, 0=in/1=out) -> (counter, bits): 64-bit where present, else 32-bit."""
        out = {}
        for d, (hc, lo) in enumerate(((O.IF_HC_IN_OCTETS, O.IF_IN_OCTETS), (O.IF_HC_OUT_OCTETS, O.IF_OUT_OCTETS))):
            for col, bits in ((lo, 32), (hc, 64)):
                for idx, v in rows.get(col, {}).items():
                    n = unsigned(v, bits)
                    if n is None:
                        self._discard(f"ifIndex {idx} octets {_text(v)}")
                        continue
                    out[(idx, d)] = (n, bits)
        return out

    def _discard(self, what: str) -> None:
        """Note a value that cannot be what its column holds; it gives no sample.  A set,
        counted once per poll (the readings are looked at more than once a poll)."""
        self._garbage.add(what[:200])

    def _disc_readings(self, rows: dict) -> dict[int, int]:
        """ifIndex -> ifCounterDiscontinuityTime (TimeTicks), where the agent has it."""
        out = {}
        for idx, v in rows.get(O.IF_COUNTER_DISCONTINUITY, {}).items():
            n = unsigned(v, 32)
            if n is None:
                self._discard(f"ifIndex {idx} ifCounterDiscontinuityTime {_text(v)}")
                continue
            out[idx] = n
        return out

    def _rates(self, now: float, scalars: list, rows: dict) -> list[Sample]:
        t0 = self._prev_t
        dt = now - t0
        out: list[Sample] = []
        # RFC 2863: a changed ifCounterDiscontinuityTime means the interface's counters
        # had a discontinuity in this interval, whichever way they moved
        disc = self._disc_readings(rows)
        broken = {i for i, t in disc.items() if i in self._prev_disc and self._prev_disc[i] != t}
        for key, (value, bits) in self._if_readings(rows).items():
            prev = self._prev_if.get(key)
            name = self._names.get(key[0])
            if prev is None or prev[1] != bits:
                continue
            if name is None:
                self._need_info = True
                continue
            delta = None if key[0] in broken else counter_delta(prev[0], value, bits)
            recent = self._recent.setdefault(key, deque(maxlen=RATE_HISTORY))
            if delta is not None and value < prev[0] and not wrap_plausible(
                    delta, dt, self._speed.get(key[0]), recent):
                delta = None  # reset, not wrap: the rate would be a fake spike
            if delta is None:
                # no sample: a reset, or a discontinuity; the next interval is measured
                # from this reading, and speeds are read again (a reset may renegotiate)
                self.discontinuities += 1
                self._need_info = True
                continue
            recent.append(delta / dt)
            out.append(Sample(f"{self.label}/if/{name}/{'out' if key[1] else 'in'}", BYTES_PER_S, t0, now, delta / dt))
        cpu = self._cpu_sample(now, scalars, rows)
        if cpu is not None:
            out.append(cpu)
        return out

    def _cpu_raw(self, scalars: list) -> dict[str, int] | None:
        raw = {}
        for key, v in zip(_CPU_KEYS, scalars[2:], strict=False):
            if v is not None:
                n = unsigned(v, 32)  # Counter32
                if n is None:
                    self._discard(f"ssCpuRaw {key} {_text(v)}")
                    continue
                raw[key] = n
        return raw if {"user", "system", "idle"} <= raw.keys() else None

    def _ncpu(self, scalars: list, rows: dict) -> int | None:
        if self._cpu and scalars[1] is not None:
            n = unsigned(scalars[1], 32)
            if n is not None and 0 < n <= MAX_CPUS:
                return n
            self._discard(f"ssCpuNumCpus {_text(scalars[1])}")
        loads = rows.get(O.HR_PROCESSOR_LOAD, {})
        return len(loads) or None

    def _cpu_sample(self, now: float, scalars: list, rows: dict) -> Sample | None:
        if not self._cpu:
            return None
        raw = self._cpu_raw(scalars)
        if raw is not None and self._prev_cpu is not None:
            t0, prev = self._prev_cpu
            deltas = {}
            for k, v in raw.items():
                if k in prev:
                    d = counter_delta(prev[k], v, 32)
                    if d is not None:
                        deltas[k] = d
            idle = sum(deltas.get(k, 0) for k in O.SS_CPU_IDLE_KEYS)
            busy = sum(v for k, v in deltas.items() if k not in O.SS_CPU_IDLE_KEYS)
            total = busy + idle
            if total > 0:
                ncpu = self._ncpu(scalars, rows) or max(1, round(total / (100.0 * (now - t0))))
                return Sample(f"{self.label}/cpu", CPU, t0, now, ncpu * busy / total)
            return None
        loads = rows.get(O.HR_PROCESSOR_LOAD, {})
        if raw is None and loads and self._prev_t is not None:
            # percentages (0..100): a sum with one garbage row would be a spike or an
            # under-count, so any garbage row costs the CPU sample of this poll (only)
            percents = [unsigned(v, 32) for v in loads.values()]
            if any(p is None or p > 100 for p in percents):
                self._discard(f"hrProcessorLoad {', '.join(_text(v) for v in loads.values())}")
                return None
            return Sample(f"{self.label}/cpu", CPU, self._prev_t, now, sum(percents) / 100.0)  # type: ignore[arg-type]
        return None

    @property
    def last_readings(self) -> dict:
        """Raw values of the last poll, to check against other tools: ``uptime`` (ticks),
        ``interfaces`` ({name: {"in"|"out": (counter, bits)}}), ``cpu`` (ssCpuRaw* ticks)."""
        ifs: dict[str, dict[str, tuple[int, int]]] = {}
        for (idx, d), reading in self._prev_if.items():
            ifs.setdefault(self._names.get(idx, str(idx)), {})["out" if d else "in"] = reading
        return {"uptime": self._prev_uptime, "interfaces": ifs, "cpu": dict(self._last_cpu)}

    def _remember(self, now: float, uptime: int, scalars: list, rows: dict) -> None:
        self._prev_t, self._prev_uptime = now, uptime
        self._prev_if = self._if_readings(rows)
        self._prev_disc = self._disc_readings(rows)
        raw = self._cpu_raw(scalars) if self._cpu else None
        self._last_cpu = raw or {}
        # net-snmp serves zeros until its first read; and while it serves a cached
        # (unchanged) reading the older baseline is kept, so the next CPU sample spans the
        # whole time those ticks were counted over
        fresh = raw is not None and any(raw.values())
        if fresh and (self._prev_cpu is None or sum(raw.values()) != sum(self._prev_cpu[1].values())):
            self._prev_cpu = (now, raw)

    # -- sync use -----------------------------------------------------------------------------

    def poll_sync(self) -> list[Sample]:
        """:meth:`poll` for callers without an event loop (a private loop is kept)."""
        if self._loop is None:
            if not self._own_engine:
                raise RuntimeError("a poller sharing an engine must be polled on that engine's loop")
            self._loop = asyncio.new_event_loop()
        return self._loop.run_until_complete(self.poll())

    def close(self) -> None:
        """Release the socket (and the private loop of :meth:`poll_sync`)."""
        if self._own_engine and self.engine is not None:
            with contextlib.suppress(Exception):  # closing twice or never opened
                self.engine.close_dispatcher()
            self.engine = None
            self._transport = None
        if self._loop is not None:
            self._loop.run_until_complete(asyncio.sleep(0))  # let the dispatcher's timer task end
            self._loop.close()
            self._loop = None


async def poll_all(pollers: Iterable[SnmpPoller]) -> list[list[Sample] | ProbeError]:
    """Poll many agents concurrently on the running loop; a failure is returned in the
    place of that agent's samples rather than cancelling the others."""
    pollers = list(pollers)

    async def one(p: SnmpPoller) -> list[Sample] | ProbeError:
        try:
            return await p.poll()
        except ProbeError as exc:
            return exc

    return list(await asyncio.gather(*(one(p) for p in pollers)))
