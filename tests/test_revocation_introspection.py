"""Token revocation (RFC 7009, ``POST /m2m/revoke``) and introspection (RFC 7662,
``POST /m2m/introspect``), for JWT and opaque access tokens."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from werkzeug.test import TestResponse

import flask_m2m.tokens
from flask_m2m import signals
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import set_disabled

REVOKE_URL = "/m2m/revoke"
INTROSPECT_URL = "/m2m/introspect"
ISSUER = "https://issuer.test"
Creds = dict[str, Any]


@pytest.fixture(params=["jwt", "opaque"])
def token_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def app(app_factory: Callable[..., Flask], token_format: str) -> Flask:
    """Overrides conftest's ``app``: every test here runs for JWT and for opaque tokens."""
    return app_factory(M2M_TOKEN_FORMAT=token_format)


@pytest.fixture
def other_client(app: Flask) -> Creds:
    return register(app, scopes="read")


def call(
    c: FlaskClient, url: str, creds: Creds | None, auth: str = "basic", **form: str
) -> TestResponse:
    """POST ``form`` to ``url``, authenticated with client_secret_basic or client_secret_post."""
    if creds is None:
        return c.post(url, data=form)
    if auth == "basic":
        headers = basic_auth(creds["client_id"], creds["client_secret"])
        return c.post(url, data=form, headers=headers)
    secrets = {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}
    return c.post(url, data={**form, **secrets})


def introspect(c: FlaskClient, creds: Creds, token: str, auth: str = "basic") -> dict[str, Any]:
    response = call(c, INTROSPECT_URL, creds, auth, token=token)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    return body


def assert_error(response: TestResponse, status: int, error: str) -> None:
    assert response.status_code == status, response.data
    assert response.get_json()["error"] == error


def assert_refused(c: FlaskClient, token: str) -> None:
    """RFC 6750 §3.1: the resource server answers 401 invalid_token."""
    response = c.get("/api/whoami", headers=bearer(token))
    assert_error(response, 401, "invalid_token")
    assert "invalid_token" in response.headers["WWW-Authenticate"]


def assert_accepted(c: FlaskClient, token: str, creds: Creds) -> None:
    response = c.get("/api/whoami", headers=bearer(token))
    assert response.status_code == 200, response.data
    assert response.get_json()["client_id"] == creds["client_id"]


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The token service's clock, stopped mid-second; ``clock[0] += n`` moves it (no sleeping)."""
    now = [float(int(time.time())) + 0.25]
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: now[0])
    return now


GARBAGE = ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.e30.", "m2mat_" + "x" * 43, "x" * 10_000, " "]


# -- RFC 7009: revocation ---------------------------------------------------------------------
@pytest.mark.parametrize("auth", ["basic", "post"])
def test_revoke_own_token(
    client: FlaskClient, registered_client: Creds, auth: str, token_format: str
) -> None:
    """RFC 7009 §2.1/§2.2: a client revokes its own token -> 200; the token then stops working
    at the resource server and introspects as inactive (RFC 7662 §2.2)."""
    token = fetch_token(client, registered_client)
    assert token.startswith("m2mat_") == (token_format == "opaque")
    assert_accepted(client, token, registered_client)
    response = call(client, REVOKE_URL, registered_client, auth, token=token)
    assert response.status_code == 200, response.data
    assert_refused(client, token)
    assert introspect(client, registered_client, token) == {"active": False}
    assert_accepted(client, fetch_token(client, registered_client), registered_client)


