"""The agent host: one Pyro5 daemon per process that runs agents and moves them.

Each agent is served as its own Pyro5 object ``masa.agent.<name>`` behind a *slot* that
owns its life on this host: a gate that holds calls while the agent is being handed
over, the last checkpoint of its state (for restarts after a stuck handler, and for a
restart of the host itself), and its periodic tasks.

Migration is a two-phase handover driven by the source host:

1. close the gate (new calls wait), let calls in flight finish, ``before_move``;
2. ``receive`` at the target: the package checked as a ``create`` is (names, kind,
   domain, state), allow-list check, no copy of an agent whose name points at a live host
   other than the package's source, instance built, served with its gate closed;
3. point the agent's name at the target, then ``commit``: the target starts the agent
   (only if the name points at it now, else it drops its copy);
4. the source answers the calls that waited with ``AgentMoved(new address)`` and keeps a
   tombstone that redirects late callers.

Any failure before the commit returns leaves the agent running at the source (name
pointed back, target told to drop its copy).  A target whose copy is left undecided (no
commit came, or the commit's answer or the source's ``abort`` was lost) settles it by
asking the source (``holding``): while the source still moves the agent it waits; once the
source has ended the move, the agent's name decides (see :meth:`AgentHost._settle`).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgpack
import psutil
import Pyro5.api
import Pyro5.errors
import Pyro5.serializers
from Pyro5.core import URI

from masa import config, kinds, naming
from masa.agent import CONFIGURE, QUERY, Agent, HostContext
from masa.config import Settings
from masa.errors import (
    MAX_ERROR_TEXT,
    AgentExists,
    AgentMoved,
    AgentNotFound,
    AgentNotHere,
    AgentSuspended,
    BadRequest,
    KindNotAllowed,
    MasaError,
    MoveFailed,
    PayloadTooLarge,
    QueryTimeout,
    UnknownKind,
    UnknownOperation,
    brief,
    cut,
)
from masa.naming import NameService
from masa.ref import AgentRef
from masa.security import Daemon, Proxy
from masa.store import Store

log = logging.getLogger("masa.host")

RUNNING, SUSPENDED, MOVING, PREPARED, MOVED, STOPPED = (
    "running", "suspended", "moving", "prepared", "moved", "stopped")

#: slot status -> node-list status
_NODE_STATUS = {RUNNING: "up", SUSPENDED: "suspended", MOVING: "moving"}

DRAIN_TIMEOUT = 5.0  # longest wait for calls in flight before a move gives up
#: How often a host asks the source of an agent it received (see ``_settle``) whether that
#: move has ended, while its copy is undecided: received but not committed, or committed
#: but not yet known to be the one the source let go.  Only a period: what is decided
#: does not depend on it, nor on how it compares with the source's call timeout.
ARRIVAL_CHECK = 5.0
TOMBSTONE_TTL = 120.0  # how long a moved agent's old address still redirects callers
PING_TIMEOUT = 2.0  # a host registered under our name that answers within this is running
STOP_REPLACED_WAIT = 2.0  # how long a watchdog restart waits for the stuck instance to let go
#: Errors a caller's AgentRef takes as news about the agent it called (look it up again,
#: call again, follow it).  Raised by a handler they are about a peer *it* called, so they
#: reach the caller as the handler's failure: otherwise the caller would run the handler
#: again (a configure op twice) or follow the wrong agent.
PEER_ROUTING = (AgentNotFound, AgentMoved, AgentNotHere)
ANSWER_RESERVE = 4096  # bytes of a message kept for Pyro5's annotations around an answer
#: Items the answer-size bound looks at; beyond them the answer is encoded to be measured
#: (msgpack's encoder is quicker than a walk in Python for many small items: ~150 ns an
#: item walked here) and those bytes are sent.
SIZE_WALK_BUDGET = 256
_encoded = threading.local()  # an answer encoded to be measured, for Pyro5 to send as is
_hand_over_lock = threading.Lock()


def _hand_over(ser: Any, value: Any, encoded: bytes) -> None:
    """Have ``ser.dumps(value)`` return ``encoded``, the bytes this thread has just made
    to measure the answer (:meth:`AgentServant._check_answer`), so that no answer is
    encoded twice.  Pyro5 encodes an answer on the worker thread that ran the call, right
    after the call returns; anything else encoded there meanwhile (an exception raised
    after the check) is not that object and is encoded as before."""
    if not getattr(ser, "_masa_hand_over", False):
        with _hand_over_lock:
            if not getattr(ser, "_masa_hand_over", False):
                plain = ser.dumps

                def dumps(data: Any) -> bytes:
                    pending = getattr(_encoded, "pending", None)
                    if pending is not None:
                        _encoded.pending = None
                        if pending[0] is data:
                            return pending[1]
                    return plain(data)

                ser.dumps = dumps
                ser._masa_hand_over = True
    _encoded.pending = (value, encoded)


class HostRunning(MasaError):
    """A host of the same name is registered and answers: this one refuses to start."""


class _Call:
    __slots__ = ("deadline", "allowed", "expired")

    def __init__(self, deadline: float, allowed: float) -> None:
        self.deadline = deadline  # when the watchdog restarts the agent if still running
        self.allowed = allowed  # seconds the handler was given
        self.expired = False


class Slot:
    """Everything the host keeps about one agent."""

    def __init__(self, agent: Agent, status: str) -> None:
        self.agent = agent
        self.status = status
        self.cond = threading.Condition()
        self.inflight: set[_Call] = set()
        self.checkpoint = agent.snapshot()
        self.moved_to: str | None = None
        self.since = time.monotonic()
        self.source: str | None = None  # the host it arrived from (a move or a clone)
        self.committing = False  # being started after its move (a commit, or _settle)
        self.aborted = False  # its source gave the move up while it was being started
        self.stats = {"queries": 0, "configures": 0, "errors": 0, "task_errors": 0,
                      "restarts": 0, "moves_in": 0}

    @property
    def name(self) -> str:
        return self.agent.name

    def enter(self, timeout: float, watchdog: float) -> tuple[Agent, _Call]:
        """Admit a call, waiting through a handover (up to the caller's ``timeout``);
        raise where the agent is not.  The handler then has ``watchdog`` seconds (never
        less than ``timeout``) before the watchdog restarts the agent."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.status in (MOVING, PREPARED):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise QueryTimeout(f"agent {self.name!r} busy moving for {timeout:g} s")
                self.cond.wait(left)
            if self.status == MOVED:
                raise AgentMoved(self.name, self.moved_to)
            if self.status == STOPPED:
                raise AgentNotHere(self.name)
            if self.status == SUSPENDED:
                raise AgentSuspended(f"agent {self.name!r} is suspended")
            call = _Call(max(deadline, time.monotonic() + watchdog), max(timeout, watchdog))
            self.inflight.add(call)
            return self.agent, call

    def leave(self, call: _Call) -> None:
        with self.cond:
            self.inflight.discard(call)
            if not self.inflight:
                self.cond.notify_all()

    def close_gate(self, status: str) -> None:
        """Stop admitting calls and wait for those in flight (bounded)."""
        with self.cond:
            if self.status != RUNNING:
                raise MoveFailed(f"agent {self.name!r} is {self.status}, not running")
            self.status = status
            deadline = time.monotonic() + DRAIN_TIMEOUT
            while self.inflight:
                left = deadline - time.monotonic()
                if left <= 0:
                    self.status = RUNNING
                    self.cond.notify_all()
                    raise MoveFailed(f"agent {self.name!r}: calls in flight did not finish")
                self.cond.wait(left)

    def set_status(self, status: str, moved_to: str | None = None) -> None:
        with self.cond:
            self.status = status
            self.since = time.monotonic()
            if moved_to:
                self.moved_to = moved_to
            self.cond.notify_all()


class _Shape:
    """An operation's keyword arguments, checked with set arithmetic on every call
    (``Signature.bind`` costs more than the rest of the dispatch together)."""

    def __init__(self, sig: inspect.Signature) -> None:
        params = sig.parameters.values()
        self.sig = sig
        self.open = any(p.kind is p.VAR_KEYWORD for p in params)
        kw = [p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        self.allowed = frozenset(p.name for p in kw)
        self.required = frozenset(p.name for p in kw if p.default is p.empty)

    def check(self, where: str, kwargs: dict) -> None:
        names = kwargs.keys()
        if self.required <= names and (self.open or names <= self.allowed):
            return
        try:
            self.sig.bind(**kwargs)  # for its precise message
        except TypeError as exc:
            raise BadRequest(f"{where}: {exc}") from None
        raise BadRequest(f"{where}: arguments do not match {self.sig}")


_INT64_MIN, _UINT64_END = -(1 << 63), 1 << 64


def size_bounds(value: Any, limit: int, budget: int = SIZE_WALK_BUDGET) -> tuple[int, int | None]:
    """Lower and upper bounds of ``value``'s size in msgpack (as Pyro5 sends it), from its
    shape alone: a string or byte string counts by its length, so an answer made of a few
    big arrays (a report) is bounded in microseconds without being encoded.  The upper
    bound is None when it cannot be given cheaply: a type whose encoding is not bounded
    here, or more than ``budget`` items.  The walk stops as soon as the lower bound
    exceeds ``limit``."""
    lo = hi = 0
    stack = [value]
    seen = 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > budget or lo > limit:
            return lo, None
        t = type(v)
        if t is str:
            n = len(v)
            lo += n + 1
            hi += (n if v.isascii() else 4 * n) + 5  # UTF-8: at most 4 bytes a code point
        elif t is bytes or t is bytearray:
            n = len(v)
            lo += n + 1
            hi += n + 5
        elif t is float:
            lo += 9
            hi += 9
        elif t is int:
            if not _INT64_MIN <= v < _UINT64_END:
                return lo, None  # sent as text by Pyro5's msgpack serializer
            lo += 1
            hi += 9
        elif v is None or t is bool:
            lo += 1
            hi += 1
        elif t is dict:
            lo += 1
            hi += 5
            stack.extend(v.keys())
            stack.extend(v.values())
        elif t is list or t is tuple:
            lo += 1
            hi += 5
            stack.extend(v)
        else:
            return lo, None  # subclasses, sets, objects: Pyro5's own conversions decide
    return lo, hi


@Pyro5.api.expose
class AgentServant:
    """The Pyro5 object behind ``masa.agent.<name>``: admission, dispatch, checks."""

    _shapes: dict[tuple[type, str], _Shape] = {}

    def __init__(self, host: AgentHost, slot: Slot) -> None:
        self._host = host
        self._slot = slot

    def invoke(self, interface: str, op: str, kwargs: dict, timeout: float = 10.0) -> Any:
        return self._invoke(interface, op, kwargs, timeout, answer=True)

    def _invoke(self, interface: str, op: str, kwargs: dict, timeout: Any, answer: bool) -> Any:
        _encoded.pending = None  # never left over from an earlier call on this thread
        if interface not in (QUERY, CONFIGURE) or not isinstance(op, str):
            raise BadRequest("a call names an interface ('query' or 'configure') and an operation")
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise BadRequest("operation arguments must be a mapping of names to values")
        try:
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise BadRequest("timeout must be a number of seconds") from None
        if not math.isfinite(timeout) or timeout <= 0:
            # NaN would slip through min/max and give a deadline the watchdog never reaches
            timeout = self._host.settings.call_timeout
        timeout = min(max(timeout, 0.01), 3600.0)
        slot = self._slot
        # The caller's timeout bounds the caller's wait (it gets QueryTimeout); how long a
        # handler may run before its agent counts as stuck is the host's to say.
        agent, call = slot.enter(timeout, max(timeout, self._host.settings.watchdog_floor))
        try:
            method = self._method(agent, interface, op, kwargs)
            if interface == CONFIGURE:
                if not agent.configure_lock.acquire(timeout=timeout):
                    raise QueryTimeout(f"{agent.name}.{op} waited {timeout:g} s for another configure "
                                       "operation of the agent to end; not run")
                try:
                    return self._configure(slot, agent, call, op, method, kwargs, answer)
                finally:
                    agent.configure_lock.release()
            try:
                result = method(**kwargs)
                if answer:
                    self._check_answer(agent, op, result)
            except Exception as exc:
                raise self._failed(slot, agent, interface, op, exc) from None
            self._check_expired(agent, call, op)
            slot.stats["queries"] += 1
            return result
        except MasaError as exc:
            _cap(exc)
            raise
        finally:
            slot.leave(call)

    def _check_answer(self, agent: Agent, op: str, result: Any) -> None:
        """Refuse an answer too large to send, with PayloadTooLarge.  Pyro5 would only find
        out while sending and drop the connection, which the caller cannot tell from a
        host that died: it would look the agent up again and run the handler once more on
        every retry until its deadline.  The size is bounded from the answer's shape
        (:func:`size_bounds`); only when that bound is not clearly under the limit is the
        answer encoded here, and then those bytes are what Pyro5 sends (:func:`_hand_over`),
        so no answer is encoded twice."""
        limit = self._host.settings.max_message - ANSWER_RESERVE
        ser = Pyro5.serializers.serializers[config.SERIALIZER]  # the only one accepted (guard_wire)
        exact = False
        lo, hi = size_bounds(result, limit)
        if hi is not None and hi <= limit:
            return
        if lo <= limit:
            try:
                encoded = ser.dumps(result)
            except Exception:  # noqa: BLE001 - Pyro5 reports an answer it cannot encode
                return
            if len(encoded) <= limit:
                _hand_over(ser, result, encoded)
                return
            lo, exact = len(encoded), True
        raise PayloadTooLarge(
            f"the answer of {agent.name}.{op} is {'' if exact else 'at least '}{lo} bytes, "
            f"more than a message may carry ({limit} bytes: MASA_MAX_MESSAGE="
            f"{self._host.settings.max_message} less {ANSWER_RESERVE} for the envelope); "
            "ask for less at a time")

    def _configure(self, slot: Slot, agent: Agent, call: _Call, op: str, method: Callable,
                   kwargs: dict, answer: bool = True) -> Any:
        """A configure operation is all or nothing: one that raises leaves the agent's
        state as it was before it (:meth:`Agent.rollback`), and no checkpoint is taken
        while it runs, so a half-applied change never outlives the call, not even a crash
        of the host.  An answer too large to send counts as a failure of the operation.
        Configure operations of one agent run one at a time (the caller holds the agent's
        ``configure_lock``): a rollback restores the snapshot taken before the operation,
        which would also take back what another one had done and acknowledged meanwhile."""
        with agent.lock:
            try:
                before = agent.snapshot()
            except Exception as exc:  # noqa: BLE001 - a state an earlier query op left unkeepable
                raise _unkeepable(agent, op, exc) from None
            agent.configuring += 1
        ok = False
        try:
            try:
                result = method(**kwargs)
                if answer:
                    self._check_answer(agent, op, result)
                kept = _keepable_snapshot(agent, op)
            except Exception as exc:
                agent.rollback(before)
                raise self._failed(slot, agent, CONFIGURE, op, exc) from None
            ok = True
        finally:
            with agent.lock:
                agent.configuring -= 1
                due = agent.checkpoint_due and not agent.configuring
                if due:
                    agent.checkpoint_due = False
            if due and not ok and slot.agent is agent:
                self._host.checkpoint(slot)  # asked for meanwhile; the state is rolled back now
        self._check_expired(agent, call, op)
        slot.stats["configures"] += 1
        self._host.checkpoint(slot, kept)
        return result

    @staticmethod
    def _check_expired(agent: Agent, call: _Call, op: str) -> None:
        if call.expired:
            raise QueryTimeout(
                f"{agent.name}.{op} exceeded its deadline of {call.allowed:g} s; agent restarted")

    @staticmethod
    def _failed(slot: Slot, agent: Agent, interface: str, op: str, exc: Exception) -> MasaError:
        slot.stats["errors"] += 1
        if isinstance(exc, MasaError) and not isinstance(exc, PEER_ROUTING):
            return exc
        log.warning("agent %s: %s %s failed", agent.name, interface, op, exc_info=exc)
        return MasaError(f"{agent.name}.{op} failed: {type(exc).__name__}: {exc}")

    @Pyro5.api.oneway
    def push(self, op: str, kwargs: dict) -> None:
        try:
            self._invoke(QUERY, op, kwargs, 10.0, answer=False)
        except MasaError as exc:
            log.warning("push %s to %s dropped: %s", op, self._slot.name, exc)

    def _method(self, agent: Agent, interface: str, op: str, kwargs: dict) -> Callable:
        attr = type(agent).operations(interface).get(op)
        if attr is None:
            raise UnknownOperation(
                f"agent {agent.name!r} ({agent.kind}) has no {interface} operation {cut(repr(op), 80)}; "
                f"it offers: {', '.join(sorted(type(agent).operations(interface)))}")
        method = getattr(agent, attr)
        key = (type(agent), attr)
        shape = self._shapes.get(key)
        if shape is None:
            shape = self._shapes[key] = _Shape(inspect.signature(method))
        shape.check(f"{agent.name}.{op}", kwargs)
        return method


@Pyro5.api.expose
class Tombstone:
    """Left behind by a moved agent so that stale callers learn its new address."""

    def __init__(self, name: str, uri: str) -> None:
        self.name, self.uri = name, uri

    def invoke(self, *args, **kwargs):
        raise AgentMoved(self.name, self.uri)

    @Pyro5.api.oneway
    def push(self, *args, **kwargs):
        pass  # a push to a stale address is lost; senders push through AgentRef, which relocates


class _Context(HostContext):
    def __init__(self, host: AgentHost) -> None:
        self._host = host
        self.name = host.name
        self.domain = host.domain
        self.state_dir = host.state_dir  # where an agent may keep files on this host
        self.settings = host.settings  # the deployment's settings, for agents that need them

    def ref(self, name: str) -> AgentRef:
        return self._host.ref(name)

    def request_move(self, agent: Agent, target: str) -> None:
        self._host.executor.submit(self._host.move, agent.name, target)

    def schedule(self, agent: Agent, name: str, seconds: float, fn: Callable) -> None:
        self._host.scheduler.add(agent, name, seconds, fn)

    def checkpoint(self, agent: Agent) -> None:
        slot = self._host.slots.get(agent.name)
        if slot:
            self._host.checkpoint(slot)


def next_beat(due: float, period: float, now: float) -> float:
    """The next time on the task's own beat after ``now``.  Beats missed while the host
    was stalled are skipped, not made up back to back: a meter sampled twice within a
    few milliseconds turns one CPU tick into a rate of several cores."""
    return due + max(1, math.floor((now - due) / period) + 1) * period


class Scheduler:
    """Periodic agent tasks on a small pool; a task still running is not started twice."""

    def __init__(self, host: AgentHost) -> None:
        self._host = host
        self._tasks: dict[tuple[int, str], list] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"tasks-{host.name}")

    def add(self, agent: Agent, name: str, seconds: float, fn: Callable) -> None:
        """A period shorter than the host's tick could not be kept anyway; one that is
        not a finite number would stop the scheduler for every agent of the host."""
        if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds <= 0:
            raise BadRequest(f"agent {agent.name}: task {name} needs a period in seconds, not {brief(seconds)}")
        seconds = max(float(seconds), self._host.settings.tick)
        with self._lock:
            self._tasks[(id(agent), name)] = [time.monotonic() + seconds, seconds, fn, agent, False]

    def wait_idle(self, agent: Agent, timeout: float) -> bool:
        """Wait until none of ``agent``'s tasks is running (new ones don't start while
        the agent is not running); False if one is still busy at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                busy = any(t[4] for k, t in self._tasks.items() if k[0] == id(agent))
            if not busy:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def drop(self, agent: Agent) -> None:
        with self._lock:
            for key in [k for k in self._tasks if k[0] == id(agent)]:
                del self._tasks[key]

    def tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            due = [t for t in self._tasks.values() if t[0] <= now and not t[4]]
            for task in due:
                task[0] = next_beat(task[0], task[1], now)
                task[4] = True
        for task in due:
            self._pool.submit(self._run, task)

    def _run(self, task: list) -> None:
        _, _, fn, agent, _ = task
        slot = self._host.slots.get(agent.name)
        try:
            if slot is not None and slot.agent is agent and slot.status == RUNNING:
                fn()
        except Exception:
            log.exception("agent %s: periodic task %s failed", agent.name, getattr(fn, "__name__", fn))
            if slot is not None:
                slot.stats["task_errors"] += 1
        finally:
            task[4] = False

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@Pyro5.api.expose
class HostControl:
    """The host's configuration interface (``masa.host.<name>``), MASIF-style."""

    def __init__(self, host: AgentHost) -> None:
        self._host = host

    def ping(self) -> str:
        return self._host.name

    def info(self) -> dict:
        return self._host.info()

    def agents(self) -> list[dict]:
        return self._host.agent_list()

    def create(self, kind: str, name: str, settings: dict | None = None, domain: str | None = None) -> dict:
        return self._host.create(kind, name, settings or {}, domain)

    def terminate(self, name: str) -> None:
        self._host.terminate(name)

    def suspend(self, name: str) -> None:
        self._host.suspend(name)

    def resume(self, name: str) -> None:
        self._host.resume(name)

    def move(self, name: str, target: str) -> dict:
        return self._host.move(name, target)

    def clone(self, name: str, new_name: str, target: str | None = None) -> dict:
        return self._host.clone(name, new_name, target)

    def receive(self, package: dict) -> str:
        return self._host.receive(package)

    def commit(self, name: str, source: str) -> None:
        self._host.commit(name, source)

    def abort(self, name: str) -> None:
        self._host.abort(name)

    def holding(self, name: str) -> dict:
        return self._host.holding(name)

    @Pyro5.api.oneway
    def shutdown(self) -> None:
        self._host.stop()


class AgentHost:
    """One agent host process.  ``run()`` blocks serving until ``stop()``."""

    def __init__(self, name: str, domain: str = "", settings: Settings | None = None,
                 allow: list[str] | None = None, bind: str = "127.0.0.1", port: int = 0,
                 state_dir: Path | None = None) -> None:
        self.settings = settings or Settings.from_env()
        config.apply(self.settings)
        naming.check_name(name, "host")
        self.name = name
        self.domain = domain
        if allow:
            try:
                kinds.check(allow)
            except UnknownKind as exc:
                raise UnknownKind(f"host {name!r} allow-list: {exc}") from None
        self.allow = set(allow) if allow else set(kinds.installed())
        self.slots: dict[str, Slot] = {}
        self._arrivals: dict[str, float] = {}  # undecided received agent -> next check
        self._settling: set[str] = set()  # arrivals being checked now (on the executor)
        self._tombstones: dict[str, float] = {}
        self._lock = threading.RLock()
        self._move_locks: dict[str, threading.Lock] = {}
        self._refs: dict[str, AgentRef] = {}
        self._stop = threading.Event()
        self._ns_local = threading.local()
        self.state_dir = state_dir or self.settings.home / "hosts" / name
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix=f"host-{name}")
        self.scheduler = Scheduler(self)
        self.context = _Context(self)
        self.daemon = Daemon(self.settings.secret, host=bind, port=port)
        self.control_uri = str(self.daemon.register(HostControl(self), naming.host_name(name)))
        self.moves = {"out": 0, "in": 0, "failed": 0}
        self._store: Store | None = None
        self._save_lock = threading.Lock()
        self._claimed = False
        self._failing: dict[str, str] = {}  # housekeeping step -> why it last failed
        self._unreadable: list[str] = []  # checkpoints kept as they are: restore could not read them
        psutil.cpu_percent(None)  # prime the non-blocking CPU measurement
        self._started = psutil.Process().create_time()

    # -- naming ----------------------------------------------------------------------------

    @property
    def ns(self) -> NameService:
        ns = getattr(self._ns_local, "ns", None)
        if ns is None:
            ns = self._ns_local.ns = NameService(self.settings)
        return ns

    def ref(self, name: str) -> AgentRef:
        ref = self._refs.get(name)
        if ref is None:
            ref = self._refs[name] = AgentRef(name, self.settings)
        return ref

    def _uri(self, name: str) -> str:
        return str(self.daemon.uriFor(naming.agent_name(name)))

    def _register(self, slot: Slot, uri: str | None = None, host: str | None = None) -> None:
        a = slot.agent
        self._announce(a.name, a.kind, a.domain, uri or self._uri(a.name), host or self.name)

    def _announce(self, name: str, kind: str, domain: str, uri: str, host: str) -> None:
        meta = naming.tags(kind=kind, domain=domain, host=host) | {"masa:agent"}
        self.ns.register(naming.agent_name(name), uri, meta)

    def claim_name(self) -> None:
        """Refuse to run under the name of a host that is running: registering over it
        would point its name (and its agents') at this process, and the running host,
        never seen as down, would never register them again.  A registration whose owner
        does not answer is stale (that host died) and is taken over by ``register_all``."""
        if self._claimed:
            return
        try:
            uri = str(self.ns.lookup(naming.host_name(self.name), wait=0))
        except AgentNotFound:
            uri = None  # not registered; an unreachable broker is reported by register_all
        if uri and uri != self.control_uri and _answers_as(uri, self.name, self.settings.secret):
            with _quietly():
                self.daemon.close()
            raise HostRunning(f"host {self.name!r} is already running at {uri}; "
                              "stop it first or give this host another name")
        self._claimed = True

    def register_all(self) -> None:
        self.ns.register(naming.host_name(self.name), self.control_uri,
                         naming.tags(domain=self.domain) | {"masa:host"})
        for slot in list(self.slots.values()):
            if slot.status in (RUNNING, SUSPENDED):
                self._register(slot)

    def host_proxy(self, host: str, timeout: float | None = None) -> Proxy:
        uri = self.ns.lookup(naming.host_name(host), wait=2.0)
        return Proxy(uri, self.settings.secret, timeout=timeout or self.settings.call_timeout)

    # -- lifecycle of agents ---------------------------------------------------------------

    def _check_kind(self, kind: str) -> type[Agent]:
        if not isinstance(kind, str) or not kind:
            raise BadRequest(f"an agent kind is a non-empty string, not {brief(kind)}")
        cls = kinds.load(kind)  # raises UnknownKind
        if kind not in self.allow:
            raise KindNotAllowed(f"host {self.name!r} does not accept agents of kind {kind!r} "
                                 f"(allowed: {', '.join(sorted(self.allow))})")
        return cls

    def _serve(self, slot: Slot) -> None:
        objid = naming.agent_name(slot.name)
        with self._lock:
            if objid in self.daemon.objectsById:
                self.daemon.unregister(objid)
            self.daemon.register(AgentServant(self, slot), objid)
            self.slots[slot.name] = slot
            self._tombstones.pop(slot.name, None)

    def _start(self, slot: Slot, source: str | None = None) -> bool:
        """Start the agent and open its gate; False (gate left closed) if its source
        aborted the move meanwhile (``abort`` during a commit): the caller drops it."""
        agent = slot.agent
        agent.host = self.context
        agent.on_start()
        agent.arm_delegated()
        if source is not None:
            agent.after_move(source)
        slot.checkpoint = agent.snapshot()
        with slot.cond:
            if slot.aborted:
                return False
            slot.set_status(RUNNING)
        return True

    def _running_elsewhere(self, name: str, source: str) -> str | None:
        """Where the broker sends callers of ``name`` if that is a live host other than
        ``source`` (and not this one), else None.  In a move the name points at the
        source until the target commits; a name the broker does not know, or whose
        address answers no more (a crashed host), is free."""
        uri = self._registered_elsewhere(name)
        if uri is None:
            return None
        try:
            URI(uri)
        except Exception:  # noqa: BLE001 - not an address anyone can call
            return None
        if self._at_host(uri, source) or not _alive(uri, self.settings.secret):
            return None
        return uri

    def _at_host(self, uri: str, host: str) -> bool:
        """Whether ``uri`` is an address served by host ``host`` (by its registration)."""
        try:
            return URI(uri).location == URI(str(self.ns.lookup(naming.host_name(host), wait=0))).location
        except Exception:  # noqa: BLE001 - not an address, or the host is not registered
            return False

    def _where_registered(self, name: str) -> str | None:
        """The address the broker gives for agent ``name`` (None: not registered, or the
        broker cannot be asked)."""
        try:
            return str(self.ns.lookup(naming.agent_name(name), wait=0))
        except MasaError:
            return None

    def _registered_elsewhere(self, name: str) -> str | None:
        """The address the broker gives for ``name`` if it is not this host's (None: not
        registered, or registered here)."""
        try:
            uri = str(self.ns.lookup(naming.agent_name(name), wait=0))
        except MasaError:
            return None
        return None if uri == self._uri(name) else uri

    def _name_taken(self, name: str) -> bool:
        if name in self.slots and self.slots[name].status not in (MOVED, STOPPED):
            return True
        uri = self._registered_elsewhere(name)
        return uri is not None and _alive(uri, self.settings.secret)

    def create(self, kind: str, name: str, settings: dict, domain: str | None = None,
               state: dict | None = None) -> dict:
        _check_agent(kind, name, domain, state)
        if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
            raise BadRequest(f"settings of agent {name!r} must be a mapping of names to values, "
                             f"not {brief(settings)}")
        cls = self._check_kind(kind)
        if self._name_taken(name):
            raise AgentExists(f"an agent named {name!r} is already running")
        agent = cls(name, domain if domain is not None else self.domain, state)
        agent.host = self.context
        if state is None:
            try:
                agent.setup(**settings)
            except MasaError:
                raise
            except Exception as exc:  # e.g. a setting the kind does not take
                raise BadRequest(f"settings of agent {name!r} ({kind}) refused: "
                                 f"{type(exc).__name__}: {exc}") from None
        slot = Slot(agent, PREPARED)
        self._serve(slot)
        try:
            self._start(slot)
            self._register(slot)
        except Exception:
            self._discard(slot)
            raise
        self.checkpoint(slot)
        log.info("created %s (%s) on %s", name, kind, self.name)
        return self.describe(slot)

    def _discard(self, slot: Slot) -> None:
        with self._lock:
            slot.set_status(STOPPED)
            self.scheduler.drop(slot.agent)
            if self.slots.get(slot.name) is slot:
                del self.slots[slot.name]
            objid = naming.agent_name(slot.name)
            if objid in self.daemon.objectsById:
                self.daemon.unregister(objid)

    def _slot(self, name: str) -> Slot:
        naming.check_name(name, "agent")
        slot = self.slots.get(name)
        if slot is None or slot.status in (MOVED, STOPPED):
            raise AgentNotHere(f"no agent {name!r} on host {self.name!r}")
        return slot

    def terminate(self, name: str) -> None:
        slot = self._slot(name)
        self._discard(slot)
        try:
            slot.agent.on_stop()
        finally:
            with _quietly():
                # Only if the name still points here: the broker may meanwhile send callers
                # to another host's copy (this one was a stray), which must stay reachable.
                self.ns.remove(naming.agent_name(name), uri=self._uri(name))
            self.save_checkpoints()

    def suspend(self, name: str) -> None:
        """The state is kept at once, as the agent leaves it: the checkpoint round skips a
        suspended agent, so what it did since the last round would otherwise be lost at a
        restart, and an operator who suspended it would find it running again after a host
        crash a moment later."""
        slot = self._slot(name)
        if slot.status == RUNNING:
            slot.agent.on_suspend()
            slot.set_status(SUSPENDED)
            self.checkpoint(slot)

    def resume(self, name: str) -> None:
        slot = self._slot(name)
        if slot.status == SUSPENDED:
            slot.set_status(RUNNING)
            slot.agent.on_resume()
            self.save_checkpoints()

    def restart(self, slot: Slot) -> None:
        """Replace a stuck agent by a fresh instance built from its last checkpoint.

        The stuck instance is stopped too (``on_stop``, on the executor: it may block on
        what it is stuck on), so that what it holds (a modeler's page port, a store) is
        let go for the fresh one; it is given :data:`STOP_REPLACED_WAIT` s first."""
        old = slot.agent
        self.scheduler.drop(old)
        fresh = type(old)(old.name, old.domain, slot.checkpoint)
        fresh.host = self.context
        with slot.cond:
            slot.agent = fresh

        def stop_replaced() -> None:
            with _quietly():
                old.on_stop()

        stopping = self.executor.submit(stop_replaced)
        try:
            stopping.result(timeout=STOP_REPLACED_WAIT)
        except TimeoutError:
            log.warning("agent %s: the replaced instance is still stopping", old.name)
        fresh.on_start()
        fresh.arm_delegated()
        slot.stats["restarts"] += 1
        log.warning("agent %s restarted from its last checkpoint", old.name)

    # -- migration: source side ------------------------------------------------------------

    def move(self, name: str, target: str) -> dict:
        naming.check_name(target, "target host")
        if target == self.name:
            raise MoveFailed(f"agent {name!r} is already on {target!r}")
        lock = self._move_locks.setdefault(name, threading.Lock())
        with lock:
            return self._send(self._slot(name), target, clone_as=None)

    def clone(self, name: str, new_name: str, target: str | None = None) -> dict:
        if target is not None:
            naming.check_name(target, "target host")
        naming.check_name(new_name, "agent")
        slot = self._slot(name)
        if target in (None, self.name):
            return self.create(slot.agent.kind, new_name, {}, slot.agent.domain, slot.agent.snapshot())
        return self._send(slot, target, clone_as=new_name)

    def _send(self, slot: Slot, target: str, clone_as: str | None) -> dict:
        started = time.perf_counter()
        agent = slot.agent
        try:
            proxy = self.host_proxy(target)
        except MasaError as exc:
            self.moves["failed"] += 1
            raise MoveFailed(f"cannot move {agent.name!r}: target {exc}") from None
        with proxy:
            if clone_as:
                package = self._package(agent, agent.snapshot(), clone_as)
                return self._handover_clone(proxy, package, target)
            slot.close_gate(MOVING)
            try:
                if not self.scheduler.wait_idle(agent, DRAIN_TIMEOUT):
                    raise MoveFailed(f"a periodic task of {agent.name!r} did not finish")
                agent.before_move(target)
                package = self._package(agent, agent.snapshot())
                new_uri = proxy.receive(package)
            except Exception as exc:
                self._move_failed(slot, exc)
                raise MoveFailed(f"move of {agent.name!r} to {target!r} refused: {exc}") from None
            try:
                self._register(slot, new_uri, target)  # the name now points at the target
                proxy.commit(agent.name, self.name)
            except Exception as exc:
                try:
                    self._register(slot)  # point the name back here
                except Exception:
                    log.exception("could not point %s back at %s", agent.name, self.name)
                with _quietly():
                    proxy.abort(agent.name)
                self._move_failed(slot, exc)
                raise MoveFailed(f"move of {agent.name!r} to {target!r} failed: {exc}") from None
        self._moved_away(slot, new_uri)
        seconds = time.perf_counter() - started
        log.info("moved %s to %s in %.1f ms", agent.name, target, seconds * 1e3)
        return {"agent": agent.name, "from": self.name, "to": target, "seconds": seconds}

    def _handover_clone(self, proxy: Proxy, package: dict, target: str) -> dict:
        if self._name_taken(package["name"]):
            raise AgentExists(f"an agent named {package['name']!r} is already running")
        uri = proxy.receive(package)
        self._announce(package["name"], package["kind"], package["domain"], uri, target)
        proxy.commit(package["name"], self.name)
        return {"agent": package["name"], "from": self.name, "to": target}

    def _package(self, agent: Agent, state: dict, name: str | None = None) -> dict:
        return {"kind": agent.kind, "name": name or agent.name, "domain": agent.domain,
                "state": state, "source": self.name}

    def _move_failed(self, slot: Slot, exc: Exception) -> None:
        self.moves["failed"] += 1
        log.warning("move of %s failed, it stays on %s: %s", slot.name, self.name, exc)
        slot.set_status(RUNNING)
        with _quietly():
            slot.agent.after_move(self.name)

    def _moved_away(self, slot: Slot, new_uri: str) -> None:
        self.moves["out"] += 1
        slot.set_status(MOVED, moved_to=new_uri)  # waiting callers now get AgentMoved
        self.scheduler.drop(slot.agent)
        with self._lock:
            if self.slots.get(slot.name) is slot:
                del self.slots[slot.name]
            objid = naming.agent_name(slot.name)
            self.daemon.unregister(objid)
            self.daemon.register(Tombstone(slot.name, new_uri), objid)
            self._tombstones[slot.name] = time.monotonic() + TOMBSTONE_TTL
        with _quietly():
            slot.agent.on_stop()
        self.save_checkpoints()

    # -- migration: target side -----------------------------------------------------------

    def receive(self, package: dict) -> str:
        """Take an agent in (phase 2 of a move): checked as thoroughly as a ``create``,
        built, served with its gate closed until the source's ``commit``."""
        if not isinstance(package, dict):
            raise BadRequest(f"an agent package is a mapping with kind, name, domain, state and "
                             f"source, not {brief(package)}")
        missing = {"kind", "name", "domain", "state", "source"} - package.keys()
        if missing:
            raise BadRequest(f"an agent package has kind, name, domain, state and source; "
                             f"this one has no {', '.join(sorted(missing))}")
        kind, name, state, source = package["kind"], package["name"], package["state"], package["source"]
        domain = package["domain"]
        _check_agent(kind, name, domain, state)
        if state is None or domain is None:
            raise BadRequest(f"package of agent {name!r}: the state and the domain are needed")
        naming.check_name(source, "source host")
        cls = self._check_kind(kind)
        current = self.slots.get(name)
        if current is not None and current.status not in (MOVED, STOPPED):
            self._replace_stale(current, source)
        elsewhere = self._running_elsewhere(name, source)
        if elsewhere:
            raise AgentExists(f"agent {name!r} runs at {elsewhere}, not at its package's source "
                              f"host {source!r}: refusing a second copy")
        agent = cls(name, domain, state)
        agent.host = self.context
        slot = Slot(agent, PREPARED)
        slot.source = source
        self._serve(slot)  # calls wait at its gate until commit
        self._arrivals[name] = time.monotonic() + ARRIVAL_CHECK
        return self._uri(name)

    def _replace_stale(self, current: Slot, source: str) -> None:
        """A package arrives for an agent this host already holds.  A copy received
        earlier from the same source and left undecided (its commit never came, or the
        source gave the move up and its ``abort`` was lost) is replaced when the agent's
        name still points at that source: the source holds the agent and is moving it
        again.  Anything else is refused, saying what this host holds."""
        name = current.name
        with current.cond:
            status, committing, origin = current.status, current.committing, current.source
        if origin is None:  # created (or restored) here, not received
            raise AgentExists(f"host {self.name!r} already runs an agent named {name!r}")
        held = (f"host {self.name!r} holds a copy of agent {name!r} received from {origin!r} "
                f"{time.monotonic() - current.since:.0f} s ago")
        where = self._where_registered(name)
        from_holder = origin == source and where is not None and self._at_host(where, source)
        if status != PREPARED:
            # a started copy is stale only if the source took the agent back after the
            # commit (its abort lost): the name points at the source again
            if not (from_holder and status in (RUNNING, SUSPENDED) and name in self._arrivals
                    and not committing):
                raise AgentExists(f"host {self.name!r} already runs an agent named {name!r}")
            state = "committed, but the source gave the move up and kept the agent"
        else:
            state = "not committed"
            if committing:
                raise AgentExists(f"{held}, which is being started now (committed); "
                                  "try again when that move has ended")
            if origin != source:
                raise AgentExists(f"{held} ({state}), not from {source!r}; it is started or dropped as "
                                  f"soon as {origin!r} has ended that move (asked every {ARRIVAL_CHECK:g} s)")
            if not from_holder:
                points = "nowhere" if where is None else ("at that copy" if where == self._uri(name) else where)
                raise AgentExists(f"{held} ({state}); the agent's name points {points}, not at {source!r}, "
                                  f"so {source!r} is not the agent's holder: the copy is started or dropped "
                                  f"as soon as {source!r} has ended its move (asked every {ARRIVAL_CHECK:g} s)")
        log.warning("%s (%s); %s moves the agent again: the stale copy is replaced", held, state, source)
        self._drop(current)

    def commit(self, name: str, source: str) -> None:
        naming.check_name(name, "agent")
        if not isinstance(source, str):
            raise BadRequest(f"commit of {name!r}: the source is a host name, not {brief(source)}")
        slot = self.slots.get(name)
        if slot is None:
            raise AgentNotHere(f"no agent {name!r} waiting for commit on {self.name!r}")
        with slot.cond:
            if slot.status != PREPARED or slot.committing or slot.aborted:
                why = "; it is being started" if slot.committing else ""
                raise AgentNotHere(f"no agent {name!r} waiting for commit on {self.name!r}{why}")
            slot.committing = True
        try:
            # The source points the name here before it commits; if it points elsewhere, the
            # agent runs there and starting this copy would make two.
            try:
                points_to = str(self.ns.lookup(naming.agent_name(name), wait=0))
            except MasaError as exc:
                self._drop(slot)
                raise MoveFailed(f"commit of {name!r} on {self.name!r} refused: its name does not "
                                 f"point here ({exc}); the received copy is dropped") from None
            if points_to != self._uri(name):
                self._drop(slot)
                raise AgentExists(f"commit of {name!r} on {self.name!r} refused: its name points at "
                                  f"{points_to}, not here; the received copy is dropped")
        except BaseException:
            with slot.cond:
                slot.committing = False
            raise
        try:
            started = self._start_received(slot, source)
        except MasaError:
            raise
        except Exception as exc:
            raise MasaError(f"agent {name!r} could not start on {self.name!r}: "
                            f"{type(exc).__name__}: {exc}") from None
        if not started:
            raise MoveFailed(f"commit of {name!r} on {self.name!r}: {source!r} aborted the move while "
                             "the agent was being started; the received copy is dropped")
        # Committed, but the source may still give the move up (its commit call timed out
        # before this answer came) and point the name back; its abort may be lost: the copy
        # stays undecided until the source is seen to have ended the move (_settle).
        self._arrivals[name] = time.monotonic() + ARRIVAL_CHECK

    def abort(self, name: str) -> None:
        """The source gave the move up: drop the copy received from it, started or not.  An
        abort while the copy is being started (the source's commit call timed out) is
        carried out when the start ends, so that nothing the start opens stays behind."""
        naming.check_name(name, "agent")
        slot = self.slots.get(name)
        if slot is None or slot.source is None:
            return  # nothing received: an agent created here is not the source's to take back
        with slot.cond:
            if slot.committing:
                slot.aborted = True
                return
            if slot.status not in (PREPARED, RUNNING, SUSPENDED):
                return
        self._drop(slot)

    def _drop(self, slot: Slot) -> None:
        """Discard a received copy (started or not) and stop it."""
        was_saved = slot.status in (RUNNING, SUSPENDED)
        if self._arrivals.get(slot.name) is not None and self.slots.get(slot.name) is slot:
            self._arrivals.pop(slot.name, None)
        self._discard(slot)
        with _quietly():
            slot.agent.on_stop()
        if was_saved:
            with _quietly():
                self.save_checkpoints()

    def holding(self, name: str) -> dict:
        """What this host holds of agent ``name``, for a host that received it from here and
        must decide what to do with its copy: ``status`` is the slot's (``moving`` while a
        move of it is under way, ``running``/``suspended`` once it stays here), ``moved``
        (a tombstone: moved away) or ``none``; ``uri`` its address here, if held."""
        naming.check_name(name, "agent")
        slot = self.slots.get(name)
        if slot is not None and slot.status not in (MOVED, STOPPED):
            return {"status": slot.status, "uri": self._uri(name)}
        return {"status": "moved" if name in self._tombstones else "none", "uri": None}

    def _settle_quietly(self, slot: Slot) -> None:
        try:
            self._settle(slot)
        except Exception as exc:  # noqa: BLE001 - asked again on the next check
            log.warning("host %s: could not settle the copy of %s received from %s: %s: %s",
                        self.name, slot.name, slot.source, type(exc).__name__, cut(str(exc), 200))
        finally:
            self._settling.discard(slot.name)

    def _settle(self, slot: Slot) -> None:
        """Decide about a copy received from ``slot.source`` and left undecided: no commit
        came, or it was committed but the source may still have given the move up (its
        commit call timed out before the answer came; it then points the name back and
        sends ``abort``, which may be lost).

        Nothing here depends on how long the source waits for its calls: the source is
        asked (``holding``).  While it still moves the agent, the copy waits.  Once it has
        ended the move (or cannot be reached: it died), the agent's name decides, as the
        source always points it before it lets the agent go: pointing here, this copy
        is the agent (an uncommitted one is started) — unless the source says it kept the
        agent and only failed to point the name back, then the name is pointed at the
        source's copy and this one is dropped; pointing elsewhere, or nowhere, the copy
        is dropped.  (A fixed expiry used to decide alone after 30 s, which was right only
        while every source gave up within 30 s: ``MASA_CALL_TIMEOUT`` under about 15 s.)"""
        name, source = slot.name, slot.source
        if source is None or self.slots.get(name) is not slot:
            return
        try:
            uri: str | None = str(self.ns.lookup_meta(naming.agent_name(name))[0])
        except Pyro5.errors.NamingError:
            uri = None
        # (a broker that cannot be asked raises: asked again on the next check)
        held = self._ask_holder(source, name)
        if held.get("status") == MOVING:
            return  # the source is still deciding (or moves the agent here once more)
        here = uri == self._uri(name)
        kept_at_source = held.get("status") in (RUNNING, SUSPENDED)
        lock = self._move_locks.setdefault(name, threading.Lock())
        if not lock.acquire(blocking=False):
            return  # this host is moving it on: settled on the next check
        try:
            with slot.cond:
                status = slot.status
                if self.slots.get(name) is not slot or status not in (PREPARED, RUNNING, SUSPENDED) \
                        or slot.committing:
                    return
                if here and not kept_at_source and status == PREPARED:
                    slot.committing = True  # a late commit now finds it being started
            if here and not kept_at_source:
                self._arrivals.pop(name, None)
                if status == PREPARED:
                    log.warning("agent %s: its source %s ended the move without committing and its "
                                "name points here; starting it here", name, source)
                    self._start_received(slot, source)
                return
            why = (f"{source} kept it" if kept_at_source else
                   f"its name points {'nowhere' if uri is None else 'at ' + uri}, not here")
            log.warning("agent %s: dropping the copy received from %s (%s): %s", name, source,
                        "never committed" if status == PREPARED else "committed, the move given up", why)
            self._drop(slot)
            if here and held.get("uri"):  # the source kept it but could not point the name back
                a = slot.agent
                with _quietly():
                    self._announce(name, a.kind, a.domain, str(held["uri"]), source)
        finally:
            lock.release()

    def _start_received(self, slot: Slot, source: str) -> bool:
        """Start a received copy (``commit``, or ``_settle`` for one no commit will start)
        and count it in; the caller set ``slot.committing``.  False: its source aborted the
        move meanwhile, and the copy is dropped."""
        try:
            started = self._start(slot, source=source)
        except Exception:
            self._discard(slot)
            self._arrivals.pop(slot.name, None)
            raise
        finally:
            with slot.cond:
                slot.committing = False
        if not started:
            self._drop(slot)
            return False
        slot.stats["moves_in"] += 1
        self.moves["in"] += 1
        self.checkpoint(slot)
        return True

    def _ask_holder(self, host: str, name: str) -> dict:
        """``holding(name)`` at ``host``; ``{}`` if that host cannot be reached (it died,
        or it is not registered any more)."""
        try:
            uri = self.ns.lookup(naming.host_name(host), wait=0)
        except MasaError:
            return {}
        try:
            with Proxy(uri, self.settings.secret, timeout=PING_TIMEOUT) as p:
                answer = p.holding(name)
        except Exception:  # noqa: BLE001 - unreachable, or a host without ``holding``
            return {}
        return answer if isinstance(answer, dict) else {}

    def _expire(self, now: float) -> None:
        """Undecided received agents are settled (on the executor: it asks other hosts);
        old tombstones go."""
        for name, due in list(self._arrivals.items()):
            if now < due or name in self._settling:
                continue
            slot = self.slots.get(name)
            if slot is None or slot.source is None or slot.status not in (PREPARED, RUNNING, SUSPENDED):
                self._arrivals.pop(name, None)
                continue
            self._arrivals[name] = now + ARRIVAL_CHECK
            self._settling.add(name)
            try:
                self.executor.submit(self._settle_quietly, slot)
            except RuntimeError:  # shutting down
                self._settling.discard(name)
        for name, until in list(self._tombstones.items()):
            if now >= until:
                with self._lock:
                    self._tombstones.pop(name, None)
                    objid = naming.agent_name(name)
                    if name not in self.slots and objid in self.daemon.objectsById:
                        self.daemon.unregister(objid)

    # -- checkpoints: survive a stuck handler and a restart of the host --------------------

    def checkpoint(self, slot: Slot, taken: dict | None = None) -> None:
        """Keep the agent's state now (in memory and in the host's store).  While one of
        its configure operations runs, the state may be half changed: the checkpoint is
        taken when the operation has ended (and, if it failed, been rolled back).
        ``taken``: a snapshot already made of the state to keep (a configure operation
        makes one to know its state can be kept), not copied a second time."""
        agent = slot.agent
        with agent.lock:
            if agent.configuring:
                agent.checkpoint_due = True
                return
            slot.checkpoint = agent.snapshot() if taken is None else taken
        self.save_checkpoints()

    def save_checkpoints(self) -> None:
        """Save the checkpoints of all running and suspended agents.  One that cannot be
        saved (its state cannot be encoded, a field of the wrong type) is logged and keeps
        its last saved checkpoint; it never stops the others from being saved."""
        entries, keep = [], [n for n in self._unreadable if n not in self.slots]
        for s in list(self.slots.values()):
            if s.status not in (RUNNING, SUSPENDED):
                continue
            agent = s.agent
            try:
                for field, value in (("kind", agent.kind), ("name", s.name), ("domain", agent.domain)):
                    if not isinstance(value, str):
                        raise TypeError(f"its {field} is {brief(value)}, not a string")
                entries.append({"kind": agent.kind, "name": s.name, "domain": agent.domain,
                                "state": msgpack.packb(s.checkpoint, use_bin_type=True),
                                "suspended": s.status == SUSPENDED})
            except Exception as exc:  # noqa: BLE001
                log.error("checkpoint of agent %r on host %s not saved (its last saved one stays): "
                          "%s: %s", s.name, self.name, type(exc).__name__, exc)
                keep.append(s.name)
        with self._save_lock:
            self._keep_store_in_place()
            failed = self.store.save_checkpoints(entries, time.time(), keep=keep)
        for name, why in failed.items():
            log.error("checkpoint of agent %r on host %s not saved (its last saved one stays): %s",
                      name, self.name, why)

    @property
    def store(self) -> Store:
        """This host's own store (agent checkpoints): a SQLite file in its state folder."""
        if self._store is None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self._store = Store(f"sqlite:///{self.state_dir / 'host.db'}")
        return self._store

    def _keep_store_in_place(self) -> None:
        """Put the store's file back if it was deleted (or its folder removed, or the
        file replaced) while the host runs; the caller holds ``_save_lock`` and then saves
        every checkpoint into it.  An open SQLite connection goes on writing to a deleted
        file without an error, and the next start of the host would find an empty
        database and lose every agent.  The new file holds what the deleted one held
        (:meth:`Store.keep_file_in_place`), so the checkpoints this save keeps as they
        were (unreadable at restore, refused by the database) are not lost either; if
        that content cannot be read, the new file starts empty and the save fills it."""
        if self._store is None:
            return
        lost = self._store.keep_file_in_place()
        if lost is None:
            return
        log.warning("host %s: its state database %s %s while the host ran; re-creating it and "
                    "saving every agent's checkpoint again", self.name, self._store.file, lost.why)
        if lost.copy_error is not None:
            log.warning("host %s: the checkpoints of the deleted database could not be read: %s",
                        self.name, lost.copy_error)

    def restore(self) -> list[str]:
        """Bring back the agents this host ran before it stopped, unless they now run
        elsewhere (moved away while this host was down)."""
        try:
            entries = self.store.load_checkpoints()
        except Exception:
            log.exception("unreadable checkpoints in %s; starting empty", self.state_dir)
            return []
        readable = []
        for e in entries:  # all read before any is restored: restoring one saves the set
            try:
                e["state"] = msgpack.unpackb(e["state"], raw=False)
                readable.append(e)
            except Exception as exc:  # noqa: BLE001 - one bad row costs that agent, not the others
                log.error("checkpoint of agent %r in %s unreadable, kept as it is: %s: %s",
                          e["name"], self.state_dir, type(exc).__name__, cut(str(exc)))
                self._unreadable.append(e["name"])
        restored = []
        for e in readable:
            try:
                self.create(e["kind"], e["name"], {}, e.get("domain", ""), state=e["state"])
                if e.get("suspended"):
                    self.suspend(e["name"])
                restored.append(e["name"])
            except AgentExists:
                log.info("not restoring %s: it runs elsewhere now", e["name"])
            except MasaError as exc:
                log.warning("not restoring %s: %s", e["name"], exc)
        return restored

    # -- reporting -------------------------------------------------------------------------

    def describe(self, slot: Slot) -> dict:
        a = slot.agent
        return {"name": a.name, "kind": a.kind, "domain": a.domain, "host": self.name,
                "status": slot.status, **slot.stats}

    def agent_list(self) -> list[dict]:
        return [self.describe(s) for s in list(self.slots.values())
                if s.status in (RUNNING, SUSPENDED, MOVING)]

    def resources(self) -> dict:
        """What placement decisions need: spare CPU, memory, how busy the host is."""
        mem = psutil.virtual_memory()
        return {
            "cpu_percent": psutil.cpu_percent(None),
            "load1": os.getloadavg()[0],
            "cpus": psutil.cpu_count() or 1,
            "mem_available": mem.available,
            "agents": len(self.agent_list()),
            "rss": psutil.Process().memory_info().rss,
            "started": self._started,  # a new value tells the node list the host restarted
        }

    def info(self) -> dict:
        return {"name": self.name, "domain": self.domain, "address": self.control_uri,
                "allow": sorted(self.allow), "resources": self.resources(),
                "moves": dict(self.moves), "pid": os.getpid()}

    # -- the host's own loops ----------------------------------------------------------------

    def _housekeeping(self) -> None:
        """Heartbeats to the registry, scheduled tasks, the watchdog, expiries."""
        registry: Proxy | None = None
        next_heartbeat = 0.0
        next_save = time.monotonic() + 5.0
        while not self._stop.is_set():
            now = time.monotonic()
            self._keep("scheduler", self.scheduler.tick)
            self._keep("watchdog", self._watchdog, now)
            self._keep("expiry", self._expire, now)
            if now >= next_heartbeat:
                next_heartbeat = now + self.settings.heartbeat
                registry = self._beat(registry)
            if now >= next_save:
                next_save = now + 5.0
                self._keep("checkpoints", self._checkpoint_all)
            self._stop.wait(self.settings.tick)
        if registry is not None:
            registry._pyroRelease()

    def _keep(self, step: str, fn: Callable, *args: Any) -> None:
        """One step of the housekeeping loop.  A step that fails is logged (once until it
        succeeds again) and the loop goes on: this one thread carries every agent's
        periodic tasks, the watchdog, checkpoints and heartbeats, and a host that kept
        answering calls without them would look healthy while its agents stop."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001
            why = f"{type(exc).__name__}: {exc}"
            if self._failing.get(step) != why:
                log.error("host %s: housekeeping step %s failed (goes on): %s", self.name, step, why,
                          exc_info=exc)
            self._failing[step] = why
        else:
            self._failing.pop(step, None)

    def _checkpoint_all(self) -> None:
        for slot in list(self.slots.values()):
            agent = slot.agent
            with agent.lock:
                if slot.status != RUNNING or agent.configuring:
                    continue
                try:
                    slot.checkpoint = agent.snapshot()
                except Exception as exc:  # noqa: BLE001 - e.g. a value nested too deep to copy
                    log.error("checkpoint of agent %r on host %s not taken (its last one stays): %s: %s",
                              slot.name, self.name, type(exc).__name__, cut(str(exc)))
        self.save_checkpoints()

    def _beat(self, registry: Proxy | None) -> Proxy | None:
        try:
            if registry is None:
                uri = self.ns.lookup(naming.REGISTRY, wait=0)
                registry = Proxy(uri, self.settings.secret, timeout=max(1.0, self.settings.heartbeat))
            agents = [{"name": naming.agent_name(a["name"]), "kind": a["kind"], "domain": a["domain"],
                       "status": _NODE_STATUS.get(a["status"], "up")} for a in self.agent_list()]
            rejoined = registry.heartbeat(naming.host_name(self.name), self.domain,
                                          self.control_uri, self.resources(), agents)
            if rejoined:
                self.register_all()  # the broker may have lost our names (it restarted)
        except Exception as exc:  # noqa: BLE001 - a refused beat (a name the node list cannot hold) too
            level = logging.DEBUG if isinstance(exc, (Pyro5.errors.CommunicationError, MasaError)) else logging.WARNING
            log.log(level, "heartbeat of host %s failed: %s: %s", self.name, type(exc).__name__, cut(str(exc)))
            if registry is not None:
                registry._pyroRelease()
            return None
        return registry

    def _watchdog(self, now: float) -> None:
        for slot in list(self.slots.values()):
            overdue = [c for c in list(slot.inflight) if not c.expired and now > c.deadline]
            if overdue:
                for c in overdue:
                    c.expired = True
                self.restart(slot)

    def run(self, restore: bool = True) -> None:
        self.claim_name()  # before anything is restored, registered or saved
        if restore:
            self.restore()
        self.register_all()
        keeper = threading.Thread(target=self._housekeeping, name=f"keeper-{self.name}", daemon=True)
        keeper.start()
        log.info("host %s serving at %s", self.name, self.control_uri)
        try:
            self.daemon.requestLoop(lambda: not self._stop.is_set())
        finally:
            self._stop.set()
            keeper.join(timeout=2)
            with _quietly():
                self.save_checkpoints()
            self.scheduler.shutdown()
            self.executor.shutdown(wait=False, cancel_futures=True)
            # Closing the daemon would join every worker still holding a client's idle
            # connection; the process is about to exit and the state is saved, so only
            # the listening socket is closed here.
            with _quietly():
                self.daemon.sock.close()

    def stop(self) -> None:
        """Ask ``run()`` to return; safe from a signal handler or a remote call."""
        self._stop.set()
        with _quietly():
            self.daemon.transportServer.wakeup()


def _cap(exc: MasaError) -> None:
    """Cut an error's text to :data:`MAX_ERROR_TEXT` before it goes to the caller: an error
    quoting a huge argument would not fit a message, Pyro5 would drop the connection, and
    the caller, taking that for a dead host, would call again until its deadline."""
    if len(exc.args) == 1 and isinstance(exc.args[0], str) and len(exc.args[0]) > MAX_ERROR_TEXT:
        exc.args = (cut(exc.args[0]),)


def _keepable_snapshot(agent: Agent, op: str) -> dict:
    """The state a configure operation leaves, as its checkpoint; the operation is kept
    only if that state can be checkpointed as every checkpoint is (a copy, encoded with
    msgpack): one that cannot would keep the agent at its last checkpoint from now on, and
    every later change would be lost on the next restart while each call reported success."""
    try:
        snapshot = agent.snapshot()
        msgpack.packb(snapshot, use_bin_type=True)
    except Exception as exc:  # noqa: BLE001 - too deep to copy, a value msgpack cannot encode
        raise _unkeepable(agent, op, exc) from None
    return snapshot


def _unkeepable(agent: Agent, op: str, exc: Exception) -> BadRequest:
    return BadRequest(f"{agent.name}.{op} refused: the agent's state could not be checkpointed "
                      f"({type(exc).__name__}: {cut(str(exc), 200)})")


def _check_agent(kind: Any, name: Any, domain: Any, state: Any) -> None:
    """The parts of an agent that ``create`` and ``receive`` take from a caller: raise
    BadRequest for anything an honest caller would never send (the domain and the name
    end up in the broker's tags and the host's checkpoints; one that is not a string
    would break every later checkpoint of the host)."""
    naming.check_name(name, "agent")
    if not isinstance(kind, str) or not kind:
        raise BadRequest(f"agent {name!r}: the kind is a non-empty string, not {brief(kind)}")
    if domain is not None and not isinstance(domain, str):
        raise BadRequest(f"agent {name!r}: the domain is a string, not {brief(domain)}")
    if state is None:
        return
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise BadRequest(f"agent {name!r}: the state is a mapping of names to values, not {brief(state)}")
    settings = state.get("settings", {})
    if not isinstance(settings, dict) or not all(isinstance(k, str) for k in settings):
        raise BadRequest(f"agent {name!r}: state['settings'] is a mapping of names to values, "
                         f"not {brief(settings)}")


def _answers_as(uri: str, name: str, secret: bytes) -> bool:
    """Whether the host control object at ``uri`` answers a ping as host ``name``."""
    try:
        with Proxy(uri, secret, timeout=PING_TIMEOUT) as p:
            return p.ping() == name
    except Exception:
        return False


def _alive(uri: str, secret: bytes) -> bool:
    try:
        with Proxy(uri, secret, timeout=1.0) as p:
            p._pyroBind()
        return True
    except Exception:
        return False


class _quietly:
    """Best-effort cleanup: log and swallow, never mask the error being reported."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is not None:
            log.debug("ignored during cleanup: %s", exc)
        return True
