"""Concurrency under real gunicorn workers: a burst of token requests and API calls, and
parallel client changes through the management API, on a SQLite file and (when
``M2M_TEST_DATABASE_URL`` is set) on PostgreSQL."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from helpers.apps import close_app, make_app
from helpers.servers import (
    Gunicorn,
    create_client_cli,
    example_env,
    gunicorn_servers,
    jwt_part,
)

pytestmark = pytest.mark.slow

DATABASE_URL = os.environ.get("M2M_TEST_DATABASE_URL", "")
RATELIMIT_STORAGE_URI = os.environ.get("M2M_TEST_REDIS_URL", "memory://")
GRANT = {"grant_type": "client_credentials"}
#: Token requests in the burst, and how many are in flight at once.
REQUESTS, THREADS = 200, 100
#: Parallel management calls: PATCHes and secret rotations, half each.
CHANGES = 40
MAX_SECRETS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database URL for the servers: a SQLite file, or the configured PostgreSQL (emptied
    before and after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'concurrency.db'}"
        return
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("set M2M_TEST_DATABASE_URL to a PostgreSQL database to run this on it")
    app, db = make_app(DATABASE_URL)
    with app.app_context():
        db.engine.dispose()
    yield DATABASE_URL
    close_app(app, db, drop_tables=True)


@pytest.fixture
def server(database: str, tmp_path: Path) -> Iterator[tuple[Gunicorn, dict[str, Any]]]:
    """The example app under gunicorn, 4 workers of 4 threads, and an admin client."""
    env = example_env(
        SQLALCHEMY_DATABASE_URI=database,
        SECRET_KEY="concurrency-secret-key-0123456789abcdef",
        M2M_ISSUER="https://auth.concurrency.test",
        RATELIMIT_STORAGE_URI=RATELIMIT_STORAGE_URI,
        RATELIMIT_KEY_PREFIX=f"m2m-test-{uuid.uuid4().hex}",
        M2M_TOKEN_RATE_LIMIT="100000/minute",
        M2M_MANAGEMENT_RATE_LIMIT="100000/minute",
        M2M_MAX_SECRETS_PER_CLIENT=MAX_SECRETS,
    )
    admin = create_client_cli(env, "admin", "m2m:admin")  # also creates the tables
    with gunicorn_servers(tmp_path) as start:
        yield start(env, workers=4, threads=4), admin


def in_parallel(calls: list[Callable[[requests.Session], requests.Response]]) -> list[Any]:
    """Run every call at once (one HTTP session per thread, all closed after); the responses,
    in order."""
    local = threading.local()
    barrier = threading.Barrier(min(THREADS, len(calls)))
    sessions: list[requests.Session] = []

    def run(call: Callable[[requests.Session], requests.Response]) -> requests.Response:
        if not hasattr(local, "session"):
            local.session = requests.Session()
            sessions.append(local.session)
            barrier.wait(timeout=30)  # start together
        return call(local.session)

    try:
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(run, calls))
    finally:
        for session in sessions:
            session.close()


def token_response(server: Gunicorn, client: dict[str, Any], **data: str) -> requests.Response:
    auth = (client["client_id"], client["client_secret"])
    return requests.post(server.url + "/m2m/token", data={**GRANT, **data}, auth=auth, timeout=30)


def test_burst_of_token_requests(server: tuple[Gunicorn, dict[str, Any]]) -> None:
    """200 token requests at once over 4 workers: all succeed with distinct jti (no
    "database is locked" from the last_used_at writes), and 200 API calls with those tokens
    too."""
    gunicorn, admin = server
    auth = (admin["client_id"], admin["client_secret"])

    def get_token(session: requests.Session) -> requests.Response:
        return session.post(gunicorn.url + "/m2m/token", data=GRANT, auth=auth, timeout=60)

    responses = in_parallel([get_token] * REQUESTS)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: REQUESTS}, [r.text for r in responses if r.status_code != 200][:3]
    tokens = [r.json()["access_token"] for r in responses]
    assert len({jwt_part(t, 1)["jti"] for t in tokens}) == REQUESTS

    def call_api(token: str) -> Callable[[requests.Session], requests.Response]:
        headers = {"Authorization": f"Bearer {token}"}
        return lambda s: s.get(gunicorn.url + "/api/whoami", headers=headers, timeout=60)

    calls = in_parallel([call_api(t) for t in tokens])
    assert Counter(r.status_code for r in calls) == {200: REQUESTS}
    assert all(r.json()["client_id"] == admin["client_id"] for r in calls)


def test_burst_over_a_rate_limit(server: tuple[Gunicorn, dict[str, Any]]) -> None:
    """100 simultaneous token requests of a "20/minute" client, counted in Redis by all 4
    workers: exactly 20 succeed, the other 80 are 429 with Retry-After."""
    if not RATELIMIT_STORAGE_URI.startswith("redis"):
        pytest.skip("a limit shared by 4 workers needs Redis: set M2M_TEST_REDIS_URL")
    gunicorn, admin = server
    admin_token = token_response(gunicorn, admin, scope="m2m:admin").json()["access_token"]
    body = {"name": "limited", "scopes": ["read"], "rate_limit": "20/minute"}
    created = requests.post(gunicorn.url + "/m2m/clients", json=body, timeout=30,
                            headers={"Authorization": f"Bearer {admin_token}"})  # fmt: skip
    client = created.json()
    auth = (client["client_id"], client["client_secret"])

    def get_token(session: requests.Session) -> requests.Response:
        return session.post(gunicorn.url + "/m2m/token", data=GRANT, auth=auth, timeout=60)

    responses = in_parallel([get_token] * 100)
    statuses = Counter(r.status_code for r in responses)
    assert statuses == {200: 20, 429: 80}
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
    assert token_response(gunicorn, client).status_code == 429


def test_parallel_client_changes(server: tuple[Gunicorn, dict[str, Any]]) -> None:
    """20 PATCHes and 20 secret rotations of one client at once: no 5xx; every PATCH and
    rotation that succeeded wrote exactly one audit event, in an order that chains; the
    client ends with at most M2M_MAX_SECRETS_PER_CLIENT secrets, exactly one current, that
    works; a rotation over the maximum is a 409."""
    gunicorn, admin = server
    admin_token = token_response(gunicorn, admin, scope="m2m:admin").json()["access_token"]
    headers = {"Authorization": f"Bearer {admin_token}"}
    base = gunicorn.url + "/m2m/clients"
    created = requests.post(base, json={"name": "n-start", "scopes": ["read"]},
                            headers=headers, timeout=30)  # fmt: skip
    assert created.status_code == 201
    client_id = created.json()["client_id"]
    original = created.json()["secret_id"]

    def patch(i: int) -> Callable[[requests.Session], requests.Response]:
        body: dict[str, Any] = {"name": f"n-{i}", "metadata": {"i": i}}
        return lambda s: s.patch(f"{base}/{client_id}", json=body, headers=headers, timeout=60)

    def rotate(i: int) -> Callable[[requests.Session], requests.Response]:
        body = {"grace_period_seconds": 0 if i % 4 == 0 else 3600}
        return lambda s: s.post(f"{base}/{client_id}/secret", json=body, headers=headers,
                                timeout=60)  # fmt: skip

    calls = [patch(i) if i % 2 else rotate(i) for i in range(CHANGES)]
    responses = in_parallel(calls)
    patches, rotations = responses[1::2], responses[0::2]
    assert Counter(r.status_code for r in patches) == {200: CHANGES // 2}
    assert set(r.status_code for r in rotations) <= {200, 409}, [r.text for r in rotations]
    for conflict in (r for r in rotations if r.status_code == 409):
        assert conflict.headers["Content-Type"] == "application/problem+json"
    shown = {r.json()["secret_id"]: r.json()["client_secret"]
             for r in rotations if r.status_code == 200}  # fmt: skip
    assert shown

    events = requests.get(f"{base}/{client_id}/events", params={"limit": 200},
                          headers=headers, timeout=30).json()["events"][::-1]  # fmt: skip
    kinds = Counter(e["event"] for e in events)
    assert kinds == {"client_created": 1, "client_updated": CHANGES // 2, "secret_rotated":
                     len(shown)}  # fmt: skip
    # Each change saw the one before it: the names chain from the first to the last.
    names = [e["changes"]["name"] for e in events if e["event"] == "client_updated"]
    assert names[0]["from"] == "n-start"
    assert all(a["to"] == b["from"] for a, b in zip(names, names[1:], strict=False))
    final = requests.get(f"{base}/{client_id}", headers=headers, timeout=30).json()
    assert final["name"] == names[-1]["to"] and final["metadata"] == {"i": int(final["name"][2:])}
    # The secrets left: within the maximum, all shown to a caller, exactly one current
    # (the last rotation's), and it works.
    secrets = requests.get(f"{base}/{client_id}/secrets", headers=headers, timeout=30).json()
    rows = secrets["secrets"]
    assert 1 <= len(rows) <= MAX_SECRETS
    assert {row["id"] for row in rows} <= set(shown) | {original}
    (current,) = [row for row in rows if row["expires_at"] is None]
    last = [e for e in events if e["event"] == "secret_rotated"][-1]["changes"]["secret_id"]
    assert current["id"] == last
    works = token_response(gunicorn, {"client_id": client_id, "client_secret": shown[last]})
    assert works.status_code == 200
