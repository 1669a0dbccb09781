"""The agent: a named piece of state plus a two-part interface, runnable on any host.

Weak mobility: what travels is the kind's registered name and ``self.state`` (a plain,
msgpack-serializable dict); the code must already be installed on the target.  Anything
that cannot travel (threads, sockets, open files) is made in :meth:`Agent.on_start` and
released in :meth:`Agent.before_move` / :meth:`Agent.on_stop`.

Operations are methods marked :func:`query` (run-time data, safe to repeat) or
:func:`configure` (set up, reconfigure, delegate).  Keeping the two apart lets the host
checkpoint state after every configuration change and lets mediators forward queries
without understanding them.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from masa.errors import BadRequest, brief
from masa.naming import check_name

if TYPE_CHECKING:
    from masa.config import Settings
    from masa.ref import AgentRef

QUERY, CONFIGURE = "query", "configure"

log = logging.getLogger("masa.agent")


def query(fn: Callable) -> Callable:
    """Mark a method as part of the agent's query interface."""
    fn._masa_interface = QUERY
    return fn


def configure(fn: Callable) -> Callable:
    """Mark a method as part of the agent's configuration interface."""
    fn._masa_interface = CONFIGURE
    return fn


class HostContext:
    """What an agent may ask of the host it currently runs on (set by the host)."""

    name: str = ""
    domain: str = ""
    state_dir: Path = Path(".")
    settings: Settings | None = None

    def ref(self, name: str) -> AgentRef:  # pragma: no cover - replaced by the host
        raise RuntimeError("agent is not running on a host")

    def request_move(self, agent: Agent, target: str) -> None:  # pragma: no cover
        raise RuntimeError("agent is not running on a host")

    def schedule(self, agent: Agent, name: str, seconds: float, fn: Callable) -> None:  # pragma: no cover
        raise RuntimeError("agent is not running on a host")

    def checkpoint(self, agent: Agent) -> None:  # pragma: no cover
        pass


