"""DPoP (RFC 9449) at the token endpoint: bound tokens, proof checks (§4.3), nonces (§8),
introspection (§6.2), metadata (§5.1), bound-only clients (§5.2) and token reuse."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import register
from helpers.dpop import JoseKey, PyJWTKey, claims_for, unsigned_proof
from helpers.http import basic_auth
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey

from flask_m2m.extension import get_state

TOKEN_URL = "http://localhost/m2m/token"
Creds = dict[str, Any]


def token_request(
    client: FlaskClient, creds: Creds, proof: str | list[str] | None = None, **form: str
) -> Any:
    headers: Any = list(basic_auth(creds["client_id"], creds["client_secret"]).items())
    for value in [proof] if isinstance(proof, str) else proof or []:
        headers.append(("DPoP", value))
    return client.post(
        "/m2m/token", data={"grant_type": "client_credentials", **form}, headers=headers
    )


def claims_of(app: Flask, token: str) -> dict[str, Any]:
    with app.app_context():
        state = get_state(app)
        return dict(state.tokens.decode(token).claims)


@pytest.fixture
def creds(app: Flask) -> Creds:
    return register(app)


def test_joserfc_proof_binds_the_token(app: Flask, client: FlaskClient, creds: Creds) -> None:
    """§5: token_type DPoP; §6.1: the JWT's cnf.jkt is the proof key's RFC 7638 thumbprint."""
    key = JoseKey()
    response = token_request(client, creds, key.proof("POST", TOKEN_URL))
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "DPoP"
    assert claims_of(app, body["access_token"])["cnf"] == {"jkt": key.jkt}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256"])
def test_pyjwt_proof_binds_the_token(
    app: Flask, client: FlaskClient, creds: Creds, alg: str
) -> None:
    key = PyJWTKey(alg)
    response = token_request(client, creds, key.proof("POST", TOKEN_URL))
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"
    assert claims_of(app, response.get_json()["access_token"])["cnf"] == {"jkt": key.jkt}


def test_without_proof_the_token_is_bearer(app: Flask, client: FlaskClient, creds: Creds) -> None:
    response = token_request(client, creds)
    assert response.get_json()["token_type"] == "Bearer"
    assert "cnf" not in claims_of(app, response.get_json()["access_token"])


def test_opaque_token_stores_jkt_and_introspection_shows_cnf(
    app_factory: Callable[..., Flask],
) -> None:
    """§6.2: introspection of a bound token returns cnf.jkt (and token_type DPoP)."""
    app = app_factory(M2M_TOKEN_FORMAT="opaque")
    client, creds, key = app.test_client(), register(app), JoseKey()
    token = token_request(client, creds, key.proof("POST", TOKEN_URL)).get_json()["access_token"]
    with app.app_context():
        row = get_state(app).tokens.decode(token)
        assert row.jkt == key.jkt
    response = client.post(
        "/m2m/introspect",
        data={"token": token},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    body = response.get_json()
    assert body["active"] is True
    assert body["cnf"] == {"jkt": key.jkt}
    assert body["token_type"] == "DPoP"


def test_introspection_of_a_bound_jwt(client: FlaskClient, creds: Creds) -> None:
    key = JoseKey()
    token = token_request(client, creds, key.proof("POST", TOKEN_URL)).get_json()["access_token"]
    response = client.post(
        "/m2m/introspect",
        data={"token": token},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.get_json()["cnf"] == {"jkt": key.jkt}


def test_metadata_lists_the_proof_algorithms(client: FlaskClient) -> None:
    """RFC 9449 §5.1: dpop_signing_alg_values_supported in the RFC 8414 metadata."""
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    assert body["dpop_signing_alg_values_supported"] == ["ES256", "EdDSA", "Ed25519", "RS256"]


def _private_jwk_header(key: JoseKey) -> dict[str, Any]:
    return {"jwk": key.key.as_dict(private=True)}


REJECTED: dict[str, Callable[[JoseKey], Any]] = {
    # §4.3 check 8: htm
    "other method": lambda k: k.proof("GET", TOKEN_URL),
    # §4.3 check 9: htu
    "other URL": lambda k: k.proof("POST", "http://localhost/m2m/introspect"),
    "other host": lambda k: k.proof("POST", "http://evil.example/m2m/token"),
    # §4.3 check 11: iat window
    "stale iat": lambda k: k.proof("POST", TOKEN_URL, iat=int(time.time()) - 3600),
    "future iat": lambda k: k.proof("POST", TOKEN_URL, iat=int(time.time()) + 3600),
    "no jti": lambda k: k.proof("POST", TOKEN_URL, jti=None),
    # §4.3 check 4: typ
    "typ JWT": lambda k: k.proof("POST", TOKEN_URL, header={"typ": "JWT"}),
    # §4.3 check 7: no private key in the jwk header
    "private jwk": lambda k: k.proof("POST", TOKEN_URL, header=_private_jwk_header(k)),
    # §4.3 check 5: alg none
    "alg none": lambda k: unsigned_proof("POST", TOKEN_URL, k.key.as_dict(private=False)),
    # §4.3 check 6: the signature is by the jwk header's key
    "other jwk": lambda k: k.proof(
        "POST", TOKEN_URL, header={"jwk": ECKey.generate_key("P-256").as_dict(private=False)}
    ),
    "not a JWT": lambda k: "not-a-proof",
    # §4.3 check 1: exactly one DPoP header
    "two headers": lambda k: [k.proof("POST", TOKEN_URL), k.proof("POST", TOKEN_URL)],
}


@pytest.mark.parametrize("case", list(REJECTED))
def test_invalid_proof_is_400_invalid_dpop_proof(
    client: FlaskClient, creds: Creds, case: str
) -> None:
    """RFC 9449 §5: an invalid proof at the token endpoint is 400 ``invalid_dpop_proof``."""
    response = token_request(client, creds, REJECTED[case](JoseKey()))
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_hs256_proof_is_refused(client: FlaskClient, creds: Creds) -> None:
    """§4.3 check 5: a symmetric algorithm is never accepted."""
    header = {"typ": "dpop+jwt", "alg": "HS256", "jwk": {"kty": "oct", "k": "c2VjcmV0"}}
    proof = jwt.encode(header, claims_for("POST", TOKEN_URL), OctKey.import_key("x" * 32))
    response = token_request(client, creds, proof)
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_reused_proof_is_refused(client: FlaskClient, creds: Creds) -> None:
    """§11.1: a proof's jti is single use."""
    proof = JoseKey().proof("POST", TOKEN_URL)
    assert token_request(client, creds, proof).status_code == 200
    response = token_request(client, creds, proof)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_dpop_proof"


