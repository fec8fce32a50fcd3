"""DPoP proofs for the tests, built with joserfc and with PyJWT directly (not with
``flask_m2m.dpop``), so that the server is checked against libraries it does not share code
with."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc import jwt
from joserfc.jwk import ECKey, Key
from joserfc.jws import JWSRegistry

REGISTRY = JWSRegistry(algorithms=["ES256", "RS256", "EdDSA", "Ed25519", "PS256"])


def ath(token: str) -> str:
    """RFC 9449 §4.2: base64url(SHA-256(access token))."""
    digest = hashlib.sha256(token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def claims_for(
    method: str, url: str, token: str | None = None, *, iat: int | None = None, **extra: Any
) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(12),
        "htm": method,
        "htu": url,
        "iat": int(time.time()) if iat is None else iat,
    }
    if token is not None:
        claims["ath"] = ath(token)
    claims.update(extra)
    return {k: v for k, v in claims.items() if v is not None}


class JoseKey:
    """A P-256 key whose proofs joserfc signs (ES256)."""

    def __init__(self) -> None:
        self.key: Key = ECKey.generate_key("P-256", private=True)
        self.jkt = str(self.key.thumbprint())

    def proof(
        self,
        method: str,
        url: str,
        token: str | None = None,
        *,
        header: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": self.key.as_dict(private=False)}
        head.update(header or {})
        claims = claims_for(method, url, token, **claims)
        return jwt.encode(head, claims, self.key, registry=REGISTRY)


class PyJWTKey:
    """An Ed25519 (``EdDSA``) or P-256 (``ES256``) key whose proofs PyJWT signs."""

    def __init__(self, alg: str = "EdDSA") -> None:
        self.alg = alg
        if alg == "EdDSA":
            self.private: Any = ed25519.Ed25519PrivateKey.generate()
        else:
            self.private = ec.generate_private_key(ec.SECP256R1())
        jwk = json.loads(pyjwt.algorithms.get_default_algorithms()[alg].to_jwk(
            self.private.public_key()
        ))
        self.jwk = {k: v for k, v in jwk.items() if k in ("kty", "crv", "x", "y")}
        self.jkt = _thumbprint(self.jwk)

    def proof(self, method: str, url: str, token: str | None = None, **claims: Any) -> str:
        headers = {"typ": "dpop+jwt", "jwk": self.jwk}
        return pyjwt.encode(
            claims_for(method, url, token, **claims), self.private, algorithm=self.alg,
            headers=headers,
        )


def _thumbprint(jwk: dict[str, str]) -> str:
    """RFC 7638 §3: SHA-256 of the required members, sorted, without whitespace."""
    required = {"EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}[jwk["kty"]]
    text = json.dumps({k: jwk[k] for k in required}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()


def unsigned_proof(method: str, url: str, jwk: dict[str, Any]) -> str:
    """An ``alg: none`` proof (RFC 9449 §4.3 check 5 refuses it)."""

    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    header = {"typ": "dpop+jwt", "alg": "none", "jwk": jwk}
    return f"{part(header)}.{part(claims_for(method, url))}."
