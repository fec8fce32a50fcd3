"""DPoP (RFC 9449 §7) on routes protected by ``require_scope`` on the authorization server:
the ``DPoP`` scheme with a proof for this method and URL, ``ath``, single-use ``jti``, server
nonces (§9), challenges (§7.1), bound tokens refused as Bearer (§7.2), behind ``ProxyFix``,
and the management API with a DPoP-bound admin token."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import register
from helpers.dpop import JoseKey, PyJWTKey
from helpers.http import basic_auth, bearer
from werkzeug.middleware.proxy_fix import ProxyFix

TOKEN_URL = "http://localhost/m2m/token"
READ_URL = "http://localhost/api/read"


def bound_token(
    client: FlaskClient, creds: dict[str, Any], key: JoseKey | PyJWTKey, url: str = TOKEN_URL,
    **headers: str,
) -> str:
    response = client.post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers={
            **basic_auth(creds["client_id"], creds["client_secret"]),
            "DPoP": key.proof("POST", url),
            **headers,
        },
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    token: str = response.get_json()["access_token"]
    return token


def dpop(token: str, proof: str) -> dict[str, str]:
    return {"Authorization": f"DPoP {token}", "DPoP": proof}


def challenges(response: Any) -> list[str]:
    return list(response.headers.getlist("WWW-Authenticate"))


@pytest.fixture
def creds(app: Flask) -> dict[str, Any]:
    return register(app)


@pytest.mark.parametrize("key_class", [JoseKey, PyJWTKey])
def test_dpop_scheme_with_a_proof_is_accepted(
    client: FlaskClient, creds: dict[str, Any], key_class: type[JoseKey | PyJWTKey]
) -> None:
    """§7.1: ``Authorization: DPoP <token>`` with a proof carrying ``ath``."""
    key = key_class()
    token = bound_token(client, creds, key)
    response = client.get("/api/read", headers=dpop(token, key.proof("GET", READ_URL, token)))
    assert response.status_code == 200, response.get_json()
    # the query string is not part of htu (§4.3 check 9)
    response = client.get(
        "/api/read?page=2", headers=dpop(token, key.proof("GET", READ_URL, token))
    )
    assert response.status_code == 200


def _refused(client: FlaskClient, token: str, proof: str) -> Any:
    response = client.get("/api/read", headers=dpop(token, proof))
    assert response.status_code == 401
    return response


REJECTED: dict[str, Callable[[JoseKey, str], str]] = {
    "other method": lambda k, t: k.proof("POST", READ_URL, t),
    "other URL": lambda k, t: k.proof("GET", "http://localhost/api/whoami", t),
    "stale iat": lambda k, t: k.proof("GET", READ_URL, t, iat=int(time.time()) - 3600),
    "missing ath": lambda k, t: k.proof("GET", READ_URL),
    "wrong ath": lambda k, t: k.proof("GET", READ_URL, t + "x"),
    "other key": lambda k, t: JoseKey().proof("GET", READ_URL, t),
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_bad_proof_is_401_invalid_dpop_proof(
    client: FlaskClient, creds: dict[str, Any], case: str
) -> None:
    """§7.1: 401 with ``WWW-Authenticate: DPoP error="invalid_dpop_proof"``."""
    key = JoseKey()
    token = bound_token(client, creds, key)
    response = _refused(client, token, REJECTED[case](key, token))
    assert response.get_json()["error"] == "invalid_dpop_proof"
    assert challenges(response)[0].startswith('DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256"')
    assert 'error="invalid_dpop_proof"' in challenges(response)[0]
    assert challenges(response)[1].startswith("Bearer ")


def test_missing_proof(client: FlaskClient, creds: dict[str, Any]) -> None:
    token = bound_token(client, creds, JoseKey())
    response = client.get("/api/read", headers={"Authorization": f"DPoP {token}"})
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_reused_proof_is_refused(client: FlaskClient, creds: dict[str, Any]) -> None:
    """§11.1: the proof's jti is used once."""
    key = JoseKey()
    token = bound_token(client, creds, key)
    proof = key.proof("GET", READ_URL, token)
    assert client.get("/api/read", headers=dpop(token, proof)).status_code == 200
    response = _refused(client, token, proof)
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_bound_token_as_bearer_is_refused(client: FlaskClient, creds: dict[str, Any]) -> None:
    """§7.2: a DPoP-bound token is not a Bearer token, even with a proof alongside."""
    key = JoseKey()
    token = bound_token(client, creds, key)
    response = client.get("/api/read", headers=bearer(token))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    headers = {**bearer(token), "DPoP": key.proof("GET", READ_URL, token)}
    assert client.get("/api/read", headers=headers).status_code == 401


def test_unbound_token_with_dpop_scheme_is_refused(
    client: FlaskClient, creds: dict[str, Any], token_for: Callable[[str | None], str]
) -> None:
    token = token_for("read")
    key = JoseKey()
    response = client.get("/api/read", headers=dpop(token, key.proof("GET", READ_URL, token)))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"
    assert challenges(response)[0].startswith("DPoP ")


def test_challenges_offer_both_schemes(client: FlaskClient) -> None:
    """§7.1: without a token, a Bearer and a DPoP challenge (with ``algs``)."""
    response = client.get("/api/read")
    assert response.status_code == 401
    found = challenges(response)
    assert found[0].startswith('Bearer realm="api"')
    assert found[1].startswith('DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256"')


def test_insufficient_scope_with_dpop(app: Flask, client: FlaskClient) -> None:
    creds = register(app, scopes="read")
    key = JoseKey()
    token = bound_token(client, creds, key)
    url = "http://localhost/api/write"
    response = client.post("/api/write", headers=dpop(token, key.proof("POST", url, token)))
    assert response.status_code == 403
    assert 'error="insufficient_scope"' in challenges(response)[0]
    assert challenges(response)[0].startswith("DPoP ")


