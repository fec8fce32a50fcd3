"""Fixtures: each test builds its apps fresh on SQLite (default) or on the PostgreSQL that
``M2M_TEST_DATABASE_URL`` names (see ``helpers.apps``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_sqlalchemy import SQLAlchemy
from helpers.apps import DATABASE_URL, close_app, fetch_token, make_app, register
from helpers.http import LiveServer
from helpers.keys import KEY_POOL, KeyPool
from joserfc.jwk import RSAKey


@pytest.fixture(scope="session", autouse=True)
def signing_key_pool() -> Iterator[KeyPool]:
    """RSA signing keys of the test apps come from a pool made once per run (``helpers.keys``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(RSAKey, "generate_key", KEY_POOL.generate_key)
        # joserfc's own hook for loading a private RSA JWK: when a joserfc release lacks it,
        # keys load (and are checked) as usual, only slower.
        patch.setattr(
            RSAKey.binding, "import_private_key", KEY_POOL.import_private_key, raising=False
        )
        yield KEY_POOL


@pytest.fixture(autouse=True)
def _real_keys_when_marked(
    request: pytest.FixtureRequest, signing_key_pool: KeyPool
) -> Iterator[None]:
    """A test marked ``real_keys`` (it tests key generation or rotation) makes every signing
    key afresh."""
    signing_key_pool.enabled = request.node.get_closest_marker("real_keys") is None
    yield
    signing_key_pool.enabled = True


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
        close_app(app, db, drop_tables=True)


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


@pytest.fixture
def registered_client(app: Flask) -> dict[str, Any]:
    """A client allowed ``read write``: ``{"client_id", "client_secret", "scopes"}``."""
    return register(app)


@pytest.fixture
def token_for(
    client: FlaskClient, registered_client: dict[str, Any]
) -> Callable[[str | None], str]:
    """``token_for("read")``: an access token of ``registered_client`` with those scopes."""

    def get(scope: str | None = None) -> str:
        return fetch_token(client, registered_client, scope)

    return get


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
