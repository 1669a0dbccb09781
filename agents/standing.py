"""Standing requests: predicates, the source's subscriptions, the subscriber's inbox.

A standing request asks a source (collector, mediator, domain agent) to push matching
samples to a subscriber, batch after batch.  What makes it lossless and duplicate-free
across restarts and moves of either side is that a request's whole delivery state is
two numbers, ``(acked_seq, acked_until)``: batch ``seq`` carries the matching samples
that ended in ``(until[seq-1], until[seq]]``, and the source can *regenerate* any batch
from its activity store.  So:

* a subscriber that is unreachable just leaves the source at its last acked batch (the
  samples wait in the store, on disk, bounded by retention) and gets everything in order
  when it returns;
* a subscriber restarted from an older checkpoint re-subscribes with its own last
  ``(seq, until)`` and the source replays from there;
* the subscriber ignores a ``seq`` it has already taken, so nothing is applied twice.

Both sides keep their part in ``agent.state``, which the platform checkpoints and moves.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import math
import operator
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import Pyro5.errors

from masa import checks
from masa.activity import Series
from masa.errors import BadRequest, NotSubscribed, brief
from masa.naming import NameService, agent_name, check_name

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
    "<": operator.lt, ">": operator.gt,
}
_PREDICATE = re.compile(r"^\s*(?:(?P<glob>\S+)\s+)?(?P<op><=|>=|==|!=|<|>)\s*(?P<num>[-+]?[0-9.]+(?:[eE][-+]?\d+)?)\s*$")

_names = threading.local()  # a name server client per thread (Pyro5 proxies are per thread)

MAX_BATCH_SPAN = 60.0  # seconds of samples in one batch, so a long outage replays in pieces
MAX_REQUESTS = 256  # standing requests one source accepts
MAX_PREDICATES = 100  # predicates in one request or filter step (each is checked per object and batch)
#: characters of a request id (a mediator's ids below add its own name and its source's)
MAX_REQUEST_ID = 1024
MAX_LEFT = 8  # sources a request was re-opened away from, whose batches it refuses
MAX_SEQ = 2**53 - 1  # batch numbers stay exact as floats and fit a checkpoint (msgpack: 64 bits)
DELIVERY_TIMEOUT = 2.0  # a subscriber slower than this is retried later (see RETRY_*)
RETRY_FIRST = 1.0  # a subscriber that failed is tried again after this many seconds,
RETRY_CAP = 30.0  # doubling after each further failure up to this
PASS_BUDGET = DELIVERY_TIMEOUT  # seconds of round-robin rounds in one delivery pass


@dataclass(frozen=True)
class Predicate:
    """``[OBJECT_GLOB] OP NUMBER``, e.g. ``"*/cpu > 0.2"``; no glob means every object."""

    glob: str
    op: str
    number: float

    @classmethod
    def parse(cls, text: str) -> Predicate:
        if not isinstance(text, str) or len(text) > 300:
            raise BadRequest(f"a predicate is a string of at most 300 characters, not {brief(text)}")
        m = _PREDICATE.match(text)
        if not m:
            raise BadRequest(f"bad predicate {text!r}: expected '[OBJECT_GLOB] OP NUMBER' "
                             f"with OP one of {' '.join(_OPS)}")
        try:
            number = float(m["num"])
        except ValueError:
            raise BadRequest(f"bad number in predicate {text!r}") from None
        if not math.isfinite(number):
            raise BadRequest(f"bad number in predicate {text!r}: it must be finite")
        return cls(m["glob"] or "*", m["op"], number)

    def applies(self, obj: str) -> bool:
        return fnmatch.fnmatchcase(obj, self.glob)

    def holds(self, values: np.ndarray) -> np.ndarray:
        return _OPS[self.op](values, self.number)


def parse_predicates(texts: list[str] | None) -> list[Predicate]:
    """A list of predicate strings (None: none).  One string is refused rather than read
    character by character."""
    if texts is None:
        return []
    if not isinstance(texts, list):
        raise BadRequest(f'predicates are a list of strings such as ["*/cpu > 0.2"], not {brief(texts)}')
    if len(texts) > MAX_PREDICATES:
        raise BadRequest(f"predicates lists {len(texts)} predicates; at most {MAX_PREDICATES} are accepted")
    return [Predicate.parse(t) for t in texts]


def all_hold(predicates: list[Predicate], obj: str, values: np.ndarray) -> np.ndarray:
    """Which samples of ``obj`` pass: those for which every predicate whose glob matches
    ``obj`` holds.  A predicate filters only the objects its glob matches; an object no
    predicate applies to passes unfiltered (it was asked for by name or by ``objects``).
    The source, the requester and a mediator's ``filter`` step all check this, so they
    agree on every sample."""
    keep = np.ones(len(values), bool)
    for p in predicates:
        if p.applies(obj):
            keep &= p.holds(values)
    return keep


def matches(objects: list[str] | None, obj: str) -> bool:
    """Whether ``obj`` is one of ``objects`` (names or globs; None: all).  The list is
    matched as one regular expression, compiled once: a list of thousands of globs (up
    to :data:`masa.activity.MAX_OBJECTS`) costs one scan per object, not thousands."""
    return objects is None or bool(objects) and _union(tuple(objects))(obj) is not None


@functools.lru_cache(maxsize=64)
def _union(globs: tuple[str, ...]) -> Callable[[str], re.Match | None]:
    return re.compile("|".join(fnmatch.translate(g) for g in globs)).match


def check_request(request: Any, objects: Any = None, predicates: Any = None, interval: Any = None) -> None:
    """What a standing request is made of, checked on both sides: at the source
    (``subscribe``) and at the subscriber that sends it (``subscribe_to``)."""
    checks.text(request, "request", MAX_REQUEST_ID)
    checks.names(objects)
    parse_predicates(predicates)
    if interval is not None:
        checks.number(interval, "interval", checks.MIN_PERIOD, 3600, unit="seconds",
                      note=" (or omitted: every sample)")


def series_from_rows(rows: Iterable[tuple[str, str, float, float, float]]) -> list[Series]:
    """Store rows (sorted by object, then time) into one series per object."""
    out: list[Series] = []
    current, unit, buf = None, "", []
    for obj, u, a, b, v in rows:
        if obj != current:
            if buf:
                out.append(_series(current, unit, buf))
            current, unit, buf = obj, u, []
        buf.append((a, b, v))
    if buf:
        out.append(_series(current, unit, buf))
    return out


def _series(obj: str, unit: str, buf: list[tuple[float, float, float]]) -> Series:
    arr = np.asarray(buf, dtype=np.float64)
    return Series(obj, unit, arr[:, 0], arr[:, 1], arr[:, 2])


def filtered(series: Iterable[Series], objects: list[str] | None, predicates: list[Predicate],
             check: Callable = all_hold) -> list[Series]:
    """Series restricted to the wanted objects and the samples the predicates keep."""
    out = []
    for s in series:
        if not matches(objects, s.object):
            continue
        keep = check(predicates, s.object, s.value)
        if keep.all():
            out.append(s)
        elif keep.any():
            out.append(Series(s.object, s.unit, s.start[keep], s.end[keep], s.value[keep]))
    return out


# -- the source side -------------------------------------------------------------------------


class Subscriptions:
    """The standing requests a source serves, kept in ``state["requests"]``.

    ``read(since, until)`` returns the source's series for a time window; the source
    calls :meth:`deliver_all` from a periodic task (never from inside a handler)."""

    def __init__(self, agent, read: Callable[[float, float], list[Series]]) -> None:
        self.agent = agent
        self.read = read
        self.requests: dict[str, dict] = agent.state.setdefault("requests", {})
        self.delivered = 0  # samples delivered since start, for benchmarks and tests
        self.last_error: str | None = None  # why the last delivery failed, for status
        # Requests whose subscriber failed: request -> (delay, next attempt).  Not state: a
        # restarted or moved source simply tries every subscriber again.
        self.retry: dict[str, tuple[float, float]] = {}
        self._reached: set[str] = set()  # requests whose last delivery succeeded
        self._took: dict[str, float] = {}  # request -> seconds its last batch took

    def subscribe(self, request: str, subscriber: str, objects: list[str] | None = None,
                  predicates: list[str] | None = None, interval: float | None = None,
                  deliver: str = "deliver", resume_seq: int | None = None,
                  resume_until: float | None = None,
                  anchor: Callable[[float], None] | None = None) -> dict:
        """Open or re-open ``request``; ``anchor(start)`` runs under the agent's lock just
        before the request becomes visible to :meth:`deliver_all`, so a source that must
        fetch history from ``start`` first can lower its horizon before any batch is cut."""
        check_request(request, objects, predicates, interval)  # now, not at every delivery
        check_name(subscriber, "subscriber")
        if not isinstance(deliver, str) or not deliver.isidentifier() or len(deliver) > 100:
            raise BadRequest("deliver must name the subscriber's operation that takes the batches "
                             f"(an identifier such as 'deliver'), not {brief(deliver)}")
        resume = _position(resume_seq, resume_until)
        with self.agent.lock:
            old = self.requests.get(request)
            if old is not None and old["subscriber"] != subscriber:
                raise BadRequest(f"standing request {request!r} is held here by subscriber "
                                 f"{old['subscriber']!r}; choose another request id (or quit that one first)")
            if old is None and len(self.requests) >= MAX_REQUESTS:
                raise BadRequest(f"source already serves {MAX_REQUESTS} standing requests")
            now = time.time()
            spec = {
                "subscriber": subscriber, "deliver": deliver, "objects": objects,
                "predicates": list(predicates or []), "interval": interval,
                "acked_seq": 0, "acked_until": now, "next_due": 0.0,
            }
            if old is not None:  # a re-sent request (the subscriber restarted): keep the stream
                spec["acked_seq"], spec["acked_until"] = old["acked_seq"], old["acked_until"]
            if resume is not None:
                spec["acked_seq"], spec["acked_until"] = resume
            if anchor is not None:
                anchor(spec["acked_until"])
            self.requests[request] = spec
            self.retry.pop(request, None)  # the subscriber is back (or new): try it at once
        return {"request": request, "resume_seq": spec["acked_seq"], "resume_until": spec["acked_until"]}

    def quit(self, request: str) -> bool:
        checks.text(request, "request", MAX_REQUEST_ID)
        with self.agent.lock:
            self.retry.pop(request, None)
            self._reached.discard(request)
            self._took.pop(request, None)
            return self.requests.pop(request, None) is not None

    def deliver_all(self, now: float | None = None, horizon: Callable[[], float] | None = None) -> int:
        """Push due batches; returns the number of batches acknowledged.

        ``horizon()``: newest time up to which the source's data is complete (samples
        ending later may still arrive); now without it.  It is read under the agent's lock
        together with the list of requests, so a request opened meanwhile (see ``anchor``
        in :meth:`subscribe`) is never cut against a horizon from before it lowered it.

        Batches go round-robin, one per request and round, for at most
        :data:`PASS_BUDGET` seconds of rounds: a subscriber that answers, but slowly,
        with a long backlog (back from an outage) then delays the others by one of its
        batches, not by its whole backlog.  What a pass leaves is sent by the next one,
        whatever the request's ``interval``.  Subscribers that answered last time are
        served first, the quickest first; one that failed is tried again only after its
        backoff (:data:`RETRY_FIRST` doubling up to :data:`RETRY_CAP`), and first asked of
        the name server (one look-up, no waiting), so a subscriber that does not exist
        costs no :data:`DELIVERY_TIMEOUT`.  Its samples wait in the store meanwhile; when
        it answers again it gets everything from its acknowledged position on."""
        now = time.time() if now is None else now
        with self.agent.lock:
            items = list(self.requests.items())
            horizon = now if horizon is None else horizon()
        items.sort(key=lambda item: (item[0] not in self._reached, self._took.get(item[0], 0.0)))
        due = []
        for request, spec in items:
            backoff = self.retry.get(request)
            if backoff is not None and now < backoff[1]:
                continue
            if spec["interval"] and now < spec["next_due"]:
                continue
            spec["next_due"] = now + (spec["interval"] or 0)
            if spec["acked_until"] >= horizon:
                continue
            if request not in self._reached and not self._registered(spec["subscriber"]):
                self._failed(request, now, f"subscriber {spec['subscriber']!r} is not registered")
                continue
            due.append((request, spec))
        acked, started = 0, time.monotonic()
        while due:
            behind = []
            for request, spec in due:
                if self.requests.get(request) is not spec:  # quit, or re-opened from another position
                    continue
                sent = time.monotonic()
                if not self._send(request, spec, min(horizon, spec["acked_until"] + MAX_BATCH_SPAN)):
                    self._failed(request, now)  # unreachable: everything stays in the store
                    continue
                if self.requests.get(request) is not spec:  # dropped (NotSubscribed) or re-opened
                    continue
                self._took[request] = time.monotonic() - sent
                self.retry.pop(request, None)
                self._reached.add(request)
                acked += 1
                if spec["acked_until"] < horizon:
                    behind.append((request, spec))
            due = behind
            if time.monotonic() - started >= PASS_BUDGET:
                for _, spec in due:
                    spec["next_due"] = 0.0  # the rest of its backlog goes on the next pass
                break
        return acked

    def _failed(self, request: str, now: float, why: str | None = None) -> None:
        """Count a failed delivery and put off the next attempt for ``request``."""
        with self.agent.lock:
            self._reached.discard(request)
            delay = min(self.retry.get(request, (RETRY_FIRST / 2, 0.0))[0] * 2, RETRY_CAP)
            self.retry[request] = (delay, now + delay)
            if why is not None:
                self.agent.state["delivery_errors"] = self.agent.state.get("delivery_errors", 0) + 1
                self.last_error = why

    def _registered(self, subscriber: str) -> bool:
        """Whether the name server knows ``subscriber``: one look-up, where a call would
        wait until its deadline for a name to appear.  True when it cannot tell (the name
        server is unreachable, or the reference is not a platform one): then the call
        decides."""
        ref = self.agent.ref(subscriber)
        settings = getattr(ref, "settings", None)
        if settings is None or not isinstance(getattr(ref, "name", None), str):
            return True
        names = getattr(_names, "service", None)
        if names is None or names.settings is not settings:
            names = _names.service = NameService(settings)
        for _ in range(2):  # twice: the kept connection may have been closed as idle
            try:
                names.lookup_meta(agent_name(ref.name))
                return True
            except Pyro5.errors.NamingError:
                return False
            except Pyro5.errors.CommunicationError:
                continue  # reconnects on the next look-up
            except Exception:  # noqa: BLE001 - cannot tell: let the call decide
                return True
        return True  # name server unreachable: let the call decide

    def _send(self, request: str, spec: dict, until: float) -> bool:
        series = filtered(self.read(spec["acked_until"], until), spec["objects"],
                          parse_predicates(spec["predicates"]))
        seq = spec["acked_seq"] + 1
        try:
            taken = self.agent.ref(spec["subscriber"]).query(
                spec["deliver"], timeout=DELIVERY_TIMEOUT, request=request, source=self.agent.name, seq=seq,
                until=until, series=[s.to_wire() for s in series])
        except NotSubscribed as exc:
            # The subscriber holds no such stream from here (it quit, re-opened the request
            # at another source, or restarted without it): drop it, or it is retried for
            # ever.  Not if it was re-opened here meanwhile (a new spec): the refusal was
            # of the old one.  True: nothing to retry.
            with self.agent.lock:
                if self.requests.get(request) is spec:
                    del self.requests[request]
                    self.retry.pop(request, None)
                self.last_error = repr(exc)
            return True
        except Exception as exc:  # noqa: BLE001 - a dead or slow peer only delays the stream
            self.agent.state.setdefault("delivery_errors", 0)
            self.agent.state["delivery_errors"] += 1
            self.last_error = repr(exc)
            return False
        with self.agent.lock:
            if isinstance(taken, int) and taken >= seq:
                spec["acked_seq"], spec["acked_until"] = seq, until
                self.delivered += sum(len(s) for s in series)
                return True
        return False


def _position(seq: Any, until: Any) -> tuple[int, float] | None:
    """A subscriber's own ``(resume_seq, resume_until)``, both or neither."""
    if seq is None and until is None:
        return None
    if seq is None or until is None:
        raise BadRequest("resume_seq and resume_until go together (the position a subscriber "
                         "has taken), or are both omitted")
    return checks.whole(seq, "resume_seq", 0, MAX_SEQ), checks.timestamp(until, "resume_until")


