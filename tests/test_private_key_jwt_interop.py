"""``private_key_jwt`` with client libraries nobody on this project wrote: Authlib's
``PrivateKeyJWT`` (RFC 7523 §2.2) over requests and httpx against a live server."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
from authlib.deprecate import AuthlibDeprecationWarning
from authlib.integrations.requests_client import OAuth2Session as RequestsSession
from authlib.oauth2.rfc7523 import PrivateKeyJWT
from flask import Flask
from helpers.key_clients import TOKEN_URL, new_key, public_set, register_key_client

with warnings.catch_warnings():  # Authlib 1.9 prefers its httpx2 flavour; httpx still works
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import OAuth2Client as HttpxSession


@pytest.mark.parametrize("library", ["requests", "httpx"])
@pytest.mark.parametrize("kind", ["RSA", "EC"])
def test_authlib_private_key_jwt(
    app: Flask, live_server_factory: Callable[[Flask], Any], library: str, kind: str
) -> None:
    """Authlib signs for an hour (the default ``M2M_CLIENT_ASSERTION_MAX_LIFETIME``) with a
    PEM key (RSA: no ``kid``, so tried against each key) or a joserfc key (EC); the token then
    opens a protected route, and a second assertion gets another token."""
    import authlib

    if kind == "EC" and tuple(int(p) for p in authlib.__version__.split(".")[:2]) < (1, 8):
        pytest.skip("Authlib's own PrivateKeyJWT signs only RSA keys before 1.8 (peer's limit)")
    key = new_key(kind, kid="authlib")
    client_id = register_key_client(app, key, new_key(kind, kid="spare"))
    server = live_server_factory(app)
    session_class: Any = RequestsSession if library == "requests" else HttpxSession
    alg = "RS256" if kind == "RSA" else "ES256"
    with session_class(
        client_id,
        key.as_pem(private=True).decode() if kind == "RSA" else key,
        scope="read",
        token_endpoint_auth_method=PrivateKeyJWT(TOKEN_URL, alg=alg),
    ) as session:
        token = session.fetch_token(server.url + "/m2m/token", grant_type="client_credentials")
        assert token["token_type"].lower() == "bearer" and token["scope"] == "read"
        response = session.get(server.url + "/api/read")
        assert response.status_code == 200
        again = session.fetch_token(server.url + "/m2m/token", grant_type="client_credentials")
        assert again["access_token"]


def test_public_set_without_kid_verifies(app: Flask) -> None:
    """A registered key without ``kid`` verifies assertions without one."""
    from helpers.key_clients import assertion, form

    key = new_key("EC", kid=None)
    client_id = register_key_client(app, jwks=public_set(key))
    response = app.test_client().post(
        "/m2m/token", data=form(assertion(key, client_id, alg="ES256"))
    )
    assert response.status_code == 200
