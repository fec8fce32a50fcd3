"""Audiences on the authorization server: RFC 8707 resource indicators.

A client's ``audiences`` are the resources it may ask tokens for; the token request's
``resource`` parameter (RFC 8707 §2, may repeat) selects the token's ``aud``; anything else is
400 ``invalid_target`` (§2). Without ``resource`` the default audience, as before.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import register
from helpers.http import basic_auth, bearer

from flask_m2m.extension import get_state
from flask_m2m.lifecycle import get_client
from flask_m2m.policy import MAX_AUDIENCES

INVENTORY = "https://inventory.test"
BILLING = "https://billing.test/api"
ISSUER = "https://issuer.test"  # conftest's M2M_ISSUER, the default audience

Creds = dict[str, Any]


def token_response(
    client: FlaskClient, creds: Creds, *resources: str, scope: str | None = None
) -> Any:
    data: list[tuple[str, str]] = [("grant_type", "client_credentials")]
    data += [("resource", r) for r in resources]
    if scope is not None:
        data.append(("scope", scope))
    body = "&".join(f"{k}={v}" for k, v in data)
    return client.post(
        "/m2m/token",
        data=body,
        content_type="application/x-www-form-urlencoded",
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )


def unverified(access_token: str) -> dict[str, Any]:
    """The claims of a compact JWT, unverified (the signature is tested elsewhere)."""
    payload = access_token.split(".")[1]
    result: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return result


@pytest.fixture
def aud_app(app_factory: Callable[..., Flask]) -> Flask:
    return app_factory()


def fleet_client(app: Flask, scopes: str = "read write") -> Creds:
    return register(app, scopes, audiences=[INVENTORY, BILLING])


# -- the token request ---------------------------------------------------------------------------
def test_one_resource_gives_a_string_aud(aud_app: Flask) -> None:
    """RFC 8707 §2: the requested resource is the token's audience."""
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = token_response(client, creds, INVENTORY)
    assert response.status_code == 200, response.data
    assert unverified(response.get_json()["access_token"])["aud"] == INVENTORY


def test_several_resources_give_a_list_aud(aud_app: Flask) -> None:
    """RFC 8707 §2: ``resource`` may repeat; each becomes an audience (RFC 7519 §4.1.3 array)."""
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = token_response(client, creds, INVENTORY, BILLING)
    assert response.status_code == 200, response.data
    assert unverified(response.get_json()["access_token"])["aud"] == [INVENTORY, BILLING]


def test_without_resource_the_default_audience(aud_app: Flask) -> None:
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = token_response(client, creds)
    assert unverified(response.get_json()["access_token"])["aud"] == ISSUER


@pytest.mark.parametrize(
    "resource",
    ["https://elsewhere.test", "not-a-uri", "https://inventory.test#frag", "/relative", "%20"],
)
def test_resource_not_allowed_is_invalid_target(aud_app: Flask, resource: str) -> None:
    """RFC 8707 §2: a resource that is not an absolute URI, has a fragment, or that the client
    may not ask for: 400 ``invalid_target``."""
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = token_response(client, creds, resource)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"
    assert response.headers["Cache-Control"] == "no-store"


def test_one_bad_resource_among_good_ones_refuses_all(aud_app: Flask) -> None:
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = token_response(client, creds, INVENTORY, "https://elsewhere.test")
    assert response.get_json()["error"] == "invalid_target"


def test_client_without_audiences_cannot_name_a_resource(aud_app: Flask) -> None:
    client, creds = aud_app.test_client(), register(aud_app)
    response = token_response(client, creds, INVENTORY)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"


