"""Who may use a modeler's web page and HTTP/JSON interface: holders of a token.

The token is derived from the deployment's shared secret and the modeler's name, so
every operator who can reach the agents (and so holds the secret) can compute it, it
survives the agent moving to another host (the page moves too, to a new port), and
nothing new has to be distributed.  A browser presents it once in the URL
(``/?token=...``, printed by ``masa model page``) and then carries it as an HttpOnly,
SameSite=Strict cookie; scripts send ``Authorization: Bearer ...``.  Without TLS the
token crosses the wire readable, like the rest of the traffic: the page binds to
loopback unless told otherwise.
"""

from __future__ import annotations

import hashlib
import hmac

COOKIE = "masa_token"


def web_token(secret: bytes, modeler: str) -> str:
    return hmac.new(secret, f"masa-web|{modeler}".encode(), hashlib.sha256).hexdigest()[:32]


def presented(headers, cookies, args) -> str:
    """The token a request carries, wherever it put it ('' if none)."""
    auth = headers.get("Authorization", "")
    if auth.startswith("Bearer "):
        return auth[len("Bearer "):].strip()
    return cookies.get(COOKIE) or args.get("token") or ""


def valid(token: str, expected: str) -> bool:
    return bool(token) and hmac.compare_digest(token.encode(), expected.encode())


def page_url(base: str, secret: bytes, modeler: str) -> str:
    """The address an operator opens: the modeler's page with its token."""
    return f"{base}?token={web_token(secret, modeler)}"
