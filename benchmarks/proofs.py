"""Single-use credentials for the load benchmark, generated before each measurement.

A ``private_key_jwt`` client assertion (RFC 7523 §3) and a DPoP proof (RFC 9449 §4.2) are each
accepted once (their ``jti`` is remembered across instances), so wrk cannot repeat one request:
:func:`write_list` writes one fresh credential per line for ``benchmarks/wrk.lua`` to send in
turn. Everything is signed with joserfc, as a client outside flask-m2m would.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

from joserfc import jwt
from joserfc.jwk import ECKey

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: Lifetime of the generated client assertions, in seconds (within the server's maximum).
ASSERTION_LIFETIME = 600


def new_key(kid: str | None = None) -> ECKey:
    """A new P-256 key (ES256), with ``kid`` when given."""
    key = ECKey.generate_key("P-256", parameters={"kid": kid} if kid else None)
    return key


def public_jwks(key: ECKey) -> dict[str, Any]:
    """The JWK set of ``key``'s public part, as a client registers it."""
    return {"keys": [{**key.as_dict(private=False), "alg": "ES256", "use": "sig"}]}


def assertion_body(key: ECKey, client_id: str, audience: str, scope: str = "read") -> str:
    """A token request body authenticated by a fresh client assertion (RFC 7523 §2.2)."""
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME,
        "jti": secrets.token_urlsafe(16),
    }
    header = {"alg": "ES256", "kid": key.kid}
    assertion = jwt.encode(header, claims, key, algorithms=["ES256"])
    return (
        f"grant_type=client_credentials&scope={quote_plus(scope)}"
        f"&client_assertion_type={quote_plus(ASSERTION_TYPE)}&client_assertion={assertion}"
    )


def dpop_proof(key: ECKey, method: str, url: str, access_token: str | None = None) -> str:
    """A fresh DPoP proof for ``method`` ``url`` (with ``ath`` when ``access_token``)."""
    header = {"typ": "dpop+jwt", "alg": "ES256", "jwk": key.as_dict(private=False)}
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method,
        "htu": url,
        "iat": int(time.time()),
    }
    if access_token is not None:
        digest = hashlib.sha256(access_token.encode("ascii")).digest()
        claims["ath"] = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return jwt.encode(header, claims, key, algorithms=["ES256"])


def write_list(path: Path, count: int, make: Callable[[], str]) -> Path:
    """Write ``count`` fresh values of ``make()`` to ``path``, one a line."""
    with path.open("w") as out:
        for _ in range(count):
            out.write(make() + "\n")
    return path