def test_only_resource_may_repeat(aud_app: Flask) -> None:
    """RFC 6749 §3.2: other parameters still must not repeat."""
    client, creds = aud_app.test_client(), fleet_client(aud_app)
    response = client.post(
        "/m2m/token",
        data="grant_type=client_credentials&scope=read&scope=write",
        content_type="application/x-www-form-urlencoded",
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"
    revoke = client.post(
        "/m2m/revoke",
        data="token=a&token=b&resource=x&resource=y",
        content_type="application/x-www-form-urlencoded",
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert revoke.status_code == 400


# -- require_scope on the authorization server --------------------------------------------------
def test_server_routes_refuse_tokens_for_another_audience(aud_app: Flask) -> None:
    """A token minted for another resource gets 401 ``invalid_token`` at the server's own
    routes (RFC 6750 §3.1); a list ``aud`` holding the server's own audience is accepted."""
    client = aud_app.test_client()
    creds = register(aud_app, "read", audiences=[INVENTORY, ISSUER])
    foreign = token_response(client, creds, INVENTORY).get_json()["access_token"]
    response = client.get("/api/read", headers=bearer(foreign))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
    both = token_response(client, creds, INVENTORY, ISSUER).get_json()["access_token"]
    assert client.get("/api/read", headers=bearer(both)).status_code == 200
    default = token_response(client, creds).get_json()["access_token"]
    assert client.get("/api/read", headers=bearer(default)).status_code == 200


# -- opaque tokens and introspection -------------------------------------------------------------
@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_introspection_returns_the_audience(
    app_factory: Callable[..., Flask], token_format: str
) -> None:
    """RFC 7662 §2.2 ``aud``: a string for one audience, an array for several."""
    app = app_factory(M2M_TOKEN_FORMAT=token_format)
    client, creds = app.test_client(), fleet_client(app)
    auth = basic_auth(creds["client_id"], creds["client_secret"])
    for resources, expected in (
        ((INVENTORY,), INVENTORY),
        ((INVENTORY, BILLING), [INVENTORY, BILLING]),
    ):
        token = token_response(client, creds, *resources).get_json()["access_token"]
        body = client.post("/m2m/introspect", data={"token": token}, headers=auth).get_json()
        assert body["active"] is True
        assert body["aud"] == expected


def test_opaque_token_refuses_more_audiences_than_it_can_store(
    app_factory: Callable[..., Flask],
) -> None:
    """Opaque tokens store their audiences in 512 characters: more is ``invalid_target``
    rather than a cut audience."""
    app = app_factory(M2M_TOKEN_FORMAT="opaque")
    many = [f"https://service-{n:02d}.example.test/{'p' * 20}" for n in range(MAX_AUDIENCES)]
    creds = register(app, "read", audiences=many)
    client = app.test_client()
    response = token_response(client, creds, *many)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_target"
    assert token_response(client, creds, *many[:5]).status_code == 200


# -- token reuse and lifetimes -------------------------------------------------------------------
def test_token_reuse_is_per_audience(app_factory: Callable[..., Flask]) -> None:
    """``M2M_REUSE_TOKENS`` hands back the token of the same scopes *and* audience only."""
    app = app_factory(M2M_REUSE_TOKENS=True)
    client, creds = app.test_client(), fleet_client(app)
    inventory = token_response(client, creds, INVENTORY).get_json()["access_token"]
    assert token_response(client, creds, INVENTORY).get_json()["access_token"] == inventory
    billing = token_response(client, creds, BILLING).get_json()["access_token"]
    default = token_response(client, creds).get_json()["access_token"]
    both = token_response(client, creds, INVENTORY, BILLING).get_json()["access_token"]
    assert len({inventory, billing, default, both}) == 4
    assert unverified(billing)["aud"] == BILLING


def test_audience_lifetimes_shorten_tokens(app_factory: Callable[..., Flask]) -> None:
    """``M2M_AUDIENCE_LIFETIMES``: a token lives the shortest of its audiences' lifetimes."""
    app = app_factory(M2M_AUDIENCE_LIFETIMES=json.dumps({BILLING: 120, INVENTORY: 600}))
    client, creds = app.test_client(), fleet_client(app)

    def lifetime(*resources: str) -> int:
        body = token_response(client, creds, *resources).get_json()
        claims = unverified(body["access_token"])
        assert body["expires_in"] in (
            claims["exp"] - claims["iat"],
            claims["exp"] - claims["iat"] - 1,
        )
        return int(claims["exp"] - claims["iat"])

    assert lifetime(INVENTORY) == 600
    assert lifetime(INVENTORY, BILLING) == 120
    assert lifetime() == 3600


@pytest.mark.parametrize(
    "value", ['{"not a uri": 60}', '{"https://a.test": 0}', '{"https://a.test": "60"}', "[1]", "{"]
)
def test_audience_lifetimes_are_checked(app_factory: Callable[..., Flask], value: str) -> None:
    from flask_m2m.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="M2M_AUDIENCE_LIFETIMES"):
        app_factory(M2M_AUDIENCE_LIFETIMES=value)


# -- managing a client's audiences ---------------------------------------------------------------
def admin_headers(app: Flask) -> dict[str, str]:
    admin = register(app, "m2m:admin")
    response = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(admin["client_id"], admin["client_secret"]),
    )
    return bearer(response.get_json()["access_token"])


