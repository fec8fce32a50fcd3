"""Rate limits with Flask-Limiter: per client on the token endpoint, per address on failed
client authentication, per caller on the management API.

flask-m2m runs a Flask-Limiter instance of its own, storing counters where the app's
``RATELIMIT_STORAGE_URI`` says (memory by default: per process). It enforces only the limits
below, never the app's ``RATELIMIT_DEFAULT`` or application limits, which stay the business of
the app's own limiter.

A client's token-endpoint limit is enforced, or in ``log-only`` mode counted and reported
(signal, audit event, metric) but never refused. When the storage fails, the limits go on in
memory (fail open, the default) or every limited route answers 503 (fail closed).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, json, request
from flask_limiter import Limiter, RequestLimit
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many

from . import audit, signals
from .grants import basic_credentials
from .outages import DATABASE_ERRORS, log_outage

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
        #: client id -> (limit string, log-only?, monotonic time read)
        self._client_limits: dict[str, tuple[str, bool, float]] = {}
        #: (client id, window reset time) of the log-only breaches already reported
        self._reported: set[tuple[str, int]] = set()
        self.limiter = Limiter(
            get_remote_address,
            app=app,
            # Memory (per process) unless the app names a shared storage such as Redis.
            storage_uri=app.config.get("RATELIMIT_STORAGE_URI") or "memory://",
            # Storage failures surface as limits.errors.StorageError (503 when failing closed).
            storage_options={"wrap_exceptions": True},
            in_memory_fallback_enabled=state.settings.rate_limit_fail_open,
            swallow_errors=False,
            key_prefix=app.config.get("RATELIMIT_KEY_PREFIX") or "m2m",
            headers_enabled=True,
            default_limits_exempt_when=_never,
            application_limits_exempt_when=_never,
        )

    def _client_policy(self) -> tuple[str, bool]:
        """The limit of the client the request names (its own ``rate_limit`` or the default)
        and whether it is log-only, read at most every few seconds per client."""
        client_id = _client_id()
        now = time.monotonic()
        cached = self._client_limits.get(client_id)
        if cached is None or now - cached[2] > _CLIENT_LIMIT_TTL:
            settings = self.state.settings
            try:
                client = self.state.server.query_client(client_id)
            except DATABASE_ERRORS as exc:
                # The token view meets the same outage and answers 503; the limiter must not
                # take it for a storage failure.
                log_outage(exc)
                return settings.token_rate_limit, False
            limit = (client.rate_limit if client is not None else None) or settings.token_rate_limit
            mode = client.rate_limit_mode if client is not None else None
            cached = (limit, (mode or settings.token_rate_limit_mode) == "log-only", now)
            if len(self._client_limits) > 10000:
                self._client_limits.clear()
            self._client_limits[client_id] = cached
        return cached[0], cached[1]

    def _token_limit(self) -> str:
        return self._client_policy()[0]

    def _log_only(self) -> bool:
        return self._client_policy()[1]

    def protect_token_endpoint(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Per-client limit (successful token requests count) plus the failed-auth limit."""
        view = self.protect_client_auth(self._count_log_only(view))
        return self.limiter.limit(
            self._token_limit,
            key_func=_client_id,
            deduct_when=lambda response: response.status_code == 200,
            exempt_when=self._log_only,
            on_breach=self._enforced_breach,
            scope="m2m-token",
        )(view)

    def _count_log_only(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Count a log-only client's successful token requests, and report the first one
        over its limit in each window."""

        def counted(*args: Any, **kwargs: Any) -> Any:
            response = view(*args, **kwargs)
            if response.status_code == 200 and self._log_only():
                limit, _ = self._client_policy()
                for item in parse_many(limit):
                    key = ("m2m-token-log-only", _client_id())
                    if not self.limiter.limiter.hit(item, *key):
                        self._report(item, enforced=False)
                        break
            return response

        return counted

    def _counted(
        self, breach: Callable[[RequestLimit], Response], name: str
    ) -> Callable[[RequestLimit], Response]:
        """``breach``, also counted in the metrics (when they are on)."""
        metrics = self.state.metrics
        if metrics is None:
            return breach

        def counted(limit: RequestLimit) -> Response:
            metrics.limited(name)
            return breach(limit)

        return counted

    def _enforced_breach(self, limit: RequestLimit) -> Response:
        self._report(limit.limit, enforced=True)
        return _oauth_breach(limit)

    def _report(self, item: RateLimitItem, enforced: bool) -> None:
        """Signal every breach; audit the first one of each window per client and process."""
        client_id = _client_id()
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        signals.rate_limit_exceeded.send(
            app, client_id=client_id, limit=str(item), enforced=enforced
        )
        window = int(time.time()) // item.get_expiry()
        if (client_id, window) in self._reported or self.state.server.query_client(
            client_id
        ) is None:
            return
        if len(self._reported) > 10000:
            self._reported.clear()
        self._reported.add((client_id, window))
        audit.record(
            self.state,
            "rate_limit_exceeded",
            client_id,
            {"limit": str(item), "mode": "enforce" if enforced else "log-only"},
        )
        try:
            self.state.db.session.commit()
        except DATABASE_ERRORS as exc:  # the token was issued; the report can be lost
            self.state.db.session.rollback()
            log_outage(exc)

    def protect_client_auth(self, view: Callable[..., Any]) -> Callable[..., Any]:
        """Per-address limit counting only failed client authentications (all endpoints)."""
        return self.limiter.shared_limit(
            self.state.settings.failed_auth_rate_limit,
            scope="m2m-failed-auth",
            key_func=get_remote_address,
            deduct_when=lambda response: response.status_code in _FAILED_AUTH,
            on_breach=self._counted(_oauth_breach, "failed_auth"),
        )(view)

    def protect_management(self, blueprint: Blueprint) -> None:
        """Per-caller limit on every route of the management blueprint."""
        self.limiter.limit(
            self.state.settings.management_rate_limit,
            key_func=_caller,
            on_breach=self._counted(_problem_breach, "management"),
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
