"""Outages: a PostgreSQL or Redis that stops mid-run gives 503s with no detail, and service
resumes by itself when it returns.

Each test runs its own PostgreSQL cluster or Redis server (on a free port, in a temporary
directory), so stopping it never disturbs anything else. They need the PostgreSQL and Redis
server programs; without them they are skipped, except when ``M2M_TEST_DATABASE_URL`` /
``M2M_TEST_REDIS_URL`` say this machine is meant to have them.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from helpers.apps import register
from helpers.http import basic_auth, bearer
from helpers.servers import free_port

from flask_m2m import lifecycle as clients
from flask_m2m.extension import get_state

PG_ROOT = Path("/usr/lib/postgresql")
GRANT = {"grant_type": "client_credentials"}
LEAKS = ("Traceback", "psycopg", "OperationalError", "sqlalchemy", "redis", "SELECT", "127.0.0.1")


def _need(program: str | None, env_var: str) -> str:
    if program is None or not Path(program).exists():
        if os.environ.get(env_var):
            pytest.fail(f"{env_var} is set but the server program is missing")
        pytest.skip("the server program is not installed")
    return program


class PrivatePostgres:
    """A throw-away PostgreSQL cluster, started and stopped at will."""

    def __init__(self) -> None:
        versions = sorted(os.listdir(PG_ROOT)) if PG_ROOT.exists() else []
        bindir = PG_ROOT / versions[-1] / "bin" if versions else None
        self.bin = Path(_need(str(bindir) if bindir else None, "M2M_TEST_DATABASE_URL"))
        self.dir = Path(tempfile.mkdtemp(prefix="m2m-pg-"))
        self.port = free_port()
        # PostgreSQL refuses to run as root: run it as the postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.dir / "data"),
            "-A",
            "trust",
            "-U",
            "postgres",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bin / args[0]), *args[1:]],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [
                *self.as_user,
                str(self.bin / "pg_ctl"),
                "-D",
                str(self.dir / "data"),
                "-m",
                "immediate",
                "stop",
            ],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)


class PrivateRedis:
    """A throw-away Redis server (nothing on disk), started and stopped at will."""

    def __init__(self) -> None:
        self.program = _need(shutil.which("redis-server"), "M2M_TEST_REDIS_URL")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.program,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


@pytest.fixture
def postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
def redis_server() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _assert_unavailable(response: Any, media_type: str = "application/json") -> None:
    """503, the given JSON type, ``Retry-After``, and nothing about the cause."""
    assert response.status_code == 503, response.get_data(as_text=True)
    assert response.mimetype == media_type
    assert response.headers["Retry-After"].isdigit()
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_data(as_text=True)
    assert not any(leak in body for leak in LEAKS), body


def _until(check: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


@pytest.mark.slow
def test_database_outage_gives_503_everywhere_and_recovers(
    postgres: PrivatePostgres, app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    app = app_factory(
        postgres.url,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        M2M_STATE_CACHE_SECONDS=0,
    )
    client = register(app)
    admin = register(app, scopes="m2m:admin")
    web = app.test_client()
    creds = basic_auth(client["client_id"], client["client_secret"])
    form = {"grant_type": "client_credentials"}
    token = web.post("/m2m/token", data=form, headers=creds).get_json()["access_token"]
    admin_creds = basic_auth(admin["client_id"], admin["client_secret"])
    admin_token = web.post("/m2m/token", data=form, headers=admin_creds).get_json()["access_token"]

    postgres.stop()
    with caplog.at_level(logging.WARNING):
        # RFC 6749-style JSON on the protocol routes and require_scope routes.
        response = web.post("/m2m/token", data=form, headers=creds)
        _assert_unavailable(response)
        assert response.get_json()["error"] == "temporarily_unavailable"
        for path in ("/m2m/revoke", "/m2m/introspect"):
            _assert_unavailable(web.post(path, data={"token": token}, headers=creds))
        response = web.get("/api/whoami", headers=bearer(token))
        _assert_unavailable(response)
        assert response.get_json()["error"] == "temporarily_unavailable"
        # The management API answers with a problem object.
        response = web.get("/m2m/clients", headers=bearer(admin_token))
        _assert_unavailable(response, "application/problem+json")
        assert response.get_json()["status"] == 503
        # Public keys are held in memory: resource servers can still fetch them.
        assert web.get("/m2m/jwks.json").status_code == 200
    outage_lines = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert outage_lines and all(r.exc_info is None for r in outage_lines)

    postgres.start()
    # pool_pre_ping replaces the dead connections: the first request after the restart works.
    assert web.post("/m2m/token", data=form, headers=creds).status_code == 200
    assert web.get("/api/whoami", headers=bearer(token)).status_code == 200
    assert web.get("/m2m/clients", headers=bearer(admin_token)).status_code == 200
    with app.app_context():  # what was committed before the outage is all there
        assert clients.get_client(get_state(), client["client_id"]).name == "test"


def _limited_app(factory: Callable[..., Flask], redis_url: str, **config: Any) -> Flask:
    return factory(RATELIMIT_STORAGE_URI=redis_url, M2M_TOKEN_RATE_LIMIT="3/minute", **config)


@pytest.mark.slow
def test_redis_outage_fails_open_by_default(
    redis_server: PrivateRedis, app_factory: Callable[..., Flask]
) -> None:
    """RFC 6585 §4 429s go on being given from memory while Redis is down."""
    app = _limited_app(app_factory, redis_server.url)
    client = register(app)
    creds = basic_auth(client["client_id"], client["client_secret"])
    form = {"grant_type": "client_credentials"}
    web = app.test_client()
    assert web.post("/m2m/token", data=form, headers=creds).status_code == 200

    redis_server.stop()
    statuses = [web.post("/m2m/token", data=form, headers=creds).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # the in-memory count starts afresh

    redis_server.start()  # empty: counting goes back to it on one of the periodic checks
    counters = redis.Redis.from_url(redis_server.url)
    try:
        _until(lambda: _token_counted_in(counters, web, creds), seconds=8)
    finally:
        counters.close()


def _token_counted_in(counters: redis.Redis, web: Any, creds: dict[str, str]) -> bool:
    """Ask for a token (429 while the in-memory count is spent); is Redis counting again?"""
    response = web.post("/m2m/token", data=GRANT, headers=creds)
    if counters.keys("*m2m-token*"):
        assert response.status_code == 200  # a fresh count in the restarted Redis
        return True
    assert response.status_code == 429
    return False


@pytest.mark.slow
def test_redis_outage_fails_closed_when_configured(
    redis_server: PrivateRedis, app_factory: Callable[..., Flask]
) -> None:
    app = _limited_app(app_factory, redis_server.url, M2M_RATE_LIMIT_FAIL_OPEN=False)
    client = register(app)
    admin = register(app, scopes="m2m:admin")
    creds = basic_auth(client["client_id"], client["client_secret"])
    form = {"grant_type": "client_credentials"}
    web = app.test_client()
    admin_creds = basic_auth(admin["client_id"], admin["client_secret"])
    admin_token = web.post("/m2m/token", data=form, headers=admin_creds).get_json()["access_token"]

    redis_server.stop()
    response = web.post("/m2m/token", data=form, headers=creds)
    _assert_unavailable(response)
    assert response.get_json()["error"] == "temporarily_unavailable"
    _assert_unavailable(web.post("/m2m/introspect", data={"token": "x"}, headers=creds))
    _assert_unavailable(
        web.get("/m2m/clients", headers=bearer(admin_token)), "application/problem+json"
    )

    redis_server.start()
    assert web.post("/m2m/token", data=form, headers=creds).status_code == 200


def test_lost_breach_audit_row_is_logged_as_such(
    app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """A log-only breach whose audit row cannot be written (here: its table is gone) is still
    served; the log line says the row was lost, not that the request was refused."""
    app = app_factory(M2M_TOKEN_RATE_LIMIT="1/minute", M2M_TOKEN_RATE_LIMIT_MODE="log-only")
    client = register(app)
    with app.app_context():
        get_state(app).models.audit_event.__table__.drop(get_state(app).db.engine)
    web = app.test_client()
    creds = basic_auth(client["client_id"], client["client_secret"])
    with caplog.at_level(logging.WARNING):
        statuses = [web.post("/m2m/token", data=GRANT, headers=creds).status_code for _ in "ab"]
    assert statuses == [200, 200]
    lines = [r.getMessage() for r in caplog.records if "flask-m2m" in r.getMessage()]
    assert len(lines) == 1
    assert "audit row was not written" in lines[0] and "the request was served" in lines[0]
    assert "503" not in lines[0]
