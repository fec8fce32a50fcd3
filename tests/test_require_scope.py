"""``require_scope`` and ``current_token``: RFC 6750 Bearer challenges, scopes, revocation, and
the per-process cache of verified tokens bounded by ``M2M_STATE_CACHE_SECONDS``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import event
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.test import TestResponse

import flask_m2m.tokens
from flask_m2m import current_token, require_scope
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import delete_client, set_disabled

ISSUER = "https://issuer.test"
#: RFC 9728 §3.1: where the metadata of the server's own audience (the issuer) is published.
RESOURCE_METADATA = ISSUER + "/.well-known/oauth-protected-resource"
#: Default M2M_STATE_CACHE_SECONDS.
BOUND = 5.0


def add_routes(app: Flask) -> None:
    """Extra protected routes (must be added before the app's first request)."""

    @app.get("/api/claims")
    @require_scope("read")
    def claims() -> dict[str, Any]:
        return {
            "client_id": current_token.client_id,
            "scopes": list(current_token.scopes),
            "jti": current_token.jti,
            "claims": current_token.claims,
        }

    @app.get("/api/both")
    @require_scope("read", "write")
    def both() -> dict[str, Any]:
        return {"ok": True}


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    """The default test app plus ``/api/claims`` and ``/api/both``."""
    app = app_factory()
    add_routes(app)
    return app


class Clock:
    """A frozen ``time.monotonic`` that only moves when the test says so."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.now = time.monotonic()
        monkeypatch.setattr(flask_m2m.tokens.time, "monotonic", lambda: self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    return Clock(monkeypatch)


def challenge(response: TestResponse) -> dict[str, str]:
    """The parameters of the response's Bearer challenge (asserting there is one)."""
    header = response.headers.get("WWW-Authenticate", "")
    assert header.startswith("Bearer"), header
    parsed = WWWAuthenticate.from_header(header)
    assert parsed is not None and parsed.type == "bearer"
    # RFC 9728 §5.1: every challenge points to the protected resource's metadata.
    assert parsed.parameters["resource_metadata"] == RESOURCE_METADATA
    return dict(parsed.parameters)


def assert_invalid_token(response: TestResponse) -> None:
    """RFC 6750 §3.1: 401 with ``error="invalid_token"`` in the challenge and the body."""
    assert response.status_code == 401
    assert challenge(response)["error"] == "invalid_token"
    assert response.get_json()["error"] == "invalid_token"


# -- challenges and scopes ------------------------------------------------------------------


def test_no_credentials_gives_bare_challenge(client: FlaskClient) -> None:
    """RFC 6750 §3.1: without any authentication information the 401 challenge has no error."""
    response = client.get("/api/whoami")
    assert response.status_code == 401
    params = challenge(response)
    assert "error" not in params
    assert "error_description" not in params


def test_protected_resource_metadata(client: FlaskClient) -> None:
    """RFC 9728 §2, §3: the server's own routes are a protected resource: its audience, its
    issuer as authorization server, the scopes its routes ask for, header-only tokens, and
    the DPoP proof algorithms accepted (RFC 9728 §2)."""
    response = client.get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.get_json() == {
        "resource": ISSUER,
        "authorization_servers": [ISSUER],
        "scopes_supported": ["read", "write"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519", "RS256"],
    }


def test_protected_resource_metadata_of_an_audience_with_a_path(
    app_factory: Callable[..., Flask],
) -> None:
    """RFC 9728 §3.1: for the identifier ``https://api.test/v1/`` the metadata is at
    ``/.well-known/oauth-protected-resource/v1`` and the challenges say so."""
    app = app_factory(M2M_AUDIENCE="https://api.test/v1/")
    client = app.test_client()
    response = client.get("/.well-known/oauth-protected-resource/v1")
    assert response.status_code == 200
    assert response.get_json()["resource"] == "https://api.test/v1/"
    assert client.get("/.well-known/oauth-protected-resource").status_code == 404
    challenge = client.get("/api/whoami").headers["WWW-Authenticate"]
    assert 'resource_metadata="https://api.test/.well-known/oauth-protected-resource/v1"' in (
        challenge
    )


def test_basic_credentials_on_protected_route(
    client: FlaskClient, registered_client: dict[str, Any]
) -> None:
    """RFC 6750 §3.1: an unsupported auth scheme is treated as no credentials (Bearer challenge)."""
    headers = basic_auth(registered_client["client_id"], registered_client["client_secret"])
    response = client.get("/api/whoami", headers=headers)
    assert response.status_code == 401
    assert "error" not in challenge(response)


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    "])
def test_bearer_without_token(client: FlaskClient, header: str) -> None:
    """RFC 6750 §2.1: ``Bearer`` with an empty b64token carries no token -> 401 challenge."""
    response = client.get("/api/whoami", headers={"Authorization": header})
    assert response.status_code == 401
    challenge(response)


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "m2mat_unknown", "x" * 9000])
def test_garbage_token_is_invalid_token(client: FlaskClient, token: str) -> None:
    """RFC 6750 §3.1: a malformed or unknown token -> 401 ``invalid_token`` (header and body)."""
    assert_invalid_token(client.get("/api/whoami", headers=bearer(token)))


