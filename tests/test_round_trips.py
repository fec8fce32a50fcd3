"""Database round trips of the token endpoint: none for a JWT once the caches are warm, one
(the insert) for an opaque token; on PostgreSQL when ``M2M_TEST_DATABASE_URL`` names one
(what is counted: ``helpers.round_trips``).

The apps use a SQLite file (or the configured server): a pool of connections, as deployed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from helpers.key_clients import assertion, form, new_key, register_key_client
from helpers.round_trips import RoundTrips
from sqlalchemy.engine import Engine

from flask_m2m.extension import get_state


@pytest.fixture
def make(app_factory: Callable[..., Flask], shared_database_url: str) -> Callable[..., Flask]:
    """An app on a database with a connection pool (a SQLite file or the configured server)."""

    def factory(**config: Any) -> Flask:
        return app_factory(shared_database_url, M2M_STATE_CACHE_SECONDS=300, **config)

    return factory


def _engine(app: Flask) -> Engine:
    with app.app_context():
        engine: Engine = get_state(app).db.engine
        return engine


def _token_request(app: Flask, creds: dict[str, Any]) -> dict[str, Any]:
    response = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials", "scope": "read"},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 200, response.get_json()
    body: dict[str, Any] = response.get_json()
    return body


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jwt_token_request_with_warm_caches_makes_no_round_trip(
    make: Callable[..., Flask], alg: str
) -> None:
    app = make(M2M_SIGNING_ALG=alg)
    creds = register(app)
    _token_request(app, creds)  # warms the client's credentials and the signing key
    with RoundTrips(_engine(app)) as trips:
        for _ in range(5):
            _token_request(app, creds)
    assert trips.statements == []
    assert trips.checkouts == 0  # not even a connection (no pre-ping either)


def test_cold_cache_reads_the_client_in_one_round_trip(make: Callable[..., Flask]) -> None:
    """A cold cache: one query (the client with its secrets, no transaction around it) and
    the last-used bookkeeping (once per ``M2M_LAST_USED_INTERVAL_SECONDS``); then nothing."""
    app = make()
    creds = register(app)
    with app.app_context():
        get_state(app).keys.signing_key()
    with RoundTrips(_engine(app)) as trips:
        _token_request(app, creds)
    reads, bookkeeping = trips.statements[:1], trips.statements[1:]
    assert reads == ["SELECT"]
    assert [s for s in bookkeeping if s not in ("BEGIN (driver)", "COMMIT")] == [
        "UPDATE",
        "UPDATE",
    ]
    with RoundTrips(_engine(app)) as trips:
        _token_request(app, creds)
    assert trips.statements == []


def test_opaque_token_request_makes_one_round_trip(make: Callable[..., Flask]) -> None:
    """The token's row is inserted, in one statement that commits by itself."""
    app = make(M2M_TOKEN_FORMAT="opaque")
    creds = register(app)
    _token_request(app, creds)
    with RoundTrips(_engine(app)) as trips:
        body = _token_request(app, creds)
    assert trips.statements == ["INSERT"]
    assert trips.checkouts == 1
    # The row is committed: another connection finds it at once.
    response = app.test_client().get("/api/read", headers=bearer(body["access_token"]))
    assert response.status_code == 200


def test_reused_token_makes_no_round_trip(make: Callable[..., Flask]) -> None:
    app = make(M2M_REUSE_TOKENS=True)
    creds = register(app)
    client = app.test_client()
    first = fetch_token(client, creds, "read")
    with RoundTrips(_engine(app)) as trips:
        again = fetch_token(client, creds, "read")
    assert again == first
    assert trips.statements == []


def test_private_key_jwt_token_request_makes_one_round_trip(make: Callable[..., Flask]) -> None:
    """RFC 7523 §3: the assertion's ``jti`` is recorded once across instances, in one insert
    that commits by itself; the client's keys and the signing key come from the caches."""
    app = make()
    key = new_key("EC", "k")
    client_id = register_key_client(app, key)
    token = app.test_client().post
    assert token("/m2m/token", data=form(assertion(key, client_id, alg="ES256"))).status_code == 200
    with RoundTrips(_engine(app)) as trips:
        response = token("/m2m/token", data=form(assertion(key, client_id, alg="ES256")))
    assert response.status_code == 200, response.get_json()
    assert trips.statements == ["INSERT"]
    # A replayed assertion: the insert fails, and a delete finds no expired row to replace.
    signed = assertion(key, client_id, alg="ES256")
    assert token("/m2m/token", data=form(signed)).status_code == 200
    with RoundTrips(_engine(app)) as trips:
        assert token("/m2m/token", data=form(signed)).status_code == 401
    assert trips.statements == ["INSERT", "DELETE"]


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_first_use_of_a_token_reads_its_state_in_one_statement(
    make: Callable[..., Flask], token_format: str
) -> None:
    """A protected route that sees a token for the first time reads its client's state and
    the token's revocation in one statement, with no transaction around it; an opaque token
    adds the read of its row. Within ``M2M_STATE_CACHE_SECONDS``, the same token costs
    nothing."""
    app = make(M2M_TOKEN_FORMAT=token_format)
    creds = register(app)
    token = _token_request(app, creds)["access_token"]
    web = app.test_client()
    with RoundTrips(_engine(app)) as trips:
        assert web.get("/api/whoami", headers=bearer(token)).status_code == 200
    assert trips.statements == ["SELECT"] * (1 if token_format == "jwt" else 2)
    with RoundTrips(_engine(app)) as trips:
        assert web.get("/api/whoami", headers=bearer(token)).status_code == 200
    assert trips.statements == []
