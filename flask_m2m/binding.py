"""Sender-constrained requests (RFC 9449): the current request's DPoP proof, checked against
its method and public URL, the accepted algorithms, the replay store and server nonces.

The token endpoint (:mod:`flask_m2m.server`) and protected routes (:mod:`flask_m2m.decorators`)
both call :func:`check_request_proof`; each turns its errors into its own responses.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from flask import request

from .config import Settings
from .dpop import NonceRequired, Proof, ProofError, make_nonce, verify_proof

__all__ = [
    "NonceRequired",
    "ProofError",
    "ProofPolicy",
    "check_request_proof",
    "policy_for",
]

#: The ``kind`` of DPoP proof ``jti`` values in the replay store.
REPLAY_KIND = "dpop"


class Replay(Protocol):
    """What :func:`check_request_proof` needs of a replay store."""

    def first_use(self, kind: str, issuer: str, jti: str, expires_at: int) -> bool: ...


@dataclass(frozen=True, slots=True)
class ProofPolicy:
    """How proofs are judged on one app (or resource server)."""

    algs: tuple[str, ...]
    max_age: int
    leeway: int
    #: Key of the server nonces; with ``require_nonce``, proofs must carry a current one.
    nonce_key: bytes
    require_nonce: bool
    #: A configured public base URL (``M2M_ISSUER``): its origin is accepted in ``htu`` too.
    external_base: str | None = None

    @property
    def algs_text(self) -> str:
        """The algorithms as a ``WWW-Authenticate: DPoP algs="..."`` value (§7.1)."""
        return " ".join(self.algs)

    def nonce(self) -> str:
        """The current server nonce (for a ``DPoP-Nonce`` header)."""
        return make_nonce(self.nonce_key)


def nonce_key_from(secret: bytes) -> bytes:
    """The nonce key derived from a master secret (never the secret itself)."""
    return hmac.new(secret, b"flask-m2m dpop nonce key", hashlib.sha256).digest()


def policy_for(settings: Settings) -> ProofPolicy:
    """The proof policy of an authorization server's ``M2M_*`` settings."""
    return ProofPolicy(
        algs=settings.dpop_signing_algs,
        max_age=settings.dpop_proof_max_age,
        leeway=settings.leeway,
        nonce_key=nonce_key_from(settings.key_encryption_secret),
        require_nonce=settings.dpop_require_nonce,
        external_base=settings.issuer,
    )


def request_urls(external_base: str | None) -> Sequence[str]:
    """The URLs a client may name as ``htu`` for this request: the request URL (public when
    werkzeug's ``ProxyFix`` restores it) and, when a public base URL is configured, the
    request's path under that base's origin."""
    urls = [request.base_url]
    if external_base:
        origin = urlsplit(external_base)
        urls.append(f"{origin.scheme}://{origin.netloc}{request.script_root}{request.path}")
    return urls


def check_request_proof(
    policy: ProofPolicy, replay: Replay, *, access_token: str | None = None
) -> Proof | None:
    """The request's checked DPoP proof, or None when it has no ``DPoP`` header.

    :param access_token: the token sent with the request (its ``ath`` is then checked).
    :raises NonceRequired: the proof lacks the current server nonce (RFC 9449 §8-9).
    :raises ProofError: more than one ``DPoP`` header, an invalid or a replayed proof.
    """
    # Read from the environ: one lookup, where the headers' getlist walks every header. A
    # server joins repeated header lines with commas (RFC 9110 §5.3), which a JWS compact
    # serialisation never holds: a comma means more than one DPoP header.
    value = request.environ.get("HTTP_DPOP")
    if value is None:
        return None
    if "," in value:
        raise ProofError("Send exactly one DPoP header.")
    proof = verify_proof(
        value,
        method=request.method,
        urls=request_urls(policy.external_base),
        algs=policy.algs,
        max_age=policy.max_age,
        leeway=policy.leeway,
        access_token=access_token,
        nonce_key=policy.nonce_key if policy.require_nonce else None,
    )
    expires_at = proof.iat + policy.max_age + 2 * policy.leeway
    if not replay.first_use(REPLAY_KIND, proof.jkt, proof.jti, expires_at):
        raise ProofError("The DPoP proof has been used before.")
    return proof
