"""The client helper authenticating with a private key (RFC 7523 ``private_key_jwt``)
instead of a secret, against a live server, with httpx and requests."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from flask import Flask
from helpers.key_clients import new_key, public_set, register_key_client

from flask_m2m.client import ClientCredentials, ClientCredentialsAuth, TokenError


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP"])
@pytest.mark.parametrize("form", ["path", "pem", "jwk"])
def test_helper_signs_assertions(
    app_factory: Callable[..., Flask],
    live_server_factory: Callable[[Flask], Any],
    tmp_path: Path,
    kind: str,
    form: str,
) -> None:
    """Each token request carries a fresh assertion (new ``jti``), whose ``aud`` is the token
    endpoint; the helper's token opens a protected route through httpx and requests."""
    app = app_factory(M2M_ISSUER=None)
    key = new_key(kind, kid="worker" if form == "jwk" else None)
    client_id = register_key_client(app, jwks=public_set(key), scopes="read")
    server = live_server_factory(app)
    pem = key.as_pem(private=True)
    private_key: Any = {"path": tmp_path / "key.pem", "pem": pem,
                        "jwk": key.as_dict(private=True)}[form]
    if form == "path":
        private_key.write_bytes(pem)
        private_key = str(private_key)
    creds = ClientCredentials(issuer=server.url, client_id=client_id, private_key=private_key)
    auth = ClientCredentialsAuth(creds)
    assert httpx.get(server.url + "/api/read", auth=auth).status_code == 200
    assert requests.get(server.url + "/api/read", auth=auth, timeout=10).status_code == 200
    first = creds.token()
    creds.invalidate()
    assert creds.token() != first  # a second assertion was accepted: not a replay
    assert creds.fetch_count == 2


def test_helper_reports_a_refused_key(
    app_factory: Callable[..., Flask], live_server_factory: Callable[[Flask], Any]
) -> None:
    app = app_factory(M2M_ISSUER=None)
    client_id = register_key_client(app, new_key("EC"))
    server = live_server_factory(app)
    wrong = new_key("EC").as_pem(private=True)
    creds = ClientCredentials(server.url + "/m2m/token", client_id=client_id, private_key=wrong)
    with pytest.raises(TokenError) as raised:
        creds.token()
    assert raised.value.error == "invalid_client" and raised.value.status_code == 401


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"client_secret": "s" * 40, "private_key": b"x"},
        {"private_key": b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
        {"private_key": json.loads(json.dumps(new_key().as_dict(private=False)))},
        {"private_key": new_key().as_pem(private=True), "assertion_lifetime": 0},
    ],
)
def test_helper_needs_one_usable_credential(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        ClientCredentials("https://issuer.test/m2m/token", client_id="c", **kwargs)
