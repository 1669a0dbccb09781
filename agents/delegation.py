"""A mediator's delegation: handing a pre-processing step to an agent nearer the data
(``hand_step``), taking one over (``adopt_step``/``drop_step``), and handing the whole
job over (``hand_over``: "ask X from now on").

Handing a step down changes the form of what arrives from then on, not of what is held
already.  The streams from the agent taking the step over are therefore re-opened at the
positions reached *before* it adopts the step, and per object the position where the form
changes is kept (``state["retagged"]``): stored samples up to it are brought into the new
form when read, later copies of them in the new form are not taken (the mediator's
``record``).  A mixin of :class:`agents.mediator.MediatorAgent`, whose state it shares.
"""

from __future__ import annotations

import contextlib
import copy
import time

import numpy as np

from agents import preprocess
from agents.recorder import KEEPALIVE
from agents.standing import matches
from masa.activity import Series
from masa.agent import configure
from masa.errors import BadRequest, MasaError, OutcomeUnknown, brief
from masa.naming import check_name


class Delegation:
    """The delegation ops of a mediator (its ``@configure`` ops are found through the MRO)."""

    @configure
    def adopt_step(self, step: dict) -> list[dict]:
        """Take over a pre-processing step (another agent suggests it: nearer the data)."""
        spec = preprocess.check(step)
        with self.lock:
            if spec not in self.settings["steps"]:
                self.settings["steps"] = [*self.settings["steps"], spec]
        self._catalog_at = 0.0
        return list(self.settings["steps"])

    def _adopt_at(self, to: str, spec: dict) -> None:
        """``adopt_step`` at ``to``, asked once more if its outcome is unknown (the
        connection was lost with the request sent, e.g. ``to``'s host died): adopting a step
        already adopted changes nothing, so asking again settles it either way."""
        try:
            self.ref(to).configure("adopt_step", step=spec)
        except OutcomeUnknown:
            self.ref(to).configure("adopt_step", step=spec)

    @configure
    def drop_step(self, step: dict) -> bool:
        spec = preprocess.check(step)
        with self.lock:
            steps = self.settings["steps"]
            if spec not in steps:
                return False
            self.settings["steps"] = [s for s in steps if s != spec]
        self._catalog_at = 0.0
        return True

    @configure
    def hand_step(self, step: dict, to: str) -> list[str]:
        """Ask ``to`` (one of this mediator's sources) to apply ``step`` (one of this
        mediator's steps); the step stays configured here and is skipped for data that
        arrives with its tag.  Returns the tags of the steps still done here.

        What is held here already came without the tag.  The report cache keeps data per
        set of tags, so it is never mixed with what comes now.  The streams from ``to``
        are re-opened under new request ids at the positions reached, before ``to``
        adopts the step, so everything up to there is in the old form and everything after
        in the new one; that position is kept per object (``state["retagged"]``): stored
        samples up to it are brought into the new form when read (:meth:`_current_form`),
        and copies of them in the new form arriving later are not taken (``MediatorAgent.record``).
        So every sample comes out as without the hand-off: the step applied once."""
        spec = preprocess.check(step)
        if spec not in self.settings["steps"]:
            raise BadRequest(f"{preprocess.tag(spec)} is not one of {self.name}'s steps")
        if to not in self.settings["sources"]:
            raise BadRequest(f"a step is handed to one of {self.name}'s sources, not to {brief(to)}")
        mine = preprocess.tag(spec)
        below = self._below(probe=True)  # ``to`` is asked even if marked unreachable
        with self.lock:
            mark = self._unreachable.get(to)
        if mark is not None:  # refused now, rather than after a call's whole deadline
            raise MasaError(f"{self.name} cannot hand a step to {to}: it does not answer ({mark['why']})")
        changing = {obj: list(e["applied"]) for obj, e in below.items()
                    if e["source"] == to and mine not in e["applied"]}
        with self.lock:
            saved = {k: copy.deepcopy(self.state.get(k)) for k in ("below_gen", "retagged")}
            self._handing[to] = self._handing.get(to, 0) + 1
        try:
            reopened = self._reopen(to, changing)
            try:
                self._adopt_at(to, spec)
            except BaseException:
                self._undo_reopen(reopened, saved)
                raise
            # ``to`` sends everything with the tag from now on: say so here before any of
            # it can arrive (a catalog asked for earlier and answered later is not taken)
            ticket = self._ticket()
            catalog = {obj: {**e, "applied": [*e["applied"], mine]} if obj in changing else e
                       for obj, e in self._catalog.items()}
            self._install(catalog, ticket, time.monotonic())
        finally:
            with self.lock:
                self._handing[to] -= 1
                if not self._handing[to]:
                    del self._handing[to]
        with self.lock:  # the old streams are quit off the caller's time (see _quit_below)
            quitting = self.state.setdefault("quitting", {})
            for old, _, _ in reopened:
                quitting[old] = {"source": to, "since": time.time()}
            waiting = {rid: to for rid, sub in self.inbox.subs.items() if sub.get("source") == to}
        self._send_quits()
        self._send_below(waiting)
        with contextlib.suppress(Exception):
            self._below(refresh=True)
        return [preprocess.tag(s) for s in self._steps_for_all()]

    def _reopen(self, to: str, changing: dict[str, list[str]]) -> list[tuple[str, str, dict]]:
        """Close the streams from ``to`` where they are and register them again under new
        ids (sent when the hand-off is done, see ``_handing``); for each object whose tags
        change (``changing``: object -> tags before), note up to where its samples held
        here are in the old form.  Returns ``[(old id, new id, old entry)]``."""
        with self._arrival, self.lock:  # no batch being taken meanwhile
            gens = self.state.setdefault("below_gen", {})
            ours = {self._below_id(r, to): f"{self.name}:{r}@{to}" for r in self.subscriptions.requests}
            gens[to] = gens.get(to, 0) + 1
            reopened = []
            for rid, sub in list(self.inbox.subs.items()):
                if rid not in ours and sub.get("source") != to:
                    continue
                base = ours.get(rid) or sub.get("base") or rid
                new = f"{base}#{gens[to]}"
                self.inbox.subs[new] = {**sub, "seq": 0, "base": base}  # from the same position
                del self.inbox.subs[rid]  # its batches are refused from now on
                reopened.append((rid, new, sub))
            last = self.state["last_end"]
            log = self.state.setdefault("retagged", {})
            horizon = time.time() - float(self.settings.get("retention", 3600.0))
            for obj in list(log):  # positions older than anything kept
                log[obj] = [entry for entry in log[obj] if entry[0] >= horizon]
                if not log[obj]:
                    del log[obj]
            for obj, tags in changing.items():
                ends = [sub["until"] for _, _, sub in reopened
                        if sub.get("until") is not None and matches(sub.get("objects"), obj)]
                if obj in last:
                    ends.append(last[obj])
                if ends:
                    log.setdefault(obj, []).append([max(ends), tags])
            return reopened

    def _undo_reopen(self, reopened: list[tuple[str, str, dict]], saved: dict) -> None:
        """The hand-off failed: the streams continue under their old ids, as they were."""
        with self._arrival, self.lock:
            for old, new, sub in reopened:
                self.inbox.subs.pop(new, None)
                self.inbox.subs[old] = sub
            for key, value in saved.items():
                if value is None:
                    self.state.pop(key, None)
                else:
                    self.state[key] = value

    def _resubscribe(self) -> None:
        """As a recorder's, except that requests to a source a hand-off to runs wait for
        it, and that requests go out through ``_send_below``: those to a source marked
        unreachable wait until the catalog task (which asks every source every
        ``CATALOG_TTL`` s) finds it answering again, and one that died unnoticed costs
        this task one short budget, not a call's deadline per request, so the host's few
        scheduler threads stay free for other agents.  The quits still owed below go out
        again with every keep-alive."""
        with self.lock:
            beat = time.monotonic() >= self._keepalive_at
            if beat:
                self._keepalive_at = time.monotonic() + KEEPALIVE
                self._unsent |= set(self.inbox.subs)
            self._unsent &= set(self.inbox.subs)  # quit meanwhile: nothing to send
            todo = {rid: self.inbox.subs[rid].get("source") for rid in self._unsent}
            todo = {rid: source for rid, source in todo.items() if source and source not in self._handing}
            self._unsent -= set(todo)  # _send_below puts back what it could not send
        if todo:
            self._send_below(todo)
        if beat:
            self._send_quits()

    def _steps_for_all(self) -> list[dict]:
        pending: list[dict] = []
        for obj in self._catalog:
            for s in self._steps_for(obj):
                if s not in pending:
                    pending.append(s)
        return pending

    @configure
    def hand_over(self, to: str) -> dict:
        """From now on refuse queries with "ask ``to``"; standing requests are dropped
        here, and their subscribers re-establish them at ``to`` from where they are."""
        check_name(to, "successor")
        if to == self.name:
            raise BadRequest("cannot hand over to itself")
        with self.lock:
            self.settings["successor"] = to
            requests = list(self.subscriptions.requests)
        for request in requests:
            self.quit(request)
        return {"successor": to, "dropped": requests}

    def _current_form(self, s: Series, steps: list[dict], tags: list[str] | None) -> Series:
        """``s`` from the store with the stretches held from before a hand-off (see
        :meth:`hand_step`) brought into the form of what arrives now: the steps handed
        down since are applied to them here, in this mediator's order, as the agent below
        applies them to what it sends now."""
        log = self.state.get("retagged", {}).get(s.object)
        if not log or tags is None or not len(s):
            return s
        for i, (until, was) in enumerate(log):
            then = log[i + 1][1] if i + 1 < len(log) else tags
            todo = [st for st in steps if preprocess.tag(st) in then and preprocess.tag(st) not in was]
            head = s.end <= until  # held in the form ``was`` (earlier stretches converted already)
            if not todo or not head.any():
                continue
            done = preprocess.apply(todo, Series(s.object, s.unit, s.start[head], s.end[head], s.value[head]))
            k = done.end <= until
            s = Series(s.object, s.unit, np.concatenate([done.start[k], s.start[~head]]),
                       np.concatenate([done.end[k], s.end[~head]]),
                       np.concatenate([done.value[k], s.value[~head]]))
        return s