def test_token_lacking_scope_is_403(client: FlaskClient, token_for: Callable[..., str]) -> None:
    """RFC 6750 §3.1: a valid token without the required scope -> 403 ``insufficient_scope``
    with the needed ``scope`` in the challenge."""
    response = client.post("/api/write", headers=bearer(token_for("read")))
    assert response.status_code == 403
    params = challenge(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "write"
    assert response.get_json()["error"] == "insufficient_scope"


def test_token_with_scope_is_accepted(client: FlaskClient, token_for: Callable[..., str]) -> None:
    """RFC 6750 §2.1: a valid Bearer token carrying the scope reaches the view."""
    response = client.post("/api/write", headers=bearer(token_for("write")))
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}


def test_scheme_is_case_insensitive(client: FlaskClient, token_for: Callable[..., str]) -> None:
    """RFC 7235 §2.1 / RFC 6750 §2.1: the auth scheme name is case-insensitive."""
    response = client.get("/api/read", headers={"Authorization": "bearer " + token_for("read")})
    assert response.status_code == 200


def test_current_token_inside_view(
    client: FlaskClient, registered_client: dict[str, Any], token_for: Callable[..., str]
) -> None:
    """RFC 9068 §2.2: ``current_token`` exposes client_id, scopes and the claims (jti, iss, aud)."""
    response = client.get("/api/claims", headers=bearer(token_for("read")))
    assert response.status_code == 200
    body = response.get_json()
    client_id = registered_client["client_id"]
    assert body["client_id"] == client_id
    assert body["scopes"] == ["read"]
    claims = body["claims"]
    assert claims["jti"] and claims["jti"] == body["jti"]
    assert claims["iss"] == ISSUER
    assert claims["aud"] == ISSUER  # M2M_AUDIENCE defaults to the issuer
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["scope"] == "read"


def test_current_token_outside_protected_view(app: Flask) -> None:
    """``current_token`` is only defined inside a ``require_scope`` view."""
    with app.test_request_context("/"), pytest.raises(RuntimeError):
        _ = current_token.client_id


@pytest.mark.parametrize(
    ("scope", "status"), [("read", 403), ("write", 403), ("read write", 200)]
)
def test_several_scopes_are_all_required(
    client: FlaskClient, token_for: Callable[..., str], scope: str, status: int
) -> None:
    """RFC 6750 §3.1: ``require_scope("read", "write")`` needs every listed scope."""
    response = client.get("/api/both", headers=bearer(token_for(scope)))
    assert response.status_code == status
    if status == 403:
        params = challenge(response)
        assert params["error"] == "insufficient_scope"
        assert set(params["scope"].split()) == {"read", "write"}


@pytest.mark.parametrize("scope", ["read", "write", "read write"])
def test_empty_require_scope_accepts_any_valid_token(
    client: FlaskClient,
    registered_client: dict[str, Any],
    token_for: Callable[..., str],
    scope: str,
) -> None:
    """``require_scope()`` accepts any valid token whatever its scopes."""
    response = client.get("/api/whoami", headers=bearer(token_for(scope)))
    assert response.status_code == 200
    assert response.get_json() == {
        "client_id": registered_client["client_id"],
        "scopes": scope.split(),
    }


def test_decorator_without_parentheses_is_a_type_error() -> None:
    """``@require_scope`` without parentheses fails at decoration time, not per request."""

    def view() -> str:
        return "x"

    with pytest.raises(TypeError):
        require_scope(view)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        require_scope(["read"])  # type: ignore[arg-type]


def test_decorator_keeps_view_metadata() -> None:
    """``functools.wraps``: the view keeps its name (Flask's endpoint) and docstring."""

    def list_items() -> str:
        """List the items."""
        return "x"

    wrapped = require_scope("read")(list_items)
    assert wrapped.__name__ == "list_items"
    assert wrapped.__doc__ == "List the items."
    assert wrapped.__wrapped__ is list_items  # type: ignore[attr-defined]


