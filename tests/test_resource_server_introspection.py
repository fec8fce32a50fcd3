"""``ResourceServer`` with RFC 7662 introspection: opaque tokens (and every token with
``M2M_INTROSPECTION = "always"``) checked at the authorization server, served over real HTTP,
with the resource server's own client credentials (scope ``m2m:introspect``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from helpers.apps import register
from helpers.http import basic_auth
from helpers.resource_servers import (
    INTROSPECT_PATH,
    JWKS_PATH,
    AuthServer,
    Clock,
    assert_invalid_token,
    bearer,
    inventory,
    protector,
    whoami,
)

from flask_m2m import current_token, require_scope
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import set_disabled
from flask_m2m.resource_config import RESOURCE_SERVER_DEFAULTS

BOUND = RESOURCE_SERVER_DEFAULTS["M2M_INTROSPECTION_CACHE_SECONDS"]


@pytest.fixture(params=["opaque"])
def token_format(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def auth(app_factory: Callable[..., Flask], token_format: str) -> Iterator[AuthServer]:
    """The authorization server, minting tokens for the inventory."""
    app = app_factory(
        M2M_ISSUER=None, M2M_AUDIENCE="https://inventory.test", M2M_TOKEN_FORMAT=token_format
    )
    server = AuthServer(app)
    yield server
    server.stop()


@pytest.fixture
def creds(auth: AuthServer) -> dict[str, Any]:
    return register(auth.app, "inventory:read")


@pytest.fixture
def service(auth: AuthServer) -> Callable[..., tuple[Flask, Clock]]:
    """``service(**config)``: the inventory, introspecting as a client with m2m:introspect."""
    own = register(auth.app, "m2m:introspect")

    def build(**config: Any) -> tuple[Flask, Clock]:
        config.setdefault("M2M_INTROSPECTION_CLIENT_ID", own["client_id"])
        config.setdefault("M2M_INTROSPECTION_CLIENT_SECRET", own["client_secret"])
        app = inventory(auth, **config)
        return app, Clock(protector(app))

    return build


def revoke(auth: AuthServer, creds: dict[str, Any], token: str) -> None:
    response = auth.app.test_client().post(
        "/m2m/revoke",
        data={"token": token},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
        base_url=auth.url,
    )
    assert response.status_code == 200


def test_opaque_token_is_introspected_and_cached(
    auth: AuthServer, creds: dict[str, Any], service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """RFC 7662 §2.1, §2.2: the opaque token is active for this audience; the answer is
    reused for ``M2M_INTROSPECTION_CACHE_SECONDS`` (§4), then asked for again."""
    app, clock = service()
    token = auth.token(creds)
    response = whoami(app, token)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "client_id": creds["client_id"],
        "scopes": ["inventory:read"],
        "aud": "https://inventory.test",
    }
    assert whoami(app, token).status_code == 200
    assert auth.hits[INTROSPECT_PATH] == 1
    clock.advance(BOUND)
    assert whoami(app, token).status_code == 200
    assert auth.hits[INTROSPECT_PATH] == 2


@pytest.mark.parametrize("how", ["revoke", "disable"])
def test_revocation_is_seen_within_the_cache_bound(
    auth: AuthServer,
    creds: dict[str, Any],
    service: Callable[..., tuple[Flask, Clock]],
    how: str,
) -> None:
    """RFC 7662 §4: a revoked token, or one of a disabled client, still passes until the
    cached answer is ``M2M_INTROSPECTION_CACHE_SECONDS`` old, and not after."""
    app, clock = service()
    token = auth.token(creds)
    assert whoami(app, token).status_code == 200
    if how == "revoke":
        revoke(auth, creds, token)
    else:
        with auth.app.app_context():
            set_disabled(get_state(auth.app), creds["client_id"], True, actor="test")
            get_state(auth.app).db.session.commit()
    assert whoami(app, token).status_code == 200
    clock.advance(BOUND)
    assert_invalid_token(whoami(app, token))


def test_answer_is_not_reused_past_the_tokens_expiry(
    auth: AuthServer, service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """RFC 7662 §4: an answer is cached no longer than the token's ``exp``, whatever the
    configured bound."""
    app, clock = service(M2M_INTROSPECTION_CACHE_SECONDS=86400)
    short = register(auth.app, "inventory:read", access_token_expires_in=60)
    token = auth.token(short)
    assert whoami(app, token).status_code == 200
    clock.advance(60)
    whoami(app, token)
    assert auth.hits[INTROSPECT_PATH] == 2


def test_the_audience_is_checked_by_the_resource_server(
    auth: AuthServer, creds: dict[str, Any], service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """The authorization server tells an ``m2m:introspect`` client about any token; the
    resource server refuses one whose ``aud`` is not its own (RFC 9068 §4, RFC 7662 §4)."""
    app, _ = service(M2M_AUDIENCE="https://billing.test")
    response = whoami(app, auth.token(creds))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_inactive_answers_are_cached_too(
    auth: AuthServer, service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """A token the server calls inactive is refused, and repeating it within the bound asks
    the server no more."""
    app, _ = service()
    for _ in range(5):
        assert_invalid_token(whoami(app, "m2mat_" + "x" * 43))
    assert auth.hits[INTROSPECT_PATH] == 1


def test_without_the_introspect_scope_nothing_is_active(
    auth: AuthServer, creds: dict[str, Any], service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """RFC 7662 §2.1: a client without ``m2m:introspect`` sees only its own tokens active, so
    a resource server using one refuses everyone else's."""
    plain = register(auth.app, "read")
    app, _ = service(
        M2M_INTROSPECTION_CLIENT_ID=plain["client_id"],
        M2M_INTROSPECTION_CLIENT_SECRET=plain["client_secret"],
    )
    assert_invalid_token(whoami(app, auth.token(creds)))


