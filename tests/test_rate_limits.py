"""Rate limits (Flask-Limiter): per client on the token endpoint, per address on failed client
authentication, per caller on the management API. Counters live in memory, or in the Redis
that ``M2M_TEST_REDIS_URL`` names."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, abort, g, request
from flask.testing import FlaskClient
from helpers.apps import RATELIMIT_STORAGE_URI, fetch_token, make_app, register
from helpers.http import basic_auth, bearer
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from flask_m2m import ConfigurationError, audit, signals
from flask_m2m.extension import get_state

GRANT = {"grant_type": "client_credentials"}


def token_status(client: FlaskClient, creds: dict[str, Any], secret: str | None = None) -> Any:
    headers = basic_auth(creds["client_id"], secret or creds["client_secret"])
    return client.post("/m2m/token", data=GRANT, headers=headers)


def assert_429(response: Any, problem: bool = False) -> None:
    assert response.status_code == 429
    assert int(response.headers["Retry-After"]) >= 1
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert int(response.headers["X-RateLimit-Limit"]) >= 1
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()
    if problem:
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["status"] == 429
    else:
        assert response.mimetype == "application/json"
        assert response.headers["Cache-Control"] == "no-store"
        assert response.get_json()["error"] == "too_many_requests"
        assert "error_description" in response.get_json()


def test_token_limit_per_client(app_factory: Callable[..., Flask]) -> None:
    """RFC 6585 §4: a client over its token-endpoint limit gets 429 with Retry-After and a JSON
    error (RFC 6749 §5.2 shape); another client is not affected. With Flask-Limiter's
    ``RATELIMIT_HEADERS_ENABLED``, successful responses show the quota too."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="3/minute", RATELIMIT_HEADERS_ENABLED=True)
    c, first, second = app.test_client(), register(app), register(app)
    for remaining in ("2", "1", "0"):
        response = token_status(c, first)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert response.headers["X-RateLimit-Remaining"] == remaining
    assert_429(token_status(c, first))
    assert token_status(c, second).status_code == 200


def test_client_own_rate_limit_overrides_default(app_factory: Callable[..., Flask]) -> None:
    """A client's ``rate_limit`` replaces ``M2M_TOKEN_RATE_LIMIT`` for that client only."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="2/minute")
    c = app.test_client()
    generous, plain = register(app, rate_limit="5/minute"), register(app)
    assert [token_status(c, generous).status_code for _ in range(6)] == [200] * 5 + [429]
    assert [token_status(c, plain).status_code for _ in range(3)] == [200, 200, 429]


def test_failed_attempts_do_not_spend_a_clients_quota(app_factory: Callable[..., Flask]) -> None:
    """Only successful token requests count against a client, so a caller that names a client
    with a wrong secret cannot exhaust that client's limit."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="2/minute", M2M_FAILED_AUTH_RATE_LIMIT="100/minute")
    c, victim = app.test_client(), register(app)
    for _ in range(5):
        assert token_status(c, victim, secret="m2ms_wrong" + "x" * 40).status_code == 401
    assert token_status(c, victim).status_code == 200


def test_failed_authentication_limit_per_address(app_factory: Callable[..., Flask]) -> None:
    """Brute-force guard: failed client authentications from one address are limited across the
    token, revocation and introspection endpoints; successes do not count."""
    app = app_factory(M2M_FAILED_AUTH_RATE_LIMIT="3/minute")
    c, creds = app.test_client(), register(app)
    for _ in range(5):
        assert token_status(c, creds).status_code == 200  # successes are free
    wrong = basic_auth(creds["client_id"], "m2ms_" + "y" * 64)
    assert c.post("/m2m/token", data=GRANT, headers=wrong).status_code == 401
    assert c.post("/m2m/revoke", data={"token": "x"}, headers=wrong).status_code == 401
    assert c.post("/m2m/introspect", data={"token": "x"}, headers=wrong).status_code == 401
    assert_429(c.post("/m2m/token", data=GRANT, headers=wrong))
    # the address is now blocked for a while, even with good credentials
    assert_429(token_status(c, creds))
    elsewhere = {"REMOTE_ADDR": "10.9.9.9"}
    other = c.post("/m2m/token", data=GRANT, headers=wrong, environ_base=elsewhere)
    assert other.status_code == 401


#: Junk credentials of request ``i``: each request sends another value.
JUNK: dict[str, Callable[[int], dict[str, str]]] = {
    "bearer": lambda i: bearer(f"junk-{i}"),
    "jwt-shaped": lambda i: bearer(f"eyJhbGciOiJub25lIn0.eyJpIjo{i}fQ.sig"),
    "basic": lambda i: basic_auth(f"m2m_junk{i}", "secret"),
    "other-scheme": lambda i: {"Authorization": f"Digest nonce={i}"},
    "none": lambda i: {},
}
LIMIT = 3


