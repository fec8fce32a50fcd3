"""``require_scope`` for resource routes and the ``current_token`` proxy (RFC 6750)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from functools import wraps
from typing import ParamSpec, TypeVar, cast

from flask import current_app, g, request
from werkzeug.local import LocalProxy

from .binding import NonceRequired, ProofError, check_request_proof
from .errors import (
    InsufficientScope,
    InvalidDPoPProof,
    InvalidToken,
    JSONHTTPError,
    MissingToken,
    TemporarilyUnavailable,
    UseDPoPNonce,
)
from .outages import DATABASE_ERRORS, log_outage
from .state import M2MState, get_state
from .tokens import AccessToken, TokenRejected

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
    :raises TemporarilyUnavailable: 503, the database cannot be reached to check the token.
    """
    state = get_state()
    if state.metrics is None:
        return _authenticate(state, scopes)
    start, outcome = time.perf_counter(), "ok"
    try:
        return _authenticate(state, scopes)
    except JSONHTTPError as exc:
        outcome = exc.error
        raise
    finally:
        state.metrics.observe_check(time.perf_counter() - start, outcome)


def _authenticate(state: M2MState, scopes: tuple[str, ...]) -> AccessToken:
    scheme, _, token_string = request.headers.get("Authorization", "").strip().partition(" ")
    scheme, token_string = scheme.lower(), token_string.strip()
    algs = state.dpop.algs_text
    if scheme not in ("bearer", "dpop") or not token_string:
        raise MissingToken(REALM, algs)
    shown = "DPoP" if scheme == "dpop" else "Bearer"
    try:
        token = state.tokens.authenticate(token_string, state.issuer(), state.audience())
    except TokenRejected as exc:
        raise InvalidToken(REALM, str(exc), scheme=shown, dpop_algs=algs) from None
    except DATABASE_ERRORS as exc:
        log_outage(exc)
        raise TemporarilyUnavailable() from None
    if scheme == "dpop":
        _check_binding(state, token, token_string)
    elif token.jkt is not None:
        # RFC 9449 §7.2: a DPoP-bound token is no Bearer token.
        raise InvalidToken(
            REALM, "This access token is DPoP-bound: use the DPoP scheme.", dpop_algs=algs
        )
    if not token.has_scopes(scopes):
        raise InsufficientScope(REALM, scopes, scheme=shown, dpop_algs=algs)
    g._m2m_token = token
    return token


def _check_binding(state: M2MState, token: AccessToken, token_string: str) -> None:
    """RFC 9449 §7.1: a proof for this request, by the key the token is bound to.

    :raises InvalidToken: the token is not DPoP-bound.
    :raises InvalidDPoPProof: no proof, an invalid one, or one by another key.
    :raises UseDPoPNonce: nonces are required and the proof lacks the current one.
    """
    policy = state.dpop
    if token.jkt is None:
        raise InvalidToken(
            REALM, "This access token is not DPoP-bound.", scheme="DPoP",
            dpop_algs=policy.algs_text,
        )
    try:
        proof = check_request_proof(policy, state.replay, access_token=token_string)
    except NonceRequired:
        raise UseDPoPNonce(REALM, policy.nonce(), policy.algs_text) from None
    except ProofError as exc:
        raise InvalidDPoPProof(REALM, str(exc), policy.algs_text) from None
    if proof is None:
        raise InvalidDPoPProof(REALM, "A DPoP proof is required.", policy.algs_text)
    if not hmac.compare_digest(proof.jkt, token.jkt):
        raise InvalidDPoPProof(
            REALM, "The DPoP proof was signed by another key than the token's.",
            policy.algs_text,
        )


def require_scope(*scopes: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Protect a view: a valid access token carrying every one of ``scopes`` is required.

    ``@require_scope()`` accepts any valid token. The token is then ``current_token``.

    .. versionadded:: 0.1
    """
    if not all(isinstance(scope, str) for scope in scopes):
        raise TypeError("require_scope takes scope names; write @require_scope() with parentheses.")

    def decorator(view: Callable[P, R]) -> Callable[P, R]:
        @wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            authenticate_request(scopes)
            return cast(R, current_app.ensure_sync(view)(*args, **kwargs))

        return wrapper

    return decorator


def _current_token() -> AccessToken:
    token = g.get("_m2m_token")
    if token is None:
        raise RuntimeError("current_token is only set inside a view protected by require_scope.")
    return cast(AccessToken, token)


#: The :class:`~flask_m2m.tokens.AccessToken` of the current request (client_id, scopes, claims).
current_token: AccessToken = cast(AccessToken, LocalProxy(_current_token))
