"""Token reuse (``M2M_REUSE_TOKENS``): the same token back while most of its lifetime is left."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import register
from helpers.http import basic_auth, bearer

import flask_m2m.tokens
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import rotate_secret, set_disabled

Creds = dict[str, Any]


def request_token(client: FlaskClient, creds: Creds, scope: str | None = None) -> dict[str, Any]:
    data = {"grant_type": "client_credentials"}
    if scope is not None:
        data["scope"] = scope
    response = client.post(
        "/m2m/token", data=data, headers=basic_auth(creds["client_id"], creds["client_secret"])
    )
    assert response.status_code == 200, response.data
    body: dict[str, Any] = response.get_json()
    return body


@pytest.fixture(params=["jwt", "opaque"])
def reuse_app(request: pytest.FixtureRequest, app_factory: Callable[..., Flask]) -> Flask:
    return app_factory(M2M_REUSE_TOKENS=True, M2M_TOKEN_FORMAT=request.param)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """``time.time`` of the token service, moved forward by the test."""
    now = [float(int(time.time())) + 0.25]
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: now[0])
    return now


def test_same_token_with_smaller_expires_in(reuse_app: Flask, clock: list[float]) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    first = request_token(client, creds, "read")
    clock[0] += 600
    second = request_token(client, creds, "read")
    assert second["access_token"] == first["access_token"]
    assert second["expires_in"] == first["expires_in"] - 600
    assert second["scope"] == "read"
    response = client.get("/api/read", headers=bearer(second["access_token"]))
    assert response.status_code == 200


def test_new_token_once_half_the_lifetime_is_gone(reuse_app: Flask, clock: list[float]) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    first = request_token(client, creds, "read")
    clock[0] += 1800
    second = request_token(client, creds, "read")
    assert second["access_token"] != first["access_token"]
    assert second["expires_in"] == 3600


def test_different_scope_gets_a_different_token(reuse_app: Flask) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    read = request_token(client, creds, "read")
    both = request_token(client, creds, "read write")
    assert both["access_token"] != read["access_token"]
    assert request_token(client, creds, "write read")["access_token"] == both["access_token"]
    assert request_token(client, creds, "read")["access_token"] == read["access_token"]


def test_revoked_token_is_not_handed_back(reuse_app: Flask) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    first = request_token(client, creds, "read")["access_token"]
    response = client.post(
        "/m2m/revoke",
        data={"token": first},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 200
    second = request_token(client, creds, "read")["access_token"]
    assert second != first
    assert client.get("/api/read", headers=bearer(second)).status_code == 200


def test_no_reuse_after_secret_rotation(reuse_app: Flask) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    first = request_token(client, creds, "read")["access_token"]
    with reuse_app.app_context():
        _, issued = rotate_secret(get_state(reuse_app), creds["client_id"], actor="test")
        get_state(reuse_app).db.session.commit()
    rotated = {**creds, "client_secret": issued.plaintext}
    assert request_token(client, rotated, "read")["access_token"] != first


def test_no_reuse_after_disable_and_enable(reuse_app: Flask) -> None:
    client, creds = reuse_app.test_client(), register(reuse_app)
    first = request_token(client, creds, "read")["access_token"]
    with reuse_app.app_context():
        set_disabled(get_state(reuse_app), creds["client_id"], True, actor="test")
        get_state(reuse_app).db.session.commit()
    response = client.post(
        "/m2m/token",
        data={"grant_type": "client_credentials", "scope": "read"},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 401
    with reuse_app.app_context():
        set_disabled(get_state(reuse_app), creds["client_id"], False, actor="test")
        get_state(reuse_app).db.session.commit()
    second = request_token(client, creds, "read")["access_token"]
    assert second != first
    assert client.get("/api/read", headers=bearer(second)).status_code == 200


def test_off_by_default(app: Flask) -> None:
    client, creds = app.test_client(), register(app)
    assert get_state(app).settings.reuse_tokens is False
    first = request_token(client, creds, "read")["access_token"]
    assert request_token(client, creds, "read")["access_token"] != first
