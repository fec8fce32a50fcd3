"""Forged, altered, misdirected and stale tokens are refused by ``require_scope`` with
RFC 6750 §3.1 ``invalid_token``; good tokens here are built with PyJWT for contrast."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from helpers.apps import fetch_token, register
from helpers.http import bearer

import flask_m2m.tokens
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import delete_client

ISSUER = "https://issuer.test"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _segment(obj: dict[str, Any]) -> str:
    return _b64(json.dumps(obj, separators=(",", ":")).encode())


def _whoami(app: Flask, token: str) -> Any:
    return app.test_client().get("/api/whoami", headers=bearer(token))


def assert_invalid_token(response: Any) -> None:
    """RFC 6750 §3.1: 401 with a Bearer challenge naming ``invalid_token``."""
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.lower().startswith("bearer ")
    assert 'error="invalid_token"' in challenge
    assert response.get_json()["error"] == "invalid_token"


def _claims(creds: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """Valid RFC 9068 §2.2 claims for ``creds``, with ``changes`` (None removes a claim)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "exp": now + 300,
        "aud": ISSUER,
        "sub": creds["client_id"],
        "client_id": creds["client_id"],
        "iat": now,
        "jti": secrets.token_urlsafe(16),
        "scope": "read write",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _app_key(app: Flask) -> tuple[str, Any]:
    """The app's real signing key (kid, PyJWT key object)."""
    with app.app_context():
        key = get_state(app).keys.signing_key()
        return str(key.kid), jwt.PyJWK(key.as_dict(private=True)).key


def _sign(app: Flask, claims: dict[str, Any], **header: Any) -> str:
    """A token signed with the app's real key, by PyJWT."""
    kid, key = _app_key(app)
    headers = {"typ": "at+jwt", "kid": kid, **header}
    return jwt.encode(claims, key, algorithm="RS256", headers=headers)


@pytest.fixture
def creds(app: Flask) -> dict[str, Any]:
    return register(app)


@pytest.fixture
def issued(app: Flask, creds: dict[str, Any]) -> str:
    """A token the server itself issued (which also creates the signing key)."""
    return fetch_token(app.test_client(), creds)


def test_hand_signed_valid_token_is_accepted(
    app: Flask, creds: dict[str, Any], issued: str
) -> None:
    """RFC 9068 §4: a token with every required claim, signed by the published key, is valid;
    the rejections below therefore come from the one thing each of them changes."""
    response = _whoami(app, _sign(app, _claims(creds)))
    assert response.status_code == 200
    assert response.get_json()["client_id"] == creds["client_id"]


@pytest.mark.parametrize("claim", ["scope", "client_id", "exp"])
def test_tampered_payload(app: Flask, creds: dict[str, Any], issued: str, claim: str) -> None:
    """RFC 9068 §4 / RFC 7515 §5.2: a changed payload no longer matches the signature."""
    other = register(app)
    header, payload, signature = issued.split(".")
    claims = json.loads(_unb64(payload))
    claims[claim] = {
        "scope": "read write admin",
        "client_id": other["client_id"],
        "exp": claims["exp"] + 86400,
    }[claim]
    if claim == "client_id":
        claims["sub"] = other["client_id"]
    assert _whoami(app, issued).status_code == 200
    assert_invalid_token(_whoami(app, f"{header}.{_segment(claims)}.{signature}"))


