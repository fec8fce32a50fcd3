"""The ``@m2m.token_claims`` hook: extra claims in a client's tokens, or a refusal with an
RFC 6749 §5.2 error; reused tokens (``M2M_REUSE_TOKENS``) respect it too."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from helpers.apps import register
from helpers.http import basic_auth

from flask_m2m import TokenRefused
from flask_m2m.extension import get_state


def request_token(app: Flask, creds: dict[str, Any]) -> Any:
    return app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )


def claims(app: Flask, token: str) -> dict[str, Any]:
    with app.app_context():
        return dict(get_state(app).tokens.decode(token).claims)


def hooked(app_factory: Callable[..., Flask], **config: Any) -> Flask:
    """An app whose hook adds ``tenant`` from the client's metadata and refuses clients
    whose metadata says ``blocked``."""
    app = app_factory(**config)
    m2m = get_state(app).extension

    @m2m.token_claims
    def add_tenant(client: Any, scope: str) -> dict[str, Any] | None:
        metadata = client.client_metadata or {}
        if metadata.get("blocked"):
            raise TokenRefused("This client is blocked by policy.")
        return {"tenant": metadata["tenant"]} if "tenant" in metadata else None

    return app


def test_hook_adds_claims(app_factory: Callable[..., Flask]) -> None:
    app = hooked(app_factory)
    creds = register(app, metadata={"tenant": "acme"})
    response = request_token(app, creds)
    assert response.status_code == 200
    assert claims(app, response.get_json()["access_token"])["tenant"] == "acme"
    plain = register(app)
    token = request_token(app, plain).get_json()["access_token"]
    assert "tenant" not in claims(app, token)


def test_hook_refuses_with_an_oauth_error(app_factory: Callable[..., Flask]) -> None:
    app = hooked(app_factory)
    creds = register(app, metadata={"blocked": True})
    response = request_token(app, creds)
    assert response.status_code == 400
    assert response.get_json() == {
        "error": "unauthorized_client",
        "error_description": "This client is blocked by policy.",
    }


def test_refusal_error_code_is_a_token_endpoint_one() -> None:
    assert TokenRefused("no", "invalid_scope").error == "invalid_scope"
    with pytest.raises(ValueError):
        TokenRefused("no", "server_error")


def test_registered_claims_cannot_be_overridden(app_factory: Callable[..., Flask]) -> None:
    app = app_factory()
    app.config["PROPAGATE_EXCEPTIONS"] = False

    @get_state(app).extension.token_claims
    def bad(client: Any, scope: str) -> dict[str, Any]:
        return {"sub": "someone-else"}

    assert request_token(app, register(app)).status_code == 500


def test_reused_tokens_respect_the_hook(app_factory: Callable[..., Flask]) -> None:
    """With ``M2M_REUSE_TOKENS``, a token is handed back only while the hook gives the same
    claims, and never once the hook refuses."""
    app = app_factory(M2M_REUSE_TOKENS=True)
    verdict: dict[str, Any] = {"tenant": "a", "refuse": False}

    @get_state(app).extension.token_claims
    def hook(client: Any, scope: str) -> dict[str, Any]:
        if verdict["refuse"]:
            raise TokenRefused("Suspended.")
        return {"tenant": verdict["tenant"]}

    creds = register(app)
    first = request_token(app, creds).get_json()["access_token"]
    assert request_token(app, creds).get_json()["access_token"] == first
    verdict["tenant"] = "b"
    second = request_token(app, creds).get_json()["access_token"]
    assert second != first
    assert claims(app, second)["tenant"] == "b"
    verdict["refuse"] = True
    assert request_token(app, creds).status_code == 400


def test_per_client_lifetime_composes_with_the_hook(app_factory: Callable[..., Flask]) -> None:
    """A client's ``access_token_expires_in`` still sets ``exp`` of hooked tokens."""
    app = hooked(app_factory)
    creds = register(app, metadata={"tenant": "acme"}, access_token_expires_in=120)
    body = request_token(app, creds).get_json()
    issued = claims(app, body["access_token"])
    assert issued["exp"] - issued["iat"] == 120
    assert body["expires_in"] <= 120


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_introspection_returns_the_hook_claims(
    app_factory: Callable[..., Flask], token_format: str
) -> None:
    """RFC 7662 §2.2 lets an introspection answer carry other members: the hook's claims come
    back for a JWT and for an opaque token (stored with it), never over the registered ones."""
    app = hooked(app_factory, M2M_TOKEN_FORMAT=token_format)
    creds = register(app, metadata={"tenant": "acme"})
    token = request_token(app, creds).get_json()["access_token"]
    answer = app.test_client().post(
        "/m2m/introspect",
        data={"token": token},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    ).get_json()
    assert answer["active"] is True
    assert answer["tenant"] == "acme"
    assert answer["client_id"] == creds["client_id"]
    plain = register(app)
    other = request_token(app, plain).get_json()["access_token"]
    answer = app.test_client().post(
        "/m2m/introspect",
        data={"token": other},
        headers=basic_auth(plain["client_id"], plain["client_secret"]),
    ).get_json()
    assert answer["active"] is True and "tenant" not in answer