def test_authorization_server_down_is_503(
    auth: AuthServer,
    creds: dict[str, Any],
    service: Callable[..., tuple[Flask, Clock]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the authorization server unreachable, a token that must be introspected gets 503
    ``temporarily_unavailable`` (JSON, ``Retry-After``), logged once; an answer cached before
    the outage still serves within its bound."""
    caplog.set_level(logging.WARNING)
    app, clock = service()
    known, fresh = auth.token(creds), auth.token(creds)
    assert whoami(app, known).status_code == 200
    auth.stop()
    assert whoami(app, known).status_code == 200
    for _ in range(3):
        response = whoami(app, fresh)
        assert response.status_code == 503
        assert response.get_json()["error"] == "temporarily_unavailable"
        assert response.headers["Retry-After"]
    clock.advance(BOUND)
    assert whoami(app, known).status_code == 503
    outage = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(outage) == 1


def test_refused_credentials_are_503_and_logged(
    auth: AuthServer,
    creds: dict[str, Any],
    service: Callable[..., tuple[Flask, Clock]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """RFC 7662 §2.3: the server refuses the resource server's credentials (401): nothing
    can be checked, so 503, with a log line that names the settings to fix."""
    caplog.set_level(logging.WARNING)
    app, _ = service(M2M_INTROSPECTION_CLIENT_SECRET="wrong-secret")
    assert whoami(app, auth.token(creds)).status_code == 503
    assert "M2M_INTROSPECTION_CLIENT_ID" in caplog.text


@pytest.mark.parametrize("token_format", ["jwt"], indirect=True)
def test_always_mode_introspects_jwts_too(
    auth: AuthServer, creds: dict[str, Any], service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """``M2M_INTROSPECTION = "always"``: JWTs are introspected as well (no JWKS fetched), so
    a revocation shows within the bound; offline verification would accept the token until
    it expires."""
    app, clock = service(M2M_INTROSPECTION="always")
    offline = inventory(auth)
    token = auth.token(creds)
    assert whoami(app, token).status_code == 200
    assert auth.hits[JWKS_PATH] == 0
    assert whoami(offline, token).status_code == 200
    revoke(auth, creds, token)
    clock.advance(BOUND)
    assert_invalid_token(whoami(app, token))
    assert whoami(offline, token).status_code == 200  # offline: valid until exp


def test_hook_claims_reach_current_token(
    auth: AuthServer, creds: dict[str, Any], service: Callable[..., tuple[Flask, Clock]]
) -> None:
    """The authorization server's ``token_claims`` hook adds claims to an opaque token; the
    resource server finds them in ``current_token.claims`` from the introspection answer."""

    @get_state(auth.app).extension.token_claims
    def add_tenant(client: Any, scope: str) -> dict[str, Any]:
        return {"tenant": "acme"}

    app, _ = service()

    @app.get("/inventory/tenant")
    @require_scope("inventory:read")
    def tenant() -> dict[str, Any]:
        return {"tenant": current_token.claims.get("tenant")}

    token = auth.token(creds)
    response = app.test_client().get("/inventory/tenant", headers=bearer(token))
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {"tenant": "acme"}
