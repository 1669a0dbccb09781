"""Application rules: which processes together make up one application.

An application (``hostA/app/web``) is what the modeler reasons about; its processes come
and go (workers forked, PIDs reused), so grouping by a rule is what gives a stable
object.  Rules are tried in order and the first match wins, so each process counts in
at most one application and application CPU sums never double-count.

Text form (``--group``)::

    web=name:nginx,cmdline:gunicorn.*app:web;db=user:postgres;ssh=unit:ssh.service

``name`` matches the process name (``comm``) or the basename of ``argv[0]``
(full match, a regular expression); ``cmdline`` searches the command line;
``cgroup`` searches the cgroup path; ``unit`` is the systemd unit in the cgroup path
(full match); ``user`` is a user name or numeric uid.
"""

from __future__ import annotations

import os
import pwd
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from probes import procread

KINDS = ("name", "cmdline", "cgroup", "unit", "user")
_UNIT = re.compile(r"([^/\n]+\.(?:service|scope|slice|socket))(?:/|$)", re.M)


class RuleError(ValueError):
    """A rule that cannot be parsed; the message shows the offending part."""


@dataclass(frozen=True)
class Rule:
    """One application: it matches a process if any of its criteria does."""

    app: str
    criteria: tuple[tuple[str, str], ...]
    _compiled: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.app or "/" in self.app:
            raise RuleError(f"application name {self.app!r} must be non-empty and contain no '/'")
        compiled = []
        for kind, pattern in self.criteria:
            if kind not in KINDS:
                raise RuleError(f"{self.app}: unknown kind {kind!r} (use one of {', '.join(KINDS)})")
            if kind == "user":
                compiled.append((kind, pattern))
                continue
            try:
                compiled.append((kind, re.compile(pattern)))
            except re.error as exc:
                raise RuleError(f"{self.app}: bad pattern {pattern!r}: {exc}") from None
        object.__setattr__(self, "_compiled", tuple(compiled))

    @property
    def needs(self) -> frozenset[str]:
        """Which process facts this rule reads (cmdline and cgroup cost a file read each)."""
        return frozenset(k for k, _ in self.criteria)

    def matches(self, facts: ProcessFacts) -> bool:
        for kind, pat in self._compiled:
            if kind == "name":
                if pat.fullmatch(facts.name) or (facts.exe_name and pat.fullmatch(facts.exe_name)):
                    return True
            elif kind == "cmdline":
                if pat.search(facts.cmdline):
                    return True
            elif kind == "cgroup":
                if pat.search(facts.cgroup):
                    return True
            elif kind == "unit":
                if any(pat.fullmatch(u) for u in facts.units):
                    return True
            elif kind == "user" and facts.uid is not None and pat in (str(facts.uid), facts.user):
                return True
        return False


@dataclass
class ProcessFacts:
    """What the rules may look at; fetched lazily because most rules need only the name."""

    pid: int
    name: str
    proc: str = procread.PROC
    _cmdline: str | None = None
    _cgroup: str | None = None
    _uid: int | None | bool = False

    @property
    def cmdline(self) -> str:
        if self._cmdline is None:
            self._cmdline = procread.read_cmdline(self.pid, self.proc)
        return self._cmdline

    @property
    def exe_name(self) -> str:
        argv0 = self.cmdline.split(" ", 1)[0]
        return os.path.basename(argv0)

    @property
    def cgroup(self) -> str:
        if self._cgroup is None:
            self._cgroup = procread.read_cgroup(self.pid, self.proc)
        return self._cgroup

    @property
    def units(self) -> list[str]:
        return _UNIT.findall(self.cgroup)

    @property
    def uid(self) -> int | None:
        if self._uid is False:
            self._uid = procread.read_uid(self.pid, self.proc)
        return self._uid  # type: ignore[return-value]

    @property
    def user(self) -> str:
        return _user_name(self.uid) if self.uid is not None else ""


@lru_cache(maxsize=1024)
def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def parse_rules(text: str) -> list[Rule]:
    """Parse the text form (see module doc); ``@FILE`` reads it from a file, where
    newlines separate rules as ``;`` does and ``#`` starts a comment."""
    text = text.strip()
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise RuleError(f"cannot read rules file {text[1:]}: {exc.strerror}") from None
    rules = []
    for chunk in re.split(r"[;\n]", text):
        chunk = chunk.split("#", 1)[0].strip()
        if not chunk:
            continue
        app, eq, body = chunk.partition("=")
        if not eq or not body.strip():
            raise RuleError(f"rule {chunk!r} must look like APP=KIND:PATTERN[,KIND:PATTERN...]")
        criteria = []
        for part in body.split(","):
            kind, colon, pattern = part.strip().partition(":")
            if not colon or not pattern:
                raise RuleError(f"rule {app.strip()}: criterion {part.strip()!r} must be KIND:PATTERN")
            criteria.append((kind.strip(), pattern))
        rules.append(Rule(app.strip(), tuple(criteria)))
    names = [r.app for r in rules]
    if len(set(names)) != len(names):
        raise RuleError(f"duplicate application names in rules: {', '.join(names)}")
    return rules


def classify(rules: list[Rule], facts: ProcessFacts) -> str | None:
    """Name of the first application whose rule matches, or None."""
    for rule in rules:
        if rule.matches(facts):
            return rule.app
    return None
