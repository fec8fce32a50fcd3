"""Test apps: each with its own ``db``, on SQLite (default) or on the PostgreSQL that
``M2M_TEST_DATABASE_URL`` names, counting rate limits in memory or in the Redis that
``M2M_TEST_REDIS_URL`` names; and clients and tokens on them."""

from __future__ import annotations

import os
import uuid
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from flask_m2m import M2M, current_token, require_scope
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import create_client
from helpers.http import basic_auth
from helpers.keys import KEY_POOL

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


def close_app(app: Flask, db: SQLAlchemy, drop_tables: bool = False) -> None:
    """Close what ``app`` holds open: the session and pooled connections of ``db`` (after
    dropping its tables, when ``drop_tables``) and the connections of its rate-limit storages;
    and take back the signing keys lent to it."""
    with app.app_context():
        db.session.remove()
        if drop_tables:
            db.drop_all()
        db.engine.dispose()
    close_rate_limit_storages(app)
    KEY_POOL.release(app)


def close_rate_limit_storages(app: Flask) -> None:
    """Disconnect the Redis clients of ``app``'s rate-limit storages: flask-m2m's, an app-wide
    Flask-Limiter's if the app has one, and the example console's login throttle.

    Left to the garbage collector, a client in a reference cycle (as an app is) may have its
    socket finalized before the client closes it: an "unclosed socket" ``ResourceWarning``,
    an error under ``filterwarnings = error`` wherever the collector happens to run.
    """
    storages = [limiter.storage for limiter in app.extensions.get("limiter", ()) if limiter.enabled]
    state = app.extensions.get("m2m")
    strategy = getattr(getattr(state, "rate_limits", None), "strategy", None)
    if strategy is not None:
        storages.append(strategy.storage)
    throttle = app.extensions.get("example_console")
    if throttle is not None:
        storages.append(throttle.limiter.storage)
    for storage in storages:
        client = getattr(storage, "storage", None)  # limits' Redis storage: the redis client
        pool = getattr(client, "connection_pool", None)
        if pool is not None:
            client.close()
            pool.disconnect()


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
