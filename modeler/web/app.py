"""The Flask app: the dependency-model interface over HTTP/JSON, and the supervision page.

Every route calls the modeler's own Pyro5 operations (``call``), so a tool outside
Python gets exactly the answer a Python client gets, and an answer during a move or a
restart follows the agent like any other call.  Object names contain slashes
(``h1/proc/nginx``), hence query parameters rather than path segments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, jsonify, redirect, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException

from masa.errors import BadRequest, MasaError
from modeler.interface import check_confidence
from modeler.web import auth
from modeler.web.page import PAGE

Call = Callable[..., Any]  # call(interface, op, **kwargs)
CONTROL_HEADER = "X-Masa-Control"
MIMETYPES = {"json": "application/json", "graphml": "application/xml", "dot": "text/vnd.graphviz"}
_KINDS = {int: "an integer", float: "a number"}


def _number(name: str, kind: type = float) -> Any:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    try:
        return kind(raw)
    except ValueError:
        raise BadRequest(f"{name} must be {_KINDS.get(kind, kind.__name__)}") from None


def _version(name: str) -> int | None:
    """A version number parameter: versions are signed 64-bit integers, and a number
    beyond that names none (nor would it pass the wire to the modeler)."""
    value = _number(name, int)
    if value is not None and not -(2**63) <= value < 2**63:
        raise BadRequest(f"{name}: there is no version {value}")
    return value


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities as None: JSON has no such numbers, and Python's
    ``Infinity`` makes the whole answer unreadable to a strict parser (a browser's)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class FiniteJSON(DefaultJSONProvider):
    """Every JSON answer is standard JSON (see :func:`_finite`)."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        try:  # nearly always finite: the answer is walked only when it is not
            return super().dumps(obj, allow_nan=False, **kwargs)
        except ValueError:
            return super().dumps(_finite(obj), allow_nan=False, **kwargs)


def _required(name: str) -> str:
    value = request.args.get(name)
    if not value:
        raise BadRequest(f"missing query parameter {name!r}")
    return value


def create_app(call: Call, nodes: Callable[[], list[dict]], token: str | None, modeler: str) -> Flask:
    """``call("query"|"configure", op, **kw)`` reaches the modeler; ``nodes()`` is the
    deployment's node list (hosts and agents with their locations); ``token`` is what
    every request must present (:mod:`modeler.web.auth`), ``None`` only for tests of
    the routes themselves; ``modeler`` names the modeler (its cookie is its own, so the
    pages of several modelers open in one browser do not overwrite each other's)."""
    app = Flask("masa-modeler")
    app.json = FiniteJSON(app)
    cookie = auth.cookie_name(modeler)

    @app.before_request
    def authenticate() -> Response | tuple[Response, int] | None:
        if token is None:
            return None
        # The token in the address is taken on the page only (the address `masa model
        # page` prints), and there it wins over any cookie: a cookie left from an
        # earlier secret must not lock the operator out of a correct address.
        if request.path == "/" and auth.valid(request.args.get("token", ""), token):
            # Trade it for a cookie, and drop it from the address bar and the history.
            answer = redirect("/", code=303)
            answer.set_cookie(cookie, token, httponly=True, samesite="Strict")
            return answer
        if auth.valid(auth.bearer(request.headers), token) or auth.valid(request.cookies.get(cookie, ""), token):
            return None
        return jsonify(error="this modeler's page needs its token: open the address "
                             "`masa model page MODELER` prints, or send 'Authorization: Bearer TOKEN'"), 401

    def q(op: str, **kw: Any) -> Any:
        return call("query", op, **{k: v for k, v in kw.items() if v is not None})

    def conf() -> float:
        value = _number("min_confidence")
        return 0.0 if value is None else check_confidence(value)  # nan, inf, > 1: refused

    @app.errorhandler(BadRequest)
    def bad(exc: BadRequest) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.errorhandler(MasaError)
    def failed(exc: MasaError) -> tuple[Response, int]:
        return jsonify(error=f"{type(exc).__name__}: {exc}"), 502

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response | HTTPException:
        """Under /api, errors (unknown route, wrong method, a crash) answer in JSON like
        every other answer there; the page keeps Flask's own."""
        if not (request.path == "/api" or request.path.startswith("/api/")):
            return exc
        answer = jsonify(error=f"{exc.name}: {exc.description}")
        answer.status_code = exc.code or 500
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                answer.headers[key] = value  # e.g. Allow of a 405
        return answer

    @app.get("/")
    def page() -> Response:
        return Response(PAGE, mimetype="text/html")

    @app.get("/api/status")
    def status() -> Response:
        return jsonify(q("status"))

    @app.get("/api/model")
    def model() -> Response:
        return jsonify(q("model", version=_version("version")))

    @app.get("/api/dependencies")
    def dependencies() -> Response:
        return jsonify(q("dependencies", object=_required("object"), min_confidence=conf(),
                         version=_version("version")))

    @app.get("/api/dependants")
    def dependants() -> Response:
        return jsonify(q("dependants", object=_required("object"), min_confidence=conf(),
                         version=_version("version")))

    @app.get("/api/impact")
    def impact() -> Response:
        return jsonify(q("impact", object=_required("object"), min_confidence=conf(),
                         version=_version("version")))

    @app.get("/api/path")
    def path() -> Response:
        return jsonify(q("path", source=_required("source"), target=_required("target"),
                         min_confidence=conf(), version=_version("version")))

    @app.get("/api/diff")
    def diff() -> Response:
        old = _version("old")
        if old is None:
            raise BadRequest("missing query parameter 'old'")
        return jsonify(q("diff", old=old, new=_version("new")))

    @app.get("/api/export")
    def export() -> Response:
        fmt = request.args.get("format", "json")
        text = q("export", format=fmt, version=_version("version"))
        return Response(text, mimetype=MIMETYPES.get(fmt, "text/plain"))

    @app.get("/api/versions")
    def versions() -> Response:
        return jsonify(q("versions_list"))

    @app.get("/api/layout")
    def layout() -> Response:
        return jsonify(q("layout", version=_version("version")))

    @app.get("/api/activity")
    def activity() -> Response:
        objects = request.args.getlist("object") or None
        return jsonify(q("activity", objects=objects))

    @app.get("/api/nodes")
    def node_list() -> Response:
        return jsonify(nodes())

    @app.post("/api/<any(run, start, stop):action>")
    def control(action: str) -> Response | tuple[Response, int]:
        # A custom header cannot be sent cross-origin without a CORS preflight this app
        # never grants, so another web site open in the operator's browser cannot
        # drive the modeler (CSRF); the page and scripts send it.
        if request.headers.get(CONTROL_HEADER) != "1":
            return jsonify(error=f"control requests need the header {CONTROL_HEADER}: 1"), 403
        return jsonify(call("configure", action))

    return app
