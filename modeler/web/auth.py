"""Who may use a modeler's web page and HTTP/JSON interface: holders of a token.

The token is derived from the deployment's shared secret and the modeler's name, so
every operator who can reach the agents (and so holds the secret) can compute it, it
survives the agent moving to another host (the page moves too, to a new port), and
nothing new has to be distributed.  A browser presents it once in the URL
(``/?token=...``, printed by ``masa model page``) and then carries it as an HttpOnly,
SameSite=Strict cookie; scripts send ``Authorization: Bearer ...``.  Without TLS the
token crosses the wire readable, like the rest of the traffic: the page binds to
loopback unless told otherwise.

Browsers keep cookies per host name, not per port, so every modeler's page on one
machine sees the cookies of all the others: each modeler's cookie has its own name
(:func:`cookie_name`), and a valid token in the address wins over whatever cookie the
browser still holds (it replaces it).
"""

from __future__ import annotations

import hashlib
import hmac
import re

#: prefix of the cookie names; the rest names the modeler
COOKIE = "masa_token"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def web_token(secret: bytes, modeler: str) -> str:
    return hmac.new(secret, f"masa-web|{modeler}".encode(), hashlib.sha256).hexdigest()[:32]


def cookie_name(modeler: str) -> str:
    """The cookie that carries ``modeler``'s token: cookie-legal characters only, and
    distinct for distinct names (a name that had to be changed gets a short hash)."""
    safe = _UNSAFE.sub("_", modeler)
    if safe != modeler or not safe:
        safe += "-" + hashlib.sha256(modeler.encode()).hexdigest()[:8]
    return f"{COOKIE}_{safe}"


def bearer(headers) -> str:
    """The token of an ``Authorization: Bearer ...`` header ('' if none); the scheme
    is case-insensitive (RFC 7235)."""
    scheme, _, value = headers.get("Authorization", "").strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def valid(token: str, expected: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), expected.encode())


def page_url(base: str, secret: bytes, modeler: str) -> str:
    """The address an operator opens: the modeler's page with its token."""
    return f"{base}?token={web_token(secret, modeler)}"
