"""The master secret (``M2M_KEY_ENCRYPTION_SECRET``, else ``SECRET_KEY``): checked for strength,
and rotated without breaking stored secrets or signing keys, the way Flask 3.1 rotates its
session key with ``SECRET_KEY_FALLBACKS``."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from flask import Flask
from helpers.apps import bare_app, register
from helpers.http import basic_auth, bearer
from sqlalchemy import select, update

from flask_m2m import M2M
from flask_m2m.credentials import derive_key
from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state

OLD = "old-master-secret-9f8e7d6c5b4a39281706"
NEW = "new-master-secret-0a1b2c3d4e5f60718293"


def _token_response(app: Flask, creds: dict[str, Any]) -> Any:
    return app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )


def _token(app: Flask, creds: dict[str, Any]) -> str:
    response = _token_response(app, creds)
    assert response.status_code == 200, response.get_json()
    return str(response.get_json()["access_token"])


def _whoami(app: Flask, token: str) -> int:
    return app.test_client().get("/api/whoami", headers=bearer(token)).status_code


def _hash(app: Flask, client_id: str) -> str:
    with app.app_context():
        state = get_state(app)
        model = state.models.client_secret
        return str(
            state.db.session.scalar(select(model.secret_hash).where(model.client_id == client_id))
        )


def _reencrypt(app: Flask) -> dict[str, int]:
    result = app.test_cli_runner().invoke(args=["m2m", "reencrypt-keys", "--json"])
    assert result.exit_code == 0, result.output
    data: dict[str, int] = json.loads(result.output)
    return data


@pytest.mark.real_keys
@pytest.mark.parametrize("via_secret_key", [False, True], ids=["m2m-keys", "flask-keys"])
def test_rotation_end_to_end(
    app_factory: Callable[..., Flask], shared_database_url: str, via_secret_key: bool
) -> None:
    """Old secrets and tokens keep working across a rotation: with the old master secret as a
    fallback, every stored secret and signing key still works, a secret moves to the new
    master secret when it is next used, ``reencrypt-keys`` moves the signing keys, and then
    the old master secret can go."""

    def config(current: str, *older: str) -> dict[str, Any]:
        # No state cache: each instance sees the others' writes at once (else within its bound).
        if via_secret_key:
            return {
                "SECRET_KEY": current,
                "SECRET_KEY_FALLBACKS": list(older),
                "M2M_STATE_CACHE_SECONDS": 0,
            }
        return {
            "M2M_STATE_CACHE_SECONDS": 0,
            "M2M_KEY_ENCRYPTION_SECRET": current,
            "M2M_KEY_ENCRYPTION_SECRET_FALLBACKS": list(older),
        }

    before = app_factory(shared_database_url, **config(OLD))
    during = app_factory(shared_database_url, **config(NEW, OLD))
    after = app_factory(shared_database_url, **config(NEW))

    used, idle = register(before), register(before)
    old_token = _token(before, used)
    old_hash = _hash(before, used["client_id"])

    # During the rotation: old tokens verify, old secrets authenticate, and the key that
    # signs is still the one encrypted under the old master secret.
    assert _whoami(during, old_token) == 200
    new_token = _token(during, used)
    kid = jwt.get_unverified_header(old_token)["kid"]
    assert jwt.get_unverified_header(new_token)["kid"] == kid
    assert _whoami(before, new_token) == 200
    rehashed = _hash(during, used["client_id"])
    assert rehashed != old_hash
    with during.app_context():
        assert rehashed.startswith(get_state(during).secrets.prefix)
    assert _token_response(during, used).status_code == 200

    report = _reencrypt(during)
    assert report == {"reencrypted_keys": 1, "current_keys": 0, "older_secret_hashes": 1}
    assert _reencrypt(during)["reencrypted_keys"] == 0

    # After: the old master secret is gone. Keys and moved secrets work; a secret never used
    # during the rotation does not (the documented procedure waits for the count to reach 0).
    assert _whoami(after, old_token) == 200
    assert _whoami(after, _token(after, used)) == 200
    assert _token_response(after, idle).status_code == 401
    assert _token_response(during, idle).status_code == 200  # ... and then it moves too
    assert _token_response(after, idle).status_code == 200
    assert _reencrypt(after)["older_secret_hashes"] == 0


def test_hashes_from_before_key_ids_still_verify(app: Flask) -> None:
    """Secrets stored before hashes named their key (``hmac-sha256$<hex>``) still work, and are
    stored in the new form after their next use."""
    creds = register(app)
    with app.app_context():
        state = get_state(app)
        key = derive_key(state.settings.key_encryption_secret, "flask-m2m client-secret hashing")
        legacy = "hmac-sha256$" + hmac.new(
            key, creds["client_secret"].encode(), hashlib.sha256
        ).hexdigest()
        model = state.models.client_secret
        state.db.session.execute(
            update(model).where(model.client_id == creds["client_id"]).values(secret_hash=legacy)
        )
        state.db.session.commit()
        state.server.credentials.forget_client(creds["client_id"])
    assert _token_response(app, creds).status_code == 200
    with app.app_context():
        assert _hash(app, creds["client_id"]).startswith(get_state(app).secrets.prefix)


@pytest.mark.parametrize(
    "secret",
    ["a" * 16, "ab" * 16, "changemechangeme", "short"],
    ids=["identical-bytes", "two-symbols", "repeated-word", "too-short"],
)
@pytest.mark.parametrize("key", ["M2M_KEY_ENCRYPTION_SECRET", "SECRET_KEY"])
def test_weak_master_secret_is_refused(key: str, secret: str) -> None:
    """A predictable or short master secret fails at ``init_app``, naming the key."""
    app, db = bare_app(**{key: secret})
    with pytest.raises(ConfigurationError, match=key):
        M2M(app, db)


def test_short_master_secret_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A random master secret of 16 to 31 bytes is accepted, with a warning."""
    app, db = bare_app(M2M_KEY_ENCRYPTION_SECRET="k9Q2xP7mZ4vB1nL8")
    with caplog.at_level(logging.WARNING):
        M2M(app, db)
    assert any("shorter than 32 bytes" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fallbacks", [[""], [42], {"a": 1}])
def test_bad_fallbacks_are_refused(fallbacks: Any) -> None:
    app, db = bare_app(M2M_KEY_ENCRYPTION_SECRET=NEW, M2M_KEY_ENCRYPTION_SECRET_FALLBACKS=fallbacks)
    with pytest.raises(ConfigurationError, match="M2M_KEY_ENCRYPTION_SECRET_FALLBACKS"):
        M2M(app, db)


@pytest.mark.parametrize(("testing", "warned"), [(False, True), (True, False)])
def test_missing_issuer_warns_outside_testing(
    caplog: pytest.LogCaptureFixture, testing: bool, warned: bool
) -> None:
    """Without ``M2M_ISSUER``, ``iss`` and ``aud`` follow the request's Host header: production
    is warned at start-up (not debug or testing runs)."""
    app, db = bare_app(M2M_ISSUER=None, TESTING=testing)
    with caplog.at_level(logging.WARNING):
        M2M(app, db)
    assert any("M2M_ISSUER is not set" in r.getMessage() for r in caplog.records) is warned
