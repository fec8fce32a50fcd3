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
from inspect import iscoroutinefunction
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
from .protection import PROTECTOR_KEY, Protector, get_protector
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
    protector: Protector = current_app.extensions.get(PROTECTOR_KEY) or get_protector()
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


#: The ``Authorization`` schemes accepted (lower case), without and with a DPoP policy.
_BEARER_ONLY = ("bearer",)
_BEARER_OR_DPOP = ("bearer", "dpop")


def _authenticate(protector: Protector, scopes: tuple[str, ...]) -> AccessToken:
    # The challenges' details (algorithms, metadata URL) are worked out only for a refusal.
    header: str = request.environ.get("HTTP_AUTHORIZATION", "")
    scheme, _, token_string = header.strip().partition(" ")
    scheme, token_string = scheme.lower(), token_string.strip()
    policy = protector.dpop
    if scheme not in (_BEARER_ONLY if policy is None else _BEARER_OR_DPOP) or not token_string:
        raise MissingToken(
            REALM, _algs(policy), resource_metadata=protector.resource_metadata_url()
        )
    try:
        token = protector.authenticate(token_string)
    except TokenRejected as exc:
        raise InvalidToken(
            REALM, str(exc), scheme=_shown(scheme), dpop_algs=_algs(policy),
            resource_metadata=protector.resource_metadata_url(),
        ) from None
    if policy is not None and scheme == "dpop":
        _check_binding(protector, policy, token, token_string)
    elif token.jkt is not None:
        # RFC 9449 §7.2: a DPoP-bound token is no Bearer token.
        raise InvalidToken(
            REALM, "This access token is DPoP-bound: use the DPoP scheme.",
            dpop_algs=_algs(policy), resource_metadata=protector.resource_metadata_url(),
        )
    if scopes and not token.has_scopes(scopes):
        raise InsufficientScope(
            REALM, scopes, scheme=_shown(scheme), dpop_algs=_algs(policy),
            resource_metadata=protector.resource_metadata_url(),
        )
    g._m2m_token = token
    return token


def _algs(policy: ProofPolicy | None) -> str | None:
    """The ``algs`` of the DPoP challenge, or None when only Bearer is accepted."""
    return None if policy is None else policy.algs_text


def _shown(scheme: str) -> str:
    """The scheme as the challenge names it."""
    return "DPoP" if scheme == "dpop" else "Bearer"


def _check_binding(
    protector: Protector, policy: ProofPolicy, token: AccessToken, token_string: str
) -> None:
    """RFC 9449 §7.1: a proof for this request, by the key the token is bound to.

    :raises InvalidToken: the token is not DPoP-bound.
    :raises InvalidDPoPProof: no proof, an invalid one, or one by another key.
    :raises UseDPoPNonce: nonces are required and the proof lacks the current one.
    """
    algs, metadata = policy.algs_text, protector.resource_metadata_url()
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
        # Flask's ensure_sync wraps only coroutine functions: a plain view is called as is.
        is_async = iscoroutinefunction(view)

        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            authenticate_request(scopes)
            if is_async:
                return cast(R, current_app.ensure_sync(view)(*args, **kwargs))
            return view(*args, **kwargs)

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
