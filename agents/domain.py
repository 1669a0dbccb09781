"""The domain agent: a whole domain (or distributed application) as one object.

Towards the layer above it behaves like a mediator, but its catalog holds one collective
object per unit (``B/cpu``, ``B/bytes``): the activity of all member objects joined
exactly (:mod:`agents.domain_join`: intervals united, rates summed where they overlap,
gaps left out).  Asked by name or glob (``report(objects=["b1/*"])``, ``members()``) it
also hands out the member data it joined, so a detailed model of the domain and a model
in which the domain is one object share one collection.

A collective segment is final only when every live member's samples have arrived past
it, so the stream up runs at the pace of the slowest live member (``max_lag`` bounds
how long a silent member is waited for).  A sample arriving later than that is kept and
shows in reports, but the stream has passed it.

Connection evidence goes up the same way: a member's connections and listening endpoints
are also the collective object's, so a caller outside resolves an endpoint inside the
domain to ``LABEL/cpu``; the collective object counts as watched only when every member
of its unit is.
"""

from __future__ import annotations

from typing import Any

from agents import preprocess
from agents.domain_join import join
from agents.mediator import MediatorAgent
from agents.standing import matches
from masa import checks
from masa.activity import ActivityError, Series, check_label
from masa.agent import query
from masa.errors import BadRequest

SLUGS = {"cpu": "cpu", "B/s": "bytes", "req/s": "requests"}


def _check_label(label: Any) -> None:
    try:
        check_label(label)
    except ActivityError as exc:
        raise BadRequest(str(exc)) from None


def slug(unit: str) -> str:
    """One path segment for a unit (units such as ``B/s`` contain slashes)."""
    return SLUGS.get(unit) or (unit.replace("/", "_per_") if unit else "activity")


class DomainAgent(MediatorAgent):
    """Settings as a mediator's, plus ``label`` (collective objects are ``LABEL/UNIT``;
    default: the domain's name) and ``members`` (globs of the objects to join; default
    all: list host-level objects only if per-process ones would count twice)."""

    defaults = {"label": None, "members": None}
    joins = True

    def setup(self, **settings: Any) -> None:
        checks.names(settings.get("members"), "members")
        if settings.get("label") is not None:  # None: the domain's name
            _check_label(settings["label"])
        super().setup(**settings)
        if not self.settings.get("label"):
            self.settings["label"] = self.domain or self.name

    def on_reconfigure(self, changed: dict) -> None:
        """New settings are checked as :meth:`setup` checks the first ones (``max_lag``,
        ``sources``, ``members``, ``label``, ...); a refused change raises ``BadRequest``
        and the platform puts the settings before it back."""
        if "members" in changed:
            checks.names(changed["members"], "members")
        if "label" in changed:
            _check_label(changed["label"])
        super().on_reconfigure(changed)  # the mediator's settings
        if "members" in changed:
            self._members_changed()

    def _members_changed(self) -> None:
        """The streams below ask for the members (``_down_objects``), so a change of
        ``members`` is sent to the sources at once (by the resubscribe task) with the
        positions reached, which the sources keep: a new member's samples flow from there
        on, a dropped one's stop.  A dropped member is no longer waited for by the horizon
        (its last sample end would hold the stream up for ``max_lag``), a new one is
        waited for from now (its sample running now belongs to what comes next)."""
        members = self._down_objects(None)
        with self._arrival, self.lock:
            for sub in self.inbox.subs.values():
                sub["objects"] = None if members is None else list(members)
            last = self.state["last_end"]
            for obj in [o for o in last if not self._is_member(o)]:
                del last[obj]
            self._unsent |= set(self.inbox.subs)
        self._anchor(self._catalog)
        with self._arrival:
            self.record([], complete_until=self._horizon())  # a dropped member no longer holds it

    @property
    def label(self) -> str:
        return self.settings["label"]

    def _needs_object_horizon(self) -> bool:
        return True

    def _pushdown(self, predicates: list[str] | None) -> list[str]:
        return []  # predicates speak of collective values, which do not exist below

    def _down_objects(self, objects: list[str] | None) -> list[str] | None:
        return self.settings.get("members")

    def _up_objects(self, objects: list[str] | None) -> list[str] | None:
        return objects if objects is not None else [f"{self.label}/*"]

    def _is_member(self, obj: str) -> bool:
        return matches(self.settings.get("members"), obj)

    def _resolve(self, objects: list[str] | None) -> list[str]:
        return [n for n in self._below() if self._is_member(n)]

    def _collective_steps(self) -> list[dict]:
        return list(self.settings["steps"])

    def _outgoing(self, raw: dict[str, Series]) -> list[Series]:
        by_unit: dict[str, list[Series]] = {}
        members = []
        for obj, s in raw.items():
            if self._is_member(obj):
                by_unit.setdefault(s.unit, []).append(s)
                members.append(preprocess.apply(self._steps_for(obj), s))
        steps = self._collective_steps()
        collective = [preprocess.apply(steps, join(group, f"{self.label}/{slug(unit)}", unit))
                      for unit, group in sorted(by_unit.items())]
        return collective + members

    def _evidence_up(self, merged: dict) -> dict:
        below = self._below()

        def collective(obj: str) -> str | None:
            entry = below.get(obj)
            return f"{self.label}/{slug(entry['unit'])}" if entry is not None else None

        edges: dict[tuple[str, str], float] = {}
        for obj, ep, n in merged["edges"]:
            if self._is_member(obj):
                edges[(obj, ep)] = n
                if (c := collective(obj)) is not None:
                    edges[(c, ep)] = edges.get((c, ep), 0.0) + n
        listening = set()
        for ep, obj in merged["listening"]:
            if self._is_member(obj):
                listening.add((ep, obj))
                if (c := collective(obj)) is not None:
                    listening.add((ep, c))
        watched = {o for o in merged["watched"] if self._is_member(o)}
        by_collective: dict[str, list[str]] = {}
        for obj in below:
            if self._is_member(obj) and (c := collective(obj)) is not None:
                by_collective.setdefault(c, []).append(obj)
        watched |= {c for c, objs in by_collective.items() if all(o in watched for o in objs)}
        return {"edges": [[o, ep, n] for (o, ep), n in sorted(edges.items())],
                "listening": [list(e) for e in sorted(listening)],
                "watched": sorted(watched), "until": merged["until"]}

    @query
    def catalog(self) -> list[dict]:
        """One object per unit: the domain as one object."""
        self._maybe_redirect()
        units: dict[str, list[str]] = {}
        for obj, entry in sorted(self._below().items()):
            if self._is_member(obj):
                units.setdefault(entry["unit"], []).append(obj)
        tags = [preprocess.tag(s) for s in self._collective_steps()]
        return [{"object": f"{self.label}/{slug(u)}", "unit": u, "members": len(objs), "applied": tags}
                for u, objs in sorted(units.items())]

    @query
    def members(self) -> list[dict]:
        """The member objects behind the collective ones (ask for them by name or glob)."""
        self._maybe_redirect()
        out = []
        for obj, entry in sorted(self._below().items()):
            if self._is_member(obj):
                mine = [preprocess.tag(s) for s in self._steps_for(obj)]
                out.append({"object": obj, "unit": entry["unit"], "applied": entry["applied"] + mine,
                            "collective": f"{self.label}/{slug(entry['unit'])}"})
        return out
