"""Client authentication does the same work whether the client id exists or not, so that
neither timing nor database load tells an attacker which ids exist (RFC 6749 §10.3 and
RFC 6819 §5.1.4.2.3: client credentials must not be guessable, and a server should not help
to guess them). The tests count the work (queries, hash computations); they time nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask
from helpers.apps import register
from helpers.http import basic_auth
from sqlalchemy import event

from flask_m2m.credentials import SecretHasher
from flask_m2m.extension import get_state

WRONG_SECRET = "m2ms_" + "x" * 64

@contextmanager
def counting(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, int]]:
    """Count the SQL statements the app's engine runs and the HMACs computed meanwhile."""
    counts = {"queries": 0, "hashes": 0}
    digest = SecretHasher.digest

    def counted_digest(self: SecretHasher, key_id: str, secret: str) -> str:
        counts["hashes"] += 1
        return digest(self, key_id, secret)

    def count_query(*args: Any) -> None:
        counts["queries"] += 1

    with app.app_context():
        engine = get_state(app).db.engine
    monkeypatch.setattr(SecretHasher, "digest", counted_digest)
    event.listen(engine, "before_cursor_execute", count_query)
    try:
        yield counts
    finally:
        event.remove(engine, "before_cursor_execute", count_query)
        monkeypatch.setattr(SecretHasher, "digest", digest)

def _attempt(app: Flask, client_id: str, secret: str = WRONG_SECRET) -> int:
    headers = basic_auth(client_id, secret)
    response = app.test_client().post(
        "/m2m/token", data={"grant_type": "client_credentials"}, headers=headers
    )
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    return response.status_code

@pytest.mark.parametrize("warm", [False, True], ids=["first-attempt", "repeated-attempt"])
def test_unknown_and_known_ids_cost_the_same(
    app: Flask, monkeypatch: pytest.MonkeyPatch, warm: bool
) -> None:
    """A wrong secret for a known id and any secret for an unknown (well-formed) id run the
    same queries and compute the same number of hashes, on a cold and on a warm cache."""
    known = register(app)["client_id"]
    unknown = "m2m_" + "Q" * 24
    work: dict[str, dict[str, int]] = {}
    for name, client_id in (("known", known), ("unknown", unknown)):
        if warm:
            _attempt(app, client_id)
        with counting(app, monkeypatch) as counts:
            _attempt(app, client_id)
        work[name] = counts
    assert work["known"] == work["unknown"]
    assert work["known"]["hashes"] == 1
    assert work["known"]["queries"] == (0 if warm else 1)

def test_unknown_ids_are_cached_with_a_bound(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A miss is remembered like a hit (for ``M2M_STATE_CACHE_SECONDS``), and a client created
    afterwards is found at once: creating it forgets the cached miss."""
    from flask_m2m import authentication

    monkeypatch.setattr(authentication, "MAX_CACHED_CLIENTS", 3)
    for index in range(10):
        _attempt(app, f"m2m_unknown{index}")
    with app.app_context():
        assert len(get_state(app).server.credentials) <= 3
    creds = register(app)
    response = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 200

def test_several_secrets_cost_one_hash(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client holding several secrets (a rotation's grace period) is checked with one HMAC
    of the presented secret compared with every stored hash."""
    creds = register(app)
    admin = app.test_cli_runner()
    result = admin.invoke(
        args=["m2m", "rotate-secret", creds["client_id"], "--grace-period", "600", "--json"]
    )
    assert result.exit_code == 0, result.output
    with counting(app, monkeypatch) as counts:
        _attempt(app, creds["client_id"])
    assert counts["hashes"] == 1

def test_overlong_secret_is_hashed_like_any_other(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret longer than any real one is refused, after the same work as a wrong one."""
    known = register(app)["client_id"]
    _attempt(app, known)
    with counting(app, monkeypatch) as counts:
        _attempt(app, known, "m2ms_" + "y" * 5000)
    assert counts == {"queries": 0, "hashes": 1}