def test_async_view_is_checked_before_it_runs(app_factory: Callable[..., Flask]) -> None:
    """RFC 6750 §3.1 on an ``async def`` view: the token is checked before the coroutine runs
    (asgiref is not installed here, so only the refusals are exercised)."""
    app = app_factory()
    ran: list[bool] = []

    @app.get("/api/async")
    @require_scope("write")
    async def async_view() -> dict[str, Any]:
        ran.append(True)
        return {"ok": True}

    client = app.test_client()
    assert client.get("/api/async").status_code == 401
    token = fetch_token(client, register(app, "read"))
    assert client.get("/api/async", headers=bearer(token)).status_code == 403
    assert_invalid_token(client.get("/api/async", headers=bearer("garbage")))
    assert ran == [] and async_view.__name__ == "async_view"


def test_expired_token_refused_even_when_cached(
    app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RFC 6750 §3.1 / RFC 9068 §4: an expired token is ``invalid_token``, also from the cache."""
    app = app_factory(M2M_ACCESS_TOKEN_EXPIRES_IN=60)
    client = app.test_client()
    token = fetch_token(client, register(app))
    assert client.get("/api/whoami", headers=bearer(token)).status_code == 200  # cached
    later = time.time() + 60 + 30 + 1  # lifetime + default M2M_LEEWAY
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: later)
    assert_invalid_token(client.get("/api/whoami", headers=bearer(token)))


# -- revocation and client state, one instance ---------------------------------------------


def revoke_or_remove(app: Flask, action: str, credentials: dict[str, Any], token: str) -> None:
    """Disable or delete the client (clients module), or revoke the token (RFC 7009)."""
    client_id = credentials["client_id"]
    if action == "revoke":
        response = app.test_client().post(
            "/m2m/revoke",
            data={"token": token},
            headers=basic_auth(client_id, credentials["client_secret"]),
        )
        assert response.status_code == 200
        return
    with app.app_context():
        if action == "disable":
            set_disabled(get_state(app), client_id, True, actor="test")
        else:
            delete_client(get_state(app), client_id, actor="test")
        get_state(app).db.session.commit()


ACTIONS = ["disable", "delete", "revoke"]


@pytest.mark.parametrize("action", ACTIONS)
def test_token_stops_working_at_once_on_same_instance(
    app: Flask, client: FlaskClient, registered_client: dict[str, Any], action: str
) -> None:
    """RFC 7009 §2 / contract: a disabled or deleted client's tokens and a revoked token are
    refused at once by the instance that made the change, cache or not."""
    token = fetch_token(client, registered_client)
    assert client.get("/api/whoami", headers=bearer(token)).status_code == 200  # now cached
    revoke_or_remove(app, action, registered_client, token)
    assert_invalid_token(client.get("/api/whoami", headers=bearer(token)))


def test_reenabling_does_not_revive_old_tokens(
    app: Flask,
    client: FlaskClient,
    registered_client: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client's old tokens stay dead after disable + enable, while a token fetched after the
    re-enable works even within the same second (``tokens_valid_after`` rounding)."""
    frozen = int(time.time()) + 0.5  # every step below happens in this very second
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: frozen)
    old = fetch_token(client, registered_client)
    assert client.get("/api/whoami", headers=bearer(old)).status_code == 200
    state = get_state(app)
    with app.app_context():
        set_disabled(state, registered_client["client_id"], True, actor="test")
        state.db.session.commit()
        set_disabled(state, registered_client["client_id"], False, actor="test")
        state.db.session.commit()
        row = state.db.session.get(state.models.client, registered_client["client_id"])
        assert row.disabled is False
    assert_invalid_token(client.get("/api/whoami", headers=bearer(old)))
    new = fetch_token(client, registered_client)
    assert client.get("/api/whoami", headers=bearer(new)).status_code == 200
    assert_invalid_token(client.get("/api/whoami", headers=bearer(old)))


# -- several instances sharing one database ------------------------------------------------


def two_instances(
    app_factory: Callable[..., Flask], url: str, **config: Any
) -> tuple[Flask, Flask, dict[str, Any], str]:
    """Two apps on one database, a client, and a token that instance 2 has verified."""
    first = app_factory(database_url=url, **config)
    second = app_factory(database_url=url, **config)  # recreates the tables: register after
    credentials = register(first)
    token = fetch_token(first.test_client(), credentials)
    assert second.test_client().get("/api/whoami", headers=bearer(token)).status_code == 200
    return first, second, credentials, token