@pytest.mark.parametrize("kind", list(JUNK))
def test_management_junk_credentials_share_the_address_quota(
    app_factory: Callable[..., Flask], kind: str
) -> None:
    """A caller that fails to authorize is counted per address, whatever it sends: a
    different junk Authorization value on each request gets no fresh quota. Until the
    address is over the limit, each gets its RFC 6750 §3.1 401; then an RFC 9457 429."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    c = app.test_client()
    statuses = [c.get("/m2m/clients", headers=JUNK[kind](i)).status_code for i in range(LIMIT)]
    assert statuses == [401] * LIMIT
    assert_429(c.get("/m2m/clients", headers=JUNK[kind](LIMIT)), problem=True)
    assert_429(c.post("/m2m/clients", json={"name": "x"}, headers=JUNK[kind](99)), problem=True)


def test_management_refused_forms_are_counted(app_factory: Callable[..., Flask]) -> None:
    """A form POST is counted like any other call before its 401 (or 415) answer."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    c = app.test_client()
    forms = [c.post("/m2m/clients", data={"name": "x"}, headers=bearer(f"junk-{i}"))
             for i in range(LIMIT + 1)]
    assert [r.status_code for r in forms] == [401] * LIMIT + [429]
    admin = bearer(fetch_token(c, register(app, "m2m:admin")))
    forms = [c.post("/m2m/clients", data={"name": "x"}, headers=admin) for _ in range(LIMIT + 1)]
    assert [r.status_code for r in forms] == [415] * LIMIT + [429]


def test_management_tokens_without_admin_scope_share_the_address_quota(
    app_factory: Callable[..., Flask],
) -> None:
    """Valid tokens lacking m2m:admin (403 insufficient_scope) are failed calls too: counted
    per address, however many clients they come from."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    c = app.test_client()
    tokens = [bearer(fetch_token(c, register(app, "read"))) for _ in range(LIMIT + 1)]
    assert [c.get("/m2m/clients", headers=t).status_code for t in tokens[:LIMIT]] == [403] * 3
    assert_429(c.get("/m2m/clients", headers=tokens[LIMIT]), problem=True)


def test_management_limit_per_principal(app_factory: Callable[..., Flask]) -> None:
    """An admin client is counted as itself: each admin gets its full quota, and a new token
    of the same client gets none more. A 429 there is an RFC 9457 problem."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    c = app.test_client()
    first_admin, second_admin = register(app, "m2m:admin"), register(app, "m2m:admin")
    first = bearer(fetch_token(c, first_admin))
    assert [c.get("/m2m/clients", headers=first).status_code for _ in range(LIMIT)] == [200] * 3
    assert_429(c.get("/m2m/clients", headers=first), problem=True)
    again = bearer(fetch_token(c, first_admin))
    assert again != first
    assert_429(c.get("/m2m/clients", headers=again), problem=True)
    second = bearer(fetch_token(c, second_admin))
    assert [c.get("/m2m/clients", headers=second).status_code for _ in range(LIMIT)] == [200] * 3
    assert_429(c.get("/m2m/clients", headers=second), problem=True)


def test_junk_from_another_address_does_not_starve_an_admin(
    app_factory: Callable[..., Flask],
) -> None:
    """Junk requests spend their own address's quota, not an admin's: the admin keeps its
    full quota, from its address and from the junk one alike."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    c = app.test_client()
    admin = bearer(fetch_token(c, register(app, "m2m:admin")))
    attacker, own = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.1"}
    junk = [c.get("/m2m/clients", headers=bearer(f"junk-{i}"), environ_base=attacker)
            for i in range(LIMIT + 5)]
    assert [r.status_code for r in junk] == [401] * LIMIT + [429] * 5
    assert c.get("/m2m/clients", environ_base=own).status_code == 401  # its own address
    statuses = [c.get("/m2m/clients", headers=admin, environ_base=where).status_code
                for where in (own, attacker, own)]
    assert statuses == [200] * LIMIT


def test_custom_authorizer_refusals_are_counted_per_address(
    app_factory: Callable[..., Flask],
) -> None:
    """An authorizer's own ``abort(401)`` stays a 401 and its False a 403 (not a 429 or a
    500) until the address is over the limit; its principals each get their own quota. It
    is asked once per request, by the limit, and the view uses that answer."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")
    asked: list[str] = []

    @get_state(app).extension.management_authorizer
    def who() -> Any:
        user = request.headers.get("X-User", "")
        asked.append(user)
        if not user:
            abort(401)
        return f"user:{user}" if user != "mallory" else False

    c = app.test_client()
    nobody = [c.get("/m2m/clients").status_code for _ in range(LIMIT + 1)]
    assert nobody == [401] * LIMIT + [429]
    assert asked == [""] * (LIMIT + 1)
    elsewhere = {"REMOTE_ADDR": "203.0.113.8"}
    mallory = [c.get("/m2m/clients", headers={"X-User": "mallory"}, environ_base=elsewhere)
               for _ in range(LIMIT + 1)]
    assert [r.status_code for r in mallory] == [403] * LIMIT + [429]
    for user in ("alice", "bob"):
        ok = [c.get("/m2m/clients", headers={"X-User": user}).status_code for _ in range(LIMIT)]
        assert ok == [200] * LIMIT
        assert_429(c.get("/m2m/clients", headers={"X-User": user}), problem=True)
    assert len(asked) == 4 * (LIMIT + 1)


