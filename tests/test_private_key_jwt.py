"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2) at the
token, revocation and introspection endpoints, with assertions built by joserfc and PyJWT."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import register
from helpers.http import basic_auth
from helpers.key_clients import (
    ASSERTION_TYPE,
    ISSUER,
    TOKEN_URL,
    assertion,
    form,
    new_key,
    register_key_client,
)

from flask_m2m import signals


def _token(client: FlaskClient, signed: str, **extra: str) -> Any:
    return client.post("/m2m/token", data=form(signed, **extra))


def _refused(response: Any) -> None:
    """RFC 6749 §5.2: 401 ``invalid_client``, no Basic challenge (Basic was not used)."""
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error"] == "invalid_client"
    assert "WWW-Authenticate" not in response.headers


@pytest.mark.parametrize(("kind", "alg"), [("RSA", "RS256"), ("EC", "ES256"), ("OKP", "EdDSA"),
                                          ("OKP", "Ed25519")])
def test_assertion_authenticates_the_client(app: Flask, kind: str, alg: str) -> None:
    """RFC 7523 §2.2: a signed assertion in place of a secret gets a token (RS256, ES256,
    EdDSA and its fully specified name Ed25519)."""
    key = new_key(kind)
    client_id = register_key_client(app, key)
    response = _token(app.test_client(), assertion(key, client_id, alg=alg), scope="read")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["scope"] == "read"


def test_pyjwt_assertion_without_kid_is_tried_against_each_key(app: Flask) -> None:
    """An assertion without ``kid`` (PyJWT, Authlib with a PEM key) is checked against each of
    the client's keys of the algorithm's type."""
    first, second = new_key("EC", "a"), new_key("EC", "b")
    client_id = register_key_client(app, first, second)
    now = int(time.time())
    signed = pyjwt.encode(
        {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": now + 60, "jti": "x1"},
        second.as_pem(private=True),
        algorithm="ES256",
    )
    assert _token(app.test_client(), signed).status_code == 200


@pytest.mark.parametrize("aud", [ISSUER, TOKEN_URL, [TOKEN_URL, "https://other.test"]])
def test_audience_is_the_token_endpoint_or_the_issuer(app: Flask, aud: Any) -> None:
    """RFC 7523 §3 item 3: ``aud`` identifies the server: its token endpoint URL or issuer."""
    key = new_key()
    client_id = register_key_client(app, key)
    assert _token(app.test_client(), assertion(key, client_id, aud=aud)).status_code == 200


def test_revocation_and_introspection_accept_assertions(app: Flask) -> None:
    """RFC 7009 §2.1 and RFC 7662 §2.1: the endpoints authenticate clients by their
    registered method, here ``private_key_jwt``, with their own URL as an audience too."""
    key = new_key()
    client_id = register_key_client(app, key)
    client = app.test_client()
    token = _token(client, assertion(key, client_id)).get_json()["access_token"]
    introspected = client.post(
        "/m2m/introspect",
        data={
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, client_id, aud=ISSUER + "/m2m/introspect"),
        },
    )
    assert introspected.status_code == 200
    assert introspected.get_json()["active"] is True
    assert introspected.get_json()["client_id"] == client_id
    revoked = client.post(
        "/m2m/revoke",
        data={
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, client_id, aud=ISSUER + "/m2m/revoke"),
        },
    )
    assert revoked.status_code == 200
    again = client.post(
        "/m2m/introspect",
        data={
            "token": token,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(key, client_id, aud=ISSUER),
        },
    )
    assert again.get_json() == {"active": False}


def _claims_case(name: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "wrong aud": {"aud": "https://elsewhere.test/token"},
        "revoke url at the token endpoint": {"aud": ISSUER + "/m2m/revoke"},
        "expired": {"iat": now - 600, "exp": now - 300},
        "no exp": {"exp": None},
        "lifetime too long": {"lifetime": 7200},
        "issued in the future": {"iat": now + 600, "exp": now + 660},
        "not yet valid": {"nbf": now + 600},
        "iss differs from sub": {"iss": "someone-else"},
        "no jti": {"jti": None},
    }[name]


@pytest.mark.parametrize(
    "case",
    [
        "wrong aud",
        "revoke url at the token endpoint",
        "expired",
        "no exp",
        "lifetime too long",
        "issued in the future",
        "not yet valid",
        "iss differs from sub",
        "no jti",
    ],
)
def test_claims_are_checked(app: Flask, case: str) -> None:
    """RFC 7523 §3 items 1-7: iss, sub, aud, exp (and its bounded lifetime), nbf, iat, jti."""
    key = new_key()
    client_id = register_key_client(app, key)
    reasons: list[str] = []
    signals.authentication_failed.connect(
        lambda sender, **kw: reasons.append(kw["reason"]), app, weak=False
    )
    _refused(_token(app.test_client(), assertion(key, client_id, **_claims_case(case))))
    assert reasons and reasons[0] in (
        "invalid_claims", "assertion_lifetime_too_long",
    )


def test_lifetime_bound_is_configurable(app_factory: Callable[..., Flask]) -> None:
    """``M2M_CLIENT_ASSERTION_MAX_LIFETIME`` bounds ``exp`` - ``iat``."""
    app = app_factory(M2M_CLIENT_ASSERTION_MAX_LIFETIME=120)
    key = new_key()
    client_id = register_key_client(app, key)
    client = app.test_client()
    _refused(_token(client, assertion(key, client_id, lifetime=300)))
    assert _token(client, assertion(key, client_id, lifetime=100)).status_code == 200


