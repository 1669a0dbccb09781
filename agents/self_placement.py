"""A mediator moving itself: the placement task that applies the pure policy of
:mod:`agents.placement` (spare CPU, nearness to the sources) to the node list, and the
bookkeeping that keeps a policy change from racing a move already decided.  A mixin of
:class:`agents.mediator.MediatorAgent`, whose state it shares.
"""

from __future__ import annotations

import copy
import time

from agents.placement import Policy, decide, restart
from masa.errors import MoveFailed


class SelfPlacement:
    """The placement task of a mediator: armed from its settings at start and after
    every reconfigure."""

    def _arm_placement(self) -> None:
        """Make the placement task follow the settings in force (at start and after every
        reconfigure).  The task runs every ``placement_every`` s and evaluates the policy
        only while there is one: a policy switched on or changed counts its dwell afresh
        from the next round, one switched off stops the evaluations at once and calls off a
        self-move decided but not yet made (:meth:`before_move`)."""
        policy = copy.deepcopy(self.settings.get("placement"))
        every = float(self.settings["placement_every"])
        with self.lock:
            armed = self._placement_armed
            if armed == (policy, every):
                return
            if armed is not None and armed[0] != policy:
                self._placement_gen += 1
                restart(self.state.setdefault("placement_memo", {}))
            self._placement_armed = (policy, every)
        if armed is None or armed[1] != every:
            self.every(every, self._placement_round, name="placement")

    def _placement_round(self) -> None:
        with self.lock:
            self._placement_rounds += 1
            policy, gen = copy.deepcopy(self.settings.get("placement")), self._placement_gen
        if policy is not None:
            self._place(policy, gen)

    def _place(self, policy: dict, gen: int) -> None:
        """Gather host resources and source locations, let the policy decide, move."""
        from masa import admin
        from masa.naming import short

        nodes = admin.node_list(self.host.settings)
        up = [n for n in nodes if n["status"] == "up"]
        hosts = {short(n["name"]): n["info"] or {} for n in up if n["type"] == "host"}
        allowed = self.settings.get("hosts")
        if allowed:
            hosts = {h: r for h, r in hosts.items() if h in allowed}
        where = {short(n["name"]): short(n["location"]) for n in up if n["type"] == "agent"}
        sources = self.settings["sources"]
        local: dict[str, float] = {}
        for s in sources:
            if where.get(s):
                local[where[s]] = local.get(where[s], 0.0) + 1.0 / len(sources)
        with self.lock:
            if gen != self._placement_gen:
                return  # the policy changed while the facts were gathered: not this round
            memo = self.state["placement_memo"]
            before = memo.get("last_move")
            target = decide(self.host.name, hosts, local, memo, time.time(),
                            Policy.from_settings(policy), float(self.settings["own_load"]))
            if not target:
                return
            memo["moves"] = memo.get("moves", 0) + 1
            self._self_move = (gen, target, before)
        self.move_to(target)

    def before_move(self, target: str) -> None:
        with self.lock:
            decided = self._self_move
            if decided is not None and decided[1] == target:
                self._self_move = None
                if decided[0] != self._placement_gen:  # placement changed or went off since
                    memo = self.state["placement_memo"]
                    memo["moves"] = max(0, memo.get("moves", 1) - 1)
                    if decided[2] is None:
                        memo.pop("last_move", None)
                    else:
                        memo["last_move"] = decided[2]
                    raise MoveFailed(f"{self.name}: placement changed since the move to {target} "
                                     "was decided; it stays")
        super().before_move(target)

    def after_move(self, source: str) -> None:
        super().after_move(source)
        if source != self.host.name:  # arrived (by itself or moved by hand): the streak was
            with self.lock:           # measured from the old host, the cooldown starts now
                restart(self.state.setdefault("placement_memo", {}), moved_at=time.time())
