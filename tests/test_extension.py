"""The ``M2M`` extension object: set-up styles, misuse, several apps, options, custom models,
and how client credentials are generated and stored."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import jwt  # PyJWT, only to read token headers
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_sqlalchemy import SQLAlchemy
from helpers.apps import DATABASE_URL, bare_app, close_app, fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import inspect

from flask_m2m import (
    M2M,
    AuditEventMixin,
    ClientMixin,
    ClientSecretMixin,
    ConfigurationError,
    Models,
    OpaqueTokenMixin,
    RevokedTokenMixin,
    SigningKeyMixin,
    current_token,
    require_scope,
)
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import create_client
from flask_m2m.state import M2MState

Build = Callable[..., tuple[Flask, SQLAlchemy]]


def add_routes(app: Flask) -> None:
    """A protected route, as a host app would declare it."""

    @app.get("/api/whoami")
    @require_scope("read")
    def whoami() -> dict[str, Any]:
        return {"client_id": current_token.client_id, "iss": current_token.issuer}


@pytest.fixture
def build() -> Iterator[Build]:
    """``build(url, **config)``: a Flask app with its own ``db`` and a protected route but no
    flask-m2m yet; every database is dropped after the test."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def make(database_url: str = DATABASE_URL, **config: Any) -> tuple[Flask, SQLAlchemy]:
        app, db = bare_app(database_url, **config)
        add_routes(app)
        made.append((app, db))
        return app, db

    yield make
    for app, db in reversed(made):
        close_app(app, db, drop_tables=True)


def create_tables(app: Flask, db: SQLAlchemy) -> None:
    with app.app_context():
        db.drop_all()
        db.create_all()


def get_token(client: FlaskClient, credentials: dict[str, Any], path: str = "/m2m/token") -> Any:
    """The token response for a client_credentials request (RFC 6749 §4.4.2)."""
    return client.post(
        path,
        data={"grant_type": "client_credentials"},
        headers=basic_auth(credentials["client_id"], credentials["client_secret"]),
    )


def round_trip(app: Flask, path: str = "/m2m/token") -> str:
    """Register a client, get a token and use it on the protected route; returns the token."""
    credentials = register(app, "read")
    client = app.test_client()
    response = get_token(client, credentials, path)
    assert response.status_code == 200, response.get_json()
    token: str = response.get_json()["access_token"]
    used = client.get("/api/whoami", headers=bearer(token))
    assert used.status_code == 200
    assert used.get_json()["client_id"] == credentials["client_id"]
    return token


# -- set-up styles --------------------------------------------------------------------------


def test_constructor_with_app(build: Build) -> None:
    """``M2M(app, db)`` sets the extension up at once."""
    app, db = build()
    M2M(app, db)
    create_tables(app, db)
    assert isinstance(get_state(app), M2MState)
    round_trip(app)


def test_init_app_factory_style(build: Build) -> None:
    """``M2M()`` then ``init_app(app, db)`` (app factory), also with ``db`` given up front; one
    extension object can serve several apps."""
    m2m = M2M()
    first, first_db = build("sqlite://")
    m2m.init_app(first, first_db)
    create_tables(first, first_db)
    round_trip(first)

    second, second_db = build("sqlite://")
    M2M(db=second_db).init_app(second)
    create_tables(second, second_db)
    round_trip(second)
    assert m2m.state(first) is get_state(first) is not get_state(second)


def test_init_app_twice_raises(build: Build) -> None:
    """A second ``init_app`` on the same app raises ConfigurationError (a RuntimeError)."""
    app, db = build()
    m2m = M2M(app, db)
    with pytest.raises(ConfigurationError):
        m2m.init_app(app, db)
    with pytest.raises(RuntimeError):
        M2M(app, db)


@pytest.mark.parametrize("how", ["constructor", "init_app"])
def test_missing_db_raises(build: Build, how: str) -> None:
    """Without the Flask-SQLAlchemy object the extension refuses to start."""
    app, db = build()
    with pytest.raises(ConfigurationError):
        if how == "constructor":
            M2M(app)
        else:
            M2M().init_app(app)
    assert "m2m" not in app.extensions
    M2M(app, db)  # a correct second attempt still works
    assert "m2m" in app.extensions


