"""``require_scope`` for resource routes and the ``current_token`` proxy (RFC 6750).

They work alike in an app with :class:`~flask_m2m.M2M` and in one with
:class:`~flask_m2m.ResourceServer`: each extension registers a
:class:`~flask_m2m.protection.Protector` that verifies the token; this module finds the token
in the request and turns the outcome into RFC 6750 §3 responses, whose challenges point to the
resource's RFC 9728 metadata (``resource_metadata``).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar, cast

from flask import current_app, g, request
from werkzeug.local import LocalProxy

from .binding import NonceRequired, ProofError, ProofPolicy, check_request_proof
from .errors import (
    InsufficientScope,
    InvalidDPoPProof,
    InvalidToken,
    JSONHTTPError,
    MissingToken,
    UseDPoPNonce,
)
from .protection import Protector, get_protector
from .resource_metadata import SCOPES_ATTRIBUTE
from .verification import AccessToken, TokenRejected

P = ParamSpec("P")
R = TypeVar("R")

#: RFC 6750 §3 ``realm`` of the Bearer challenges.
REALM = "api"


def authenticate_request(scopes: tuple[str, ...] = ()) -> AccessToken:
    """Verify the request's access token (``Bearer``, or ``DPoP`` with a proof, RFC 9449 §7)
    and its scopes; store it as ``current_token``.

    :raises MissingToken: 401, no Bearer token was sent (RFC 6750 §3.1, no error code).
    :raises InvalidToken: 401 ``invalid_token`` (also a DPoP-bound token sent as Bearer);
        ``invalid_dpop_proof`` or ``use_dpop_nonce`` for a DPoP request.
    :raises InsufficientScope: 403 ``insufficient_scope``.
    :raises TemporarilyUnavailable: 503, the token cannot be checked now (the database, or on
        a resource server the authorization server's introspection, cannot be reached).
    """
    protector = get_protector()
    observe = protector.observe
    if observe is None:
        return _authenticate(protector, scopes)
    start, outcome = time.perf_counter(), "ok"
    try:
        return _authenticate(protector, scopes)
    except JSONHTTPError as exc:
        outcome = exc.error
        raise
    finally:
        observe(time.perf_counter() - start, outcome)


def _authenticate(protector: Protector, scopes: tuple[str, ...]) -> AccessToken:
    scheme, _, token_string = request.headers.get("Authorization", "").strip().partition(" ")
    scheme, token_string = scheme.lower(), token_string.strip()
    policy = protector.dpop
    algs = policy.algs_text if policy is not None else None
    metadata = protector.resource_metadata_url()
    accepted = ("bearer", "dpop") if policy is not None else ("bearer",)
    if scheme not in accepted or not token_string:
        raise MissingToken(REALM, algs, resource_metadata=metadata)
    shown = "DPoP" if scheme == "dpop" else "Bearer"
    try:
        token = protector.authenticate(token_string)
    except TokenRejected as exc:
        raise InvalidToken(
            REALM, str(exc), scheme=shown, dpop_algs=algs, resource_metadata=metadata
        ) from None
    if policy is not None and scheme == "dpop":
        _check_binding(protector, policy, token, token_string, metadata)
    elif token.jkt is not None:
        # RFC 9449 §7.2: a DPoP-bound token is no Bearer token.
        raise InvalidToken(
            REALM, "This access token is DPoP-bound: use the DPoP scheme.",
            dpop_algs=algs, resource_metadata=metadata,
        )
    if not token.has_scopes(scopes):
        raise InsufficientScope(
            REALM, scopes, scheme=shown, dpop_algs=algs, resource_metadata=metadata
        )
    g._m2m_token = token
    return token


def _check_binding(
    protector: Protector, policy: ProofPolicy, token: AccessToken, token_string: str,
    metadata: str,
) -> None:
    """RFC 9449 §7.1: a proof for this request, by the key the token is bound to.

    :raises InvalidToken: the token is not DPoP-bound.
    :raises InvalidDPoPProof: no proof, an invalid one, or one by another key.
    :raises UseDPoPNonce: nonces are required and the proof lacks the current one.
    """
    algs = policy.algs_text
    if token.jkt is None:
        raise InvalidToken(
            REALM, "This access token is not DPoP-bound.", scheme="DPoP",
            dpop_algs=algs, resource_metadata=metadata,
        )
    try:
        proof = check_request_proof(policy, protector.replay, access_token=token_string)
    except NonceRequired:
        raise UseDPoPNonce(REALM, policy.nonce(), algs, metadata) from None
    except ProofError as exc:
        raise InvalidDPoPProof(REALM, str(exc), algs, metadata) from None
    if proof is None:
        raise InvalidDPoPProof(REALM, "A DPoP proof is required.", algs, metadata)
    if not hmac.compare_digest(proof.jkt, token.jkt):
        raise InvalidDPoPProof(
            REALM, "The DPoP proof was signed by another key than the token's.", algs, metadata
        )


def require_scope(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Protect a view: a valid access token carrying every one of ``scopes`` is required.

    ``@require_scope()`` accepts any valid token. The token is then ``current_token``. It
    works on the authorization server (:class:`~flask_m2m.M2M`) and on a resource server
    (:class:`~flask_m2m.ResourceServer`) alike.

    .. versionadded:: 0.1
    """
    if not all(isinstance(scope, str) for scope in scopes):
        raise TypeError("require_scope takes scope names; write @require_scope() with parentheses.")

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            authenticate_request(scopes)
            return cast(R, current_app.ensure_sync(view)(*args, **kwargs))

        setattr(wrapper, SCOPES_ATTRIBUTE, scopes)  # the metadata's scopes_supported
        return wrapper

    return decorator


def _current_token() -> AccessToken:
    token = g.get("_m2m_token")
    if token is None:
        raise RuntimeError("current_token is only set inside a view protected by require_scope.")
    return cast(AccessToken, token)


#: The :class:`~flask_m2m.verification.AccessToken` of the current request (client_id, scopes,
#: claims).
current_token: AccessToken = cast(AccessToken, LocalProxy(_current_token))
