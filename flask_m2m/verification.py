"""Verifying an RFC 9068 JWT access token: signature, header and claims.

Depends only on the keys it is handed and on configuration, never on the authorization
server's database, so that services other than the authorization server can build on it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key
from joserfc.jws import JWSRegistry

from .config import SIGNING_ALGS

#: RFC 9068 §2.1: the ``typ`` header of JWT access tokens.
AT_JWT_TYPES = ("at+jwt", "application/at+jwt")
#: Longest token string looked at; a longer one is refused unread.
MAX_TOKEN_LENGTH = 8192


class QuietJWSRegistry(JWSRegistry):
    """joserfc's registry, limited to our algorithms and keeping the ``EdDSA`` name quietly.

    RFC 9864 deprecates the polymorphic ``EdDSA`` for ``Ed25519``, but the JOSE libraries
    resource servers use (PyJWT among them) know only ``EdDSA``, so tokens keep that name.
    """

    algorithms = dict(JWSRegistry.algorithms)
    _eddsa = copy.copy(JWSRegistry.algorithms["EdDSA"])
    _eddsa.security_warning = None
    algorithms["EdDSA"] = _eddsa


JWS_REGISTRY = QuietJWSRegistry(algorithms=list(SIGNING_ALGS))


@lru_cache(maxsize=16)
def _registry(algorithms: frozenset[str]) -> JWSRegistry:
    """The registry allowing only ``algorithms`` (a subset of :data:`SIGNING_ALGS`)."""
    if algorithms == frozenset(SIGNING_ALGS):
        return JWS_REGISTRY
    return QuietJWSRegistry(algorithms=sorted(algorithms & set(SIGNING_ALGS)))


@dataclass(frozen=True, slots=True)
class AccessToken:
    """A verified access token, as ``current_token`` shows it."""

    client_id: str
    scopes: tuple[str, ...]
    jti: str
    issued_at: int
    expires_at: int
    issuer: str
    audience: tuple[str, ...]
    claims: dict[str, Any] = field(default_factory=dict)
    opaque: bool = False
    #: ``nbf``, when the token has one (RFC 7519 §4.1.5).
    not_before: int | None = None
    #: RFC 9449 §6: the thumbprint of the key a DPoP-bound token is bound to (``cnf.jkt``).
    jkt: str | None = None

    @property
    def scope(self) -> str:
        """The scopes as one space-separated string (RFC 6749 §3.3)."""
        return " ".join(self.scopes)

    def has_scopes(self, required: Iterable[str]) -> bool:
        """Whether every scope in ``required`` was granted."""
        return set(required).issubset(self.scopes)


class TokenRejected(Exception):
    """The token is not valid; the message says why (safe to show to the caller)."""


def decode_jwt(
    token_string: str,
    public_key: Callable[[str], Key | None],
    algorithms: Collection[str] = SIGNING_ALGS,
) -> AccessToken:
    """Check the form, signature (with the key ``public_key`` returns for the header's
    ``kid``) and ``typ`` of a JWT access token, and read its claims; no claim is judged.

    :param algorithms: the JWS algorithms accepted (RFC 8725 §3.1): the header's ``alg`` must
        be one of them, and must fit the key (its type, and its ``alg`` member if it has one).
    :raises TokenRejected: if it is malformed, signed by an unknown key or forged.
    """

    def resolve(obj: Any) -> Key:
        kid = obj.headers().get("kid")
        key = public_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise TokenRejected("The access token was signed by an unknown key.")
        return key

    try:
        token = jwt.decode(token_string, resolve, registry=_registry(frozenset(algorithms)))
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise TokenRejected("The token is malformed or its signature is invalid.") from exc
    if str(token.header.get("typ", "")).lower() not in AT_JWT_TYPES:
        raise TokenRejected("The token is not an RFC 9068 access token (typ).")
    claims = token.claims
    try:
        aud = claims["aud"]
        audience = (aud,) if isinstance(aud, str) else tuple(str(a) for a in aud)
        scope = claims.get("scope") or ""
        nbf = claims.get("nbf")
        cnf = claims.get("cnf")
        jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
        if cnf is not None and not isinstance(jkt, str):
            raise ValueError("cnf without a jkt")
        result = AccessToken(
            client_id=str(claims["client_id"]),
            scopes=tuple(str(scope).split()),
            jti=str(claims["jti"]),
            issued_at=numeric_date(claims["iat"]),
            expires_at=numeric_date(claims["exp"]),
            issuer=str(claims["iss"]),
            audience=audience,
            claims=dict(claims),
            not_before=None if nbf is None else numeric_date(nbf),
            jkt=jkt,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise TokenRejected("The access token lacks a required claim.") from exc
    if claims.get("sub") != result.client_id:
        raise TokenRejected("The access token's sub does not name its client.")
    return result


def check_claims(
    token: AccessToken, issuer: str, audience: str | None, leeway: int
) -> None:
    """RFC 9068 §4: issuer, audience (unless None), expiry, issue time and ``nbf``.

    :raises TokenRejected: if any does not hold.
    """
    now = time.time()
    if token.issuer != issuer:
        raise TokenRejected("The access token was issued by another issuer.")
    if audience is not None and audience not in token.audience:
        raise TokenRejected("The access token is meant for another audience.")
    if token.expires_at + leeway <= now:
        raise TokenRejected("The access token has expired.")
    if token.issued_at - leeway > now:
        raise TokenRejected("The access token is not valid yet.")
    if token.not_before is not None and token.not_before - leeway > now:
        raise TokenRejected("The access token is not valid yet (nbf).")


def numeric_date(value: Any) -> int:
    """An RFC 7519 §2 NumericDate claim as whole seconds; anything but a JSON number (a
    string, a boolean, NaN) is refused rather than coerced.

    :raises ValueError: if ``value`` is not a finite number.
    """
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise ValueError(f"not a NumericDate: {value!r}")
    if isinstance(value, float) and not abs(value) < 1e15:
        raise ValueError(f"NumericDate out of range: {value!r}")
    return int(value)
