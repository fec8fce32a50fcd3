"""Two instances of the example app (two gunicorn servers, two workers each) sharing one
PostgreSQL database and one Redis: tokens, keys, revocations, client changes and rate limits
hold across them within the documented staleness bounds, and survive a restart.

Needs ``M2M_TEST_DATABASE_URL`` (PostgreSQL) and ``M2M_TEST_REDIS_URL``.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from helpers.apps import close_app, make_app
from helpers.servers import (
    Gunicorn,
    create_client_cli,
    example_env,
    flask_cli,
    gunicorn_servers,
    jwt_part,
    poll,
)

DATABASE_URL = os.environ.get("M2M_TEST_DATABASE_URL", "")
REDIS_URL = os.environ.get("M2M_TEST_REDIS_URL", "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not DATABASE_URL.startswith("postgresql") or not REDIS_URL.startswith("redis"),
        reason="several instances need a shared PostgreSQL and Redis: set M2M_TEST_DATABASE_URL "
        "(postgresql+psycopg://...) and M2M_TEST_REDIS_URL (redis://...)",
    ),
]

ISSUER = "https://auth.multi.test"
#: M2M_STATE_CACHE_SECONDS and M2M_KEY_REFRESH_SECONDS of both instances.
BOUND = 1
#: How long past the bound a change may take to show (request and scheduling time).
MARGIN = 4
#: M2M_KEY_PUBLICATION_SECONDS: a second more than every worker needs to re-read the keys.
PUBLICATION = BOUND + 1
GRANT = {"grant_type": "client_credentials"}


@dataclass
class Cluster:
    a: Gunicorn
    b: Gunicorn
    env: dict[str, str]
    admin: dict[str, str]
    _headers: dict[str, str] = field(default_factory=dict)

    def admin_headers(self) -> dict[str, str]:
        """A Bearer header with an ``m2m:admin`` token of the admin client."""
        if self._headers:
            return self._headers
        response = requests.post(
            self.a.url + "/m2m/token",
            data={**GRANT, "scope": "m2m:admin"},
            auth=(self.admin["client_id"], self.admin["client_secret"]),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        self._headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        return self._headers

    def manage(self, server: Gunicorn, method: str, path: str, **kwargs: Any) -> Any:
        """Call the management API of ``server`` as the admin client."""
        return requests.request(
            method, f"{server.url}/m2m{path}", headers=self.admin_headers(), timeout=10, **kwargs
        )

    def new_client(self, **fields: Any) -> tuple[str, str]:
        """A client created through A's management API: (id, secret)."""
        body = {"name": "svc", "scopes": ["read", "write"], **fields}
        response = self.manage(self.a, "POST", "/clients", json=body)
        assert response.status_code == 201, response.text
        return response.json()["client_id"], response.json()["client_secret"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Servers A and B on one database and one Redis, with an admin client made by the CLI."""
    env = example_env(
        SQLALCHEMY_DATABASE_URI=DATABASE_URL,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        SECRET_KEY="multi-instance-secret-key-0123456789",
        M2M_KEY_ENCRYPTION_SECRET="multi-instance-key-encryption-secret-0123",
        M2M_ISSUER=ISSUER,
        RATELIMIT_STORAGE_URI=REDIS_URL,
        RATELIMIT_KEY_PREFIX=f"m2m-test-{uuid.uuid4().hex}",
        M2M_STATE_CACHE_SECONDS=BOUND,
        M2M_KEY_REFRESH_SECONDS=BOUND,
        M2M_KEY_PUBLICATION_SECONDS=PUBLICATION,
        M2M_MANAGEMENT_RATE_LIMIT="10000/minute",
        M2M_FAILED_AUTH_RATE_LIMIT="10000/minute",  # the polls below fail on purpose
    )
    app, db = make_app(DATABASE_URL)  # a clean schema (drops what earlier tests left)
    with app.app_context():
        db.engine.dispose()
    admin = create_client_cli(env, "admin", "m2m:admin")
    with gunicorn_servers(tmp_path_factory.mktemp("servers")) as start:
        a = start(env)  # A makes the first signing key; B starts once it exists
        b = start(env)
        yield Cluster(a, b, env, admin)
    close_app(app, db, drop_tables=True)


def token_at(server: Gunicorn, client_id: str, secret: str) -> requests.Response:
    return requests.post(
        server.url + "/m2m/token", data=GRANT, auth=(client_id, secret), timeout=10
    )


def get_token(server: Gunicorn, client_id: str, secret: str) -> str:
    response = token_at(server, client_id, secret)
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def whoami(server: Gunicorn, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    return requests.get(server.url + "/api/whoami", headers=headers, timeout=10)


def everywhere_within_bound(check: Callable[[], bool]) -> float:
    """Poll until ``check`` holds for ten requests in a row, so that every worker has seen
    the change; fail after the bound plus a margin. The seconds that took."""
    start = time.monotonic()
    streak = [0]

    def holds() -> bool:
        streak[0] = streak[0] + 1 if check() else 0
        return streak[0] >= 10

    poll(holds, BOUND + MARGIN, interval=0.02)
    return time.monotonic() - start


def refused_within_bound(server: Gunicorn, token: str) -> float:
    """Poll ``server`` until every worker refuses the token (401 invalid_token)."""

    def refused() -> bool:
        response = whoami(server, token)
        if response.status_code == 401:
            assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
            return True
        assert response.status_code == 200, response.text
        return False

    return everywhere_within_bound(refused)


def token_status_within_bound(server: Gunicorn, client_id: str, secret: str, status: int) -> None:
    """Poll ``server`` until every worker answers a token request with ``status``."""

    def answers() -> bool:
        response = token_at(server, client_id, secret)
        assert response.status_code in (200, 401), response.text
        if response.status_code == 401:
            assert response.json()["error"] == "invalid_client"
        return response.status_code == status

    everywhere_within_bound(answers)


def kids(server: Gunicorn) -> set[str]:
    keys = requests.get(server.url + "/m2m/jwks.json", timeout=10).json()["keys"]
    return {key["kid"] for key in keys}


def test_token_from_one_instance_works_at_the_other(cluster: Cluster) -> None:
    client_id, secret = cluster.new_client()
    for issuer, verifier in ((cluster.a, cluster.b), (cluster.b, cluster.a)):
        token = get_token(issuer, client_id, secret)
        for _ in range(4):  # reach both workers
            response = whoami(verifier, token)
            assert response.status_code == 200, response.text
            assert response.json() == {"client_id": client_id, "scopes": ["read", "write"]}


def test_one_jwks(cluster: Cluster) -> None:
    """Both instances (every worker) publish the same keys, and the same metadata issuer."""
    expected = kids(cluster.a)
    assert expected
    poll(
        lambda: all(kids(s) == expected for s in (cluster.a, cluster.b) for _ in range(4)),
        BOUND + MARGIN,
    )
    for server in (cluster.a, cluster.b):
        meta = requests.get(server.url + "/.well-known/oauth-authorization-server", timeout=10)
        assert meta.json()["issuer"] == ISSUER


def test_revocation_at_a_is_refused_at_b(cluster: Cluster) -> None:
    client_id, secret = cluster.new_client()
    token, other = get_token(cluster.a, client_id, secret), get_token(cluster.a, client_id, secret)
    for _ in range(4):  # B's workers now hold both tokens in their caches
        assert whoami(cluster.b, token).status_code == 200
        assert whoami(cluster.b, other).status_code == 200
    revoked = requests.post(
        cluster.a.url + "/m2m/revoke", data={"token": token}, auth=(client_id, secret), timeout=10
    )
    assert revoked.status_code == 200
    assert refused_within_bound(cluster.b, token) < BOUND + MARGIN
    assert whoami(cluster.b, other).status_code == 200  # only that token


@pytest.mark.parametrize("change", ["disable", "delete"])
def test_disable_or_delete_at_a_is_refused_at_b(cluster: Cluster, change: str) -> None:
    client_id, secret = cluster.new_client()
    token = get_token(cluster.b, client_id, secret)
    for _ in range(4):
        assert whoami(cluster.b, token).status_code == 200
    if change == "disable":
        response = cluster.manage(
            cluster.a, "PATCH", f"/clients/{client_id}", json={"disabled": True}
        )
        assert response.status_code == 200
    else:
        assert cluster.manage(cluster.a, "DELETE", f"/clients/{client_id}").status_code == 204
    token_status_within_bound(cluster.b, client_id, secret, 401)
    assert refused_within_bound(cluster.b, token) < BOUND + MARGIN


def test_secret_rotation_at_a_applies_at_b(cluster: Cluster) -> None:
    client_id, old = cluster.new_client()
    assert token_at(cluster.b, client_id, old).status_code == 200
    response = cluster.manage(
        cluster.a, "POST", f"/clients/{client_id}/secret", json={"grace_period_seconds": 0}
    )
    assert response.status_code == 200
    new = response.json()["client_secret"]
    token_status_within_bound(cluster.b, client_id, old, 401)
    token_status_within_bound(cluster.b, client_id, new, 200)


def test_rate_limit_is_shared(cluster: Cluster) -> None:
    """A client's "5/minute" is counted once in Redis, whichever instance and worker serves
    the request: exactly five tokens, then 429 with Retry-After."""
    client_id, secret = cluster.new_client(rate_limit="5/minute")
    statuses = []
    for i in range(12):
        response = token_at((cluster.a, cluster.b)[i % 2], client_id, secret)
        statuses.append(response.status_code)
        if response.status_code == 429:
            assert 1 <= int(response.headers["Retry-After"]) <= 60
            assert response.json()["error"] == "too_many_requests"
    assert statuses == [200] * 5 + [429] * 7


def test_key_rotation_at_a_reaches_b(cluster: Cluster) -> None:
    """``flask m2m rotate-keys`` (here against the shared database): A and B publish the new
    key within M2M_KEY_REFRESH_SECONDS and sign with it after M2M_KEY_PUBLICATION_SECONDS, so
    no worker ever serves a JWKS without a key a token of A or B names; tokens signed before
    still work."""
    client_id, secret = cluster.new_client()
    before = kids(cluster.b)
    old_token = get_token(cluster.b, client_id, secret)
    out = flask_cli(cluster.env, "m2m", "rotate-keys")
    new_kid = out.split("New signing key ", 1)[1].split(";", 1)[0]
    assert new_kid not in before

    def signs_with_new_key() -> bool:
        headers = [jwt_part(get_token(s, client_id, secret), 0) for s in (cluster.a, cluster.b)]
        if any(h["kid"] == new_kid for h in headers):  # then every worker publishes it
            assert all(new_kid in kids(s) for s in (cluster.a, cluster.b) for _ in range(4))
        return all(h["kid"] == new_kid and h["typ"] == "at+jwt" for h in headers)

    poll(signs_with_new_key, PUBLICATION + BOUND + MARGIN, interval=0.05)
    assert before <= kids(cluster.b)  # the retired key stays published
    for server in (cluster.a, cluster.b):
        for _ in range(4):
            assert whoami(server, old_token).status_code == 200


def test_restart_loses_nothing_committed(cluster: Cluster) -> None:
    """Stop A (SIGTERM) and start it again: its clients, tokens, revocations, disabled
    clients and rotated secrets are all still in force."""
    kept_id, kept_secret = cluster.new_client()
    kept_token = get_token(cluster.a, kept_id, kept_secret)
    revoked_token = get_token(cluster.a, kept_id, kept_secret)
    assert (
        requests.post(
            cluster.a.url + "/m2m/revoke",
            data={"token": revoked_token},
            auth=(kept_id, kept_secret),
            timeout=10,
        ).status_code
        == 200
    )
    off_id, off_secret = cluster.new_client()
    off_token = get_token(cluster.a, off_id, off_secret)
    assert (
        cluster.manage(
            cluster.a, "PATCH", f"/clients/{off_id}", json={"disabled": True}
        ).status_code
        == 200
    )
    rotated_id, rotated_old = cluster.new_client()
    response = cluster.manage(cluster.a, "POST", f"/clients/{rotated_id}/secret", json={})
    rotated_new = response.json()["client_secret"]
    keys_before = kids(cluster.a)

    cluster.a.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(cluster.a.url + "/m2m/jwks.json", timeout=2)
    cluster.a.start()

    assert kids(cluster.a) == keys_before
    for _ in range(4):
        assert whoami(cluster.a, kept_token).status_code == 200
        assert whoami(cluster.a, revoked_token).status_code == 401
        assert whoami(cluster.a, off_token).status_code == 401
        assert token_at(cluster.a, kept_id, kept_secret).status_code == 200
        assert token_at(cluster.a, off_id, off_secret).status_code == 401
        assert token_at(cluster.a, rotated_id, rotated_old).status_code == 401
        assert token_at(cluster.a, rotated_id, rotated_new).status_code == 200
    listed = cluster.manage(cluster.a, "GET", "/clients", params={"limit": 200}).json()
    assert {kept_id, off_id, rotated_id} <= {c["client_id"] for c in listed["clients"]}
