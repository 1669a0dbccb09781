"""Errors that cross the wire.

Pyro5 only rebuilds exception classes it knows, so every masa error is registered with
its serializers here; a caller then catches ``AgentMoved`` or ``KindNotAllowed`` as
itself rather than as an opaque remote error.
"""

from __future__ import annotations

from Pyro5.serializers import SerializerBase


class MasaError(Exception):
    """Base of every error masa raises on purpose."""


class AgentNotFound(MasaError):
    """No agent or host of that name could be found before the deadline."""


class AgentExists(MasaError):
    """An agent of that name is already running."""


class UnknownKind(MasaError):
    """The agent kind is not installed on this host."""


class KindNotAllowed(MasaError):
    """The host's allow-list does not admit this agent kind."""


class UnknownOperation(MasaError):
    """The agent has no query or configuration operation of that name."""


class BadRequest(MasaError):
    """Malformed arguments to an operation."""


class NotSubscribed(BadRequest):
    """A subscriber holds no standing request of that id from the delivering source (never
    opened, quit, or re-opened at another source): the source drops the request rather
    than retrying it forever."""


class PayloadTooLarge(MasaError):
    """A message beyond the configured size limit."""


class AgentMoved(MasaError):
    """The agent now lives elsewhere; ``args[1]`` is its new URI (callers retry there)."""


class Redirect(MasaError):
    """"Ask agent ``args[1]`` from now on": callers switch to that agent and remember it."""


class AgentNotHere(MasaError):
    """The agent is not (or no longer) on this host; callers look its name up again."""


class AgentSuspended(MasaError):
    """The agent is suspended and answers no queries until resumed."""


class QueryTimeout(MasaError):
    """An operation exceeded its deadline."""


class OutcomeUnknown(MasaError):
    """A configure call whose connection was lost after its request was sent: the
    operation may or may not have taken effect, and it is not sent again by itself (it
    could run twice).  Ask the agent (a query) before calling it again."""


class MoveFailed(MasaError):
    """A migration did not complete; the agent is still running at its source."""


class AuthenticationError(MasaError):
    """The peer did not prove knowledge of the shared secret."""


class TopologyError(MasaError):
    """An invalid topology file."""


#: longest error text that goes over the wire: an error that quotes its input (a number
#: that does not parse, an unknown operation's name) must not outgrow a message, or Pyro5
#: drops the connection and the caller, taking that for a dead host, calls again
MAX_ERROR_TEXT = 2000


def cut(text: str, limit: int = MAX_ERROR_TEXT) -> str:
    """``text``, or its start and how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def brief(value: object) -> str:
    """A value in an error message: its type, and its text cut short."""
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


WIRE_ERRORS = (
    MasaError, AgentNotFound, AgentExists, UnknownKind, KindNotAllowed, UnknownOperation,
    BadRequest, NotSubscribed, PayloadTooLarge, AgentMoved, Redirect, AgentNotHere, AgentSuspended, QueryTimeout,
    OutcomeUnknown, MoveFailed, AuthenticationError, TopologyError,
)


def _rebuild(classname: str, data: dict) -> Exception:
    cls = _BY_NAME[classname]
    return SerializerBase.make_exception(cls, data)


_BY_NAME = {f"{cls.__module__}.{cls.__name__}": cls for cls in WIRE_ERRORS}
for _name in _BY_NAME:
    SerializerBase.register_dict_to_class(_name, _rebuild)