def test_nonce_required_on_protected_routes(app_factory: Callable[..., Flask]) -> None:
    """§9: 401 ``use_dpop_nonce`` with a ``DPoP-Nonce`` header; the retry with it passes."""
    app = app_factory(M2M_DPOP_REQUIRE_NONCE=True)
    client, creds, key = app.test_client(), register(app), JoseKey()
    first = client.post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers={
            **basic_auth(creds["client_id"], creds["client_secret"]),
            "DPoP": key.proof("POST", TOKEN_URL),
        },
    )
    nonce = first.headers["DPoP-Nonce"]
    response = client.post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers={
            **basic_auth(creds["client_id"], creds["client_secret"]),
            "DPoP": key.proof("POST", TOKEN_URL, nonce=nonce),
        },
    )
    token = response.get_json()["access_token"]
    refused = client.get("/api/read", headers=dpop(token, key.proof("GET", READ_URL, token)))
    assert refused.status_code == 401
    assert refused.get_json()["error"] == "use_dpop_nonce"
    assert 'error="use_dpop_nonce"' in challenges(refused)[0]
    proof = key.proof("GET", READ_URL, token, nonce=refused.headers["DPoP-Nonce"])
    assert client.get("/api/read", headers=dpop(token, proof)).status_code == 200


class TestBehindProxy:
    """The ``htu`` a client signs is the public URL; behind ``ProxyFix`` the request URL is
    restored from ``X-Forwarded-*``, and the internal URL is refused."""

    FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.com"}

    @pytest.fixture
    def proxied(self, app_factory: Callable[..., Flask]) -> Flask:
        app = app_factory()
        app.wsgi_app = ProxyFix(app.wsgi_app, x_proto=1, x_host=1)  # type: ignore[method-assign]
        return app

    def test_public_url_is_accepted(self, proxied: Flask) -> None:
        client, creds, key = proxied.test_client(), register(proxied), JoseKey()
        token = bound_token(
            client, creds, key, "https://api.example.com/m2m/token", **self.FORWARDED
        )
        proof = key.proof("GET", "https://api.example.com/api/read", token)
        response = client.get("/api/read", headers={**dpop(token, proof), **self.FORWARDED})
        assert response.status_code == 200, response.get_json()

    def test_internal_url_is_refused(self, proxied: Flask) -> None:
        client, creds, key = proxied.test_client(), register(proxied), JoseKey()
        token = bound_token(
            client, creds, key, "https://api.example.com/m2m/token", **self.FORWARDED
        )
        proof = key.proof("GET", READ_URL, token)
        response = client.get("/api/read", headers={**dpop(token, proof), **self.FORWARDED})
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_dpop_proof"


def test_configured_issuer_origin_is_accepted_as_htu(app_factory: Callable[..., Flask]) -> None:
    """Without ``ProxyFix``, ``M2M_ISSUER``'s origin names the public URL."""
    app = app_factory(M2M_ISSUER="https://auth.example.com")
    client, creds, key = app.test_client(), register(app), JoseKey()
    token = bound_token(client, creds, key, "https://auth.example.com/m2m/token")
    response = client.get(
        "/api/read",
        headers=dpop(token, key.proof("GET", "https://auth.example.com/api/read", token)),
    )
    assert response.status_code == 200, response.get_json()


def test_management_api_accepts_a_bound_admin_token(app: Flask, client: FlaskClient) -> None:
    """The management API authenticates through ``require_scope``: DPoP works there too,
    and it sets ``dpop_bound_access_tokens`` on create and on PATCH."""
    admin = register(app, scopes="m2m:admin")
    key = JoseKey()
    token = bound_token(client, admin, key)
    url = "http://localhost/m2m/clients"
    response = client.post(
        "/m2m/clients",
        json={"name": "bound", "scopes": ["read"], "dpop_bound_access_tokens": True},
        headers=dpop(token, key.proof("POST", url, token)),
    )
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["dpop_bound_access_tokens"] is True
    item = f"{url}/{created['client_id']}"
    response = client.patch(
        f"/m2m/clients/{created['client_id']}",
        json={"dpop_bound_access_tokens": False},
        headers=dpop(token, key.proof("PATCH", item, token)),
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["dpop_bound_access_tokens"] is False
    response = client.patch(
        f"/m2m/clients/{created['client_id']}",
        json={"dpop_bound_access_tokens": "yes"},
        headers=dpop(token, key.proof("PATCH", item, token)),
    )
    assert response.status_code == 422
    refused = client.get("/m2m/clients", headers=bearer(token))
    assert refused.status_code == 401
    assert refused.mimetype == "application/problem+json"
    found = challenges(refused)
    assert found[0].startswith('Bearer realm="api", error="invalid_token"')
    assert found[1].startswith('DPoP realm="api", algs=')


def test_cli_sets_dpop_bound(app: Flask) -> None:
    """CLI: ``create-client --dpop-bound`` and ``set-dpop-bound ID on|off``."""
    runner = app.test_cli_runner()
    result = runner.invoke(args=["m2m", "create-client", "--name", "w", "--dpop-bound", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["dpop_bound_access_tokens"] is True
    result = runner.invoke(args=["m2m", "set-dpop-bound", data["client_id"], "off"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(args=["m2m", "list-clients", "--json"]).output)
    assert listed["clients"][0]["dpop_bound_access_tokens"] is False
    result = runner.invoke(args=["m2m", "set-dpop-bound", "nope", "on"])
    assert result.exit_code != 0