def test_authorizer_outage_is_a_503_counted_per_address(
    app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """An authorizer that cannot reach its database gives the management API's 503 problem,
    as it does without a limit; the limit counts it per address and goes on working (its
    storage is not taken for unreachable)."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")

    @get_state(app).extension.management_authorizer
    def who() -> Any:
        if request.headers.get("X-User"):
            return "user:" + request.headers["X-User"]
        raise OperationalError("SELECT 1", {}, Exception("database down"))

    c = app.test_client()
    statuses = [c.get("/m2m/clients").status_code for _ in range(LIMIT + 1)]
    assert statuses == [503] * LIMIT + [429]
    assert c.get("/m2m/clients", headers={"X-User": "alice"}).status_code == 200
    assert "storage unreachable" not in caplog.text


def test_authorizer_sees_what_the_apps_own_hooks_set(app_factory: Callable[..., Flask]) -> None:
    """The limit authorizes the caller after every ``before_request`` function of the app,
    also those registered after flask-m2m (the Flask tutorial loads ``g.user`` in one): the
    authorizer sees the user, and the user gets its own quota."""
    app = app_factory(M2M_MANAGEMENT_RATE_LIMIT=f"{LIMIT}/minute")

    @app.before_request
    def load_user() -> None:
        g.user = request.headers.get("X-User")

    @get_state(app).extension.management_authorizer
    def who() -> Any:
        return f"user:{g.user}" if g.user else abort(401)

    c = app.test_client()
    for user in ("alice", "bob"):
        ok = [c.get("/m2m/clients", headers={"X-User": user}).status_code for _ in range(LIMIT)]
        assert ok == [200] * LIMIT
    assert [c.get("/m2m/clients").status_code for _ in range(LIMIT + 1)] == [401] * LIMIT + [429]


def test_management_breaches_are_counted_in_the_metrics(app_factory: Callable[..., Flask]) -> None:
    """Each management 429 adds one to ``m2m_rate_limit_hits_total{limit="management"}``."""
    app = app_factory(M2M_METRICS_ENABLED=True, M2M_MANAGEMENT_RATE_LIMIT="1/minute")
    c = app.test_client()

    def hits() -> float:
        for family in text_string_to_metric_families(c.get("/metrics").get_data(as_text=True)):
            for sample in family.samples:
                if sample.name == "m2m_rate_limit_hits_total" and sample.labels == {
                    "limit": "management", "mode": "enforce"}:
                    return float(sample.value)
        return 0.0

    before = hits()
    assert [c.get("/m2m/clients").status_code for _ in range(3)] == [401, 429, 429]
    assert hits() == before + 2


def test_management_without_limits_authorizes_in_the_view(
    app_factory: Callable[..., Flask],
) -> None:
    """With ``RATELIMIT_ENABLED = False`` the view authorizes the caller itself, once."""
    app = app_factory(RATELIMIT_ENABLED=False, M2M_MANAGEMENT_RATE_LIMIT="1/minute")
    asked: list[int] = []

    @get_state(app).extension.management_authorizer
    def who() -> Any:
        asked.append(1)
        return "user:alice" if request.headers.get("X-User") else abort(401)

    c = app.test_client()
    assert [c.get("/m2m/clients").status_code for _ in range(3)] == [401] * 3
    alice = {"X-User": "alice"}
    assert [c.get("/m2m/clients", headers=alice).status_code for _ in range(3)] == [200] * 3
    assert len(asked) == 6


def test_host_app_limits_are_not_applied_twice(app_factory: Callable[..., Flask]) -> None:
    """The app's own ``RATELIMIT_DEFAULT`` / application limits are left to the app's limiter:
    flask-m2m's limiter never enforces them on the app's routes."""
    app = app_factory(RATELIMIT_DEFAULT="1/minute", RATELIMIT_APPLICATION="1/minute")
    c, creds = app.test_client(), register(app)
    token = fetch_token(c, creds)
    statuses = [c.get("/api/whoami", headers=bearer(token)).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


#: The app-wide hook registries of a Flask app (``None``: every route; names: blueprints).
HOOKS = (
    "before_request_funcs",
    "after_request_funcs",
    "teardown_request_funcs",
    "url_value_preprocessors",
    "url_default_functions",
    "template_context_processors",
)


def _module(func: Any) -> str:
    return str(getattr(getattr(func, "func", func), "__module__", ""))


def test_host_routes_reach_no_flask_m2m_hook(app_factory: Callable[..., Flask]) -> None:
    """flask-m2m adds no function that runs on the app's own routes (no limiter hook, no
    Flask-Limiter instance), and such a route never reaches the rate-limit storage: with
    an unreachable storage and limits failing closed, it is served while the token
    endpoint answers 503."""
    app = app_factory(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", M2M_RATE_LIMIT_FAIL_OPEN=False)

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    ours = ("flask_m2m", "flask_limiter")
    for name in HOOKS:
        app_wide = getattr(app, name).get(None, [])
        assert not [f for f in app_wide if _module(f).startswith(ours)], name
    app_level = [*app.teardown_appcontext_funcs, *app.shell_context_processors]
    assert not [f for f in app_level if _module(f).startswith(ours)]
    assert "limiter" not in app.extensions
    c, creds = app.test_client(), register(app)
    assert [c.get("/ping").status_code for _ in range(3)] == [200] * 3
    assert token_status(c, creds).status_code == 503


def test_strategy_is_flask_limiters_setting(app_factory: Callable[..., Flask]) -> None:
    """``RATELIMIT_STRATEGY`` picks the ``limits`` strategy, as it does for Flask-Limiter."""
    from limits.strategies import MovingWindowRateLimiter

    app = app_factory(RATELIMIT_STRATEGY="moving-window", M2M_TOKEN_RATE_LIMIT="2/minute")
    assert isinstance(get_state(app).rate_limits.strategy, MovingWindowRateLimiter)
    c, creds = app.test_client(), register(app)
    assert [token_status(c, creds).status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize(
    ("key", "value"),
    [("RATELIMIT_STRATEGY", "leaky-bucket"), ("RATELIMIT_STORAGE_URI", "nosuch://host")],
)
def test_bad_storage_settings_are_refused(key: str, value: str) -> None:
    """An unknown strategy or storage is a ConfigurationError at init that names the key."""
    with pytest.raises(ConfigurationError, match=key):
        make_app(**{key: value})


def test_nothing_is_built_while_limits_are_off(app_factory: Callable[..., Flask]) -> None:
    """With ``RATELIMIT_ENABLED = False`` no storage is built (even a bad one) and tokens
    are served without counting."""
    app = app_factory(RATELIMIT_ENABLED=False, RATELIMIT_STORAGE_URI="nosuch://host",
                      M2M_TOKEN_RATE_LIMIT="1/minute")
    assert get_state(app).rate_limits.storage is None
    c, creds = app.test_client(), register(app)
    assert [token_status(c, creds).status_code for _ in range(3)] == [200] * 3


@pytest.mark.parametrize(
    "key", ["M2M_TOKEN_RATE_LIMIT", "M2M_FAILED_AUTH_RATE_LIMIT", "M2M_MANAGEMENT_RATE_LIMIT"]
)
def test_bad_limit_strings_are_refused(key: str) -> None:
    """A limit string the ``limits`` parser refuses is a ConfigurationError at init."""
    with pytest.raises(ConfigurationError):
        make_app(**{key: "lots per fortnight"})


def test_storage_is_the_configured_one(app: Flask) -> None:
    """Counters live where ``RATELIMIT_STORAGE_URI`` says (Redis in CI, memory by default)."""
    from flask_m2m.extension import get_state

    storage = get_state(app).rate_limits.storage
    assert storage is not None
    scheme = RATELIMIT_STORAGE_URI.split(":", 1)[0]
    assert type(storage).__name__.lower().startswith(scheme)
    assert storage.check()


def _breaches(app: Flask) -> list[dict[str, Any]]:
    """Record ``rate_limit_exceeded`` signals sent by ``app``."""
    seen: list[dict[str, Any]] = []

    def receive(sender: Flask, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.rate_limit_exceeded.connect(receive, app, weak=False)
    return seen


def _limit_events(app: Flask, client_id: str) -> list[Any]:
    with app.app_context():
        page = audit.list_events(get_state(app), client_id=client_id, event="rate_limit_exceeded")
        return [event.changes for event in page.items]


def test_log_only_client_is_counted_and_reported_not_refused(
    app_factory: Callable[..., Flask],
) -> None:
    """A log-only limit serves every request; going over it sends a signal each time and
    writes one audit event per window."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="2/minute")
    seen = _breaches(app)
    c = app.test_client()
    watched = register(app, rate_limit_mode="log-only")
    assert [token_status(c, watched).status_code for _ in range(5)] == [200] * 5
    assert [s["enforced"] for s in seen] == [False, False, False]
    assert {s["client_id"] for s in seen} == {watched["client_id"]}
    assert seen[0]["limit"] == "2 per 1 minute"
    assert _limit_events(app, watched["client_id"]) == [
        {"limit": "2 per 1 minute", "mode": "log-only"}
    ]