def test_tampered_signature(app: Flask, issued: str) -> None:
    """RFC 7515 §5.2: a signature that does not verify is refused."""
    header, payload, signature = issued.split(".")
    raw = bytearray(_unb64(signature))
    raw[len(raw) // 2] ^= 0x01
    assert_invalid_token(_whoami(app, f"{header}.{payload}.{_b64(bytes(raw))}"))
    assert_invalid_token(_whoami(app, f"{header}.{payload}."))


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
@pytest.mark.parametrize("with_kid", [False, True], ids=["no-kid", "real-kid"])
def test_alg_none(app: Flask, issued: str, alg: str, with_kid: bool) -> None:
    """RFC 9068 §4 / RFC 8725 §3.1: an unsecured JWS (alg "none", RFC 7518 §3.6) is refused."""
    real = jwt.get_unverified_header(issued)
    header: dict[str, Any] = {"alg": alg, "typ": "at+jwt"}
    if with_kid:
        header["kid"] = real["kid"]
    payload = issued.split(".")[1]
    assert_invalid_token(_whoami(app, f"{_segment(header)}.{payload}."))


def test_other_key_with_same_kid(app: Flask, creds: dict[str, Any], issued: str) -> None:
    """RFC 9068 §4: the signature must verify with the published key that kid names; a
    forger's key that borrows the kid is refused."""
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kid = jwt.get_unverified_header(issued)["kid"]
    token = jwt.encode(
        _claims(creds), forger, algorithm="RS256", headers={"typ": "at+jwt", "kid": kid}
    )
    assert_invalid_token(_whoami(app, token))


def test_unknown_or_missing_kid(app: Flask, creds: dict[str, Any], issued: str) -> None:
    """RFC 9068 §4 / RFC 7515 §4.1.4: a kid the JWKS does not hold, or none, is refused."""
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds), kid="no-such-key")))
    _, key = _app_key(app)
    no_kid = jwt.encode(_claims(creds), key, algorithm="RS256", headers={"typ": "at+jwt"})
    assert_invalid_token(_whoami(app, no_kid))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://evil.test"},
        {"iss": ISSUER + "/"},
        {"aud": "https://other-api.test"},
        {"aud": ["https://other-api.test", "https://more.test"]},
        {"sub": "m2m_somebodyelse"},
    ],
    ids=["issuer", "issuer-slash", "audience", "audience-list", "sub-not-client"],
)
def test_wrong_issuer_audience_or_subject(
    app: Flask, creds: dict[str, Any], issued: str, changes: dict[str, Any]
) -> None:
    """RFC 9068 §4: iss must be the issuer, aud must name this resource; for client
    credentials sub is the client_id (§2.2): a genuine signature does not rescue them."""
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds, **changes))))


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT+x", None], ids=str)
def test_wrong_typ(app: Flask, creds: dict[str, Any], issued: str, typ: str | None) -> None:
    """RFC 9068 §4: the resource server MUST check that typ is at+jwt (or application/at+jwt)."""
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds), typ=typ)))


def test_application_at_jwt_typ_is_accepted(app: Flask, creds: dict[str, Any], issued: str) -> None:
    """RFC 9068 §2.1 / §4: "application/at+jwt" is the same media type as "at+jwt"."""
    token = _sign(app, _claims(creds), typ="application/at+jwt")
    assert _whoami(app, token).status_code == 200


@pytest.mark.parametrize("claim", ["iss", "exp", "aud", "sub", "client_id", "iat", "jti"])
def test_missing_required_claim(app: Flask, creds: dict[str, Any], issued: str, claim: str) -> None:
    """RFC 9068 §2.2: iss, exp, aud, sub, client_id, iat and jti are REQUIRED."""
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds, **{claim: None}))))


@pytest.mark.parametrize(
    "changes",
    [
        {"exp": "9999999999"},
        {"iat": "0"},
        {"exp": True},
        {"nbf": "0"},
        {"exp": [9999999999]},
        {"iat": None, "exp": 9999999999.5},
    ],
    ids=["string-exp", "string-iat", "bool-exp", "string-nbf", "list-exp", "no-iat"],
)
def test_dates_must_be_numbers(
    app: Flask, creds: dict[str, Any], issued: str, changes: dict[str, Any]
) -> None:
    """RFC 7519 §2 and §4.1.4-4.1.6: ``exp``, ``iat`` and ``nbf`` are NumericDate values (JSON
    numbers); a string, boolean or list is refused rather than coerced."""
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds, **changes))))