@pytest.mark.parametrize("action", ACTIONS)
def test_other_instance_sees_change_within_bound(
    app_factory: Callable[..., Flask], shared_database_url: str, clock: Clock, action: str
) -> None:
    """M2M_STATE_CACHE_SECONDS (default 5) bounds how long another instance may keep accepting
    a token of a disabled/deleted client or a revoked token (RFC 7009 §2)."""
    first, second, credentials, token = two_instances(app_factory, shared_database_url)
    revoke_or_remove(first, action, credentials, token)
    other = second.test_client()

    assert_invalid_token(first.test_client().get("/api/whoami", headers=bearer(token)))
    assert other.get("/api/whoami", headers=bearer(token)).status_code == 200  # still cached
    clock.advance(BOUND - 0.5)
    assert other.get("/api/whoami", headers=bearer(token)).status_code == 200
    clock.advance(1.0)  # the bound has passed
    assert_invalid_token(other.get("/api/whoami", headers=bearer(token)))
    assert_invalid_token(other.get("/api/whoami", headers=bearer(token)))


def test_cache_rechecks_and_keeps_valid_token(
    app_factory: Callable[..., Flask], shared_database_url: str, clock: Clock
) -> None:
    """After the bound a still-valid token is re-checked against the database and kept."""
    _, second, _, token = two_instances(app_factory, shared_database_url)
    for _ in range(3):
        clock.advance(BOUND + 1)
        response = second.test_client().get("/api/whoami", headers=bearer(token))
        assert response.status_code == 200


def test_no_cache_sees_disable_at_once(
    app_factory: Callable[..., Flask], shared_database_url: str, clock: Clock
) -> None:
    """With M2M_STATE_CACHE_SECONDS=0 nothing is cached: another instance refuses a disabled
    client's token immediately."""
    first, second, credentials, token = two_instances(
        app_factory, shared_database_url, M2M_STATE_CACHE_SECONDS=0
    )
    revoke_or_remove(first, "disable", credentials, token)
    assert_invalid_token(second.test_client().get("/api/whoami", headers=bearer(token)))


def test_cache_avoids_a_query_per_request(
    app: Flask, client: FlaskClient, registered_client: dict[str, Any], clock: Clock
) -> None:
    """Within the bound, repeated requests with one token are answered from memory: the SQL
    statement count does not grow with the number of requests."""
    token = fetch_token(client, registered_client)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    with app.app_context():
        engine = get_state(app).db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client.get("/api/whoami", headers=bearer(token)).status_code == 200
        after_first = len(statements)
        for _ in range(49):
            clock.advance(0.05)
            assert client.get("/api/whoami", headers=bearer(token)).status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert after_first >= 1  # the first use of the token read the client's state
    assert len(statements) - after_first <= 2, statements[after_first:]


class RoundTrips:
    """Everything an app's engine asks of its database, counted by SQLAlchemy events:
    connections checked out of the pool, statements executed, commits and rollbacks."""

    EVENTS = ("checkout", "before_cursor_execute", "commit", "rollback")

    def __init__(self, app: Flask):
        with app.app_context():
            self.engine = get_state(app).db.engine
        self.counts = dict.fromkeys(self.EVENTS, 0)
        self._listeners = [(name, self._counter(name)) for name in self.EVENTS]

    def _counter(self, name: str) -> Callable[..., None]:
        def count(*args: Any, **kwargs: Any) -> None:
            self.counts[name] += 1

        return count

    def __enter__(self) -> RoundTrips:
        for name, listener in self._listeners:
            event.listen(self.engine.pool if name == "checkout" else self.engine, name, listener)
        return self

    def __exit__(self, *exc: object) -> None:
        for name, listener in self._listeners:
            event.remove(self.engine.pool if name == "checkout" else self.engine, name, listener)

    def total(self) -> int:
        return sum(self.counts.values())


def test_cached_token_makes_no_database_round_trip(
    app: Flask, client: FlaskClient, registered_client: dict[str, Any], clock: Clock
) -> None:
    """A token already verified within ``M2M_STATE_CACHE_SECONDS`` is answered without the
    database: no connection, statement, commit or rollback (SQLite, or the PostgreSQL of
    ``M2M_TEST_DATABASE_URL``); past the bound its state is read again (revocation bound),
    then it is cached anew."""
    token = fetch_token(client, registered_client, "read")
    with RoundTrips(app) as first:
        assert client.get("/api/read", headers=bearer(token)).status_code == 200
    assert first.counts["before_cursor_execute"] >= 1  # the first use read the client's state
    with RoundTrips(app) as cached:
        for _ in range(20):
            clock.advance(BOUND / 25)
            assert client.get("/api/read", headers=bearer(token)).status_code == 200
            assert client.get("/api/both", headers=bearer(token)).status_code == 403
    assert cached.total() == 0, cached.counts
    clock.advance(BOUND)
    with RoundTrips(app) as reread:
        assert client.get("/api/read", headers=bearer(token)).status_code == 200
    assert reread.counts["before_cursor_execute"] >= 1, reread.counts
    with RoundTrips(app) as again:
        assert client.get("/api/read", headers=bearer(token)).status_code == 200
    assert again.total() == 0, again.counts
