"""In-process micro-benchmarks (pytest-benchmark), not part of the ``tests/`` run:

    python benchmarks/run.py --micro      (or: python -m pytest benchmarks/test_micro.py)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from helpers.apps import fetch_token, make_app, register
from helpers.http import basic_auth, bearer

from flask_m2m import get_state
from flask_m2m.decorators import authenticate_request

pytest.importorskip("pytest_benchmark")

NEVER = "1000000000/minute"  # a rate limit no benchmark reaches


def _app(tmp_path: Any, **config: Any) -> Iterator[Flask]:
    app, db = make_app(f"sqlite:///{tmp_path / 'micro.db'}", **config)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture(params=["RS256", "ES256", "EdDSA"])
def alg_app(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[Flask]:
    yield from _app(tmp_path, M2M_SIGNING_ALG=request.param, M2M_TOKEN_RATE_LIMIT=NEVER)


def test_issue(benchmark: Any, alg_app: Flask) -> None:
    """``TokenService.issue``: claims and signature of one token."""
    creds = register(alg_app)
    with alg_app.app_context():
        state = get_state(alg_app)
        client = state.server.credentials.get(creds["client_id"]).client  # type: ignore[union-attr]
        benchmark(state.tokens.issue, client, "read", "https://issuer.test", "https://issuer.test")


def test_token_endpoint(benchmark: Any, alg_app: Flask) -> None:
    """One ``POST /m2m/token`` through the test client (limiter, auth, grant, signature)."""
    creds = register(alg_app)
    client = alg_app.test_client()
    headers = basic_auth(creds["client_id"], creds["client_secret"])
    data = {"grant_type": "client_credentials", "scope": "read"}
    response = benchmark(client.post, "/m2m/token", data=data, headers=headers)
    assert response.status_code == 200


@pytest.fixture
def scoped_app(tmp_path: Any) -> Iterator[Flask]:
    yield from _app(tmp_path, M2M_TOKEN_RATE_LIMIT=NEVER)


def test_require_scope_check(benchmark: Any, scoped_app: Flask) -> None:
    """``require_scope("read")``'s check alone, on a token already verified once."""
    token = fetch_token(scoped_app.test_client(), register(scoped_app), "read")
    with scoped_app.test_request_context("/api/read", headers=bearer(token)):
        benchmark(authenticate_request, ("read",))


def test_require_scope_route(benchmark: Any, scoped_app: Flask) -> None:
    """One ``GET`` of a ``require_scope("read")`` route through the test client."""
    client = scoped_app.test_client()
    headers = bearer(fetch_token(client, register(scoped_app), "read"))
    response = benchmark(client.get, "/api/read", headers=headers)
    assert response.status_code == 200


INVENTORY = "https://inventory.test"


@pytest.fixture
def fleet(tmp_path: Any) -> Iterator[tuple[Flask, Flask, str]]:
    """The authorization server over HTTP, the example inventory trusting it (a
    ``ResourceServer``), and a token for the inventory's audience."""
    from example.inventory import create_app
    from tests.helpers.http import LiveServer

    for auth in _app(tmp_path, M2M_TOKEN_RATE_LIMIT=NEVER, M2M_ISSUER=None, M2M_AUDIENCE=INVENTORY):
        server = LiveServer(auth)
        creds = register(auth)
        token = auth.test_client().post(
            "/m2m/token",
            data={"grant_type": "client_credentials", "scope": "read"},
            headers=basic_auth(creds["client_id"], creds["client_secret"]),
            base_url=server.url,
        ).get_json()["access_token"]
        inventory = create_app({"M2M_ISSUER": server.url, "M2M_AUDIENCE": INVENTORY})
        first = inventory.test_client().get("/inventory/whoami", headers=bearer(token))
        assert first.status_code == 200
        yield auth, inventory, token
        server.stop()


def test_require_scope_check_resource_server(
    benchmark: Any, fleet: tuple[Flask, Flask, str]
) -> None:
    """The same check on a ``ResourceServer``, token and JWKS already cached."""
    _, inventory, token = fleet
    with inventory.test_request_context("/inventory/whoami", headers=bearer(token)):
        benchmark(authenticate_request, ("read",))