def test_protected_route_without_extension(build: Build) -> None:
    """``require_scope`` on an app without flask-m2m raises ConfigurationError, which names
    the set-up call, instead of answering 401."""
    app, _ = build()
    app.testing = True
    with pytest.raises(ConfigurationError, match="init_app"):
        app.test_client().get("/api/whoami", headers=bearer("whatever"))
    with pytest.raises(ConfigurationError, match="init_app"):
        app.test_client().get("/api/whoami")


def test_get_state_without_extension(build: Build) -> None:
    """``get_state`` (explicit app or current app) raises a helpful ConfigurationError."""
    app, _ = build()
    with pytest.raises(ConfigurationError, match="init_app"):
        get_state(app)
    with app.app_context(), pytest.raises(ConfigurationError, match="init_app"):
        get_state()
    with pytest.raises(ConfigurationError):
        M2M().state(app)


# -- several apps -----------------------------------------------------------------------------


def test_two_apps_with_different_configs(app_factory: Callable[..., Flask]) -> None:
    """Two apps in one process (own databases, prefixes, issuers) work independently, and a
    token of one is refused by the other (RFC 9068 §4: iss / signature)."""
    a = app_factory("sqlite://", M2M_URL_PREFIX="/auth", M2M_ISSUER="https://a.test")
    b = app_factory("sqlite://", M2M_ISSUER="https://b.test")
    ca, cb = a.test_client(), b.test_client()
    creds_a, creds_b = register(a), register(b)

    assert get_token(ca, creds_a, "/m2m/token").status_code == 404
    assert get_token(cb, creds_b, "/auth/token").status_code == 404
    token_a = get_token(ca, creds_a, "/auth/token").get_json()["access_token"]
    token_b = get_token(cb, creds_b, "/m2m/token").get_json()["access_token"]
    meta_a = ca.get("/.well-known/oauth-authorization-server").get_json()
    meta_b = cb.get("/.well-known/oauth-authorization-server").get_json()
    assert meta_a["issuer"] == "https://a.test"
    assert meta_a["token_endpoint"] == "https://a.test/auth/token"
    assert meta_b["issuer"] == "https://b.test"
    assert meta_b["token_endpoint"] == "https://b.test/m2m/token"
    assert jwt.decode(token_a, options={"verify_signature": False})["iss"] == "https://a.test"

    assert ca.get("/api/whoami", headers=bearer(token_a)).status_code == 200
    assert cb.get("/api/whoami", headers=bearer(token_b)).status_code == 200
    for test_client, foreign in ((ca, token_b), (cb, token_a)):
        response = test_client.get("/api/whoami", headers=bearer(foreign))
        assert response.status_code == 401
        assert response.get_json()["error"] == "invalid_token"
    # Each app knows only its own clients (RFC 6749 §5.2 invalid_client).
    assert get_token(cb, creds_a).status_code == 401


def test_two_apps_same_issuer_different_keys(app_factory: Callable[..., Flask]) -> None:
    """Same issuer, separate databases: different signing keys, so each refuses the other's
    tokens (RFC 7515 signature check against the app's own JWKS)."""
    a, b = app_factory("sqlite://"), app_factory("sqlite://")
    ca, cb = a.test_client(), b.test_client()
    token_a, token_b = fetch_token(ca, register(a)), fetch_token(cb, register(b))
    kids_a = {k["kid"] for k in ca.get("/m2m/jwks.json").get_json()["keys"]}
    kids_b = {k["kid"] for k in cb.get("/m2m/jwks.json").get_json()["keys"]}
    assert kids_a and kids_b and not kids_a & kids_b
    assert jwt.get_unverified_header(token_a)["kid"] in kids_a
    assert cb.get("/api/whoami", headers=bearer(token_a)).status_code == 401
    assert ca.get("/api/whoami", headers=bearer(token_b)).status_code == 401
    assert ca.get("/api/whoami", headers=bearer(token_a)).status_code == 200