def test_algorithm_outside_configuration_is_refused(
    app_factory: Callable[..., Flask],
) -> None:
    app = app_factory(M2M_DPOP_SIGNING_ALGS="EdDSA")
    response = token_request(app.test_client(), register(app), JoseKey().proof("POST", TOKEN_URL))
    assert response.get_json()["error"] == "invalid_dpop_proof"
    ok = token_request(app.test_client(), register(app), PyJWTKey().proof("POST", TOKEN_URL))
    assert ok.status_code == 200


def test_client_bound_to_dpop_needs_a_proof(app: Flask, client: FlaskClient) -> None:
    """§5.2 ``dpop_bound_access_tokens``: no proof, no token."""
    creds = register(app, dpop_bound_access_tokens=True)
    response = token_request(client, creds)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_dpop_proof"
    assert token_request(client, creds, JoseKey().proof("POST", TOKEN_URL)).status_code == 200


def test_nonce_required_at_the_token_endpoint(app_factory: Callable[..., Flask]) -> None:
    """§8: without the server's nonce, 400 ``use_dpop_nonce`` and a ``DPoP-Nonce`` header;
    the retry with that nonce succeeds."""
    app = app_factory(M2M_DPOP_REQUIRE_NONCE=True)
    client, creds, key = app.test_client(), register(app), JoseKey()
    first = token_request(client, creds, key.proof("POST", TOKEN_URL))
    assert first.status_code == 400
    assert first.get_json()["error"] == "use_dpop_nonce"
    nonce = first.headers["DPoP-Nonce"]
    wrong = token_request(client, creds, key.proof("POST", TOKEN_URL, nonce="1.forged"))
    assert wrong.get_json()["error"] == "use_dpop_nonce"
    second = token_request(client, creds, key.proof("POST", TOKEN_URL, nonce=nonce))
    assert second.status_code == 200, second.get_json()
    assert second.get_json()["token_type"] == "DPoP"


class TestReuse:
    """``M2M_REUSE_TOKENS`` never hands out a token bound to another key, nor an unbound
    token for a DPoP request, nor a bound one for a Bearer request."""

    @pytest.fixture(params=["jwt", "opaque"])
    def reuse_app(self, request: pytest.FixtureRequest, app_factory: Callable[..., Flask]) -> Flask:
        return app_factory(M2M_REUSE_TOKENS=True, M2M_TOKEN_FORMAT=request.param)

    def test_same_key_same_token_other_key_other_token(self, reuse_app: Flask) -> None:
        client, creds = reuse_app.test_client(), register(reuse_app)
        one, two = JoseKey(), JoseKey()

        def get(key: JoseKey | None) -> dict[str, Any]:
            proof = key.proof("POST", TOKEN_URL) if key else None
            response = token_request(client, creds, proof)
            assert response.status_code == 200
            body: dict[str, Any] = response.get_json()
            return body

        first = get(one)
        assert get(one)["access_token"] == first["access_token"]
        other = get(two)
        assert other["access_token"] != first["access_token"]
        bearer = get(None)
        assert bearer["token_type"] == "Bearer"
        assert bearer["access_token"] not in (first["access_token"], other["access_token"])
        assert get(one)["access_token"] == first["access_token"]
        assert get(None)["access_token"] == bearer["access_token"]
