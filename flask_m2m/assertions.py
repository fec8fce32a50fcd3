"""``private_key_jwt`` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2), on
Authlib's :class:`~authlib.oauth2.rfc7523.JWTBearerClientAssertion`.

The client signs a JWT with its private key and sends it as ``client_assertion`` with
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``. Checked here:
the client exists, is active and is registered for ``private_key_jwt``; the signature, with the
key its ``kid`` names (a ``jwks_uri`` is fetched again for an unknown ``kid``) or, without
``kid``, with each of the client's keys; an algorithm of ``M2M_CLIENT_ASSERTION_ALGS``;
``iss`` = ``sub`` = the client id; ``aud`` the token endpoint URL, the issuer or, at the
revocation and introspection endpoints, their own URL; ``exp`` present and at most
``M2M_CLIENT_ASSERTION_MAX_LIFETIME`` ahead of ``iat`` (or of now); ``iat``/``nbf`` within
``M2M_LEEWAY``; and ``jti`` never seen before by any instance (:mod:`flask_m2m.replay`).
Every failure is a 401 ``invalid_client``, as for a wrong secret.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from flask import request as flask_request
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import Key, KeySet
from sqlalchemy import update
from sqlalchemy.orm import Session

from . import writes
from .authentication import ClientAuthenticationFailed, fail
from .client_jwks import KeysUnavailable, PublishedKeys
from .models import utcnow
from .policy import CLIENT_ID_PATTERN, KEY_METHODS
from .verification import QuietJWSRegistry

if TYPE_CHECKING:
    from .state import M2MState

#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: The replay-store kind of client-assertion identifiers.
REPLAY_KIND = "client_assertion"
#: Key types able to verify each algorithm family.
_KTY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class _Refused(Exception):
    """An assertion refused for ``reason`` (logged through the failure signal, never shown)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def published_keys(state: M2MState, debug: bool) -> PublishedKeys:
    """The cache of clients' published key sets, configured from ``state.settings``."""
    settings = state.settings
    allow = settings.jwks_uri_allow_insecure
    return PublishedKeys(
        timeout=settings.jwks_uri_timeout,
        max_bytes=settings.jwks_uri_max_bytes,
        cache_seconds=settings.jwks_uri_cache_seconds,
        refetch_seconds=settings.jwks_uri_refetch_seconds,
        allow_insecure=debug if allow is None else allow,
    )


class ClientAssertion(JWTBearerClientAssertion):  # type: ignore[misc]
    """Authlib's JWT client assertion check, with flask-m2m's keys, audiences and replay store."""

    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, state: M2MState, published: PublishedKeys):
        super().__init__(validate_jti=True, leeway=state.settings.leeway)
        self.state = state
        self.published = published
        #: The configured algorithms (``EdDSA`` without joserfc's RFC 9864 warning).
        self.registry = QuietJWSRegistry(algorithms=list(state.settings.client_assertion_algs))

    # -- Authlib's hooks -------------------------------------------------------------------
    def get_audiences(self) -> list[str]:
        """The issuer and the token endpoint URL; at the revocation or introspection
        endpoint, that endpoint's URL too (RFC 7523 §3 item 3)."""
        issuer = self.state.issuer()
        base = issuer + self.state.settings.url_prefix
        audiences = [base + "/token", issuer]
        endpoint = flask_request.path.rsplit("/", 1)[-1]
        if endpoint in ("revoke", "introspect"):
            audiences.append(f"{base}/{endpoint}")
        return audiences

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        """First use of ``jti`` by this client across all instances, kept until ``exp``."""
        if not isinstance(jti, str) or not jti or len(jti) > 512:
            return False
        return self.state.replay.first_use(REPLAY_KIND, claims["sub"], jti, int(claims["exp"]))

    def resolve_client_public_key(self, client: Any) -> KeySet:
        """The client's registered set, or the one its ``jwks_uri`` publishes."""
        if client.jwks_uri:
            try:
                return self.published.get(client.jwks_uri)
            except KeysUnavailable:
                raise _Refused("jwks_uri_unavailable") from None
        if not client.jwks:
            raise _Refused("no_keys")
        return KeySet.import_key_set(client.jwks)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> Any:
        """Verify the signature (the ``kid``'s key, else each key in turn) with an allowed
        algorithm, then the lifetime and Authlib's claim checks (the ``jti`` last)."""
        claims = self._verified_claims(assertion, resolve_key)
        exp, iat = claims.get("exp"), claims.get("iat")
        if isinstance(exp, (int, float)) and not isinstance(exp, bool):
            start = iat if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None
            start = time.time() if start is None else start
            if exp - start > self.state.settings.client_assertion_max_lifetime:
                raise _Refused("assertion_lifetime_too_long")
        self.verify_claims(claims)
        return claims

    # -- the signature ---------------------------------------------------------------------
    def _verified_claims(self, assertion: str, keys: Any) -> dict[str, Any]:
        headers, _ = self.extract_assertion(assertion)
        alg, kid = headers.get("alg"), headers.get("kid")
        algorithms = self.state.settings.client_assertion_algs
        if alg not in algorithms:
            raise _Refused("algorithm_not_allowed")
        client = _assertion_client()
        if kid is not None:
            key = _by_kid(keys, kid)
            if key is None and client.jwks_uri:  # perhaps a new key: fetch again (bounded)
                try:
                    key = _by_kid(self.published.get(client.jwks_uri, refresh=True), kid)
                except KeysUnavailable:
                    raise _Refused("jwks_uri_unavailable") from None
            if key is None:
                raise _Refused("unknown_kid")
            candidates = [key]
        else:
            family = _KTY.get(str(alg)[:2])
            candidates = [key for key in keys.keys if key.key_type == family]
        for key in candidates:
            try:
                token = jwt.decode(assertion, key, registry=self.registry)
            except JoseError:
                continue
            claims: dict[str, Any] = token.claims
            return claims
        raise _Refused("invalid_signature")


