"""Rate limits with Flask-Limiter: per client on the token endpoint, per address on failed
client authentication, per caller on the management API.

flask-m2m runs a Flask-Limiter instance of its own, storing counters where the app's
``RATELIMIT_STORAGE_URI`` says (memory by default: per process). It enforces only the limits
below, never the app's ``RATELIMIT_DEFAULT`` or application limits, which stay the business of
the app's own limiter.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, json, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address

from .grants import basic_credentials

if TYPE_CHECKING:
    from .extension import M2MState

#: Seconds a client's own ``rate_limit`` is kept in memory before it is read again.
_CLIENT_LIMIT_TTL = 5.0
#: Status codes of a failed client authentication (RFC 6749 §5.2 ``invalid_client``).
_FAILED_AUTH = (401,)


def _never() -> bool:
    return True


def _client_id() -> str:
    """The client the request names (Basic header or body), checked or not: the key of its
    token-endpoint limit. Only successful requests count, so naming another client costs it
    nothing."""
    credentials = basic_credentials()
    if credentials is not None:
        return credentials[0] or "-"
    return request.form.get("client_id") or "-"


def _caller() -> str:
    """Who calls the management API: its Bearer token (hashed) or, without one, its address."""
    header = request.headers.get("Authorization", "")
    if header:
        return "auth:" + hashlib.sha256(header.encode("utf-8", "surrogatepass")).hexdigest()
    return "addr:" + get_remote_address()


class RateLimits:
    """The Flask-Limiter instance of one app and the limits flask-m2m applies with it."""

    def __init__(self, app: Flask, state: M2MState):
        self.state = state
        self._client_limits: dict[str, tuple[str, float]] = {}
        self.limiter = Limiter(
            get_remote_address,
            app=app,
            # Memory (per process) unless the app names a shared storage such as Redis.
            storage_uri=app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
            key_prefix=app.config.get("RATELIMIT_KEY_PREFIX") or "m2m",
            headers_enabled=True,
            default_limits_exempt_when=_never,
            application_limits_exempt_when=_never,
        )

    def _token_limit(self) -> str:
        """The limit of the client the request names: its own ``rate_limit`` or the default."""
        client_id = _client_id()
        now = time.monotonic()
        cached = self._client_limits.get(client_id)
        if cached is None or now - cached[1] > _CLIENT_LIMIT_TTL:
            client = self.state.server.query_client(client_id)
            own = client.rate_limit if client is not None else None
            cached = (own or self.state.settings.token_rate_limit, now)
            if len(self._client_limits) > 10000:
                self._client_limits.clear()
            self._client_limits[client_id] = cached
        return cached[0]

    def protect_token_endpoint(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Per-client limit (successful token requests count) plus the failed-auth limit."""
        view = self.protect_client_auth(view)
        return self.limiter.limit(
            self._token_limit,
            key_func=_client_id,
            deduct_when=lambda response: response.status_code == 200,
            on_breach=_oauth_breach,
            scope="m2m-token",
        )(view)

    def protect_client_auth(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Per-address limit counting only failed client authentications (all endpoints)."""
        return self.limiter.shared_limit(
            self.state.settings.failed_auth_rate_limit,
            scope="m2m-failed-auth",
            key_func=get_remote_address,
            deduct_when=lambda response: response.status_code in _FAILED_AUTH,
            on_breach=_oauth_breach,
        )(view)

    def protect_management(self, blueprint: Blueprint) -> None:
        """Per-caller limit on every route of the management blueprint."""
        self.limiter.limit(
            self.state.settings.management_rate_limit,
            key_func=_caller,
            on_breach=_problem_breach,
        )(blueprint)


def _retry_after(limit: RequestLimit) -> str:
    return str(max(1, int(limit.reset_at - time.time())))


def _oauth_breach(limit: RequestLimit) -> Response:
    """429 with an RFC 6749-style JSON body and ``Retry-After``."""
    body = {
        "error": "too_many_requests",
        "error_description": f"Rate limit exceeded: {limit.limit}. Retry later.",
    }
    headers = {
        "Retry-After": _retry_after(limit),
        "Cache-Control": "no-store",
        "Pragma": "no-cache",
    }
    return Response(json.dumps(body), 429, headers, mimetype="application/json")


def _problem_breach(limit: RequestLimit) -> Response:
    """429 as an RFC 9457 problem object, with ``Retry-After``."""
    body = {
        "type": "about:blank",
        "title": "Too Many Requests",
        "status": 429,
        "detail": f"Rate limit exceeded: {limit.limit}. Retry later.",
    }
    headers = {"Retry-After": _retry_after(limit), "Cache-Control": "no-store"}
    return Response(json.dumps(body), 429, headers, mimetype="application/problem+json")