# -- options ----------------------------------------------------------------------------------


def test_constructor_options_beat_app_config(build: Build) -> None:
    """``M2M(app, db, issuer=...)`` wins over ``M2M_ISSUER`` (iss claim and RFC 8414 metadata)."""
    app, db = build(M2M_ISSUER="https://config.test", M2M_ACCESS_TOKEN_EXPIRES_IN=3600)
    M2M(app, db, issuer="https://x.test", access_token_expires_in=120)
    create_tables(app, db)
    assert get_state(app).settings.issuer == "https://x.test"
    client = app.test_client()
    meta = client.get("/.well-known/oauth-authorization-server").get_json()
    assert meta["issuer"] == "https://x.test"
    response = get_token(client, register(app, "read"))
    assert response.get_json()["expires_in"] <= 120
    token = response.get_json()["access_token"]
    assert jwt.decode(token, options={"verify_signature": False})["iss"] == "https://x.test"
    assert client.get("/api/whoami", headers=bearer(token)).get_json()["iss"] == "https://x.test"


@pytest.mark.parametrize("options", [{"bogus": 1}, {"M2M_ISSUER": "https://x.test"}])
def test_unknown_constructor_option(build: Build, options: dict[str, Any]) -> None:
    """An unknown option (options are lower-case names without ``M2M_``) is a ConfigurationError."""
    app, db = build()
    with pytest.raises(ConfigurationError):
        M2M(app, db, **options)
    assert "m2m" not in app.extensions


