"""Registering and replacing the public keys of ``private_key_jwt`` clients (RFC 7523 §2.2,
RFC 7591 §2 ``token_endpoint_auth_method``, ``jwks``, ``jwks_uri``): management API and CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.http import bearer
from helpers.key_clients import assertion, form, new_key, public_set

from flask_m2m.extension import get_state


def _admin(app: Flask) -> dict[str, str]:
    admin = register(app, "m2m:admin")
    return bearer(fetch_token(app.test_client(), admin))


def _create(client: FlaskClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/m2m/clients", json={"name": "svc", "scopes": ["read"], **body},
                       headers=headers)


def test_key_client_has_no_secret_and_gets_tokens(app: Flask) -> None:
    """A ``private_key_jwt`` client is created with its public keys and no secret; its
    assertions get tokens; rotating a secret for it is a 409 problem."""
    client, headers = app.test_client(), _admin(app)
    key = new_key("EC")
    created = _create(client, headers, token_endpoint_auth_method="private_key_jwt",
                      jwks=public_set(key))
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body.get("client_secret") is None and "secret_id" not in body
    assert body["token_endpoint_auth_method"] == "private_key_jwt"
    assert body["jwks"]["keys"][0]["kid"] == "k1" and body["jwks_uri"] is None
    client_id = body["client_id"]
    token = client.post("/m2m/token", data=form(assertion(key, client_id, alg="ES256")))
    assert token.status_code == 200
    rotated = client.post(f"/m2m/clients/{client_id}/secret", json={}, headers=headers)
    assert rotated.status_code == 409
    assert rotated.mimetype == "application/problem+json"
    events = client.get(f"/m2m/clients/{client_id}/events", headers=headers).get_json()
    created_event = events["events"][0]
    assert created_event["event"] == "client_created"
    assert created_event["changes"]["keys"][0]["kid"] == "k1"


def test_secret_client_is_unchanged(client: FlaskClient, app: Flask) -> None:
    body = _create(client, _admin(app)).get_json()
    assert body["token_endpoint_auth_method"] == "client_secret_basic"
    assert body["client_secret"] and body["jwks"] is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"token_endpoint_auth_method": "private_key_jwt"}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt", "jwks": {"keys": []}}, "jwks"),
        ({"token_endpoint_auth_method": "client_secret_post"}, "token_endpoint_auth_method"),
        ({"jwks": "PRIVATE"}, "jwks"),
        ({"token_endpoint_auth_method": "private_key_jwt",
          "jwks_uri": "http://keys.example/jwks.json"}, "jwks_uri"),
        ({"jwks_uri": "https://keys.example/jwks.json"}, "jwks_uri"),
    ],
)
def test_bad_key_registrations_are_422(app: Flask, extra: dict[str, Any], field: str) -> None:
    """Keys are required of a key client and refused to a secret client; private keys,
    symmetric keys and plain-http URIs (outside development) are refused."""
    app.config["TESTING"] = True
    client, headers = app.test_client(), _admin(app)
    if extra.get("jwks") == "PRIVATE":
        extra = {"token_endpoint_auth_method": "private_key_jwt",
                 "jwks": {"keys": [new_key().as_dict(private=True)]}}
    with app.app_context():
        get_state().server.published_keys.allow_insecure = False
    response = _create(client, headers, **extra)
    assert response.status_code in (400, 422), response.get_json()
    assert field in response.get_json().get("errors", {}) or response.status_code == 400


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "oct", "k": "c2VjcmV0"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
        {"kty": "EC", "crv": "secp256k1", "x": "AA", "y": "AA"},
        "not a key",
    ],
)
def test_invalid_keys_are_refused(client: FlaskClient, app: Flask, jwk: Any) -> None:
    response = _create(client, _admin(app), token_endpoint_auth_method="private_key_jwt",
                       jwks={"keys": [jwk]})
    assert response.status_code == 422
    assert "jwks" in response.get_json()["errors"]


def test_too_many_keys_are_refused(client: FlaskClient, app: Flask) -> None:
    keys = [new_key("EC", f"k{i}") for i in range(11)]
    response = _create(client, _admin(app), token_endpoint_auth_method="private_key_jwt",
                       jwks=public_set(*keys))
    assert response.status_code == 422


def test_keys_are_replaced_and_audited(app: Flask) -> None:
    """``PUT /clients/<id>/keys`` (and PATCH) replace the keys: the old key stops working."""
    client, headers = app.test_client(), _admin(app)
    old, new = new_key("EC", "old"), new_key("EC", "new")
    client_id = _create(client, headers, token_endpoint_auth_method="private_key_jwt",
                        jwks=public_set(old)).get_json()["client_id"]
    replaced = client.put(f"/m2m/clients/{client_id}/keys", json={"jwks": public_set(new)},
                          headers=headers)
    assert replaced.status_code == 200, replaced.get_json()
    assert replaced.get_json()["jwks"]["keys"][0]["kid"] == "new"
    refused = client.post("/m2m/token", data=form(assertion(old, client_id, alg="ES256")))
    assert refused.status_code == 401
    assert client.post(
        "/m2m/token", data=form(assertion(new, client_id, alg="ES256"))
    ).status_code == 200
    patched = client.patch(f"/m2m/clients/{client_id}", json={"jwks": public_set(old),
                                                              "name": "renamed"},
                           headers=headers)
    assert patched.status_code == 200
    assert patched.get_json()["name"] == "renamed"
    events = client.get(f"/m2m/clients/{client_id}/events?event=client_keys_replaced",
                        headers=headers).get_json()["events"]
    assert len(events) == 2
    thumbprints = {event["changes"]["keys"][0]["thumbprint"] for event in events}
    assert thumbprints == {new.thumbprint(), old.thumbprint()}
    back = client.patch(f"/m2m/clients/{client_id}",
                        json={"token_endpoint_auth_method": "client_secret_basic"},
                        headers=headers)
    assert back.status_code == 409


def test_secret_client_becomes_a_key_client(app: Flask) -> None:
    """Switching a secret client to ``private_key_jwt`` deletes its secrets."""
    client, headers = app.test_client(), _admin(app)
    creds = register(app, "read")
    key = new_key()
    switched = client.put(
        f"/m2m/clients/{creds['client_id']}/keys",
        json={"token_endpoint_auth_method": "private_key_jwt", "jwks": public_set(key)},
        headers=headers,
    )
    assert switched.status_code == 200
    assert client.get(f"/m2m/clients/{creds['client_id']}/secrets",
                      headers=headers).get_json() == {"secrets": []}
    old_way = client.post("/m2m/token", data={"grant_type": "client_credentials"},
                          auth=(creds["client_id"], creds["client_secret"]))
    assert old_way.status_code == 401
    assert client.post("/m2m/token", data=form(assertion(key, creds["client_id"]))).status_code \
        == 200
    secret_only = client.put(f"/m2m/clients/{register(app)['client_id']}/keys",
                             json={"jwks": public_set(key)}, headers=headers)
    assert secret_only.status_code == 422


@pytest.mark.parametrize("shape", ["set", "jwk", "pem"])
def test_cli_creates_a_key_client(app: Flask, tmp_path: Path, shape: str) -> None:
    """``flask m2m create-client --auth-method private_key_jwt --jwks-file`` takes a JWK Set,
    a single JWK or a PEM public key; ``set-client-keys`` replaces them."""
    key = new_key("RSA", "cli")
    path = tmp_path / "keys"
    if shape == "set":
        path.write_text(json.dumps(public_set(key)))
    elif shape == "jwk":
        path.write_text(json.dumps(key.as_dict(private=False)))
    else:
        path.write_bytes(key.as_pem(private=False))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["m2m", "create-client", "--name", "w", "--scope", "read",
                                 "--auth-method", "private_key_jwt", "--jwks-file", str(path),
                                 "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert "client_secret" not in data
    client_id = data["client_id"]
    signed = assertion(key, client_id, kid=shape != "pem")
    assert app.test_client().post("/m2m/token", data=form(signed)).status_code == 200
    human = runner.invoke(args=["m2m", "create-client", "--name", "h", "--jwks-file", str(path)])
    assert "private_key_jwt" in human.output and "client_secret" not in human.output
    other = new_key("EC", "cli2")
    path.write_text(json.dumps(public_set(other)))
    replaced = runner.invoke(args=["m2m", "set-client-keys", client_id, "--jwks-file", str(path)])
    assert replaced.exit_code == 0, replaced.output
    assert app.test_client().post(
        "/m2m/token", data=form(assertion(other, client_id, alg="ES256"))
    ).status_code == 200


def test_cli_refuses_private_and_bad_keys(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    private = tmp_path / "private.pem"
    private.write_bytes(new_key().as_pem(private=True))
    result = runner.invoke(args=["m2m", "create-client", "--name", "w", "--jwks-file",
                                 str(private)])
    assert result.exit_code != 0 and "private key" in result.output
    both = runner.invoke(args=["m2m", "create-client", "--name", "w", "--jwks-file",
                               str(private), "--jwks-uri", "https://k.example/j"])
    assert both.exit_code != 0
    missing = runner.invoke(args=["m2m", "set-client-keys", "m2m_nope", "--jwks-uri",
                                  "https://k.example/j"])
    assert missing.exit_code != 0


def test_console_creates_a_key_client_and_replaces_its_keys(tmp_path: Path) -> None:
    """The example console: pasting a JWK Set makes a client without a secret; pasting
    another replaces its keys."""
    from helpers.console import console_app, login, post_form

    with console_app(tmp_path) as app:
        browser = app.test_client()
        login(browser)
        key, other = new_key("EC", "c1"), new_key("EC", "c2")
        created = post_form(browser, "/console/clients/new", {
            "name": "keyed", "scopes": "read", "jwks": json.dumps(public_set(key))})
        assert created.status_code == 302, created.get_data(as_text=True)
        page = browser.get(created.headers["Location"]).get_data(as_text=True)
        assert "Public keys" in page and "c1" in page and "Rotate secret" not in page
        client_id = created.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
        bad = post_form(browser, f"/console/clients/{client_id}/keys",
                        {"jwks": json.dumps(other.as_dict(private=True))})
        assert bad.status_code == 422
        replaced = post_form(browser, f"/console/clients/{client_id}/keys",
                             {"jwks": other.as_pem(private=False).decode()})
        assert replaced.status_code == 302
        metadata = browser.get("/.well-known/oauth-authorization-server").get_json()
        signed = assertion(other, client_id, alg="ES256", kid=False, aud=metadata["issuer"])
        token = app.test_client().post(metadata["token_endpoint"], data=form(signed))
        assert token.status_code == 200