def test_fractional_dates_are_accepted(app: Flask, creds: dict[str, Any], issued: str) -> None:
    """RFC 7519 §2: a NumericDate may have a fraction of a second."""
    now = time.time()
    claims = _claims(creds, iat=now - 0.5, exp=now + 300.25, nbf=now - 1.5)
    assert _whoami(app, _sign(app, claims)).status_code == 200


def test_not_before(app_factory: Callable[..., Flask]) -> None:
    """RFC 7519 §4.1.5: a token must not be accepted before its ``nbf`` (beyond the leeway)."""
    app = app_factory(M2M_LEEWAY=30)
    creds = register(app)
    fetch_token(app.test_client(), creds)  # creates the signing key
    now = int(time.time())
    assert_invalid_token(_whoami(app, _sign(app, _claims(creds, nbf=now + 120))))
    assert _whoami(app, _sign(app, _claims(creds, nbf=now + 10))).status_code == 200  # leeway
    assert _whoami(app, _sign(app, _claims(creds, nbf=now - 10))).status_code == 200


def test_expired_token(app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 9068 §4: the current time must be before exp (no leeway here); the clock is moved
    forward instead of sleeping."""
    app = app_factory(M2M_ACCESS_TOKEN_EXPIRES_IN=1, M2M_LEEWAY=0)
    creds = register(app)
    clock = [float(int(time.time()))]
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: clock[0])
    used = fetch_token(app.test_client(), creds)
    unused = fetch_token(app.test_client(), creds)
    assert _whoami(app, used).status_code == 200  # now also in the verified-token cache
    clock[0] += 1  # exp: the token is no longer valid
    assert_invalid_token(_whoami(app, used))
    assert_invalid_token(_whoami(app, unused))


def test_token_of_deleted_client(app: Flask, creds: dict[str, Any], issued: str) -> None:
    """RFC 6750 §3.1 / RFC 9068 §4: a token whose client no longer exists is invalid."""
    assert _whoami(app, issued).status_code == 200
    with app.app_context():
        delete_client(get_state(app), creds["client_id"], actor="test")
        get_state(app).db.session.commit()
    assert_invalid_token(_whoami(app, issued))


def _public_key_bytes(app: Flask, encoding: str) -> bytes:
    with app.app_context():
        public = get_state(app).keys.signing_key().as_dict(private=False)
    if encoding == "jwk":
        return json.dumps(public).encode()
    key = jwt.PyJWK(public).key
    fmt = {
        "spki-pem": serialization.PublicFormat.SubjectPublicKeyInfo,
        "pkcs1-pem": serialization.PublicFormat.PKCS1,
    }[encoding]
    return bytes(key.public_bytes(serialization.Encoding.PEM, fmt))


@pytest.mark.parametrize("encoding", ["spki-pem", "pkcs1-pem", "jwk"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_public_key_is_refused(
    app: Flask, creds: dict[str, Any], issued: str, encoding: str, alg: str
) -> None:
    """RFC 8725 §2.1 / §3.1 (algorithm confusion) and RFC 9068 §4: an HMAC token keyed with
    the published public key is refused; only the server's asymmetric algorithm counts."""
    kid = jwt.get_unverified_header(issued)["kid"]
    header = _segment({"alg": alg, "typ": "at+jwt", "kid": kid})
    signing_input = f"{header}.{_segment(_claims(creds))}"
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    mac = hmac.new(_public_key_bytes(app, encoding), signing_input.encode(), digest).digest()
    assert_invalid_token(_whoami(app, f"{signing_input}.{_b64(mac)}"))


@pytest.mark.parametrize(
    "token",
    ["abc", "a.b.c", "a.b", "....", "m2mat_unknown", "x" * 9000, "eyJhbGciOiJSUzI1NiJ9.e30."],
    ids=["word", "junk-jws", "two-parts", "dots", "unknown-opaque", "huge", "empty-payload"],
)
def test_malformed_token(app: Flask, issued: str, token: str) -> None:
    """RFC 6750 §3.1: a malformed token is ``invalid_token`` (401), never a server error."""
    assert_invalid_token(_whoami(app, token))
