"""Rate limits: per client on the token endpoint, per address on failed client
authentication, per caller on the management API.

One design, on Flask-Limiter's configuration and storage. flask-m2m reads Flask-Limiter's own
keys (``RATELIMIT_ENABLED``, ``RATELIMIT_STORAGE_URI``, ``RATELIMIT_STORAGE_OPTIONS``,
``RATELIMIT_STRATEGY``, ``RATELIMIT_KEY_PREFIX``, ``RATELIMIT_HEADERS_ENABLED``) and drives the
``limits`` library Flask-Limiter is built on: one storage (``storage_from_string``) and one
strategy per app, called from flask-m2m's own routes only. It adds no hook to the app, so the
app's own routes never reach it, and the app's own Flask-Limiter, if it has one, keeps its
``RATELIMIT_DEFAULT`` and application limits to itself.

Where each limit is counted:

- per client, once the client has authenticated and asked for valid scopes, by the grant with
  one storage call (:meth:`RateLimits.count_token_request`, which returns the response's
  ``X-RateLimit-*`` headers); enforced, or in ``log-only`` mode counted and reported (signal,
  audit event, metric) but never refused;
- per address, failed client authentications: tested before the token, revocation and
  introspection views and charged on their 401 (:meth:`RateLimits.protect_client_auth`);
- per caller, the management API: by a ``before_request`` function of its blueprint, once the
  caller is authorized (:meth:`RateLimits.protect_management`).

When the storage fails, the limits go on in memory, trying the storage again every 2 seconds
(fail open, the default), or the limited routes answer 503 (fail closed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, TypeVar

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Blueprint, Flask, Response, current_app
from flask_limiter.constants import ConfigVars
from flask_limiter.util import get_remote_address
from limits import RateLimitItem
from limits.errors import ConfigurationError as LimitsConfigurationError
from limits.errors import StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import STRATEGIES, RateLimiter
from sqlalchemy.exc import SQLAlchemyError

from . import audit, signals, writes
from .errors import ConfigurationError
from .policy import parse_rate_limit
from .problems import problem

if TYPE_CHECKING:
    from .state import M2MState

#: Status codes of a failed client authentication (RFC 6749 §5.2 ``invalid_client``).
_FAILED_AUTH = (401,)
#: Seconds in-memory counters stand in for a failed storage before it is tried again.
_FALLBACK_SECONDS = 2.0
#: Seconds between two sweeps of expired counters out of a memory storage.
_SWEEP_SECONDS = 1.0

T = TypeVar("T")


class RateLimited(OAuth2Error):  # type: ignore[misc]
    """429 from a protocol endpoint: RFC 6749 §5.2-style body, ``Retry-After`` and the
    ``X-RateLimit-*`` headers of the limit that was reached."""

    error = "too_many_requests"
    status_code = 429

    def __init__(self, item: RateLimitItem, reset_at: float):
        super().__init__(description=f"Rate limit exceeded: {item}. Retry later.")
        self.limit_headers = _limit_headers(item, 0, reset_at)
        self.limit_headers.append(("Retry-After", _seconds_until(reset_at)))

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        return headers + self.limit_headers


class MemoryStorageSweptOnceASecond(MemoryStorage):
    """limits' memory storage, its expired counters swept by a timer thread started at most
    once a second.

    limits starts that thread again 10 ms after the last sweep, on the next count: under
    steady traffic a thread start (which waits for the new thread) every 10 ms of each
    worker's time. A counter past its window is dropped when it is next read whatever the
    sweep does, so the limits count the same; the sweep only frees memory.
    """

    def _MemoryStorage__schedule_expiry(self) -> None:  # limits' private hook, overridden
        if not self.timer.is_alive():
            sweep = getattr(self, "_MemoryStorage__expire_events")  # noqa: B009
            self.timer = threading.Timer(_SWEEP_SECONDS, sweep)
            self.timer.daemon = True
            self.timer.start()


def _memory(**options: Any) -> MemoryStorage:
    """A memory storage: :class:`MemoryStorageSweptOnceASecond` where limits has its hook."""
    if hasattr(MemoryStorage, "_MemoryStorage__schedule_expiry") and hasattr(
        MemoryStorage, "_MemoryStorage__expire_events"
    ):
        storage = MemoryStorageSweptOnceASecond(**options)
        if isinstance(getattr(storage, "timer", None), threading.Timer):
            return storage  # the hook's attributes are those it uses
    return MemoryStorage(**options)


def _strategy(app: Flask) -> RateLimiter:
    """The strategy ``RATELIMIT_STRATEGY`` names, on the storage ``RATELIMIT_STORAGE_URI`` and
    ``RATELIMIT_STORAGE_OPTIONS`` name (memory, per process, by default).

    :raises ConfigurationError: naming the key, for an unknown storage or strategy.
    """
    config = app.config
    name = config.get(ConfigVars.STRATEGY) or "fixed-window"
    if name not in STRATEGIES:
        raise ConfigurationError(f"RATELIMIT_STRATEGY must be one of {sorted(STRATEGIES)}.")
    options = dict(config.get(ConfigVars.STORAGE_OPTIONS) or {})
    # Storage failures surface as limits.errors.StorageError (503 when failing closed).
    options["wrap_exceptions"] = True
    try:
        storage = storage_from_string(config.get(ConfigVars.STORAGE_URI) or "memory://", **options)
    except LimitsConfigurationError as exc:
        raise ConfigurationError(
            "RATELIMIT_STORAGE_URI names no storage the limits library can use "
            f"(or its driver is not installed): {exc}"
        ) from exc
    if not isinstance(storage, Storage):  # e.g. async+redis://
        raise ConfigurationError("RATELIMIT_STORAGE_URI must name a synchronous storage.")
    if type(storage) is MemoryStorage:
        storage = _memory(**options)
    try:
        return STRATEGIES[name](storage)
    except NotImplementedError as exc:
        raise ConfigurationError(
            f"RATELIMIT_STRATEGY {name!r} is not supported by the storage of "
            "RATELIMIT_STORAGE_URI."
        ) from exc


class RateLimits:
    """The rate-limit storage of one app and the limits flask-m2m counts in it."""

    def __init__(self, app: Flask, state: M2MState):
        self.state = state
        self.enabled = bool(app.config.get(ConfigVars.ENABLED, True))
        #: ``X-RateLimit-*`` on successful token responses too (they are always on 429s).
        self.headers_enabled = bool(app.config.get(ConfigVars.HEADERS_ENABLED, False))
        self.key_prefix = app.config.get(ConfigVars.KEY_PREFIX) or "m2m"
        #: The strategy over the app's storage; None while limits are off (nothing is built).
        self.strategy: RateLimiter | None = _strategy(app) if self.enabled else None
        self._memory: RateLimiter | None = None
        self._memory_until = 0.0
        #: limit string -> parsed limits
        self._parsed: dict[str, list[RateLimitItem]] = {}
        #: (client id, window) of the breaches already audited by this process
        self._reported: set[tuple[str, int]] = set()

    @property
    def storage(self) -> Storage | None:
        """The storage the counters live in (None while limits are off)."""
        return None if self.strategy is None else self.strategy.storage

    # -- per client, on the token endpoint ---------------------------------------------------
    def count_token_request(self, client: Any) -> list[tuple[str, str]]:
        """Count a token request of an authenticated client against its limit.

        :returns: ``X-RateLimit-*`` headers for the response (when enabled), else ``[]``.
        :raises RateLimited: when the client is over an enforced limit.
        :raises StorageError: when the storage fails and ``M2M_RATE_LIMIT_FAIL_OPEN`` is off.
        """
        if not self.enabled:
            return []
        settings = self.state.settings
        limit = client.rate_limit or settings.token_rate_limit
        items = self._parsed.get(limit)
        if items is None:
            items = self._parsed[limit] = parse_rate_limit(limit, max_window=None)
        enforced = (client.rate_limit_mode or settings.token_rate_limit_mode) != "log-only"
        key = (self.key_prefix, "m2m-token", client.client_id)

        def count(strategy: RateLimiter) -> tuple[RateLimitItem | None, float, int]:
            if len(items) == 1:
                over = None if strategy.hit(items[0], *key) else items[0]
            else:  # an enforced request is charged only if every limit allows it
                over = next((i for i in items if not strategy.test(i, *key)), None)
                if over is None or not enforced:
                    for item in items:
                        strategy.hit(item, *key)
            if over is None and not self.headers_enabled:
                return None, 0.0, 0
            reset_at, remaining = strategy.get_window_stats(over or items[0], *key)
            return over, reset_at, remaining

        over, reset_at, remaining = self._counting(count)
        if over is None:
            return _limit_headers(items[0], remaining, reset_at) if self.headers_enabled else []
        self._report(client.client_id, over, enforced)
        if enforced:
            raise RateLimited(over, reset_at)
        return []

    def _counting(self, work: Callable[[RateLimiter], T]) -> T:
        """Run ``work`` on the storage's strategy; when the storage fails, fail closed (raise)
        or open (count in memory for a few seconds, then try the storage again)."""
        strategy = self.strategy
        if strategy is None:
            raise RuntimeError("rate limits are off (RATELIMIT_ENABLED = False)")
        if self._memory is not None and time.monotonic() < self._memory_until:
            return work(self._memory)
        try:
            return work(strategy)
        except StorageError as exc:
            if not self.state.settings.rate_limit_fail_open:
                raise
            current_app.logger.warning(
                "flask-m2m: rate-limit storage unavailable (%s); counting in memory",
                type(exc.storage_error).__name__,
            )
            if self._memory is None:
                self._memory = type(strategy)(_memory())
            self._memory_until = time.monotonic() + _FALLBACK_SECONDS
            return work(self._memory)

    def _report(self, client_id: str, item: RateLimitItem, enforced: bool) -> None:
        """Signal every breach; audit the first one of each window per client and process."""
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        signals.rate_limit_exceeded.send(
            app, client_id=client_id, limit=str(item), enforced=enforced
        )
        window = int(time.time()) // item.get_expiry()
        if (client_id, window) in self._reported:
            return
        if len(self._reported) > 10000:
            self._reported.clear()
        self._reported.add((client_id, window))
        row = audit.new_event(
            self.state,
            "rate_limit_exceeded",
            client_id,
            {"limit": str(item), "mode": "enforce" if enforced else "log-only"},
            actor=f"client:{client_id}",
        )
        try:  # in a transaction of its own, never the app's session
            writes.write(self.state.db, lambda session: session.add(row), wait_for_app=True)
        except SQLAlchemyError as exc:  # bookkeeping only: the request goes on without it
            current_app.logger.warning(
                "flask-m2m: the rate_limit_exceeded audit row was not written (%s); "
                "the request was served",
                type(exc).__name__,
            )

    # -- per address, and the management API -----------------------------------------------
    def protect_client_auth(self, view: Callable[..., Response]) -> Callable[..., Response]:
        """Per-address limit counting only failed client authentications (all endpoints)."""
        items = parse_rate_limit(self.state.settings.failed_auth_rate_limit)

        @wraps(view)
        def limited(*args: Any, **kwargs: Any) -> Response:
            if not self.enabled:
                return view(*args, **kwargs)
            key = (self.key_prefix, "m2m-failed-auth", get_remote_address())

            def test(strategy: RateLimiter) -> tuple[RateLimitItem, float] | None:
                over = next((i for i in items if not strategy.test(i, *key)), None)
                return None if over is None else (over, strategy.get_window_stats(over, *key)[0])

            breach = self._counting(test)
            if breach is not None:
                if self.state.metrics is not None:
                    self.state.metrics.limited("failed_auth")
                response: Response = self.state.server.handle_error_response(
                    None, RateLimited(*breach)
                )
                return response
            response = view(*args, **kwargs)
            if response.status_code in _FAILED_AUTH:
                self._counting(lambda strategy: [strategy.hit(i, *key) for i in items])
            return response

        return limited

    def protect_management(
        self, blueprint: Blueprint, principal: Callable[[], str | None]
    ) -> None:
        """One per-caller limit over every route of the management blueprint.

        ``principal`` names the authorized caller (None when it may not manage clients): the
        limit counts who the caller proved to be, never what it sent, so junk credentials,
        whatever their value, share their address's quota.

        Counted by a ``before_request`` hook of the blueprint, so after every hook of the app
        itself: the app's authorizer sees what those hooks set (a logged-in user on ``g``).
        """
        items = parse_rate_limit(self.state.settings.management_rate_limit)

        def limit() -> Response | None:
            if not self.enabled:
                return None
            who = principal()
            caller = f"principal:{who}" if who is not None else "addr:" + get_remote_address()
            key = (self.key_prefix, "m2m-management", caller)

            def hit(strategy: RateLimiter) -> tuple[RateLimitItem, float] | None:
                over = next((i for i in items if not strategy.hit(i, *key)), None)
                return None if over is None else (over, strategy.get_window_stats(over, *key)[0])

            breach = self._counting(hit)
            if breach is None:
                return None
            if self.state.metrics is not None:
                self.state.metrics.limited("management")
            return _problem_breach(*breach)

        blueprint.before_request(limit)


def _seconds_until(reset_at: float) -> str:
    return str(max(1, int(reset_at - time.time() + 0.999)))


def _limit_headers(item: RateLimitItem, remaining: int, reset_at: float) -> list[tuple[str, str]]:
    return [
        ("X-RateLimit-Limit", str(item.amount)),
        ("X-RateLimit-Remaining", str(max(0, remaining))),
        ("X-RateLimit-Reset", str(int(reset_at))),
    ]


def _problem_breach(item: RateLimitItem, reset_at: float) -> Response:
    """429 as an RFC 9457 problem object, with ``Retry-After`` and ``X-RateLimit-*``."""
    headers = dict(_limit_headers(item, 0, reset_at))
    headers["Retry-After"] = _seconds_until(reset_at)
    return problem(429, f"Rate limit exceeded: {item}. Retry later.", headers=headers)