@pytest.mark.parametrize("token", GARBAGE)
def test_revoke_unknown_token(client: FlaskClient, registered_client: Creds, token: str) -> None:
    """RFC 7009 §2.2: an invalid or unknown token is not an error -> 200."""
    mine = fetch_token(client, registered_client)
    assert call(client, REVOKE_URL, registered_client, token=token).status_code == 200
    assert_accepted(client, mine, registered_client)


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_revoke_other_clients_token(
    client: FlaskClient, registered_client: Creds, other_client: Creds, auth: str
) -> None:
    """RFC 7009 §2.1: the server verifies the token was issued to the requesting client; for
    another client's token it answers 200 (§2.2) but leaves the token valid."""
    theirs = fetch_token(client, other_client)
    received: list[dict[str, Any]] = []
    with signals.token_revoked.connected_to(lambda s, **kw: received.append(kw)):
        response = call(client, REVOKE_URL, registered_client, auth, token=theirs)
    assert response.status_code == 200, response.data
    assert received == []
    assert_accepted(client, theirs, other_client)
    assert introspect(client, other_client, theirs)["active"] is True


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_revoke_without_token_param(
    client: FlaskClient, registered_client: Creds, auth: str
) -> None:
    """RFC 7009 §2.1: token is REQUIRED; without it -> 400 invalid_request (RFC 6749 §5.2)."""
    response = call(client, REVOKE_URL, registered_client, auth, token_type_hint="access_token")
    assert_error(response, 400, "invalid_request")


@pytest.mark.parametrize("url", [REVOKE_URL, INTROSPECT_URL])
@pytest.mark.parametrize("how", ["none", "wrong_secret_basic", "wrong_secret_post"])
def test_endpoint_requires_client_auth(
    client: FlaskClient, registered_client: Creds, url: str, how: str
) -> None:
    """RFC 7009 §2.1 / RFC 7662 §2.1: the caller must authenticate; else 401 invalid_client
    (RFC 6749 §5.2) and nothing is revoked or disclosed."""
    token = fetch_token(client, registered_client)
    wrong = {**registered_client, "client_secret": registered_client["client_secret"] + "x"}
    if how == "none":
        response = call(client, url, None, token=token)
    else:
        response = call(client, url, wrong, how.rsplit("_", 1)[1], token=token)
    assert_error(response, 401, "invalid_client")
    assert "active" not in response.get_json()
    if how == "wrong_secret_basic":
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert_accepted(client, token, registered_client)


@pytest.mark.parametrize("hint", ["access_token", "refresh_token"])
def test_revoke_with_type_hint(client: FlaskClient, registered_client: Creds, hint: str) -> None:
    """RFC 7009 §2.1: token_type_hint is only a hint; a wrong hint makes the server extend its
    search, so the access token is revoked either way."""
    token = fetch_token(client, registered_client)
    response = call(client, REVOKE_URL, registered_client, token=token, token_type_hint=hint)
    assert response.status_code == 200, response.data
    assert_refused(client, token)


