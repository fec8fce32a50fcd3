"""The management API: routes, RFC 9457 problem objects, authorization, policy, pagination."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt  # PyJWT, only to read token claims
import pytest
from flask import Flask, abort, request, session
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import func, select
from werkzeug.test import TestResponse

import flask_m2m.client_fields
import flask_m2m.lifecycle
from flask_m2m.extension import get_state
from flask_m2m.pagination import encode_cursor

PROBLEM = "application/problem+json"
Factory = Callable[..., Flask]


def admin_headers(app: Flask, **kwargs: Any) -> dict[str, str]:
    """Bearer headers of a fresh client holding ``m2m:admin``."""
    admin = register(app, "m2m:admin", **kwargs)
    return bearer(fetch_token(app.test_client(), admin))


def create(c: FlaskClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    """``POST /m2m/clients`` (a client named svc allowed ``read`` unless told); must be 201."""
    body = {"name": "svc", "scopes": ["read"], **body}
    response = c.post("/m2m/clients", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    data: dict[str, Any] = response.get_json()
    return data


def counts(app: Flask) -> tuple[int, ...]:
    """Rows of clients, secrets and audit events: a failed call must change none."""
    with app.app_context():
        state = get_state(app)
        tables = (state.models.client, state.models.client_secret, state.models.audit_event)
        return tuple(state.db.session.scalar(select(func.count()).select_from(t)) or 0
                     for t in tables)


def assert_problem(response: TestResponse, status: int, *fields: str) -> dict[str, Any]:
    """An RFC 9457 problem object with ``status`` whose ``errors`` name each of ``fields``."""
    assert response.status_code == status, response.get_data(as_text=True)[:500]
    assert response.mimetype == PROBLEM
    body: dict[str, Any] = response.get_json()
    assert isinstance(body["type"], str) and isinstance(body["title"], str)
    assert body["status"] == status and isinstance(body["detail"], str)
    for field in fields:
        assert field in body["errors"], body
    return body


def listed(c: FlaskClient, headers: dict[str, str], query: str = "") -> list[str]:
    response = c.get(f"/m2m/clients?limit=200&{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return [item["client_id"] for item in response.get_json()["clients"]]


def token_response(c: FlaskClient, made: dict[str, Any]) -> TestResponse:
    return c.post("/m2m/token", data={"grant_type": "client_credentials"},
                  headers=basic_auth(made["client_id"], made["client_secret"]))


def assert_locked_out(c: FlaskClient, made: dict[str, Any], token: str) -> None:
    """The client's token is refused (RFC 6750 §3.1 invalid_token) and its own token requests
    get RFC 6749 §5.2 invalid_client."""
    refused = c.get("/api/whoami", headers=bearer(token))
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]
    denied = token_response(c, made)
    assert denied.status_code == 401 and denied.get_json()["error"] == "invalid_client"


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    return admin_headers(app)


# -- routes ------------------------------------------------------------------------------------
def test_create_list_get(app: Flask, client: FlaskClient, headers: dict[str, str]) -> None:
    """POST /clients is 201 with the client and a secret that works at the RFC 6749 §4.4 token
    endpoint; GET /clients lists it; GET /clients/<id> shows it."""
    data = create(client, headers, name="billing", scopes=["read", "write"],
                  metadata={"team": "ops"}, expires_in_days=10)
    for key in ("client_id", "client_secret", "secret_id", "created_at", "updated_at"):
        assert isinstance(data[key], str) and data[key]
    assert (data["name"], data["scopes"], data["metadata"], data["disabled"]) == (
        "billing", ["read", "write"], {"team": "ops"}, False)
    left = datetime.fromisoformat(data["expires_at"]) - datetime.now(UTC)
    assert timedelta(days=9) < left <= timedelta(days=10)
    token = fetch_token(client, data, "read write")
    whoami = client.get("/api/whoami", headers=bearer(token)).get_json()
    assert whoami == {"client_id": data["client_id"], "scopes": ["read", "write"]}
    with app.app_context():
        state = get_state(app)
        row = state.db.session.get(state.models.client, data["client_id"])
        assert (row.name, row.scope, row.client_metadata) == ("billing", "read write",
                                                              {"team": "ops"})
    page = client.get("/m2m/clients", headers=headers)
    assert page.status_code == 200 and page.mimetype == "application/json"
    assert page.get_json()["next_cursor"] is None and set(page.get_json()) == {"clients",
                                                                                "next_cursor"}
    assert data["client_id"] in [c["client_id"] for c in page.get_json()["clients"]]
    one = client.get(f"/m2m/clients/{data['client_id']}", headers=headers)
    assert one.status_code == 200
    shown, keys = one.get_json(), ("client_id", "name", "scopes", "metadata", "expires_at")
    assert {k: shown[k] for k in keys} == {k: data[k] for k in keys}


UPDATES = [
    ("name", "renamed", "renamed"), ("scopes", ["write", "read"], ["write", "read"]),
    ("disabled", True, True), ("metadata", {"team": "x", "n": 2}, {"team": "x", "n": 2}),
    ("expires_at", "2099-01-01T00:00:00Z", "2099-01-01T00:00:00+00:00"),
    ("rate_limit", "10/minute", "10/minute"), ("access_token_expires_in", 300, 300),
]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize(("field", "value", "expected"), UPDATES)
def test_update_applies_change(
    client: FlaskClient, headers: dict[str, str], method: str, field: str, value: Any,
    expected: Any,
) -> None:
    """PATCH (and PUT, accepted alike) is 200 with the client; only the given field changes."""
    path = f"/m2m/clients/{create(client, headers, metadata={'a': 1})['client_id']}"
    before = client.get(path, headers=headers).get_json()
    response = client.open(path, method=method, json={field: value}, headers=headers)
    assert response.status_code == 200, response.get_json()
    after = client.get(path, headers=headers).get_json()
    assert response.get_json() == after
    if field == "expires_at":
        assert datetime.fromisoformat(after[field]) == datetime.fromisoformat(expected)
    else:
        assert after[field] == expected
    same = set(before) - {field, "updated_at"}
    assert {k: after[k] for k in same} == {k: before[k] for k in same}


def test_delete(client: FlaskClient, headers: dict[str, str]) -> None:
    """DELETE is 204, then every /clients/<id> route is a 404 problem; the client's tokens are
    refused (RFC 6750 §3.1 invalid_token) and its secret gets RFC 6749 §5.2 invalid_client."""
    made = create(client, headers)
    path, token = f"/m2m/clients/{made['client_id']}", fetch_token(client, made)
    assert client.get("/api/whoami", headers=bearer(token)).status_code == 200
    response = client.delete(path, headers=headers)
    assert response.status_code == 204 and response.data == b""
    for method, suffix in (("GET", ""), ("PATCH", ""), ("PUT", ""), ("DELETE", ""),
                           ("POST", "/secret"), ("GET", "/secrets"), ("DELETE", "/secrets/x")):
        body: dict[str, Any] | None = {} if method in ("PATCH", "PUT", "POST") else None
        assert_problem(client.open(path + suffix, method=method, json=body, headers=headers), 404)
    assert_locked_out(client, made, token)
    assert made["client_id"] not in listed(client, headers)


def test_disable_and_enable(client: FlaskClient, headers: dict[str, str]) -> None:
    """Disabling revokes the client's tokens (RFC 6750 §3.1 invalid_token) and its token
    requests get RFC 6749 §5.2 invalid_client; re-enabling lets it get new tokens."""
    made = create(client, headers)
    path, old = f"/m2m/clients/{made['client_id']}", fetch_token(client, made)
    assert client.get("/api/whoami", headers=bearer(old)).status_code == 200
    assert client.patch(path, json={"disabled": True}, headers=headers).get_json()["disabled"]
    assert_locked_out(client, made, old)
    assert client.patch(path, json={"disabled": False}, headers=headers).status_code == 200
    assert client.get("/api/whoami", headers=bearer(fetch_token(client, made))).status_code == 200
    assert client.get("/api/whoami", headers=bearer(old)).status_code == 401
    events = client.get(f"{path}/events", headers=headers).get_json()["events"]
    assert [e["event"] for e in events][:2] == ["client_enabled", "client_disabled"]


def test_client_token_lifetime(client: FlaskClient, headers: dict[str, str]) -> None:
    """A client's access_token_expires_in sets its tokens' RFC 6749 §5.1 expires_in."""
    made = create(client, headers, access_token_expires_in=300)
    path = f"/m2m/clients/{made['client_id']}"

    def lifetime() -> tuple[int, int]:
        body = token_response(client, made).get_json()
        claims = jwt.decode(body["access_token"], options={"verify_signature": False})
        return body["expires_in"], claims["exp"] - claims["iat"]

    expires_in, span = lifetime()
    assert span == 300 and 299 <= expires_in <= 300
    client.patch(path, json={"access_token_expires_in": 120}, headers=headers)
    expires_in, span = lifetime()
    assert span == 120 and 119 <= expires_in <= 120
    client.patch(path, json={"access_token_expires_in": None}, headers=headers)
    assert lifetime()[1] == 3600


# -- problem objects ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT"])
def test_unreadable_json_and_wrong_media_type(
    app: Flask, client: FlaskClient, headers: dict[str, str], method: str
) -> None:
    """RFC 9457 problems: unreadable JSON is 400, another media type 415; nothing changes."""
    made = create(client, headers)
    url = "/m2m/clients" if method == "POST" else f"/m2m/clients/{made['client_id']}"
    before = counts(app)
    bad = client.open(url, method=method, data='{"name": ', headers=headers,
                      content_type="application/json")
    assert_problem(bad, 400)
    for ctype in ("application/x-www-form-urlencoded", "text/plain", None):
        wrong = client.open(url, method=method, data='{"name": "x"}', headers=headers,
                            content_type=ctype)
        assert_problem(wrong, 415)
    assert counts(app) == before


CREATE_ERRORS = [
    ({"name": 5}, "name"), ({"name": "a\x00b"}, "name"), ({"name": "line\nbreak"}, "name"),
    ({"scopes": "read"}, "scopes"), ({"scopes": ['bad"scope']}, "scopes"),
    ({"scopes": ["a b"]}, "scopes"), ({"expires_in_days": 0}, "expires_in_days"),
    ({"expires_in_days": "x"}, "expires_in_days"), ({"expires_in_days": 10**9}, "expires_in_days"),
    ({"expires_in_days": 1.5}, "expires_in_days"), ({"metadata": [1]}, "metadata"),
    ({"rate_limit": "lots"}, "rate_limit"), ({"rate_limit": 10}, "rate_limit"),
    ({"rate_limit": "5/999999999 years"}, "rate_limit"),  # a window Redis cannot expire
    ({"rate_limit": "10/second;1/2 years"}, "rate_limit"),
    ({"access_token_expires_in": "soon"}, "access_token_expires_in"),
    ({"access_token_expires_in": 300.5}, "access_token_expires_in"),
    ({"secret_label": "nul\x00"}, "secret_label"), ({"unknown": 1}, "unknown"),
    ({"disabled": True}, "disabled"), ({"client_secret": "m2ms_chosen"}, "client_secret"),
]


@pytest.mark.parametrize(("body", "field"), CREATE_ERRORS)
def test_create_invalid_field(
    app: Flask, client: FlaskClient, headers: dict[str, str], body: dict[str, Any], field: str
) -> None:
    """A bad or unknown field is a 422 RFC 9457 problem naming it; no row is written."""
    before = counts(app)
    response = client.post("/m2m/clients", json={"name": "svc", **body}, headers=headers)
    assert_problem(response, 422, field)
    assert counts(app) == before


UPDATE_ERRORS = [
    ({"name": 5}, "name"), ({"name": "nul\x00"}, "name"), ({"scopes": "read"}, "scopes"),
    ({"scopes": ['bad"scope']}, "scopes"), ({"metadata": [1]}, "metadata"),
    ({"rate_limit": "lots"}, "rate_limit"), ({"rate_limit": "10 per fortnight"}, "rate_limit"),
    ({"disabled": "maybe"}, "disabled"), ({"expires_at": "yesterday"}, "expires_at"),
    ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
    ({"expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
    ({"expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at"),
    ({"access_token_expires_in": 0}, "access_token_expires_in"),
    ({"access_token_expires_in": 86401}, "access_token_expires_in"),
    ({"client_id": "m2m_other"}, "client_id"), ({"secret": "s" * 40}, "secret"),
]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize(("body", "field"), UPDATE_ERRORS)
def test_update_invalid_field(
    app: Flask, client: FlaskClient, headers: dict[str, str], method: str,
    body: dict[str, Any], field: str,
) -> None:
    """A bad or unknown field is a 422 RFC 9457 problem naming it; the client is unchanged,
    even when a valid field came with it."""
    path = f"/m2m/clients/{create(client, headers)['client_id']}"
    before, rows = client.get(path, headers=headers).get_json(), counts(app)
    response = client.open(path, method=method, json={"name": "new", **body}, headers=headers)
    assert_problem(response, 422, field)
    assert client.get(path, headers=headers).get_json() == before
    assert counts(app) == rows


ODD_BODIES = {
    "list": "[]", "object-list": '[{"name": "x"}]', "number": "5", "string": '"name"',
    "true": "true", "null": "null", "1MB-name": '{"name": "%s"}' % ("x" * 2**20),
    "NaN": '{"name": "x", "metadata": {"a": NaN}}',
    "Infinity": '{"name": "x", "metadata": {"a": -Infinity}}',
    "deep-nesting": '{"name": "x", "metadata": {"a": %s}}' % ("[" * 5000 + "]" * 5000),
}


@pytest.mark.parametrize("raw", list(ODD_BODIES.values()), ids=list(ODD_BODIES))
@pytest.mark.parametrize("method", ["POST", "PATCH", "PUT"])
def test_odd_body_is_4xx(
    app: Flask, client: FlaskClient, headers: dict[str, str], raw: str, method: str
) -> None:
    """A body that is not a JSON object, is huge, holds non-standard numbers (RFC 8259 §6) or
    nests deeply is a 4xx RFC 9457 problem, never a 5xx, and changes nothing."""
    made = create(client, headers)
    url = "/m2m/clients" if method == "POST" else f"/m2m/clients/{made['client_id']}"
    before, shown = counts(app), client.get(f"/m2m/clients/{made['client_id']}", headers=headers)
    response = client.open(url, method=method, data=raw, headers=headers,
                           content_type="application/json")
    assert 400 <= response.status_code < 500 and response.mimetype == PROBLEM
    assert counts(app) == before
    assert client.get(f"/m2m/clients/{made['client_id']}", headers=headers).get_json() == (
        shown.get_json())


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("clients?limit=0", "limit"), ("clients?limit=abc", "limit"),
        ("clients?limit=1000", "limit"), ("clients?cursor=garbage", "cursor"),
        ("clients?cursor=" + "A" * 600, "cursor"),
        ("clients?cursor=" + encode_cursor(["yesterday", "m2m_x"]), "cursor"),
        ("clients?cursor=" + encode_cursor([1, 2]), "cursor"),
        ("clients?cursor=" + encode_cursor(["2020-01-01T00:00:00", "m2m_x"]), "cursor"),
        ("clients?disabled=maybe", "disabled"), ("clients?expired=perhaps", "expired"),
        ("clients?colour=blue", "colour"), ("events?cursor=garbage", "cursor"),
        ("events?cursor=" + encode_cursor(["abc"]), "cursor"),
        ("events?cursor=" + encode_cursor([10**20]), "cursor"),
    ],
)
def test_query_errors(client: FlaskClient, headers: dict[str, str], url: str, field: str) -> None:
    """A bad query string on GET /clients or /events is a 422 RFC 9457 problem naming the
    parameter; a cursor the server did not make is one too, never a 5xx."""
    assert_problem(client.get(f"/m2m/{url}", headers=headers), 422, field)


@pytest.mark.parametrize(("method", "url"), [
    ("GET", "clients?name_prefix=a%00"), ("GET", "events?actor=a%00"),
    ("GET", "events?event=a%00"), ("GET", "events?client_id=a%00"),
    ("GET", "clients/a%00b/events"), ("GET", "clients/a%00b"),
    ("DELETE", "clients/{id}/secrets/a%00b"),
    ("GET", "clients?cursor=" + encode_cursor(["9999-12-31T23:59:59-14:00", "m2m_x"])),
])
def test_odd_input_never_5xx(
    client: FlaskClient, headers: dict[str, str], method: str, url: str
) -> None:
    """A NUL byte in a filter or an id, or a cursor past year 9999 in UTC, matches nothing
    (200 empty, or a 404 / 422 problem); never a 5xx."""
    url = url.format(id=create(client, headers)["client_id"])
    response = client.open(f"/m2m/{url}", method=method, headers=headers)
    assert response.status_code in (200, 404, 422), response.status_code
    if response.status_code == 200:
        assert not response.get_json().get("clients") and not response.get_json().get("events")
    else:
        assert response.mimetype == PROBLEM


# -- authorization -----------------------------------------------------------------------------
ROUTES = [("GET", "/m2m/clients"), ("POST", "/m2m/clients"), ("GET", "/m2m/clients/{id}"),
          ("PATCH", "/m2m/clients/{id}"), ("PUT", "/m2m/clients/{id}"),
          ("DELETE", "/m2m/clients/{id}"), ("POST", "/m2m/clients/{id}/secret"),
          ("GET", "/m2m/clients/{id}/secrets"), ("GET", "/m2m/clients/{id}/events"),
          ("GET", "/m2m/events")]


@pytest.mark.parametrize(("method", "route"), ROUTES)
def test_authorization(app: Flask, client: FlaskClient, method: str, route: str) -> None:
    """RFC 6750 §3.1: no token is 401 with a Bearer challenge, a bad token 401 invalid_token,
    a token without m2m:admin 403 insufficient_scope; an admin token gets through."""
    url = route.format(id=register(app, "read")["client_id"])
    body = {"name": "n"} if method in ("POST", "PATCH", "PUT") else None
    body = {"label": "n"} if route.endswith("/secret") else body
    both = register(app, "read m2m:admin")
    attempts = {
        401: [{}, bearer("garbage"), basic_auth(both["client_id"], both["client_secret"])],
        403: [bearer(fetch_token(client, register(app, "read write"))),
              bearer(fetch_token(client, both, "read"))],
    }
    before = counts(app)
    for status, header_sets in attempts.items():
        for hdrs in header_sets:
            response = client.open(url, method=method, json=body, headers=hdrs)
            assert_problem(response, status)
            challenge = response.headers["WWW-Authenticate"]
            assert challenge.startswith("Bearer ")
            if status == 403:
                assert 'error="insufficient_scope"' in challenge and "m2m:admin" in challenge
            elif hdrs.get("Authorization", "").startswith("Bearer"):
                assert 'error="invalid_token"' in challenge
    assert counts(app) == before
    allowed = client.open(url, method=method, json=body, headers=admin_headers(app))
    assert allowed.status_code in (200, 201, 204)


def test_custom_authorizer(app_factory: Factory) -> None:
    """An app's own authorizer replaces the token check: its principal is allowed without a
    token and is the audit actor; False or None is a 403 problem, even with an admin token."""
    app = app_factory()

    @get_state(app).extension.management_authorizer
    def who() -> Any:
        return {"alice": "user:alice", "nobody": None}.get(request.headers.get("X-User", ""),
                                                            False)

    c, alice = app.test_client(), {"X-User": "alice"}
    made = create(c, alice)
    assert c.get(f"/m2m/clients/{made['client_id']}", headers=alice).status_code == 200
    events = c.get("/m2m/events?actor=user:alice", headers=alice).get_json()["events"]
    assert [(e["event"], e["client_id"], e["actor"]) for e in events] == [
        ("client_created", made["client_id"], "user:alice")]
    refused = [{}, {"X-User": "nobody"}, admin_headers(app)]
    before = counts(app)
    for hdrs in refused:
        assert_problem(c.post("/m2m/clients", json={"name": "x"}, headers=hdrs), 403)
        assert_problem(c.get("/m2m/clients", headers=hdrs), 403)
    assert counts(app) == before


def test_management_disabled(app_factory: Factory) -> None:
    """With M2M_MANAGEMENT_ENABLED off the management routes are 404, while the RFC 6749 §4.4
    token endpoint and protected routes still work."""
    app = app_factory(M2M_MANAGEMENT_ENABLED=False)
    c, credentials = app.test_client(), register(app, "m2m:admin read")
    headers = bearer(fetch_token(c, credentials))
    for url in ("/m2m/clients", "/m2m/events", "/m2m/openapi.json",
                f"/m2m/clients/{credentials['client_id']}"):
        assert c.get(url, headers=headers).status_code == 404
    assert c.post("/m2m/clients", json={"name": "x"}, headers=headers).status_code in (404, 405)
    assert c.get("/api/whoami", headers=headers).status_code == 200


# -- secrets never leak ------------------------------------------------------------------------
def test_no_response_leaks_secrets(app: Flask, client: FlaskClient) -> None:
    """Only POST /clients and POST /clients/<id>/secret carry a secret: no other response
    shows one, a hash, the hash scheme or the secret prefix."""
    admin = register(app, "m2m:admin")
    headers = bearer(fetch_token(client, admin))
    made = create(client, headers, metadata={"note": "hi"})
    path = f"/m2m/clients/{made['client_id']}"
    rotated = client.post(f"{path}/secret", json={"grace_period_seconds": 60}, headers=headers)
    assert rotated.status_code == 200
    secrets = [admin["client_secret"], made["client_secret"], rotated.get_json()["client_secret"],
               register(app, "read")["client_secret"]]
    responses = [
        client.get("/m2m/clients", headers=headers), client.get(path, headers=headers),
        client.patch(path, json={"name": "n2"}, headers=headers),
        client.put(path, json={"scopes": ["write"]}, headers=headers),
        client.patch(path, json={"name": 5}, headers=headers),
        client.get("/m2m/events", headers=headers), client.get(f"{path}/events", headers=headers),
        client.get(f"{path}/secrets", headers=headers), client.get("/m2m/openapi.json"),
    ]
    for response in responses:
        assert response.status_code < 500
        text = response.get_data(as_text=True)
        for needle in [*secrets, "hmac-sha256", '"secret_hash"', "m2ms_"]:
            assert needle not in text, (response.request.path, needle)


# -- policy ------------------------------------------------------------------------------------
LIFETIME = {"M2M_CLIENT_LIFETIME_DAYS_MIN": 7, "M2M_CLIENT_LIFETIME_DAYS_MAX": 90}
SCOPES = {"M2M_ALLOWED_SCOPES": "read write m2m:admin"}
TOKEN_BOUNDS = {"M2M_ACCESS_TOKEN_EXPIRES_IN_MIN": 120, "M2M_ACCESS_TOKEN_EXPIRES_IN_MAX": 600}
NAMED: dict[str, Any] = {"name": "x"}
POLICY_CREATE = [
    ({"M2M_REQUIRE_CLIENT_NAME": True}, {}, "name"),
    ({"M2M_REQUIRE_CLIENT_NAME": True}, {"name": "   "}, "name"),
    ({"M2M_REQUIRE_CLIENT_NAME": False}, {}, None),
    ({"M2M_REQUIRE_CLIENT_NAME": False}, {"name": "  "}, None),
    ({"M2M_ALLOW_CLIENT_METADATA": False}, {**NAMED, "metadata": {"a": 1}}, "metadata"),
    ({"M2M_ALLOW_CLIENT_METADATA": True}, {**NAMED, "metadata": {"a": 1}}, None),
    ({"M2M_MAX_METADATA_BYTES": 64}, {**NAMED, "metadata": {"k": "v" * 64}}, "metadata"),
    ({"M2M_MAX_METADATA_BYTES": 64}, {**NAMED, "metadata": {"k": "v" * 40}}, None),
    ({}, {**NAMED, "metadata": {"k": "v" * 1000}}, None),
    (SCOPES, {**NAMED, "scopes": ["read", "delete"]}, "scopes"),
    (SCOPES, {**NAMED, "scopes": ["read", "write"]}, None),
    ({}, {**NAMED, "scopes": ["delete"]}, None),
    (LIFETIME, {**NAMED, "expires_in_days": 5}, "expires_in_days"),
    (LIFETIME, {**NAMED, "expires_in_days": 100}, "expires_in_days"),
    (LIFETIME, NAMED, "expires_in_days"), (LIFETIME, {**NAMED, "expires_in_days": 30}, None),
    ({}, {**NAMED, "rate_limit": "10/minute"}, None),
    ({}, {**NAMED, "rate_limit": "10 per fortnight"}, "rate_limit"),
    ({}, {**NAMED, "rate_limit": "10/second;1000/year"}, None),
    ({}, {**NAMED, "access_token_expires_in": 59}, "access_token_expires_in"),
    (TOKEN_BOUNDS, {**NAMED, "access_token_expires_in": 60}, "access_token_expires_in"),
    (TOKEN_BOUNDS, {**NAMED, "access_token_expires_in": 601}, "access_token_expires_in"),
    (TOKEN_BOUNDS, {**NAMED, "access_token_expires_in": 600}, None),
]


@pytest.mark.parametrize(("config", "body", "field"), POLICY_CREATE)
def test_create_policy(
    app_factory: Factory, config: dict[str, Any], body: dict[str, Any], field: str | None
) -> None:
    """A policy option on refuses what it forbids (422 naming the field, nothing stored);
    off, or within its bounds, the client is created as asked."""
    app = app_factory(**config)
    c, headers = app.test_client(), admin_headers(app, expires_in_days=30)
    before = counts(app)
    response = c.post("/m2m/clients", json=body, headers=headers)
    if field is not None:
        assert_problem(response, 422, field)
        assert counts(app) == before
        return
    assert response.status_code == 201, response.get_json()
    stored = c.get(f"/m2m/clients/{response.get_json()['client_id']}", headers=headers).get_json()
    assert stored["name"] == body.get("name", "").strip()
    for key in ("metadata", "scopes", "rate_limit", "access_token_expires_in"):
        if key in body:
            assert stored[key] == body[key]


POLICY_UPDATE = [
    ({"M2M_REQUIRE_CLIENT_NAME": True}, {"name": " "}, "name"),
    ({"M2M_ALLOW_CLIENT_METADATA": False}, {"metadata": {"a": 1}}, "metadata"),
    ({"M2M_MAX_METADATA_BYTES": 64}, {"metadata": {"k": "v" * 64}}, "metadata"),
    (SCOPES, {"scopes": ["delete"]}, "scopes"), (LIFETIME, {"expires_at": None}, "expires_at"),
    (LIFETIME, {"expires_at": "2999-01-01T00:00:00+00:00"}, "expires_at"),
    (TOKEN_BOUNDS, {"access_token_expires_in": 601}, "access_token_expires_in"),
]


@pytest.mark.parametrize(("config", "body", "field"), POLICY_UPDATE)
def test_update_policy(
    app_factory: Factory, config: dict[str, Any], body: dict[str, Any], field: str
) -> None:
    """The policy applies to PATCH as to POST: 422 naming the field, the client unchanged."""
    app = app_factory(**config)
    c, headers = app.test_client(), admin_headers(app, expires_in_days=30)
    path = f"/m2m/clients/{create(c, headers, expires_in_days=30)['client_id']}"
    before = c.get(path, headers=headers).get_json()
    assert_problem(c.patch(path, json=body, headers=headers), 422, field)
    assert c.get(path, headers=headers).get_json() == before


def test_default_lifetime(app_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """M2M_CLIENT_LIFETIME_DAYS_DEFAULT gives a client without expires_in_days that lifetime;
    without it clients never expire."""
    now = datetime.now(UTC).replace(microsecond=0)
    monkeypatch.setattr(flask_m2m.lifecycle, "utcnow", lambda: now)
    monkeypatch.setattr(flask_m2m.client_fields, "utcnow", lambda: now)
    app = app_factory(M2M_CLIENT_LIFETIME_DAYS_DEFAULT=30)
    c, headers = app.test_client(), admin_headers(app)
    assert datetime.fromisoformat(create(c, headers)["expires_at"]) == now + timedelta(days=30)
    made = create(c, headers, expires_in_days=2)
    assert datetime.fromisoformat(made["expires_at"]) == now + timedelta(days=2)
    plain = app_factory()
    assert create(plain.test_client(), admin_headers(plain))["expires_at"] is None


@pytest.mark.parametrize(
    ("config", "args"),
    [
        ({"M2M_REQUIRE_CLIENT_NAME": True}, ["--name", "  "]),
        ({}, ["--name", "nul\x00"]),
        (SCOPES, ["--name", "x", "--scope", "read delete"]),
        ({}, ["--name", "x", "--scope", 'bad"scope']),
        (LIFETIME, ["--name", "x", "--expires-in-days", "5"]),
        (LIFETIME, ["--name", "x", "--expires-in-days", "100"]),
        (LIFETIME, ["--name", "x"]),
        ({}, ["--name", "x", "--rate-limit", "10 per fortnight"]),
    ],
)
def test_cli_applies_policy(app_factory: Factory, config: dict[str, Any], args: list[str]) -> None:
    """`flask m2m create-client` is refused (non-zero exit, nothing stored) by the same policy
    and accepts what it allows."""
    app = app_factory(**config)
    before = counts(app)
    assert app.test_cli_runner().invoke(args=["m2m", "create-client", *args]).exit_code != 0
    assert counts(app) == before
    ok = ["--name", "fine", "--scope", "read", "--expires-in-days", "30"]
    assert app.test_cli_runner().invoke(args=["m2m", "create-client", *ok]).exit_code == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_metadata_must_be_strict_json(app: Flask, value: float) -> None:
    """NaN and Infinity are not JSON (RFC 8259 §6): the service refuses them before any
    database sees them (PostgreSQL's json type would fail with a 500)."""
    with app.app_context(), pytest.raises(flask_m2m.lifecycle.InvalidClientData) as refused:
        flask_m2m.lifecycle.create_client(
            get_state(app), actor="test", name="x", metadata={"n": value}
        )
    assert refused.value.field == "metadata"


# -- pagination and filters --------------------------------------------------------------------
def test_pagination_walk(
    client: FlaskClient, headers: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """limit=3 walks every client once, in (created_at, client_id) order even where several
    share a created_at; the last page's next_cursor is null."""
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1)
    clock = {"now": base}
    monkeypatch.setattr(flask_m2m.lifecycle, "utcnow", lambda: clock["now"])
    for i, offset in enumerate([2, 0, 1, 0, 1, 0, 2]):
        clock["now"] = base + timedelta(seconds=offset)
        create(client, headers, name=f"page-{i}")
    monkeypatch.undo()
    everything = client.get("/m2m/clients?limit=200", headers=headers).get_json()["clients"]
    expected = [c["client_id"] for c in sorted(
        everything, key=lambda c: (datetime.fromisoformat(c["created_at"]), c["client_id"]))]
    assert len(expected) == 8 and [c["client_id"] for c in everything] == expected
    pages: list[list[str]] = []
    cursor: str | None = None
    while len(pages) < 5:
        query = f"&cursor={cursor}" if cursor else ""
        body = client.get(f"/m2m/clients?limit=3{query}", headers=headers).get_json()
        pages.append([c["client_id"] for c in body["clients"]])
        if (cursor := body["next_cursor"]) is None:
            break
    assert [len(page) for page in pages] == [3, 3, 2]
    assert sum(pages, []) == expected


def test_filters(client: FlaskClient, headers: dict[str, str]) -> None:
    """name_prefix matches "%" and "_" literally; disabled and expired filter both ways."""
    ids = {name: create(client, headers, name=name)["client_id"]
           for name in ("50%_off", "50%xoff", "50abc", "5_0", "500")}
    assert set(listed(client, headers, "name_prefix=50%25")) == {ids["50%_off"], ids["50%xoff"]}
    assert listed(client, headers, "name_prefix=50%25_") == [ids["50%_off"]]
    assert listed(client, headers, "name_prefix=5_") == [ids["5_0"]]
    everyone, off, old = set(listed(client, headers)), ids["500"], ids["50abc"]
    client.patch(f"/m2m/clients/{off}", json={"disabled": True}, headers=headers)
    for cid, when in ((old, "2000-01-01T00:00:00+00:00"), (ids["5_0"], "2999-01-01T00:00:00Z")):
        assert client.patch(f"/m2m/clients/{cid}", json={"expires_at": when},
                            headers=headers).status_code == 200
    assert listed(client, headers, "disabled=true") == [off]
    assert set(listed(client, headers, "disabled=false")) == everyone - {off}
    assert listed(client, headers, "expired=true") == [old]
    assert set(listed(client, headers, "expired=false")) == everyone - {old}
    assert listed(client, headers, "expired=false&disabled=true") == [off]


# -- cross-site requests -----------------------------------------------------------------------
#: Every management route that takes a body.
BODY_ROUTES = [("POST", "/m2m/clients"), ("PATCH", "/m2m/clients/{id}"),
               ("PUT", "/m2m/clients/{id}"), ("POST", "/m2m/clients/{id}/secret")]
#: What an HTML form on another site can send without a CORS preflight (WHATWG Fetch
#: "CORS-safelisted request-header" Content-Type values), and no Content-Type at all.
CROSS_SITE_BODIES = {
    "form": ("application/x-www-form-urlencoded", "name=x&grace_period_seconds=0"),
    "empty-form": ("application/x-www-form-urlencoded", ""),
    "multipart": ("multipart/form-data; boundary=b",
                  '--b\r\nContent-Disposition: form-data; name="name"\r\n\r\nx\r\n--b--\r\n'),
    "text-plain": ("text/plain", '{"name": "x", "grace_period_seconds": 0}'),
    "text-plain-empty": ("text/plain", ""),
    "no-type": (None, '{"name": "x"}'),
    "no-type-empty": (None, ""),
}


def assert_untouched(app: Flask, c: FlaskClient, headers: dict[str, str],
                     made: dict[str, Any], before: tuple[tuple[int, ...], Any]) -> None:
    """No row was written, the client is as it was, and its secret still gets a token."""
    rows, shown = before
    assert counts(app) == rows
    assert c.get(f"/m2m/clients/{made['client_id']}", headers=headers).get_json() == shown
    assert token_response(c, made).status_code == 200


@pytest.mark.parametrize("kind", list(CROSS_SITE_BODIES))
@pytest.mark.parametrize(("method", "route"), BODY_ROUTES)
def test_body_routes_take_only_json(
    app: Flask, client: FlaskClient, headers: dict[str, str], method: str, route: str, kind: str
) -> None:
    """POST, PUT and PATCH bodies must be application/json (RFC 8259 §11): a form-encoded,
    multipart or text/plain body, or none without a Content-Type, is a 415 RFC 9457 problem
    (RFC 9110 §15.5.16) and changes nothing; the old secret keeps working."""
    made = create(client, headers)
    url = route.format(id=made["client_id"])
    content_type, raw = CROSS_SITE_BODIES[kind]
    before = counts(app), client.get(f"/m2m/clients/{made['client_id']}", headers=headers)
    response = client.open(url, method=method, data=raw, headers=headers,
                           content_type=content_type)
    assert_problem(response, 415)
    assert_untouched(app, client, headers, made, (before[0], before[1].get_json()))


@pytest.mark.parametrize(("method", "route"), BODY_ROUTES[1:])
def test_empty_json_object_is_accepted(
    client: FlaskClient, headers: dict[str, str], method: str, route: str
) -> None:
    """``{}`` as application/json is a valid body: no change, or a rotation with no grace."""
    made = create(client, headers)
    response = client.open(route.format(id=made["client_id"]), method=method, json={},
                           headers=headers)
    assert response.status_code == 200, response.get_json()


def test_secret_route_takes_an_empty_json_body(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    """POST /clients/<id>/secret with no body but Content-Type application/json is ``{}``:
    a new secret, and the old one stops at once (no grace period)."""
    made = create(client, headers)
    response = client.post(f"/m2m/clients/{made['client_id']}/secret", data=b"",
                           headers=headers, content_type="application/json")
    assert response.status_code == 200, response.get_json()
    assert token_response(client, made).status_code == 401
    new = {**made, "client_secret": response.get_json()["client_secret"]}
    assert token_response(client, new).status_code == 200


def test_cookie_authorizer_refuses_cross_site_forms(app_factory: Factory) -> None:
    """With a session-cookie authorizer (as with Flask-Login), what a form on another site can
    send (the browser adds the cookie) is refused with 415 on every body route, and the
    client's secret keeps working; the same calls as JSON, which a browser sends cross-site
    only after a CORS preflight, go through. DELETE has no body and is unchanged."""
    app = app_factory()
    app.secret_key = "session-key-0123456789abcdef0123"

    @get_state(app).extension.management_authorizer
    def from_session() -> Any:
        return f"user:{session['user']}" if session.get("user") else abort(401)

    @app.post("/login")
    def login() -> str:
        session["user"] = "alice"
        return "ok"

    browser = app.test_client()
    assert_problem(browser.post("/m2m/clients", json={"name": "x"}), 401)
    assert_problem(browser.post("/m2m/clients", data={"name": "x"}), 401)  # 401 before 415
    browser.post("/login")
    made = create(browser, {})
    path = f"/m2m/clients/{made['client_id']}"
    before = counts(app), browser.get(path).get_json()
    cross_site = {"Origin": "https://evil.test", "Referer": "https://evil.test/page"}
    for method, route in BODY_ROUTES:
        for content_type, raw in CROSS_SITE_BODIES.values():
            response = browser.open(route.format(id=made["client_id"]), method=method,
                                    data=raw, content_type=content_type, headers=cross_site)
            assert_problem(response, 415)
    assert_untouched(app, browser, {}, made, before)
    assert browser.post(f"{path}/secret", json={"grace_period_seconds": 60}).status_code == 200
    assert browser.patch(path, json={"name": "renamed"}).get_json()["name"] == "renamed"
    assert browser.delete(path).status_code == 204