# -- the subscriber side ---------------------------------------------------------------------


class Inbox:
    """What a subscriber keeps per standing request, in ``state["subscriptions"]``.

    ``accept`` applies the requester's full predicate check and drops repeated batches;
    ``resubscribe`` re-sends every pending request with the position reached, which the
    platform calls through the agent's ``on_start`` after a restart or a move."""

    def __init__(self, agent) -> None:
        self.agent = agent
        self.subs: dict[str, dict] = agent.state.setdefault("subscriptions", {})

    QUIT_TIMEOUT = DELIVERY_TIMEOUT  # s a re-opened request's old source is given to quit it

    def subscribe(self, request: str, source: str, objects: list[str] | None = None,
                  predicates: list[str] | None = None, interval: float | None = None,
                  deliver: str = "deliver") -> dict:
        """Open ``request`` at ``source``, or send it again.

        Sent again to the *same* source (after a restart, as a keep-alive, or with other
        ``objects``, ``predicates`` or ``interval``) it is the same stream: it goes on
        from the position reached, with the selection as asked now.  One source numbers
        its batches, so nothing is taken twice or skipped; samples of objects added now
        come from that position on.

        Sent to *another* source it is a new stream: two sources number their batches
        independently, and fed into one position the seq check would drop samples of
        both.  So it starts afresh (seq 0, from where the new source says it begins),
        under a new entry (a batch of the old stream being taken meanwhile cannot move
        it), and the old source is told to quit once the new one has accepted: best
        effort, for at most :attr:`QUIT_TIMEOUT` s; one that cannot be reached learns it
        from the refusal of its next batch (:meth:`accept`).  If the new source refuses,
        the error goes to the caller (``subscribe_to`` is then rolled back, and a batch
        of the old stream refused meanwhile is replayed once the keep-alive sends the old
        request again)."""
        check_request(request, objects, predicates, interval)
        check_name(source, "source")
        with self.agent.lock:
            sub = self.subs.get(request)
            old = sub.get("source") if sub is not None else None
            moved = old is not None and old != source
            if sub is None or moved:
                left = [*sub.get("left", []), old][-MAX_LEFT:] if moved else []
                sub = self.subs[request] = {"seq": 0, "until": None, "left": left}
            sub.update({"source": source, "objects": objects, "predicates": list(predicates or []),
                        "interval": interval, "deliver": deliver})
        answer = self._send(request, sub)
        if moved and sub["source"] != old:  # (``source`` may have redirected to ``old``)
            with contextlib.suppress(Exception):
                self.agent.ref(old).query("quit", timeout=self.QUIT_TIMEOUT, request=request)
        return answer

    def _send(self, request: str, sub: dict) -> dict:
        with self.agent.lock:
            if self.subs.get(request) is not sub:  # quit or re-opened elsewhere since it was read
                return {"request": request, "resume_seq": sub["seq"], "resume_until": sub["until"]}
        kwargs = {"request": request, "subscriber": self.agent.name, "objects": sub["objects"],
                  "predicates": sub["predicates"], "interval": sub["interval"], "deliver": sub["deliver"]}
        if sub["until"] is not None:
            kwargs.update(resume_seq=sub["seq"], resume_until=sub["until"])
        ref = self.agent.ref(sub["source"])
        answer = ref.query("subscribe", **kwargs)
        with self.agent.lock:
            served_by = getattr(ref, "name", sub["source"])
            if isinstance(served_by, str) and served_by != sub["source"]:
                sub["source"] = served_by  # redirected: "ask X from now on" (a mediator's hand_over)
            if served_by in sub.get("left", ()):
                sub["left"].remove(served_by)
            if sub["until"] is None:
                sub["until"] = answer["resume_until"]
                sub["seq"] = answer["resume_seq"]
        return answer

    def resubscribe(self, requests: Iterable[str] | None = None) -> list[str]:
        """Send pending requests again (all by default) with the position reached;
        returns those whose source is unreachable (call again later)."""
        failed = []
        for request, sub in list(self.subs.items()):
            if requests is not None and request not in requests:
                continue
            try:
                self._send(request, sub)
            except Exception:  # noqa: BLE001
                failed.append(request)
        return failed

    def quit(self, request: str, timeout: float = 2.0) -> bool:
        """Forget ``request`` here, then tell its source, waiting at most ``timeout`` s.

        Best effort, and short: callers run inside a handler (``unsubscribe``), and a dead
        source would otherwise hold it for a whole call's deadline (a host's watchdog
        restarts an agent whose handler overruns).  An unreachable source keeps pushing
        until it learns otherwise; the pushes are then refused ("no standing request
        here") and do no harm."""
        checks.text(request, "request", MAX_REQUEST_ID)
        sub = self.forget(request)
        if sub is None:
            return False
        with contextlib.suppress(Exception):
            self.agent.ref(sub["source"]).query("quit", request=request, timeout=timeout)
        return True

    def accept(self, request: str, source: str, seq: int, until: float, series: list,
               keep: Callable[[list[Series]], None]) -> int:
        """Take one batch: ``keep`` stores the samples that are new here, then the
        stream's position moves; returns the highest seq taken.  Callers take one batch
        of a request at a time.

        Stored first, moved after: a checkpoint taken in between has the older position,
        so a crash there costs a replay (the store keeps a sample once), never a position
        past samples that were not kept.
        A repeated ``seq`` is acknowledged again and applies nothing — except the part
        reaching past what was taken: a source that missed the acknowledgement (its call
        timed out, or it restarted from an older checkpoint) regenerates the batch up to
        its *current* horizon, and that tail exists nowhere else."""
        checks.text(request, "request", MAX_REQUEST_ID)
        checks.whole(seq, "seq", 1, MAX_SEQ)
        checks.timestamp(until, "until")
        if not isinstance(series, list):
            raise BadRequest(f"series must be a list of series, not {brief(series)}")
        with self.agent.lock:
            sub = self.subs.get(request)
            if sub is None:
                raise NotSubscribed(f"no standing request {request!r} here")
            if source in sub.get("left", ()):  # re-opened elsewhere: a stale stream
                raise NotSubscribed(f"standing request {request!r} was re-opened at {sub['source']!r}: "
                                    f"batches from {source!r} are no longer taken")
            held = sub["until"] if sub["until"] is not None else float("-inf")
            if seq <= sub["seq"] and until <= held:
                return sub["seq"]
            objects, predicates = sub["objects"], sub["predicates"]
        parsed = [Series.from_wire(w) for w in series]
        kept = filtered(parsed, objects, parse_predicates(predicates), check=all_hold)
        if seq <= sub["seq"]:  # a longer repeat: only its tail is new
            kept = [t for t in (s.since(held) for s in kept) if len(t)]
        keep(kept)
        with self.agent.lock:
            if self.subs.get(request) is sub:  # not quit or re-opened meanwhile
                sub["seq"], sub["until"] = max(seq, sub["seq"]), max(float(until), held)
            return max(seq, sub["seq"])

    def forget(self, request: str) -> dict | None:
        """Drop ``request`` here at once, without a word to its source; returns its entry
        (None if there was none).  For a subscriber that tells the source later, off its
        caller's time (a mediator dropping a source, :mod:`agents.mediator`): from now on
        the stream's batches are refused and it no longer holds back the horizon."""
        with self.agent.lock:
            return self.subs.pop(request, None)
