"""The replay store (:mod:`flask_m2m.replay`): each ``jti`` is accepted once, across every
instance sharing the store (RFC 7523 §3 item 7, RFC 9449 §11.1)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from flask import Flask
from helpers.apps import RATELIMIT_STORAGE_URI, close_rate_limit_storages

from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state
from flask_m2m.replay import DatabaseReplayStore, ReplayStore, StorageReplayStore, replay_store


def test_database_store_refuses_a_replay_at_a_second_instance(
    app_factory: Callable[..., Flask], shared_database_url: str
) -> None:
    """Two apps on one database: a ``jti`` used at one is a replay at the other."""
    first = app_factory(shared_database_url)
    second = app_factory(shared_database_url)
    exp = int(time.time()) + 300
    jti = uuid.uuid4().hex
    with first.app_context():
        store = get_state().replay
        assert isinstance(store, DatabaseReplayStore)
        assert store.first_use("client_assertion", "client-a", jti, exp)
        assert not store.first_use("client_assertion", "client-a", jti, exp)
        # The same identifier of another issuer or for another use is not a replay.
        assert store.first_use("client_assertion", "client-b", jti, exp)
        assert store.first_use("dpop", "client-a", jti, exp)
    with second.app_context():
        assert not get_state().replay.first_use("client_assertion", "client-a", jti, exp)


def test_database_store_forgets_expired_identifiers(app: Flask) -> None:
    """A row whose time has passed no longer blocks its key (its assertion expired)."""
    with app.app_context():
        state = get_state()
        store = state.replay
        jti = uuid.uuid4().hex
        assert store.first_use("dpop", "c", jti, int(time.time()) + 5)
        table = state.models.used_jti.__table__  # type: ignore[union-attr]
        state.db.session.execute(table.update().values(expires_at=int(time.time()) - 1))
        state.db.session.commit()
        assert store.first_use("dpop", "c", jti, int(time.time()) + 5)


def test_storage_store_is_shared_through_the_storage_uri() -> None:
    """Without a database, the rate-limit storage is the store; two stores on one URI (Redis
    when configured) see each other's identifiers."""
    prefix = f"m2m-test-{uuid.uuid4().hex}"
    apps = []
    for _ in range(2):
        app = Flask(__name__)
        app.config.update(RATELIMIT_STORAGE_URI=RATELIMIT_STORAGE_URI, RATELIMIT_KEY_PREFIX=prefix)
        apps.append(app)
    stores = [replay_store(app) for app in apps]
    assert all(isinstance(store, StorageReplayStore) for store in stores)
    jti, exp = uuid.uuid4().hex, int(time.time()) + 60
    assert stores[0].first_use("dpop", "rs", jti, exp)
    assert not stores[0].first_use("dpop", "rs", jti, exp)
    if RATELIMIT_STORAGE_URI != "memory://":
        assert not stores[1].first_use("dpop", "rs", jti, exp)
    for app, store in zip(apps, stores, strict=True):
        app.extensions["m2m"] = type("State", (), {"replay": store})()
        close_rate_limit_storages(app)


def test_memory_store_by_default_without_database_or_uri() -> None:
    app = Flask(__name__)
    store = replay_store(app)
    assert type(store) is ReplayStore
    assert store.first_use("dpop", "rs", "a", int(time.time()) + 60)
    assert not store.first_use("dpop", "rs", "a", int(time.time()) + 60)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"M2M_REPLAY_STORE": "database"}, "used-jti table"),
        ({"M2M_REPLAY_STORE": "storage"}, "RATELIMIT_STORAGE_URI is not set"),
        ({"M2M_REPLAY_STORE": "elsewhere"}, "M2M_REPLAY_STORE"),
    ],
)
def test_impossible_store_is_a_configuration_error(config: dict[str, str], message: str) -> None:
    app = Flask(__name__)
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=message):
        replay_store(app)


def test_memory_store_can_be_chosen(app_factory: Callable[..., Flask]) -> None:
    app = app_factory(M2M_REPLAY_STORE="memory")
    with app.app_context():
        assert type(get_state().replay) is ReplayStore