def test_log_only_by_default_and_enforced_per_client(app_factory: Callable[..., Flask]) -> None:
    """``M2M_TOKEN_RATE_LIMIT_MODE = "log-only"`` for all; a client's ``enforce`` wins."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="2/minute", M2M_TOKEN_RATE_LIMIT_MODE="log-only")
    seen = _breaches(app)
    c = app.test_client()
    relaxed, strict = register(app), register(app, rate_limit_mode="enforce")
    assert [token_status(c, relaxed).status_code for _ in range(3)] == [200] * 3
    assert [token_status(c, strict).status_code for _ in range(3)] == [200, 200, 429]
    assert [(s["client_id"], s["enforced"]) for s in seen] == [
        (relaxed["client_id"], False),
        (strict["client_id"], True),
    ]
    assert _limit_events(app, strict["client_id"]) == [
        {"limit": "2 per 1 minute", "mode": "enforce"}
    ]


def test_rate_limit_mode_through_the_management_api(app: Flask) -> None:
    c = app.test_client()
    admin = register(app, scopes="m2m:admin")
    headers = bearer(fetch_token(c, admin))
    created = c.post(
        "/m2m/clients",
        json={"name": "batch", "scopes": ["read"], "rate_limit": "5/hour",
              "rate_limit_mode": "log-only"},
        headers=headers,
    )
    assert created.status_code == 201
    assert created.get_json()["rate_limit_mode"] == "log-only"
    path = f"/m2m/clients/{created.get_json()['client_id']}"
    response = c.patch(path, json={"rate_limit_mode": "sometimes"}, headers=headers)
    assert response.status_code == 422
    assert "rate_limit_mode" in response.get_json()["errors"]
    response = c.patch(path, json={"rate_limit_mode": "enforce"}, headers=headers)
    assert response.get_json()["rate_limit_mode"] == "enforce"


def test_bad_rate_limit_mode_setting_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="M2M_TOKEN_RATE_LIMIT_MODE"):
        make_app(M2M_TOKEN_RATE_LIMIT_MODE="lenient")


def test_memory_storage_sweeps_with_one_thread_a_second(app_factory: Callable[..., Flask]) -> None:
    """With ``memory://``, limits' thread that sweeps expired counters is started at most once
    a second rather than after every 10 ms of traffic; the counts are the same (an expired
    counter is dropped when read)."""
    app = app_factory(RATELIMIT_STORAGE_URI="memory://", M2M_TOKEN_RATE_LIMIT="3/second")
    storage = get_state(app).rate_limits.storage
    creds = register(app)
    client = app.test_client()
    timers = set()
    statuses = []
    start = time.monotonic()
    while time.monotonic() - start < 0.3:
        response = client.post(
            "/m2m/token",
            data={"grant_type": "client_credentials"},
            headers=basic_auth(creds["client_id"], creds["client_secret"]),
        )
        statuses.append(response.status_code)
        timers.add(id(getattr(storage, "timer")))  # noqa: B009
    assert len(timers) <= 2  # the one limits started with the storage, then one a second
    assert len(statuses) > 6
    assert statuses[:3] == [200, 200, 200]
    assert set(statuses) == {200, 429}
    assert statuses.count(200) <= 6  # 3 per one-second window: at most two windows
    time.sleep(1.1)
    assert fetch_token(client, creds)  # a new window: counted afresh
