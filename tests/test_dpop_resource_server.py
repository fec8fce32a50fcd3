"""DPoP (RFC 9449 §7) on a ``ResourceServer``: the example inventory accepts DPoP-bound tokens
of an authorization server served over real HTTP only with a proof for this request (JWTs
offline, opaque tokens through introspection's ``cnf``), refuses them as Bearer, asks for its
nonces when configured, remembers proofs in memory or Redis, and says so in its RFC 9728
metadata."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from helpers.apps import register
from helpers.dpop import JoseKey, PyJWTKey
from helpers.http import basic_auth
from helpers.resource_servers import INVENTORY, AuthServer, inventory

ITEMS = "http://localhost/inventory/items"


@pytest.fixture(params=["jwt", "opaque"])
def auth(request: pytest.FixtureRequest, app_factory: Callable[..., Flask]) -> Iterator[AuthServer]:
    app = app_factory(M2M_ISSUER=None, M2M_AUDIENCE=INVENTORY, M2M_TOKEN_FORMAT=request.param)
    server = AuthServer(app)
    yield server
    server.stop()


@pytest.fixture
def service(auth: AuthServer) -> Callable[..., Flask]:
    """``service(**config)``: the inventory; it introspects opaque tokens."""
    own = register(auth.app, "m2m:introspect")

    def build(**config: Any) -> Flask:
        config.setdefault("M2M_INTROSPECTION_CLIENT_ID", own["client_id"])
        config.setdefault("M2M_INTROSPECTION_CLIENT_SECRET", own["client_secret"])
        return inventory(auth, **config)

    return build


def bound_token(auth: AuthServer, key: JoseKey | PyJWTKey) -> str:
    """A DPoP-bound token from the authorization server (its own URL is the proof's htu)."""
    creds = register(auth.app, "inventory:read")
    response = auth.app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials", "scope": "inventory:read"},
        headers={
            **basic_auth(creds["client_id"], creds["client_secret"]),
            "DPoP": key.proof("POST", f"{auth.url}/m2m/token"),
        },
        base_url=auth.url,
    )
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    token: str = response.get_json()["access_token"]
    return token


def get(app: Flask, token: str, proof: str | None, scheme: str = "DPoP") -> Any:
    headers = {"Authorization": f"{scheme} {token}"}
    if proof is not None:
        headers["DPoP"] = proof
    return app.test_client().get("/inventory/items", headers=headers)


@pytest.mark.parametrize("key_class", [JoseKey, PyJWTKey])
def test_bound_token_with_a_proof(
    auth: AuthServer, service: Callable[..., Flask], key_class: type[JoseKey | PyJWTKey]
) -> None:
    """§7.1: the DPoP scheme and a proof for this method and URL (``ath`` of the token)."""
    app, key = service(), key_class()
    token = bound_token(auth, key)
    response = get(app, token, key.proof("GET", ITEMS, token))
    assert response.status_code == 200, response.get_json()
    # the resource identifier's origin names this service too (behind a proxy)
    response = get(app, token, key.proof("GET", f"{INVENTORY}/inventory/items", token))
    assert response.status_code == 200, response.get_json()


def test_rejections(auth: AuthServer, service: Callable[..., Flask]) -> None:
    """§7.1-7.2: as Bearer, without a proof, another key's or method's or URL's proof, a
    stale or reused one, or a wrong ``ath``: 401."""
    app, key = service(), JoseKey()
    token = bound_token(auth, key)
    assert get(app, token, None, "Bearer").get_json()["error"] == "invalid_token"
    cases = {
        "no proof": None,
        "other key": JoseKey().proof("GET", ITEMS, token),
        "other method": key.proof("POST", ITEMS, token),
        "other URL": key.proof("GET", "http://localhost/inventory/whoami", token),
        "stale": key.proof("GET", ITEMS, token, iat=int(time.time()) - 3600),
        "wrong ath": key.proof("GET", ITEMS, "other-token"),
    }
    for case, proof in cases.items():
        response = get(app, token, proof)
        assert response.status_code == 401, case
        assert response.get_json()["error"] == "invalid_dpop_proof", case
        assert response.headers.getlist("WWW-Authenticate")[0].startswith("DPoP "), case
    proof = key.proof("GET", ITEMS, token)
    assert get(app, token, proof).status_code == 200
    assert get(app, token, proof).get_json()["error"] == "invalid_dpop_proof"


def test_unbound_token_with_the_dpop_scheme(
    auth: AuthServer, service: Callable[..., Flask]
) -> None:
    app, key = service(), JoseKey()
    token = auth.token(register(auth.app, "inventory:read"), "inventory:read")
    response = get(app, token, key.proof("GET", ITEMS, token))
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_token"


def test_nonce(auth: AuthServer, service: Callable[..., Flask]) -> None:
    """§9: 401 ``use_dpop_nonce`` with this service's ``DPoP-Nonce``; the retry passes."""
    app, key = service(M2M_DPOP_REQUIRE_NONCE=True, SECRET_KEY="s" * 32), JoseKey()
    token = bound_token(auth, key)
    first = get(app, token, key.proof("GET", ITEMS, token))
    assert first.status_code == 401
    assert first.get_json()["error"] == "use_dpop_nonce"
    proof = key.proof("GET", ITEMS, token, nonce=first.headers["DPoP-Nonce"])
    assert get(app, token, proof).status_code == 200


def test_metadata_says_dpop_is_accepted(service: Callable[..., Flask]) -> None:
    """RFC 9728 §2: ``dpop_signing_alg_values_supported``."""
    app = service(M2M_DPOP_SIGNING_ALGS="ES256 EdDSA")
    body = app.test_client().get("/.well-known/oauth-protected-resource").get_json()
    assert body["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA"]


REDIS_URL = os.environ.get("M2M_TEST_REDIS_URL")


@pytest.mark.skipif(REDIS_URL is None, reason="M2M_TEST_REDIS_URL names no Redis")
def test_proof_replayed_at_a_second_instance(
    auth: AuthServer, service: Callable[..., Flask]
) -> None:
    """With ``M2M_DPOP_REPLAY_STORAGE_URI`` in Redis, a proof used at one instance is refused
    at another."""
    one = service(M2M_DPOP_REPLAY_STORAGE_URI=REDIS_URL)
    two = service(M2M_DPOP_REPLAY_STORAGE_URI=REDIS_URL)
    key = JoseKey()
    token = bound_token(auth, key)
    proof = key.proof("GET", ITEMS, token)
    assert get(one, token, proof).status_code == 200
    assert get(two, token, proof).get_json()["error"] == "invalid_dpop_proof"


def test_required_nonces_without_secret_key_warn(
    service: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Nonces are keyed with ``SECRET_KEY``; without it each process has its own key, and the
    other workers refuse its nonces: said at start-up when nonces are required."""
    with caplog.at_level(logging.WARNING):
        service(M2M_DPOP_REQUIRE_NONCE=True, SECRET_KEY=None)
    assert "SECRET_KEY is not set" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        service(M2M_DPOP_REQUIRE_NONCE=True, SECRET_KEY="s" * 32)
        service(SECRET_KEY=None)
    assert "SECRET_KEY is not set" not in caplog.text