@pytest.mark.parametrize("case", ["wrong key", "unknown kid", "hs256", "alg not configured"])
def test_signature_and_key_are_checked(app_factory: Callable[..., Flask], case: str) -> None:
    """RFC 7523 §3 item 9: the signature must verify with one of the client's keys, by an
    allowed algorithm."""
    app = app_factory(M2M_CLIENT_ASSERTION_ALGS="RS256 ES256")
    key = new_key()
    client_id = register_key_client(app, key)
    if case == "wrong key":
        signed = assertion(new_key(kid="k1"), client_id)
    elif case == "unknown kid":
        signed = assertion(new_key(kid="k2"), client_id)
    elif case == "hs256":
        signed = pyjwt.encode(
            {"iss": client_id, "sub": client_id, "aud": TOKEN_URL,
             "exp": int(time.time()) + 60, "jti": "h"},
            "a-shared-secret-of-enough-length-32b",
            algorithm="HS256",
            headers={"kid": "k1"},
        )
    else:
        signed = assertion(new_key("OKP", "k1"), client_id, alg="EdDSA")
    _refused(_token(app.test_client(), signed))


def test_jti_is_used_once(app: Flask) -> None:
    """RFC 7523 §3 item 7: a replayed assertion is refused."""
    key = new_key()
    client_id = register_key_client(app, key)
    client = app.test_client()
    signed = assertion(key, client_id)
    assert _token(client, signed).status_code == 200
    _refused(_token(client, signed))


def test_jti_is_used_once_across_instances(
    app_factory: Callable[..., Flask], shared_database_url: str
) -> None:
    """Two instances sharing the database: an assertion used at one is a replay at the other."""
    first = app_factory(shared_database_url)
    second = app_factory(shared_database_url)
    key = new_key()
    client_id = register_key_client(first, key)
    signed = assertion(key, client_id)
    assert _token(first.test_client(), signed).status_code == 200
    _refused(_token(second.test_client(), signed))


def test_method_must_be_the_registered_one(app: Flask) -> None:
    """A key client cannot use a secret, nor a secret client an assertion (401)."""
    secret_client = register(app)
    key = new_key()
    _refused(_token(app.test_client(), assertion(key, secret_client["client_id"])))
    key_client = register_key_client(app, key)
    response = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials", "client_id": key_client,
              "client_secret": "x" * 40},
    )
    assert response.status_code == 401


def test_two_methods_at_once_are_refused(app: Flask) -> None:
    """RFC 6749 §2.3 and §5.2: more than one authentication method is ``invalid_request``."""
    secret_client = register(app)
    key = new_key()
    client_id = register_key_client(app, key)
    client = app.test_client()
    with_basic = client.post(
        "/m2m/token",
        data=form(assertion(key, client_id)),
        headers=basic_auth(secret_client["client_id"], secret_client["client_secret"]),
    )
    assert with_basic.status_code == 400
    assert with_basic.get_json()["error"] == "invalid_request"
    with_secret = client.post(
        "/m2m/token", data=form(assertion(key, client_id), client_secret="x" * 40)
    )
    assert with_secret.status_code == 400
    assert with_secret.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "data",
    [
        {"client_assertion_type": "urn:example:other", "client_assertion": "a.b.c"},
        {"client_assertion_type": ASSERTION_TYPE},
        {"client_assertion": "a.b.c"},
    ],
)
def test_incomplete_assertion_parameters(app: Flask, data: dict[str, str]) -> None:
    """RFC 7521 §4.2: both parameters, with the JWT type (RFC 7523 §2.2)."""
    response = app.test_client().post(
        "/m2m/token", data={"grant_type": "client_credentials", **data}
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


@pytest.mark.parametrize("signed", ["not-a-jwt", "a.b.c", "e30.e30.", "x" * 5000])
def test_malformed_assertions(app: Flask, signed: str) -> None:
    _refused(_token(app.test_client(), signed))


def test_client_id_parameter_must_match(app: Flask) -> None:
    """RFC 7521 §4.2: a ``client_id`` sent along must be the assertion's subject."""
    key = new_key()
    client_id = register_key_client(app, key)
    other = register_key_client(app, key)
    client = app.test_client()
    _refused(_token(client, assertion(key, client_id), client_id=other))
    assert _token(client, assertion(key, client_id), client_id=client_id).status_code == 200


def test_disabled_key_client_is_refused(app: Flask) -> None:
    from flask_m2m.extension import get_state
    from flask_m2m.lifecycle import set_disabled

    key = new_key()
    client_id = register_key_client(app, key)
    with app.app_context():
        set_disabled(get_state(), client_id, True, actor="test")
        get_state().db.session.commit()
    _refused(_token(app.test_client(), assertion(key, client_id)))


def test_metadata_lists_private_key_jwt(client: FlaskClient) -> None:
    """RFC 8414 §2: the method and its signing algorithms, for all three endpoints."""
    body = client.get("/.well-known/oauth-authorization-server").get_json()
    for endpoint in ("token", "revocation", "introspection"):
        assert "private_key_jwt" in body[f"{endpoint}_endpoint_auth_methods_supported"]
        algs = body[f"{endpoint}_endpoint_auth_signing_alg_values_supported"]
        assert {"RS256", "ES256", "EdDSA"} <= set(algs)
        assert "none" not in algs and "HS256" not in algs