def test_require_scope_route_resource_server(
    benchmark: Any, fleet: tuple[Flask, Flask, str]
) -> None:
    """One ``GET /inventory/whoami`` of the inventory through the test client."""
    _, inventory, token = fleet
    client = inventory.test_client()
    response = benchmark(client.get, "/inventory/whoami", headers=bearer(token))
    assert response.status_code == 200


def test_require_scope_check_resource_server_uncached(
    benchmark: Any, fleet: tuple[Flask, Flask, str]
) -> None:
    """The check with the verified-token cache off: the signature is verified every time
    (JWKS cached)."""
    _, inventory, token = fleet
    protector = inventory.extensions["m2m.protector"]
    with inventory.test_request_context("/inventory/whoami", headers=bearer(token)):

        def check() -> None:
            protector._cache.clear()
            authenticate_request(("read",))

        benchmark(check)


# -- private_key_jwt and DPoP: each call needs a fresh single-use assertion or proof ---------
ISSUER = "https://issuer.test"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_token_endpoint_private_key_jwt(benchmark: Any, scoped_app: Flask) -> None:
    """One ``POST /m2m/token`` of a key-only client with a fresh ES256 assertion (jti
    recorded in the replay table)."""
    from benchmarks.proofs import assertion_body, new_key, public_jwks
    from flask_m2m.lifecycle import create_client

    key = new_key("micro-1")
    with scoped_app.app_context():
        state = get_state(scoped_app)
        model, _ = create_client(
            state, actor="system", name="keyed", scopes="read",
            token_endpoint_auth_method="private_key_jwt", jwks=public_jwks(key),
        )  # fmt: skip
        state.db.session.commit()
        client_id = model.client_id
    client = scoped_app.test_client()

    def fresh() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return ("/m2m/token",), {"data": assertion_body(key, client_id, ISSUER), "headers": FORM}

    response = benchmark.pedantic(client.post, setup=fresh, rounds=300, warmup_rounds=5)
    assert response.status_code == 200, response.get_json()


def test_token_endpoint_dpop(benchmark: Any, scoped_app: Flask) -> None:
    """One DPoP-bound ``POST /m2m/token`` (secret client, fresh proof)."""
    from benchmarks.proofs import dpop_proof, new_key

    key = new_key()
    creds = register(scoped_app)
    client = scoped_app.test_client()
    auth = basic_auth(creds["client_id"], creds["client_secret"])
    body = "grant_type=client_credentials&scope=read"

    def fresh() -> tuple[tuple[Any, ...], dict[str, Any]]:
        proof = dpop_proof(key, "POST", "http://localhost/m2m/token")
        return ("/m2m/token",), {"data": body, "headers": {**auth, **FORM, "DPoP": proof}}

    response = benchmark.pedantic(client.post, setup=fresh, rounds=300, warmup_rounds=5)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["token_type"] == "DPoP"


def test_require_scope_route_dpop(benchmark: Any, scoped_app: Flask) -> None:
    """One ``GET`` of a ``require_scope("read")`` route with a DPoP-bound token (verified
    once) and a fresh proof."""
    from benchmarks.proofs import dpop_proof, new_key

    key = new_key()
    creds = register(scoped_app)
    client = scoped_app.test_client()
    response = client.post(
        "/m2m/token",
        data="grant_type=client_credentials&scope=read",
        headers={
            **basic_auth(creds["client_id"], creds["client_secret"]),
            **FORM,
            "DPoP": dpop_proof(key, "POST", "http://localhost/m2m/token"),
        },
    )
    token = response.get_json()["access_token"]

    def fresh() -> tuple[tuple[Any, ...], dict[str, Any]]:
        proof = dpop_proof(key, "GET", "http://localhost/api/read", token)
        return ("/api/read",), {"headers": {"Authorization": f"DPoP {token}", "DPoP": proof}}

    response = benchmark.pedantic(client.get, setup=fresh, rounds=300, warmup_rounds=5)
    assert response.status_code == 200, response.get_json()
