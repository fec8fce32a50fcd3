"""The client helper with ``dpop=`` end to end over real HTTP (RFC 9449): bound tokens, a
proof per request through httpx and requests, nonce retries (§8-9) at the token endpoint and
at the API, and the example worker's ``--dpop``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from flask import Flask
from helpers.apps import register
from helpers.console import console_app
from helpers.http import LiveServer
from joserfc.jwk import OKPKey

from flask_m2m.client import ClientCredentials, ClientCredentialsAuth
from flask_m2m.extension import get_state

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module", params=[False, True], ids=["no-nonce", "nonce"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Flask, str]]:
    """The example app on a live server; with server nonces required or not."""
    config = {"M2M_DPOP_REQUIRE_NONCE": request.param}
    with console_app(tmp_path_factory.mktemp("dpop"), **config) as app:
        server = LiveServer(app)
        yield app, server.url
        server.stop()


def credentials(served: tuple[Flask, str], **kwargs: Any) -> ClientCredentials:
    app, url = served
    client = register(app)
    return ClientCredentials(
        token_endpoint=f"{url}/m2m/token",
        client_id=client["client_id"],
        client_secret=client["client_secret"],
        **kwargs,
    )


def bound_key(app: Flask, token: str) -> str | None:
    with app.app_context():
        return get_state(app).tokens.decode(token).jkt


def test_httpx_calls_with_dpop(served: tuple[Flask, str]) -> None:
    app, url = served
    creds = credentials(served, dpop=True)
    assert creds.dpop is not None
    auth = ClientCredentialsAuth(creds)
    with httpx.Client(base_url=url, auth=auth) as http:
        for n in range(3):
            created = http.post("/api/items", json={"name": f"item {n}"})
            assert created.status_code == 201, created.text
            assert http.get("/api/items").status_code == 200
    assert creds.fetch_count == (2 if app.config["M2M_DPOP_REQUIRE_NONCE"] else 1)
    assert bound_key(app, creds.token()) == creds.dpop.jkt


def test_requests_calls_with_dpop(served: tuple[Flask, str]) -> None:
    app, url = served
    creds = credentials(served, dpop=True)
    auth = ClientCredentialsAuth(creds)
    with requests.Session() as http:
        for n in range(3):
            response = http.post(f"{url}/api/items", json={"name": f"r{n}"}, auth=auth)
            assert response.status_code == 201, response.text
            assert http.get(f"{url}/api/items?limit=5", auth=auth).status_code == 200


async def _async_calls(url: str, creds: ClientCredentials) -> list[int]:
    async with httpx.AsyncClient(base_url=url, auth=ClientCredentialsAuth(creds)) as http:
        return [(await http.get("/api/items")).status_code for _ in range(2)]


def test_async_httpx_with_dpop(served: tuple[Flask, str]) -> None:
    creds = credentials(served, dpop=True)
    assert asyncio.run(_async_calls(served[1], creds)) == [200, 200]


def test_given_ed25519_key(served: tuple[Flask, str]) -> None:
    """``dpop=`` a private JWK: its thumbprint is the tokens' ``cnf.jkt``."""
    app, url = served
    key = OKPKey.generate_key("Ed25519", private=True)
    creds = credentials(served, dpop=key.as_dict(private=True))
    assert creds.dpop is not None and creds.dpop.jkt == key.thumbprint()
    response = httpx.get(f"{url}/api/items", auth=ClientCredentialsAuth(creds))
    assert response.status_code == 200, response.text
    assert bound_key(app, creds.token()) == key.thumbprint()


def test_headers_for_a_request(served: tuple[Flask, str]) -> None:
    """``headers(method, url)``: the DPoP scheme and a proof (with the nonce this origin
    last gave, here at its token endpoint)."""
    _, url = served
    creds = credentials(served, dpop=True)
    headers = creds.headers("GET", f"{url}/api/items")
    assert headers["Authorization"].startswith("DPoP ")
    assert httpx.get(f"{url}/api/items", headers=headers).status_code == 200
    with pytest.raises(ValueError):
        creds.headers()


def test_public_key_is_refused_as_dpop_key() -> None:
    key = OKPKey.generate_key("Ed25519", private=True)
    with pytest.raises(ValueError):
        ClientCredentials(
            "https://as.test/token", client_id="c", client_secret="s",
            dpop=key.as_dict(private=False),
        )


def test_worker_with_dpop(served: tuple[Flask, str]) -> None:
    app, url = served
    client = register(app)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("M2M_", "FLASK_"))}
    env.update(
        M2M_CLIENT_ID=client["client_id"], M2M_CLIENT_SECRET=client["client_secret"],
        M2M_ISSUER=url,
    )
    done = subprocess.run(
        [sys.executable, "-m", "example.worker", "--dpop", "--count", "2", "--interval", "0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "DPoP key" in done.stdout and "4 API calls" in done.stdout
    assert client["client_secret"] not in done.stdout + done.stderr


@pytest.mark.parametrize("library", ["httpx", "requests"])
def test_api_nonce_retry(served: tuple[Flask, str], library: str) -> None:
    """§9: a 401 ``use_dpop_nonce`` from the API is retried once with its ``DPoP-Nonce``,
    with the same token (no new token request)."""
    app, url = served
    creds = credentials(served, dpop=True)
    creds.token()
    assert creds.dpop is not None
    creds.dpop._nonces[url] = "1.stale"  # as if the server's nonce had moved on
    auth = ClientCredentialsAuth(creds)
    if library == "httpx":
        status = httpx.get(f"{url}/api/items", auth=auth).status_code
    else:
        status = requests.get(f"{url}/api/items", auth=auth, timeout=10).status_code
    assert status == 200
    requires = app.config["M2M_DPOP_REQUIRE_NONCE"]
    assert auth.retry_count == (1 if requires else 0)
    assert creds.fetch_count == (2 if requires else 1)