# -- custom models ------------------------------------------------------------------------------


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_custom_models(build: Build, token_format: str) -> None:
    """Models built on the mixins with other table names: issue (RFC 6749 §4.4), use
    (RFC 6750), revoke (RFC 7009) all go through the app's own tables."""
    app, db = build()

    class AcmeClient(ClientMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_client"

    class AcmeKey(SigningKeyMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_key"

    class AcmeRevoked(RevokedTokenMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_revoked"

    class AcmeOpaque(OpaqueTokenMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_opaque"

    class AcmeSecret(ClientSecretMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_secret"

    class AcmeEvent(AuditEventMixin, db.Model):  # type: ignore[name-defined,misc]
        __tablename__ = "acme_m2m_event"

    models = Models(
        client=AcmeClient,
        signing_key=AcmeKey,
        revoked_token=AcmeRevoked,
        opaque_token=AcmeOpaque,
        client_secret=AcmeSecret,
        audit_event=AcmeEvent,
    )
    M2M(app, db, models=models, token_format=token_format)
    create_tables(app, db)
    assert get_state(app).models is models
    assert not any(name.startswith("m2m_") for name in db.metadata.tables)

    credentials = register(app, "read")
    client = app.test_client()
    token = round_trip(app)  # a second client, registered inside round_trip
    mine = fetch_token(client, credentials)
    assert client.get("/api/whoami", headers=bearer(mine)).status_code == 200
    revoked = client.post(
        "/m2m/revoke",
        data={"token": mine},
        headers=basic_auth(credentials["client_id"], credentials["client_secret"]),
    )
    assert revoked.status_code == 200
    assert client.get("/api/whoami", headers=bearer(mine)).status_code == 401
    assert client.get("/api/whoami", headers=bearer(token)).status_code == 200

    with app.app_context():
        session = db.session
        assert session.get(AcmeClient, credentials["client_id"]) is not None
        assert session.query(AcmeClient).count() == 2
        if token_format == "jwt":
            assert session.query(AcmeKey).count() >= 1
            assert session.query(AcmeRevoked).count() == 1
        else:
            assert mine.startswith("m2mat_")
            rows = session.query(AcmeOpaque).all()
            assert len(rows) == 2 and sum(row.revoked for row in rows) == 1
        names = set(inspect(db.engine).get_table_names())
    assert {"acme_m2m_client", "acme_m2m_key", "acme_m2m_revoked", "acme_m2m_opaque"} <= names
    assert {"acme_m2m_secret", "acme_m2m_event"} <= names


# -- credentials ------------------------------------------------------------------------------


def test_secret_is_stored_hashed(app: Flask, registered_client: dict[str, Any]) -> None:
    """Client secrets are stored only as a keyed hash (never in clear)."""
    secret = registered_client["client_secret"]
    with app.app_context():
        state = get_state(app)
        model = state.models.client_secret
        (row,) = state.db.session.query(model).filter_by(client_id=registered_client["client_id"])
        assert row.secret_hash.startswith("hmac-sha256$")
        assert secret not in row.secret_hash
        assert secret[5:] not in row.secret_hash
        client_row = state.db.session.get(state.models.client, registered_client["client_id"])
        for stored in (row, client_row):
            for column in stored.__table__.columns:
                assert secret not in str(getattr(stored, column.key))


@pytest.mark.parametrize(("config", "length"), [({}, 64), ({"M2M_CLIENT_SECRET_LENGTH": 40}, 40)])
def test_generated_credentials_format(
    app_factory: Callable[..., Flask], config: dict[str, Any], length: int
) -> None:
    """Ids start with ``m2m_``, secrets with ``m2ms_`` followed by the configured number of
    random characters (default 64); every client gets different ones."""
    app = app_factory(**config)
    created = [register(app) for _ in range(3)]
    for credentials in created:
        assert re.fullmatch(r"m2m_[A-Za-z0-9]{24}", credentials["client_id"])
        assert re.fullmatch(rf"m2ms_[A-Za-z0-9]{{{length}}}", credentials["client_secret"])
    assert len({c["client_id"] for c in created}) == 3
    assert len({c["client_secret"] for c in created}) == 3
    assert get_token(app.test_client(), created[0]).status_code == 200


def test_secret_length_below_minimum_is_refused(build: Build) -> None:
    """``M2M_CLIENT_SECRET_LENGTH`` below 32 is a ConfigurationError at init."""
    app, db = build(M2M_CLIENT_SECRET_LENGTH=16)
    with pytest.raises(ConfigurationError):
        M2M(app, db)


def test_imported_secret_is_hashed_too(app: Flask) -> None:
    """An imported secret (``create_client(secret=...)``) is hashed like a generated one."""
    secret = "imported-" + "s" * 40
    with app.app_context():
        state = get_state(app)
        _, issued = create_client(state, actor="test", name="imp", scopes="read", secret=secret)
        state.db.session.commit()
        assert issued.plaintext == secret
        row = state.db.session.get(state.models.client_secret, issued.secret_id)
        assert row.secret_hash.startswith("hmac-sha256$") and secret not in row.secret_hash


def test_cache_invalidation_is_per_app_and_goes_with_the_app(tmp_path: Any) -> None:
    """Two apps sharing one ``db``: disabling a client of one app drops that app's cached
    credentials at once (its next token request is refused), leaves the other app's caches
    alone, and the listeners go away with their app (no module-level registry)."""
    import gc
    import weakref

    from flask_m2m.lifecycle import set_disabled

    app, db = bare_app(f"sqlite:///{tmp_path / 'shared.db'}", M2M_STATE_CACHE_SECONDS=3600)
    M2M(app, db)
    other = Flask("other")
    other.config.update(app.config)
    db.init_app(other)
    M2M(other, db)
    with app.app_context():
        db.create_all()
    creds = register(app)
    assert get_token(app.test_client(), creds).status_code == 200
    assert get_token(other.test_client(), creds).status_code == 200
    with other.app_context():
        assert get_state(other).server.credentials.get(creds["client_id"]) is not None
        cached_elsewhere = len(get_state(other).server.credentials)
    with app.app_context():
        set_disabled(get_state(app), creds["client_id"], True, actor="test")
        get_state(app).db.session.commit()
        assert len(get_state(app).server.credentials) == 0
    assert get_token(app.test_client(), creds).status_code == 401
    with other.app_context():
        assert len(get_state(other).server.credentials) == cached_elsewhere

    def listeners() -> int:
        with app.app_context():
            return len(db.session.session_factory().dispatch.before_flush)

    registered = listeners()
    ref = weakref.ref(other)
    del other
    gc.collect()
    assert ref() is None
    assert listeners() == registered - 1
