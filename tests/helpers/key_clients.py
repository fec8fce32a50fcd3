"""Helpers of the private_key_jwt tests: key clients and client assertions (RFC 7523 §3)."""

from __future__ import annotations

import time
import uuid
import warnings
from typing import Any

from flask import Flask
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, Key, OKPKey, RSAKey

from flask_m2m.extension import get_state
from flask_m2m.lifecycle import create_client

ISSUER = "https://issuer.test"
TOKEN_URL = ISSUER + "/m2m/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def new_key(kind: str = "RSA", kid: str | None = "k1") -> Key:
    """A private key of ``kind`` (RSA, EC or OKP) with ``kid`` (None: no kid)."""
    parameters = {"kid": kid} if kid else {}
    if kind == "EC":
        return ECKey.generate_key("P-256", parameters, private=True)
    if kind == "OKP":
        return OKPKey.generate_key("Ed25519", parameters, private=True)
    return RSAKey.generate_key(2048, parameters, private=True)


def public_set(*keys: Key) -> dict[str, Any]:
    """The public JWK Set of ``keys``."""
    return {"keys": [key.as_dict(private=False) for key in keys]}


def register_key_client(app: Flask, *keys: Key, scopes: str = "read write", **kwargs: Any) -> str:
    """Create a private_key_jwt client holding the public parts of ``keys``; its id."""
    if keys:
        kwargs.setdefault("jwks", public_set(*keys))
    with app.app_context():
        state = get_state(app)
        client, issued = create_client(
            state,
            actor="test",
            name="keys",
            scopes=scopes,
            token_endpoint_auth_method="private_key_jwt",
            **kwargs,
        )
        state.db.session.commit()
        assert issued is None
        return str(client.client_id)


def assertion(
    key: Key,
    client_id: str,
    *,
    aud: Any = TOKEN_URL,
    alg: str = "RS256",
    lifetime: int = 60,
    kid: bool = True,
    **claims: Any,
) -> str:
    """A client assertion signed with ``key``; ``claims`` override the standard ones (a None
    value removes the claim)."""
    now = int(time.time())
    body: dict[str, Any] = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "iat": now,
        "exp": now + lifetime,
        "jti": uuid.uuid4().hex,
    }
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    header: dict[str, Any] = {"alg": alg}
    if kid and key.kid:
        header["kid"] = key.kid
    with warnings.catch_warnings():  # joserfc: EdDSA is deprecated by RFC 9864 (still valid)
        warnings.simplefilter("ignore", SecurityWarning)
        return jwt.encode(header, body, key, algorithms=[alg])


def form(signed: str, **extra: str) -> dict[str, str]:
    """A token request body authenticated by ``signed``."""
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        **extra,
    }
