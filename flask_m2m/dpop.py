"""DPoP proofs (RFC 9449): building one (clients) and checking one (servers).

Pure JOSE work on joserfc, with no Flask and no database, so that the worker-side client
helper and any resource server can use it. Replay and nonce bookkeeping belong to the caller.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, Key, OKPKey, RSAKey
from joserfc.jws import JWSRegistry

#: RFC 9449 §4.2: the ``typ`` of a DPoP proof.
PROOF_TYPE = "dpop+jwt"
#: Asymmetric JWS algorithms a proof may use (RFC 9449 §4.2; ``none`` and MACs never).
PROOF_ALGS = ("ES256", "ES384", "ES512", "EdDSA", "Ed25519", "RS256", "PS256")
#: Longest proof looked at; a longer one is refused unread.
MAX_PROOF_LENGTH = 8192
#: Seconds one server nonce stays current; the previous one is accepted too (RFC 9449 §8).
NONCE_PERIOD = 300


class _ProofRegistry(JWSRegistry):
    """joserfc's registry without the security warning on the polymorphic ``EdDSA``."""

    algorithms = dict(JWSRegistry.algorithms)
    _eddsa = copy.copy(JWSRegistry.algorithms["EdDSA"])
    _eddsa.security_warning = None
    algorithms["EdDSA"] = _eddsa


class ProofError(Exception):
    """The DPoP proof is not acceptable; the message says why (safe to show to the caller)."""


class NonceRequired(ProofError):
    """The proof lacks the server's current nonce (RFC 9449 §8: ``use_dpop_nonce``)."""


@dataclass(frozen=True, slots=True)
class Proof:
    """A checked DPoP proof."""

    #: RFC 7638 SHA-256 thumbprint of the proof's public key (``cnf.jkt``, RFC 9449 §6).
    jkt: str
    jti: str
    iat: int


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url of the SHA-256 of the token's ASCII bytes."""
    return b64url(hashlib.sha256(access_token.encode("ascii", "replace")).digest())


def thumbprint(key: Key) -> str:
    """RFC 7638 SHA-256 JWK thumbprint of ``key`` (its public part)."""
    return str(key.thumbprint())