def test_revoke_twice(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7009 §2.2: revoking an already revoked (hence invalid) token is still 200."""
    token = fetch_token(client, registered_client)
    for _ in range(2):
        assert call(client, REVOKE_URL, registered_client, token=token).status_code == 200
    assert_refused(client, token)


def test_revoke_expired_token(
    app_factory: Callable[..., Flask], token_format: str, clock: list[float]
) -> None:
    """RFC 7009 §2.2: revoking an expired token is answered with 200 as well."""
    app = app_factory(M2M_TOKEN_FORMAT=token_format, M2M_ACCESS_TOKEN_EXPIRES_IN=1, M2M_LEEWAY=0)
    c, creds = app.test_client(), register(app)
    token = fetch_token(c, creds)
    clock[0] += 10
    assert call(c, REVOKE_URL, creds, token=token).status_code == 200


def test_revoke_only_that_token(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7009 §2.1: only the given token is revoked; the client's other tokens keep working."""
    first, second = fetch_token(client, registered_client), fetch_token(client, registered_client)
    assert call(client, REVOKE_URL, registered_client, token=first).status_code == 200
    assert_refused(client, first)
    assert_accepted(client, second, registered_client)


def test_token_revoked_signal(app: Flask, client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7009 §2.1: an actual revocation sends token_revoked (client_id, jti); unknown tokens
    do not."""
    token = fetch_token(client, registered_client)
    jti = introspect(client, registered_client, token)["jti"]
    received: list[dict[str, Any]] = []
    with signals.token_revoked.connected_to(lambda sender, **kw: received.append(kw), app):
        call(client, REVOKE_URL, registered_client, token="garbage")
        assert received == []
        call(client, REVOKE_URL, registered_client, token=token)
    assert received == [{"client_id": registered_client["client_id"], "jti": jti}]


@pytest.mark.parametrize("url", [REVOKE_URL, INTROSPECT_URL])
@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_post_only(client: FlaskClient, registered_client: Creds, url: str, method: str) -> None:
    """RFC 7009 §2.1 / RFC 7662 §2.1: requests are HTTP POST; other methods -> 405."""
    token = fetch_token(client, registered_client)
    headers = basic_auth(registered_client["client_id"], registered_client["client_secret"])
    response = client.open(url, method=method, headers=headers, query_string={"token": token})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "error" in response.get_json()
    assert_accepted(client, token, registered_client)


# -- RFC 7662: introspection ------------------------------------------------------------------
@pytest.mark.parametrize("auth", ["basic", "post"])
def test_introspect_own_token(
    client: FlaskClient, registered_client: Creds, auth: str, token_format: str
) -> None:
    """RFC 7662 §2.2: an active token -> active true with scope, client_id, token_type, exp,
    iat, sub, aud, iss and jti (equal to the JWT's claims, RFC 9068 §2.2)."""
    token = fetch_token(client, registered_client, "read")
    body = introspect(client, registered_client, token, auth)
    assert body["active"] is True
    assert body["scope"] == "read"
    assert body["client_id"] == body["sub"] == registered_client["client_id"]
    assert body["token_type"] == "Bearer"
    assert body["iss"] == ISSUER
    assert body["aud"] == ISSUER
    assert isinstance(body["exp"], int) and isinstance(body["iat"], int)
    assert body["exp"] - body["iat"] == 3600
    assert isinstance(body["jti"], str) and body["jti"]
    if token_format == "jwt":
        claims = jwt_claims(token)
        for name in ("scope", "client_id", "exp", "iat", "sub", "aud", "iss", "jti"):
            assert body[name] == claims[name], name


def test_introspect_default_scope(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7662 §2.2: scope lists the scopes granted (all allowed ones when none was asked)."""
    body = introspect(client, registered_client, fetch_token(client, registered_client))
    assert set(body["scope"].split()) == {"read", "write"}


def test_introspect_distinct_jti(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7662 §2.2 / RFC 9068 §2.2: every token has its own jti."""
    tokens = [fetch_token(client, registered_client) for _ in range(3)]
    jtis = {introspect(client, registered_client, t)["jti"] for t in tokens}
    assert len(jtis) == 3


def test_introspect_expired(
    app_factory: Callable[..., Flask], token_format: str, clock: list[float]
) -> None:
    """RFC 7662 §2.2: an expired token -> {"active": false}."""
    app = app_factory(M2M_TOKEN_FORMAT=token_format, M2M_ACCESS_TOKEN_EXPIRES_IN=1, M2M_LEEWAY=0)
    c, creds = app.test_client(), register(app)
    token = fetch_token(c, creds)
    assert introspect(c, creds, token)["active"] is True
    clock[0] += 10
    assert introspect(c, creds, token) == {"active": False}
    assert_refused(c, token)


@pytest.mark.parametrize("token", GARBAGE)
def test_introspect_unknown(client: FlaskClient, registered_client: Creds, token: str) -> None:
    """RFC 7662 §2.2: a token that does not exist on this server -> {"active": false}."""
    assert introspect(client, registered_client, token) == {"active": False}


def test_introspect_tampered(
    client: FlaskClient, registered_client: Creds, token_format: str
) -> None:
    """RFC 7662 §2.2: an altered token (forged payload, or changed opaque string) is inactive."""
    token = fetch_token(client, registered_client, "read")
    if token_format == "jwt":
        header, payload, signature = token.split(".")
        claims = {**jwt_claims(token), "scope": "read write admin"}
        forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
        forged = f"{header}.{forged_payload.decode()}.{signature}"
    else:
        forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert introspect(client, registered_client, forged) == {"active": False}
    assert_refused(client, forged)


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_introspect_other_clients_token(
    client: FlaskClient, registered_client: Creds, other_client: Creds, auth: str
) -> None:
    """RFC 7662 §2.2/§4: a client may not learn about another client's token -> active false."""
    theirs = fetch_token(client, other_client)
    assert introspect(client, registered_client, theirs, auth) == {"active": False}
    assert introspect(client, other_client, theirs)["active"] is True


def test_introspect_scope_sees_every_clients_tokens(
    app: Flask, client: FlaskClient, registered_client: Creds, other_client: Creds
) -> None:
    """RFC 7662 §2.1: the server decides who may introspect what; a client holding
    ``m2m:introspect`` (a resource server) sees any client's token, with its real state."""
    resource_server = register(app, scopes="m2m:introspect")
    token = fetch_token(client, other_client)
    body = introspect(client, resource_server, token)
    assert body["active"] is True
    assert body["client_id"] == other_client["client_id"]
    assert body["aud"] == ISSUER and body["scope"] == "read"
    # a client without the scope still sees only its own tokens
    assert introspect(client, registered_client, token) == {"active": False}
    assert call(client, REVOKE_URL, other_client, token=token).status_code == 200
    assert introspect(client, resource_server, token) == {"active": False}
    # the scope grants introspection only: the resource server cannot revoke others' tokens
    fresh = fetch_token(client, other_client)
    assert call(client, REVOKE_URL, resource_server, token=fresh).status_code == 200
    assert introspect(client, resource_server, fresh)["active"] is True


def test_introspect_revoked(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7662 §2.2: a revoked token -> {"active": false}."""
    token = fetch_token(client, registered_client)
    assert introspect(client, registered_client, token)["active"] is True
    assert call(client, REVOKE_URL, registered_client, token=token).status_code == 200
    assert introspect(client, registered_client, token) == {"active": False}


def test_introspect_disabled_client(
    app: Flask, client: FlaskClient, registered_client: Creds, other_client: Creds
) -> None:
    """RFC 7662 §2.2: tokens of a disabled client are inactive: while disabled the client
    cannot even authenticate (401 invalid_client) and nobody else sees them active; once
    re-enabled its tokens from before the disabling stay inactive while new ones are active."""
    token = fetch_token(client, registered_client)
    with app.app_context():
        set_disabled(get_state(app), registered_client["client_id"], True, actor="test")
        get_state(app).db.session.commit()
    response = call(client, INTROSPECT_URL, registered_client, token=token)
    assert_error(response, 401, "invalid_client")
    assert introspect(client, other_client, token) == {"active": False}
    assert_refused(client, token)
    with app.app_context():
        set_disabled(get_state(app), registered_client["client_id"], False, actor="test")
        get_state(app).db.session.commit()
    assert introspect(client, registered_client, token) == {"active": False}
    fresh = fetch_token(client, registered_client)
    assert introspect(client, registered_client, fresh)["active"] is True


@pytest.mark.parametrize("auth", ["basic", "post"])
def test_introspect_without_token_param(
    client: FlaskClient, registered_client: Creds, auth: str
) -> None:
    """RFC 7662 §2.1: token is REQUIRED; without it -> 400 invalid_request."""
    response = call(client, INTROSPECT_URL, registered_client, auth, token_type_hint="access_token")
    assert_error(response, 400, "invalid_request")


def test_introspect_with_type_hint(client: FlaskClient, registered_client: Creds) -> None:
    """RFC 7662 §2.1: token_type_hint may be sent; a wrong hint does not hide the token."""
    token = fetch_token(client, registered_client)
    for hint in ("access_token", "refresh_token"):
        response = call(
            client, INTROSPECT_URL, registered_client, token=token, token_type_hint=hint
        )
        assert response.status_code == 200, response.data
        assert response.get_json()["active"] is True
