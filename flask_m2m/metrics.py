"""Prometheus metrics, off unless ``M2M_METRICS_ENABLED`` (needs ``prometheus_client``).

The metrics are process-wide, in prometheus_client's default registry (so an app's own
metrics are served beside them). Under gunicorn with several workers, set
``PROMETHEUS_MULTIPROC_DIR``: every worker then writes its values there and a scrape of any
worker returns the sum over all of them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache, wraps
from typing import TYPE_CHECKING, Any

from flask import Flask, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from . import signals
from .errors import ConfigurationError
from .models import utcnow

if TYPE_CHECKING:
    from .state import M2MState

#: Latency buckets in seconds: token requests and token checks take milliseconds.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


@dataclass(frozen=True)
class _Instruments:
    issued: Any
    refused: Any
    token_seconds: Any
    check_seconds: Any
    rate_limited: Any
    key_age: Any


@cache
def _instruments() -> _Instruments:
    """The metric objects, made once per process (a registry refuses a name twice)."""
    try:
        from prometheus_client import Counter, Gauge, Histogram
    except ImportError:
        raise ConfigurationError(
            "M2M_METRICS_ENABLED needs prometheus_client: pip install 'flask-m2m[metrics]'."
        ) from None
    return _Instruments(
        issued=Counter("m2m_tokens_issued", "Access tokens issued, by client.", ["client_id"]),
        refused=Counter(
            "m2m_token_requests_refused",
            "Token requests refused, by reason (OAuth error or authentication failure) and "
            "client (empty when the request named no known client).",
            ["reason", "client_id"],
        ),
        token_seconds=Histogram(
            "m2m_token_request_seconds", "Time to answer a token request.", buckets=BUCKETS
        ),
        check_seconds=Histogram(
            "m2m_require_scope_seconds",
            "Time require_scope takes to check a request's token, by outcome.",
            ["outcome"],
            buckets=BUCKETS,
        ),
        rate_limited=Counter(
            "m2m_rate_limit_hits",
            "Requests over a limit: token (per client), failed_auth (per address), "
            "management (per caller); mode log-only when the request was served anyway.",
            ["limit", "mode"],
        ),
        key_age=Gauge(
            "m2m_signing_key_age_seconds",
            "Age of the newest signing key (it signs once published).",
            multiprocess_mode="mostrecent",
        ),
    )


class Metrics:
    """The metrics of one app: signal receivers, timers, and the scrape route."""

    def __init__(self, app: Flask, state: M2MState):
        self.state = state
        self.m = _instruments()
        #: The ``require_scope`` histogram's child of each outcome (labels() looked up once).
        self._checks: dict[str, Any] = {}
        signals.token_issued.connect(self._issued, app, weak=False)
        signals.authentication_failed.connect(self._auth_failed, app, weak=False)
        signals.rate_limit_exceeded.connect(self._client_limited, app, weak=False)
        app.add_url_rule(state.settings.metrics_path, "m2m_metrics", self.scrape, methods=["GET"])

    # -- receivers ---------------------------------------------------------------------------
    def _issued(self, sender: Flask, client_id: str, **kwargs: Any) -> None:
        self.m.issued.labels(client_id).inc()

    def _auth_failed(self, sender: Flask, client_id: str | None, reason: str, **_: Any) -> None:
        known = reason != "unknown_client" and client_id
        self.m.refused.labels(reason, client_id if known else "").inc()

    def _client_limited(self, sender: Flask, client_id: str, enforced: bool, **kwargs: Any) -> None:
        self.m.rate_limited.labels("token", "enforce" if enforced else "log-only").inc()
        if enforced:
            self.m.refused.labels("rate_limited", client_id).inc()

    def limited(self, limit: str) -> None:
        """Count an enforced breach of the failed-auth or management limit."""
        self.m.rate_limited.labels(limit, "enforce").inc()

    # -- timers ------------------------------------------------------------------------------
    def time_token_endpoint(self, view: Callable[..., Response]) -> Callable[..., Response]:
        """Time the token view and count its refusals other than failed authentications
        (those are counted, with their reason, as they happen)."""

        @wraps(view)
        def timed(*args: Any, **kwargs: Any) -> Response:
            start = time.perf_counter()
            try:  # a 429 leaves as an exception; it is counted by its signal
                response = view(*args, **kwargs)
            finally:
                self.m.token_seconds.observe(time.perf_counter() - start)
            if response.status_code not in (200, 401, 429):
                self.m.refused.labels(self._reason(response), "").inc()
            return response

        return timed

    @staticmethod
    def _reason(response: Response) -> str:
        body = response.get_json(silent=True)
        error = body.get("error") if isinstance(body, dict) else None
        return error if isinstance(error, str) and len(error) < 40 else "other"

    def observe_check(self, seconds: float, outcome: str) -> None:
        """Record one ``require_scope`` check."""
        child = self._checks.get(outcome)  # a handful of outcomes: ok and the error codes
        if child is None:
            child = self._checks[outcome] = self.m.check_seconds.labels(outcome)
        child.observe(seconds)

    # -- scrape ------------------------------------------------------------------------------
    def scrape(self) -> Response:
        """``GET M2M_METRICS_PATH``: the Prometheus text format."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            REGISTRY,
            CollectorRegistry,
            generate_latest,
            multiprocess,
        )

        created = self._signing_key_created_at()
        if created is not None:
            self.m.key_age.set((utcnow() - created).total_seconds())
        registry = REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)

    def _signing_key_created_at(self) -> datetime | None:
        if self.state.keys.from_config:
            return None
        model = self.state.models.signing_key
        query = select(func.max(model.created_at)).where(
            model.retired_at.is_(None), model.alg == self.state.settings.signing_alg
        )
        with Session(self.state.db.engine) as session:  # never the app's session
            created: datetime | None = session.execute(query).scalar()
        return created


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook for multiprocess mode: drop a dead worker's live gauges.

    In ``gunicorn.conf.py``: ``from flask_m2m.metrics import gunicorn_child_exit as child_exit``.
    """
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
