"""The web app's authentication and error answers, through Flask's test client (the
modeler behind it is a stub; the real pages on real processes are in
tests/e2e/test_modeler.py)."""

from __future__ import annotations

import math

import pytest

from masa.errors import BadRequest
from modeler.web import auth
from modeler.web.app import create_app

SECRET = b"test-secret"


def stub(interface: str, op: str, **kw):
    if op == "model" and kw.get("version") not in (None, 1):
        raise BadRequest(f"no version {kw['version']}")
    return {"op": op, **kw}


def app_for(name: str):
    return create_app(stub, lambda: [], auth.web_token(SECRET, name), name).test_client()


def test_cookie_names_are_per_modeler_and_cookie_legal():
    names = ["mod", "mod2", "a.b", "a_b", "a-b", "ä", "x;y=z", "a,b"]
    cookies = [auth.cookie_name(n) for n in names]
    assert len(set(cookies)) == len(names)
    assert auth.cookie_name("mod") == "masa_token_mod"
    legal = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert all(set(c) <= legal for c in cookies)


def test_a_valid_token_in_the_address_wins_over_a_stale_cookie():
    client = app_for("mod")
    tok = auth.web_token(SECRET, "mod")
    client.set_cookie(auth.cookie_name("mod"), "x" * 32)
    assert client.get("/api/status").status_code == 401  # the invalid cookie alone: refused
    answer = client.get(f"/?token={tok}")
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert client.get_cookie(auth.cookie_name("mod")).value == tok  # replaced
    assert client.get("/api/status").status_code == 200
    assert client.get("/").status_code == 200


def test_two_modelers_pages_in_one_browser():
    """Each page also sees the other's cookie (browsers do not separate cookies by
    port): copied across here; one real cookie jar in tests/e2e/test_modeler.py."""
    one, two = app_for("mod"), app_for("mod2")
    assert one.get(f"/?token={auth.web_token(SECRET, 'mod')}").status_code == 303
    two.set_cookie(auth.cookie_name("mod"), one.get_cookie(auth.cookie_name("mod")).value)
    assert two.get("/api/status").status_code == 401  # mod's cookie does not open mod2
    assert two.get(f"/?token={auth.web_token(SECRET, 'mod2')}").status_code == 303
    assert two.get("/api/status").status_code == 200
    one.set_cookie(auth.cookie_name("mod2"), two.get_cookie(auth.cookie_name("mod2")).value)
    assert one.get("/api/status").status_code == 200  # still open beside mod2's cookie


def test_token_in_the_address_only_opens_the_page_and_a_wrong_one_nothing():
    client = app_for("mod")
    tok = auth.web_token(SECRET, "mod")
    assert client.get(f"/api/status?token={tok}").status_code == 401
    assert client.get("/?token=" + "0" * 32).status_code == 401
    assert client.get("/?token=" + auth.web_token(SECRET, "mod2")).status_code == 401


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_bearer_scheme_is_case_insensitive(scheme):
    client = app_for("mod")
    answer = client.get("/api/status", headers={"Authorization": f"{scheme} {auth.web_token(SECRET, 'mod')}"})
    assert answer.status_code == 200 and answer.get_json() == {"op": "status"}


def test_other_schemes_and_wrong_tokens_are_refused():
    client = app_for("mod")
    tok = auth.web_token(SECRET, "mod")
    for header in (f"Basic {tok}", f"Bearer{tok}", tok, "Bearer " + auth.web_token(SECRET, "x"), "Bearer "):
        answer = client.get("/api/status", headers={"Authorization": header})
        assert answer.status_code == 401 and "token" in answer.get_json()["error"], header


def test_api_errors_are_json():
    client = app_for("mod")
    bearer = {"Authorization": f"Bearer {auth.web_token(SECRET, 'mod')}"}
    missing = client.get("/api/nothing", headers=bearer)
    assert missing.status_code == 404 and missing.is_json and "Not Found" in missing.get_json()["error"]
    assert client.get("/api", headers=bearer).is_json
    wrong = client.delete("/api/model", headers=bearer)
    assert wrong.status_code == 405 and wrong.is_json and "GET" in wrong.headers["Allow"]
    get_run = client.get("/api/run", headers=bearer)
    assert get_run.status_code == 405 and get_run.is_json
    assert client.get("/api/nothing").status_code == 401  # unauthenticated: no route map
    bad = client.get("/api/model?version=abc", headers=bearer)
    assert bad.status_code == 400 and bad.get_json() == {"error": "version must be an integer"}
    bad = client.get("/api/dependencies?object=a&min_confidence=x", headers=bearer)
    assert bad.get_json() == {"error": "min_confidence must be a number"}
    assert client.get("/api/model?version=7", headers=bearer).get_json() == {"error": "no version 7"}


def test_a_version_beyond_64_bits_is_no_version():
    client = app_for("mod")
    bearer = {"Authorization": f"Bearer {auth.web_token(SECRET, 'mod')}"}
    for path in ("/api/model?version=", "/api/diff?old=1&new=", "/api/diff?old=", "/api/layout?version="):
        for huge in (2**64, 10**30, -(2**63) - 1):
            answer = client.get(f"{path}{huge}", headers=bearer)
            assert answer.status_code == 400 and f"no version {huge}" in answer.get_json()["error"], path


def test_answers_are_standard_json_without_nan_or_infinity():
    """A source may serve a non-finite sample: the plots carry it as null, never as
    Python's ``Infinity``, which a browser's JSON parser refuses (the whole answer lost)."""
    import json

    def odd(interface: str, op: str, **kw):
        return {"x": {"t": [1.0, 2.0, 3.0], "v": [math.inf, -math.inf, math.nan]}, "n": (1, math.nan)}

    client = create_app(odd, lambda: [], None, "mod").test_client()
    body = client.get("/api/activity").get_data(as_text=True)
    strict = json.loads(body, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert strict == {"x": {"t": [1.0, 2.0, 3.0], "v": [None, None, None]}, "n": [1, None]}


def test_every_string_put_into_the_page_as_markup_is_escaped():
    """The tables are built as HTML from the node list and the versions, whose strings
    (host domains, agent names, locations, sources) come from whoever runs a host: each
    ``${...}`` in such a template must go through ``esc`` (the browser test checks ``esc``)."""
    import re

    from modeler.web.page import PAGE

    templates = re.findall(r"`([^`]*<[a-z][^`]*)`", PAGE)  # template literals that build markup
    assert len(templates) >= 3
    for t in templates:
        for expr in re.findall(r"\$\{(.*?)\}", t):
            assert expr.startswith("esc("), (expr, t)