def test_management_api_creates_and_patches_audiences(aud_app: Flask) -> None:
    client, headers = aud_app.test_client(), admin_headers(aud_app)
    created = client.post(
        "/m2m/clients",
        json={"name": "svc", "scopes": ["read"], "audiences": [INVENTORY]},
        headers=headers,
    )
    assert created.status_code == 201, created.data
    assert created.get_json()["audiences"] == [INVENTORY]
    client_id = created.get_json()["client_id"]
    patched = client.patch(
        f"/m2m/clients/{client_id}", json={"audiences": [BILLING, INVENTORY]}, headers=headers
    )
    assert patched.status_code == 200
    assert patched.get_json()["audiences"] == [BILLING, INVENTORY]
    shown = client.get(f"/m2m/clients/{client_id}", headers=headers).get_json()
    assert shown["audiences"] == [BILLING, INVENTORY]
    plain = client.post("/m2m/clients", json={"name": "plain"}, headers=headers).get_json()
    assert plain["audiences"] == []
    events = client.get(f"/m2m/clients/{client_id}/events", headers=headers).get_json()
    changes = [e for e in events["events"] if e["event"] == "client_updated"]
    assert changes[0]["changes"]["audiences"] == {"from": [INVENTORY], "to": [BILLING, INVENTORY]}


@pytest.mark.parametrize(
    "audiences",
    [
        ["relative/path"],
        ["https://a.test/#x"],
        ["https://a.test/ b"],
        [""],
        ["https://a.test/" + "x" * 300],
        "https://a.test",
        [f"https://{n}.test" for n in range(MAX_AUDIENCES + 1)],
        [1],
    ],
)
def test_management_api_refuses_bad_audiences(aud_app: Flask, audiences: Any) -> None:
    """Every bad value is a 4xx problem naming ``audiences``, never a 5xx."""
    client, headers = aud_app.test_client(), admin_headers(aud_app)
    response = client.post(
        "/m2m/clients", json={"name": "svc", "audiences": audiences}, headers=headers
    )
    assert response.status_code in (400, 422), response.data
    assert "audiences" in response.get_json()["errors"]
    created = client.post("/m2m/clients", json={"name": "svc"}, headers=headers).get_json()
    patched = client.patch(
        f"/m2m/clients/{created['client_id']}", json={"audiences": audiences}, headers=headers
    )
    assert patched.status_code in (400, 422)
    assert "audiences" in patched.get_json()["errors"]


def test_cli_create_and_set_audiences(aud_app: Flask) -> None:
    runner = aud_app.test_cli_runner()
    result = runner.invoke(
        args=["m2m", "create-client", "--name", "svc", "--scope", "read",
              "--audience", INVENTORY, "--audience", BILLING, "--json"]
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["audiences"] == [INVENTORY, BILLING]
    changed = runner.invoke(args=["m2m", "set-audiences", data["client_id"], "--audience", BILLING])
    assert changed.exit_code == 0, changed.output
    with aud_app.app_context():
        assert get_client(get_state(aud_app), data["client_id"]).audiences == [BILLING]
    cleared = runner.invoke(args=["m2m", "set-audiences", data["client_id"]])
    assert cleared.exit_code == 0
    bad = runner.invoke(args=["m2m", "set-audiences", data["client_id"], "--audience", "x"])
    assert bad.exit_code != 0
    assert "audience" in bad.output
    refused = runner.invoke(args=["m2m", "create-client", "--name", "x", "--audience", "no-uri"])
    assert refused.exit_code != 0


def test_openapi_documents_audiences_and_resource(aud_app: Flask) -> None:
    spec = aud_app.test_client().get("/m2m/openapi.json").get_json()
    schemas = spec["components"]["schemas"]
    for name in ("Client", "ClientCreate", "ClientUpdate"):
        assert schemas[name]["properties"]["audiences"]["type"] == "array"
    assert "resource" in schemas["TokenRequest"]["properties"]