class Agent:
    """Base class of every agent kind.  Subclasses add ``@query``/``@configure`` methods."""

    kind: ClassVar[str] = ""
    #: operations by interface, filled in for each subclass
    _ops: ClassVar[dict[str, dict[str, str]]] = {QUERY: {}, CONFIGURE: {}}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ops: dict[str, dict[str, str]] = {QUERY: {}, CONFIGURE: {}}
        for klass in reversed(cls.__mro__):
            for attr, value in vars(klass).items():
                interface = getattr(value, "_masa_interface", None)
                if interface:
                    ops[interface][attr] = attr
        cls._ops = ops

    def __init__(self, name: str, domain: str = "", state: dict | None = None) -> None:
        self.name = name
        self.domain = domain
        self.state: dict = copy.deepcopy(state) if state else {"settings": {}}
        self.state.setdefault("settings", {})
        self.host: HostContext = HostContext()
        self.lock = threading.RLock()  # guards self.state between handler threads
        # Kept by the host under ``lock``: configure operations in flight (their changes
        # may be half applied, so no checkpoint is taken) and whether one was asked for.
        self.configuring = 0
        self.checkpoint_due = False
        # One configure operation at a time: each is all or nothing against a snapshot of
        # the state taken before it, so a second one running meanwhile would see its own
        # acknowledged changes rolled back with the first one's failure.
        self.configure_lock = threading.Lock()
        self.created = time.time()

    # -- lifecycle hooks (override as needed) --------------------------------------------

    def setup(self, **settings: Any) -> None:
        """Apply the first settings.  Default: store them; subclasses validate here."""
        self.state["settings"].update(settings)

    def on_start(self) -> None:
        """Called whenever the agent starts running on a host (create, arrival, restart)."""

    def on_stop(self) -> None:
        """Called when the agent stops on this host for good (terminate, after moving away)."""

    def on_suspend(self) -> None:
        pass

    def on_resume(self) -> None:
        pass

    def before_move(self, target: str) -> None:
        """Make ``self.state`` complete and release local resources before leaving."""

    def after_move(self, source: str) -> None:
        """Called where the agent runs after a move attempt (``source`` == host if it failed)."""

    def on_reconfigure(self, changed: dict) -> None:
        """React to new settings at run time."""

    # -- services for subclasses ---------------------------------------------------------

    @property
    def settings(self) -> dict:
        return self.state["settings"]

    def every(self, seconds: float, fn: Callable[[], Any], name: str | None = None) -> None:
        """Run ``fn`` periodically while the agent runs; exceptions are logged, not fatal.
        The host refuses a period that is not a positive number and keeps at least its tick."""
        self.host.schedule(self, name or fn.__name__, seconds, fn)

    def ref(self, name: str) -> AgentRef:
        """A reference to another agent by name; it follows that agent when it moves."""
        return self.host.ref(name)

    def move_to(self, host: str) -> None:
        """Ask to move to ``host``; happens after the current operation returns."""
        self.host.request_move(self, host)

    def redirect(self, to: str) -> None:
        """Refuse the current query with "ask agent ``to`` from now on"; callers follow."""
        from masa.errors import Redirect

        raise Redirect(f"{self.name} delegates this to {to}", to)

    def snapshot(self) -> dict:
        with self.lock:
            return copy.deepcopy(self.state)

    def rollback(self, before: dict) -> None:
        """Put ``self.state`` back to ``before`` (a :meth:`snapshot`), after a configure
        operation that raised: what it changed is undone, settings and state alike.  In
        place, and only where the values differ, so helpers holding parts of the state
        (standing requests, subscriptions) keep working on the live dicts.  A change that
        another thread made to the same values meanwhile is undone with it, as by a restart
        from a checkpoint taken just before the operation.

        What the operation had already put into effect follows the state back: settings
        that differ are handed to ``on_reconfigure`` again (a meter's interval, a page's
        port) and delegated tasks are re-armed as they were, so the agent does not go on
        doing what its restored state says it does not."""
        with self.lock:
            live, old = self.state.get("settings", {}), before.get("settings", {})
            back = {k: v for k, v in old.items() if k in live and not _same(live[k], v)}
            rearm = self.state.get("delegated") != before.get("delegated")
            _restore(self.state, before)
            back = copy.deepcopy(back)
        self._reapply(back)
        if rearm:
            self.arm_delegated()

    def _reapply(self, back: dict) -> None:
        """Tell ``on_reconfigure`` the settings in force again after a refused change."""
        if not back:
            return
        try:
            self.on_reconfigure(back)
        except Exception:  # noqa: BLE001 - the old values were in force before
            log.warning("agent %s: re-applying settings after a refused change failed",
                        self.name, exc_info=True)

    # -- the built-in part of both interfaces -------------------------------------------

    @query
    def describe(self) -> dict:
        """Who and where the agent is, and which operations it offers."""
        return {
            "name": self.name, "kind": self.kind, "domain": self.domain,
            "host": self.host.name, "settings": copy.deepcopy(self.settings),
            "query": sorted(self._ops[QUERY]), "configure": sorted(self._ops[CONFIGURE]),
        }

    @query
    def ping(self) -> str:
        return self.name

    @configure
    def reconfigure(self, **settings: Any) -> dict:
        """Change settings at run time; returns the settings now in force.

        All or nothing: if ``on_reconfigure`` refuses the change (raises), the settings
        before it are put back and ``on_reconfigure`` is told of the old values again, so
        whatever it had already applied is undone too; then the error goes to the caller
        (the host also rolls back the rest of the state, see :meth:`rollback`)."""
        if not settings:
            raise BadRequest("reconfigure needs at least one setting")
        with self.lock:
            before = copy.deepcopy(self.settings)
            changed = {k: v for k, v in settings.items() if not _same(self.settings.get(k, _UNSET), v)}
            self.settings.update(settings)
        if changed:
            try:
                self.on_reconfigure(changed)
            except BaseException:
                with self.lock:
                    self.settings.clear()
                    self.settings.update(before)
                self._reapply({k: copy.deepcopy(before[k]) for k in changed if k in before})
                raise
        return copy.deepcopy(self.settings)

    @configure
    def delegate(self, task: str, op: str, every: float, to: str, deliver: str,
                 args: dict | None = None) -> dict:
        """Run own query ``op(**args)`` every ``every`` s; push each result to ``to.deliver``.

        Pushes are one-way, so a delegated task can feed an agent that queries back.  The
        task is part of the agent's state: it moves and restarts with the agent."""
        for what, value in (("task", task), ("op", op), ("deliver", deliver)):
            if not isinstance(value, str) or not 0 < len(value) <= 128:
                raise BadRequest(f"delegate: {what} is a name of 1-128 characters, not {brief(value)}")
        check_name(to, "delegate target agent")
        if args is not None and (not isinstance(args, dict) or not all(isinstance(k, str) for k in args)):
            raise BadRequest(f"delegate: args is a mapping of names to values, not {brief(args)}")
        if op not in self._ops[QUERY]:
            raise BadRequest(f"cannot delegate unknown query operation {op!r}")
        if not isinstance(every, (int, float)) or not 0.05 <= every <= 86400:
            raise BadRequest("every must be between 0.05 s and one day")
        spec = {"op": op, "every": float(every), "to": to, "deliver": deliver, "args": args or {}}
        with self.lock:
            self.state.setdefault("delegated", {})[task] = spec
        self._arm(task, spec)
        return spec

    @configure
    def undelegate(self, task: str) -> bool:
        with self.lock:
            return self.state.get("delegated", {}).pop(task, None) is not None

    @query
    def delegated(self) -> dict:
        return copy.deepcopy(self.state.get("delegated", {}))

    def arm_delegated(self) -> None:
        """Called by the host whenever the agent starts, so tasks survive moves."""
        for task, spec in list(self.state.get("delegated", {}).items()):
            self._arm(task, spec)

    def _arm(self, task: str, spec: dict) -> None:
        def run() -> None:
            if self.state.get("delegated", {}).get(task) is not spec:
                return  # undelegated or replaced since
            result = getattr(self, self._ops[QUERY][spec["op"]])(**spec["args"])
            self.ref(spec["to"]).push(spec["deliver"], task=task, source=self.name, result=result)

        self.host.schedule(self, f"delegated:{task}", spec["every"], run)

    @classmethod
    def operations(cls, interface: str) -> dict[str, str]:
        return cls._ops[interface]


_UNSET = object()


def _same(old: Any, new: Any) -> bool:
    """Equal and of one type: ``True == 1.0``, but a setting given as ``True`` where it was
    1.0 is a change that ``on_reconfigure`` must see (and may refuse)."""
    return old == new and type(old) is type(new)


def _restore(live: dict, before: dict) -> None:
    """Make ``live`` equal ``before`` in place: nested dicts are restored in place too,
    other values that differ are replaced by copies, keys added since are removed."""
    for key in [k for k in live if k not in before]:
        del live[key]
    for key, old in before.items():
        if key not in live:
            live[key] = copy.deepcopy(old)
        elif _same(live[key], old):
            continue
        elif isinstance(live[key], dict) and isinstance(old, dict):
            _restore(live[key], old)
        else:
            live[key] = copy.deepcopy(old)
