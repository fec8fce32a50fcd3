"""Real OAuth 2.0 client libraries (Authlib, requests-oauthlib, PyJWT) against a live server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session as AuthlibSession
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from flask import Flask
from helpers.apps import register
from oauthlib.oauth2 import BackendApplicationClient
from requests_oauthlib import OAuth2Session as OAuthlibSession

ISSUER = "https://issuer.test"
METADATA_PATH = "/.well-known/oauth-authorization-server"


def _authlib_session(
    creds: dict[str, Any], method: str, seen: list[requests.PreparedRequest]
) -> AuthlibSession:
    session = AuthlibSession(
        creds["client_id"],
        creds["client_secret"],
        scope="read",
        token_endpoint_auth_method=method,
    )
    session.hooks["response"].append(lambda response, **_: seen.append(response.request))
    return session


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_client_credentials(
    app: Flask,
    registered_client: dict[str, Any],
    live_server_factory: Callable[[Flask], Any],
    method: str,
) -> None:
    """RFC 6749 §4.4 with client authentication by §2.3.1 (Basic or body), using Authlib's
    requests client; the token then opens a route needing its scope (RFC 6750 §2.1)."""
    server = live_server_factory(app)
    seen: list[requests.PreparedRequest] = []
    with _authlib_session(registered_client, method, seen) as session:
        token = session.fetch_token(server.url + "/m2m/token", grant_type="client_credentials")
        assert token["token_type"].lower() == "bearer"
        assert token["scope"] == "read"
        assert isinstance(token["expires_in"], int) and token["expires_in"] > 0
        assert "refresh_token" not in token
        token_request = seen[0]
        form = parse_qs(str(token_request.body))
        if method == "client_secret_basic":
            assert token_request.headers["Authorization"].startswith("Basic ")
            assert "client_secret" not in form
        else:
            assert "Authorization" not in token_request.headers
            assert form["client_secret"] == [registered_client["client_secret"]]

        response = session.get(server.url + "/api/read")
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        whoami = session.get(server.url + "/api/whoami").json()
        assert whoami == {"client_id": registered_client["client_id"], "scopes": ["read"]}
        refused = session.post(server.url + "/api/write")
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["WWW-Authenticate"]


def test_requests_oauthlib_backend_application(
    app: Flask,
    registered_client: dict[str, Any],
    live_server_factory: Callable[[Flask], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RFC 6749 §4.4.2 / §4.4.3 with oauthlib's BackendApplicationClient (Basic auth, §2.3.1);
    the Bearer token is sent in the Authorization header (RFC 6750 §2.1)."""
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")  # plain HTTP on 127.0.0.1 only
    server = live_server_factory(app)
    client_id = registered_client["client_id"]
    with OAuthlibSession(client=BackendApplicationClient(client_id=client_id)) as session:
        token = session.fetch_token(
            token_url=server.url + "/m2m/token",
            client_id=client_id,
            client_secret=registered_client["client_secret"],
        )
        assert token["token_type"].lower() == "bearer"
        assert token["scope"] == ["read", "write"]
        assert "refresh_token" not in token
        response = session.get(server.url + "/api/whoami")
        assert response.status_code == 200
        assert response.json() == {"client_id": client_id, "scopes": ["read", "write"]}
        assert session.post(server.url + "/api/write").status_code == 200


def _validate_metadata(data: dict[str, Any]) -> None:
    """Authlib's RFC 8414 §2 validation of every member, except the one noted below."""
    metadata = AuthorizationServerMetadata(data)
    for key in metadata.REGISTRY_KEYS:
        if key == "response_types_supported":
            # REQUIRED JSON array (RFC 8414 §2). This server has no authorization endpoint, so
            # it truthfully lists no response type; Authlib's validator treats an empty array
            # as missing, so only the type is checked here.
            assert isinstance(data[key], list)
            continue
        getattr(metadata, f"validate_{key}")()
    assert "client_credentials" in data["grant_types_supported"]
    assert {"client_secret_basic", "client_secret_post"} <= set(
        data["token_endpoint_auth_methods_supported"]
    )
    for member in ("token_endpoint", "jwks_uri", "revocation_endpoint", "introspection_endpoint"):
        assert data[member].startswith(data["issuer"] + "/")


def _get_metadata(url: str) -> dict[str, Any]:
    response = requests.get(url + METADATA_PATH, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    data: dict[str, Any] = response.json()
    return data


def test_discovery_with_configured_issuer(
    app: Flask, registered_client: dict[str, Any], live_server_factory: Callable[[Flask], Any]
) -> None:
    """RFC 8414 §2 (members) and §3 (well-known URI): with M2M_ISSUER set, every endpoint
    lives under that https issuer; behind a TLS proxy the named token endpoint works."""
    server = live_server_factory(app)
    data = _get_metadata(server.url)
    assert data["issuer"] == ISSUER
    _validate_metadata(data)
    token_path = urlsplit(data["token_endpoint"]).path
    with AuthlibSession(
        registered_client["client_id"], registered_client["client_secret"]
    ) as session:
        token = session.fetch_token(server.url + token_path, grant_type="client_credentials")
        assert (
            jwt.decode(token["access_token"], options={"verify_signature": False})["iss"]
            == data["issuer"]
        )
        assert session.get(server.url + "/api/read").status_code == 200


def test_discovery_with_issuer_from_request(
    app_factory: Callable[..., Flask], live_server_factory: Callable[[Flask], Any]
) -> None:
    """RFC 8414 §3 / §3.3: without M2M_ISSUER the issuer is the URL the metadata was fetched
    under; its token_endpoint and jwks_uri are used as named (RFC 6749 §4.4, RFC 9068 §4)."""
    app = app_factory(M2M_ISSUER=None)
    creds = register(app)
    server = live_server_factory(app)
    data = _get_metadata(server.url)
    assert data["issuer"] == server.url
    _validate_metadata(data)
    with AuthlibSession(creds["client_id"], creds["client_secret"], scope="read") as session:
        token = session.fetch_token(data["token_endpoint"], grant_type="client_credentials")
        signing_key = jwt.PyJWKClient(data["jwks_uri"]).get_signing_key_from_jwt(
            token["access_token"]
        )
        claims = jwt.decode(
            token["access_token"],
            signing_key.key,
            algorithms=["RS256"],
            audience=data["issuer"],
            issuer=data["issuer"],
        )
        assert claims["client_id"] == creds["client_id"]
        response = session.get(server.url + "/api/read")
        assert response.status_code == 200


def test_authlib_metadata_validator_verdict(
    app: Flask, live_server_factory: Callable[[Flask], Any]
) -> None:
    """RFC 8414 §2: Authlib's full validate() passes once response_types_supported holds a
    value, i.e. that empty (truthful) array is the only member its validator objects to."""
    data = _get_metadata(live_server_factory(app).url)
    AuthorizationServerMetadata({**data, "response_types_supported": ["code"]}).validate()
