"""Fixtures: each test builds its apps fresh on SQLite (default) or on the PostgreSQL that
``M2M_TEST_DATABASE_URL`` names."""

from __future__ import annotations

import base64
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote_plus

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase
from werkzeug.serving import BaseWSGIServer, make_server

from flask_m2m import M2M, current_token, require_scope
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import create_client

#: The database every test app uses; SQLite in memory unless a real server is configured.
DATABASE_URL = os.environ.get("M2M_TEST_DATABASE_URL", "sqlite://")
#: Where rate-limit counters live: memory, or the Redis that ``M2M_TEST_REDIS_URL`` names.
RATELIMIT_STORAGE_URI = os.environ.get("M2M_TEST_REDIS_URL", "memory://")
SECRET_KEY = "test-secret-key-0123456789abcdef"


def bare_app(database_url: str = DATABASE_URL, **config: Any) -> tuple[Flask, SQLAlchemy]:
    """A fresh app with its own ``db`` and the test configuration, without flask-m2m."""

    class Base(DeclarativeBase):
        pass

    db = SQLAlchemy(model_class=Base)
    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET_KEY,
        SQLALCHEMY_DATABASE_URI=database_url,
        RATELIMIT_STORAGE_URI=RATELIMIT_STORAGE_URI,
        RATELIMIT_KEY_PREFIX=f"m2m-test-{uuid.uuid4().hex}",  # each app its own counters
        M2M_ISSUER="https://issuer.test",
    )
    app.config.update(config)
    db.init_app(app)
    return app, db


def make_app(database_url: str = DATABASE_URL, **config: Any) -> tuple[Flask, SQLAlchemy]:
    """A fresh app with its own ``db`` and flask-m2m, plus three protected test routes."""
    app, db = bare_app(database_url, **config)
    M2M(app, db)

    @app.get("/api/whoami")
    @require_scope()
    def whoami() -> dict[str, Any]:
        return {"client_id": current_token.client_id, "scopes": list(current_token.scopes)}

    @app.get("/api/read")
    @require_scope("read")
    def read() -> dict[str, Any]:
        return {"ok": True}

    @app.post("/api/write")
    @require_scope("write")
    def write() -> dict[str, Any]:
        return {"ok": True}

    with app.app_context():
        db.drop_all()
        db.create_all()
    return app, db


@pytest.fixture
def app_factory() -> Iterator[Callable[..., Flask]]:
    """``app_factory(**config)`` builds an app; all are torn down after the test."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(database_url: str = DATABASE_URL, **config: Any) -> Flask:
        app, db = make_app(database_url, **config)
        made.append((app, db))
        return app

    yield factory
    for app, db in reversed(made):
        with app.app_context():
            db.session.remove()
            db.drop_all()
            db.engine.dispose()


@pytest.fixture
def shared_database_url(tmp_path: Any) -> str:
    """A database several app instances can share: the configured server, or a SQLite file."""
    if DATABASE_URL != "sqlite://":
        return DATABASE_URL
    return f"sqlite:///{tmp_path / 'shared.db'}"


@pytest.fixture
def app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def register(app: Flask, scopes: str = "read write", **kwargs: Any) -> dict[str, Any]:
    """Create a client on ``app`` (acting as ``system``, committed); returns its id, plaintext
    secret and the model object."""
    with app.app_context():
        state = get_state(app)
        model, issued = create_client(
            state, actor="system", name="test", scopes=scopes, **kwargs
        )
        state.db.session.commit()
        return {
            "client_id": model.client_id,
            "client_secret": issued.plaintext,
            "scopes": scopes.split(),
        }


@pytest.fixture
def registered_client(app: Flask) -> dict[str, Any]:
    """A client allowed ``read write``: ``{"client_id", "client_secret", "scopes"}``."""
    return register(app)


def basic_auth(client_id: str, secret: str) -> dict[str, str]:
    """An RFC 6749 §2.3.1 ``Authorization: Basic`` header (form-encoded id and secret)."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def fetch_token(
    test_client: FlaskClient, credentials: dict[str, Any], scope: str | None = None
) -> str:
    """Get an access token with client_secret_basic; fail the test on any error."""
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    response = test_client.post(
        "/m2m/token",
        data=data,
        headers=basic_auth(credentials["client_id"], credentials["client_secret"]),
    )
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    return token


@pytest.fixture
def token_for(
    client: FlaskClient, registered_client: dict[str, Any]
) -> Callable[[str | None], str]:
    """``token_for("read")``: an access token of ``registered_client`` with those scopes."""

    def get(scope: str | None = None) -> str:
        return fetch_token(client, registered_client, scope)

    return get


class LiveServer:
    """An app served over real HTTP on 127.0.0.1 in a thread, for real HTTP clients."""

    def __init__(self, app: Flask):
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=5)


@pytest.fixture
def live_server_factory() -> Iterator[Callable[[Flask], LiveServer]]:
    """``live_server_factory(app)`` serves ``app`` over HTTP until the test ends."""
    servers: list[LiveServer] = []

    def start(app: Flask) -> LiveServer:
        server = LiveServer(app)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