def _assertion_client() -> Any:
    """The client the assertion names, noted by :func:`private_key_jwt` for this request."""
    return flask_request.environ["m2m.assertion_client"]


def _by_kid(keys: KeySet, kid: Any) -> Key | None:
    return next((key for key in keys.keys if key.kid == kid), None)


def assertion_sent() -> bool:
    """Whether the body carries a client assertion (or its type)."""
    form = flask_request.form
    return "client_assertion" in form or "client_assertion_type" in form


def private_key_jwt(state: M2MState, checker: ClientAssertion) -> Any:
    """The client of a ``client_assertion`` (RFC 7523 §2.2), or None without one.

    :raises InvalidRequestError: (400) with a second method, or without the assertion type.
    :raises ClientAuthenticationFailed: (401) for any failed check.
    """
    if not assertion_sent():
        return None
    form = flask_request.form
    if "client_secret" in form or flask_request.headers.get("Authorization"):
        raise InvalidRequestError("Use one client authentication method, not two.")
    if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
        raise InvalidRequestError(
            f"A client assertion needs client_assertion_type={ASSERTION_TYPE} and "
            "client_assertion."
        )
    client_id: str | None = None
    try:
        _, claims = checker.extract_assertion(form["client_assertion"])
        sub = claims.get("sub")
        client_id = sub if isinstance(sub, str) and CLIENT_ID_PATTERN.fullmatch(sub) else None
        if client_id is None:
            raise _Refused("invalid_sub")
        if form.get("client_id", client_id) != client_id:  # RFC 7521 §4.2
            raise _Refused("client_id_mismatch")
        credentials = state.server.credentials.get(client_id)
        if credentials is None:
            raise _Refused("unknown_client")
        client = credentials.client
        status = client.status()
        if status != "active":
            raise _Refused(status)
        if client.token_endpoint_auth_method not in KEY_METHODS:
            raise _Refused("auth_method_not_allowed")
        flask_request.environ["m2m.assertion_client"] = client
        checker.process_assertion_claims(
            form["client_assertion"], checker.resolve_client_public_key(client)
        )
    except ClientAuthenticationFailed:
        raise
    except _Refused as refused:
        raise fail(client_id, refused.reason, basic=False) from None
    except InvalidClientError as error:  # Authlib's claim checks
        reason = "replayed_jti" if "used before" in str(error.description) else "invalid_claims"
        raise fail(client_id, reason, basic=False) from None
    except (JoseError, ValueError, TypeError, UnicodeError):  # undecodable (older Authlib)
        raise fail(client_id, "malformed_assertion", basic=False) from None
    _note_use(state, client)
    return client


def _note_use(state: M2MState, client: Any) -> None:
    """Record the client's ``last_used_at``, at most once per interval, in a transaction of
    flask-m2m's own (:mod:`flask_m2m.writes`)."""
    now = utcnow()
    interval = timedelta(seconds=state.settings.last_used_interval_seconds)
    if client.last_used_at is not None and now - client.last_used_at < interval:
        return
    model = state.models.client
    statement = (
        update(model)
        .where(model.client_id == client.client_id)
        .values(last_used_at=now, updated_at=model.updated_at)
    )
    def work(session: Session) -> None:
        session.execute(statement)

    writes.write(state.db, work, wait_for_app=True)
    client.last_used_at = now  # a detached copy: keeps the cached credentials current