def normalize_htu(url: str) -> str:
    """RFC 9449 §4.3 check 9: the URL without query and fragment, in RFC 3986 §6.2.2-6.2.3
    normal form (scheme and host in lower case, no default port, ``/`` for an empty path)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None and (scheme, port) not in (("https", 443), ("http", 80)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


# -- building (clients) ----------------------------------------------------------------------


def generate_key() -> ECKey:
    """A new P-256 key for ``ES256`` proofs (one per client instance)."""
    return ECKey.generate_key("P-256", private=True)


def proof_alg(key: Key) -> str:
    """The JWS algorithm of proofs signed with ``key``."""
    if isinstance(key, ECKey):
        curve = key.curve_name
        return {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}.get(curve, "ES256")
    if isinstance(key, OKPKey):
        return "EdDSA"
    if isinstance(key, RSAKey):
        return "RS256"
    raise ValueError("A DPoP key must be an EC, OKP (Ed25519) or RSA private key.")


def create_proof(
    key: Key,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    alg: str | None = None,
) -> str:
    """A fresh DPoP proof (RFC 9449 §4.2) for ``method`` ``url``, signed with ``key``.

    :param access_token: the token sent with the proof (adds ``ath``).
    :param nonce: the server's latest ``DPoP-Nonce``, if it gave one.
    """
    alg = alg or proof_alg(key)
    header = {"typ": PROOF_TYPE, "alg": alg, "jwk": key.as_dict(private=False)}
    claims: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": normalize_htu(url),
        "iat": int(time.time()),
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    return jwt.encode(header, claims, key, registry=_ProofRegistry(algorithms=[alg]))


class ProofSigner:
    """One client's DPoP key, and the latest nonce each server gave it (RFC 9449 §8-9).

    :param key: a private JWK (dict or joserfc key); None: a new P-256 key.
    """

    def __init__(self, key: Key | dict[str, Any] | None = None):
        if isinstance(key, dict):
            key = JWKRegistry.import_key(key)
        self.key: Key = key if key is not None else generate_key()
        if not self.key.is_private:
            raise ValueError("A DPoP key must be a private key.")
        self.alg = proof_alg(self.key)
        #: RFC 7638 thumbprint of the key (the ``cnf.jkt`` of the tokens bound to it).
        self.jkt = thumbprint(self.key)
        self._nonces: dict[str, str] = {}
        self._lock = threading.Lock()

    def proof(self, method: str, url: str, access_token: str | None = None) -> str:
        """A fresh proof for ``method`` ``url``, with the nonce that server last gave."""
        with self._lock:
            nonce = self._nonces.get(_origin(url))
        return create_proof(
            self.key, method, url, access_token=access_token, nonce=nonce, alg=self.alg
        )

    def remember_nonce(self, url: str, headers: Any) -> bool:
        """Keep the ``DPoP-Nonce`` of a response from ``url``; True if it is a new one."""
        nonce = headers.get("DPoP-Nonce") or headers.get("dpop-nonce")
        if not isinstance(nonce, str) or not nonce:
            return False
        with self._lock:
            changed = self._nonces.get(_origin(url)) != nonce
            self._nonces[_origin(url)] = nonce
        return changed


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


# -- checking (servers) ----------------------------------------------------------------------


def verify_proof(
    proof: str,
    *,
    method: str,
    urls: Iterable[str],
    algs: Sequence[str],
    max_age: int,
    leeway: int,
    access_token: str | None = None,
    nonce_key: bytes | None = None,
) -> Proof:
    """Check a DPoP proof per RFC 9449 §4.3 (the caller checks that it came alone, and
    that its ``jti`` is new).

    :param urls: the request's URL as the client may know it (the first one that matches).
    :param algs: the accepted JWS algorithms (asymmetric ones only).
    :param max_age: seconds a proof's ``iat`` may lie in the past (plus ``leeway``).
    :param access_token: the token sent along; then ``ath`` must match it (§4.3 check 12).
    :param nonce_key: given when server nonces are required (§8): ``nonce`` must be current.
    :raises NonceRequired: when the nonce is missing or stale.
    :raises ProofError: for anything else wrong with it.
    """
    if not proof or len(proof) > MAX_PROOF_LENGTH or proof.count(".") != 2:
        raise ProofError("The DPoP proof is not a compact JWS.")
    try:
        header = jws.extract_compact(proof.encode("ascii")).protected
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise ProofError("The DPoP proof is malformed.") from exc
    if header.get("typ") != PROOF_TYPE:
        raise ProofError("The DPoP proof's typ must be dpop+jwt.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in algs or alg not in PROOF_ALGS:
        raise ProofError("The DPoP proof's alg is not accepted.")
    key = _public_key(header.get("jwk"))
    try:
        token = jwt.decode(proof, key, algorithms=[alg], registry=_ProofRegistry(algorithms=[alg]))
    except (JoseError, ValueError, TypeError, UnicodeError) as exc:
        raise ProofError("The DPoP proof's signature is invalid.") from exc
    claims = token.claims
    jti, htm, htu, iat = (claims.get(name) for name in ("jti", "htm", "htu", "iat"))
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise ProofError("The DPoP proof lacks a jti.")
    if not isinstance(htm, str) or htm != method.upper():
        raise ProofError("The DPoP proof is for another HTTP method.")
    wanted = {normalize_htu(url) for url in urls}
    if not isinstance(htu, str) or normalize_htu(htu) not in wanted:
        raise ProofError("The DPoP proof is for another URL.")
    if isinstance(iat, bool) or not isinstance(iat, int | float) or iat != iat:
        raise ProofError("The DPoP proof lacks a numeric iat.")
    now = time.time()
    if not now - max_age - leeway <= iat <= now + leeway:
        raise ProofError("The DPoP proof's iat is outside the accepted window.")
    if nonce_key is not None and not nonce_valid(nonce_key, claims.get("nonce"), now):
        raise NonceRequired("The DPoP proof must carry the server's current nonce.")
    if access_token is not None:
        ath = claims.get("ath")
        if not isinstance(ath, str) or not hmac.compare_digest(
            ath.encode("ascii", "replace"), access_token_hash(access_token).encode("ascii")
        ):
            raise ProofError("The DPoP proof's ath does not match the access token.")
    return Proof(jkt=thumbprint(key), jti=jti, iat=int(iat))


def _public_key(jwk: Any) -> Key:
    """The proof's ``jwk`` header as a key; a private or symmetric key is refused (§4.3)."""
    if not isinstance(jwk, dict) or len(json.dumps(jwk)) > 4096:
        raise ProofError("The DPoP proof lacks a jwk header.")
    if jwk.get("kty") not in ("EC", "OKP", "RSA") or any(
        name in jwk for name in ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
    ):
        raise ProofError("The DPoP proof's jwk must be a public asymmetric key.")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise ProofError("The DPoP proof's jwk is not a valid key.") from exc
    if key.is_private:
        raise ProofError("The DPoP proof's jwk must be a public asymmetric key.")
    return key


# -- server nonces (RFC 9449 §8) -------------------------------------------------------------


def make_nonce(key: bytes, now: float | None = None) -> str:
    """The server's current nonce: the period number and its HMAC, so any instance sharing
    ``key`` accepts it and none has to store it."""
    period = int((time.time() if now is None else now) // NONCE_PERIOD)
    return f"{period}.{_nonce_mac(key, period)}"


def nonce_valid(key: bytes, nonce: Any, now: float | None = None) -> bool:
    """Whether ``nonce`` is the current or the previous period's nonce."""
    if not isinstance(nonce, str) or len(nonce) > 128:
        return False
    period_text, _, mac = nonce.partition(".")
    if not period_text.isdigit():
        return False
    period = int(period_text)
    current = int((time.time() if now is None else now) // NONCE_PERIOD)
    if period not in (current, current - 1):
        return False
    return hmac.compare_digest(mac.encode("ascii", "replace"), _nonce_mac(key, period).encode())


def _nonce_mac(key: bytes, period: int) -> str:
    return b64url(hmac.new(key, f"dpop-nonce:{period}".encode(), hashlib.sha256).digest()[:16])
