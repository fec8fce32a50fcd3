"""The fleet under real processes: the example authorization server and the example inventory
service (a :class:`~flask_m2m.ResourceServer`) each under gunicorn, talking over HTTP.

Covers RFC 8707 §2 (a token's ``aud`` is the resource asked for; ``invalid_target``), RFC 9068
§4 (the inventory checks ``aud``; the server's own routes check theirs), key rotation seen by
the inventory without a restart, offline verification while the authorization server is down,
and interoperability with PyJWT.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import requests
from helpers.servers import (
    ROOT,
    Gunicorn,
    create_client_cli,
    example_env,
    flask_cli,
    jwt_part,
    poll,
)

pytestmark = pytest.mark.slow

#: Seconds within which the authorization server signs with a rotated key.
KEY_REFRESH = 1
MARGIN = 20


@dataclass
class Fleet:
    auth: Gunicorn
    inventory: Gunicorn
    env: dict[str, str]
    client: dict[str, Any]

    def token_response(self, *resources: str, scope: str | None = None) -> requests.Response:
        data: list[tuple[str, str]] = [("grant_type", "client_credentials")]
        data += [("resource", r) for r in resources]
        if scope is not None:
            data.append(("scope", scope))
        return requests.post(
            self.auth.url + "/m2m/token",
            data=data,
            auth=(self.client["client_id"], self.client["client_secret"]),
            timeout=10,
        )

    def token(self, *resources: str) -> str:
        response = self.token_response(*resources)
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])


def get(server: Gunicorn, path: str, token: str) -> requests.Response:
    return requests.get(server.url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """The example authorization server and the inventory, two gunicorn workers each; a
    client allowed the inventory's audience, made with the CLI."""
    root: Path = tmp_path_factory.mktemp("fleet")
    env = example_env(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{root / 'auth.db'}",
        SECRET_KEY="fleet-secret-key-0123456789abcdefghij",
        M2M_KEY_ENCRYPTION_SECRET="fleet-key-encryption-secret-0123456789",
        M2M_KEY_REFRESH_SECONDS=KEY_REFRESH,
        M2M_KEY_PUBLICATION_SECONDS=KEY_REFRESH + 1,
        M2M_FAILED_AUTH_RATE_LIMIT="10000/minute",
        M2M_TOKEN_RATE_LIMIT="10000/minute",
    )
    auth = Gunicorn(env, root / "auth.log")
    env["FLASK_M2M_ISSUER"] = auth.url
    inventory_env = example_env(M2M_ISSUER=auth.url, M2M_JWKS_MIN_REFRESH_SECONDS=0)
    inventory = Gunicorn(
        inventory_env,
        root / "inventory.log",
        app="example.inventory:create_app()",
        ready_path="/.well-known/oauth-protected-resource",
    )
    inventory_env["FLASK_M2M_AUDIENCE"] = inventory.url
    servers = [auth, inventory]
    try:
        auth.start()
        inventory.start()
        scopes = "read write inventory:read"
        client = create_client_cli(env, "worker", scopes, "--audience", inventory.url)
        assert client["audiences"] == [inventory.url]
        yield Fleet(auth, inventory, env, client)
    finally:
        for server in servers:
            server.stop()
    for server in servers:
        assert "Traceback" not in server.output(), server.output()


def test_inventory_token_works_only_at_the_inventory(fleet: Fleet) -> None:
    """RFC 8707 §2: a token for the inventory's audience is accepted there and refused with
    401 ``invalid_token`` at the authorization server's ``/api/*`` (RFC 6750 §3.1)."""
    token = fleet.token(fleet.inventory.url)
    assert jwt_part(token, 1)["aud"] == fleet.inventory.url
    whoami = get(fleet.inventory, "/inventory/whoami", token)
    assert whoami.status_code == 200, whoami.text
    assert whoami.json()["aud"] == fleet.inventory.url
    assert whoami.json()["client_id"] == fleet.client["client_id"]
    assert get(fleet.inventory, "/inventory/items", token).status_code == 200
    for path in ("/api/whoami", "/api/items"):
        refused = get(fleet.auth, path, token)
        assert refused.status_code == 401
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_server_token_works_only_at_the_server(fleet: Fleet) -> None:
    """Without ``resource`` the token is for the authorization server's own audience (its
    issuer): accepted at ``/api/*``, refused by the inventory."""
    token = fleet.token()
    assert jwt_part(token, 1)["aud"] == fleet.auth.url
    assert get(fleet.auth, "/api/items", token).status_code == 200
    refused = get(fleet.inventory, "/inventory/items", token)
    assert refused.status_code == 401
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_resource_not_allowed_is_invalid_target(fleet: Fleet) -> None:
    """RFC 8707 §2: 400 ``invalid_target`` for a resource the client may not ask for."""
    for resources in (("http://127.0.0.1:1",), (fleet.inventory.url, "https://other.test")):
        response = fleet.token_response(*resources)
        assert response.status_code == 400
        assert response.json()["error"] == "invalid_target"


def test_token_for_both_audiences_works_at_both(fleet: Fleet) -> None:
    """``flask m2m set-audiences`` adds the server's own audience; a token asked for both
    (``resource`` twice, RFC 8707 §2) has a list ``aud`` and works at both services."""
    client_id = fleet.client["client_id"]
    both = (fleet.inventory.url, fleet.auth.url)
    flask_cli(
        fleet.env, "m2m", "set-audiences", client_id, "--audience", both[0], "--audience", both[1]
    )
    try:

        def granted() -> str | None:  # once every worker has read the change
            response = fleet.token_response(*both)
            return str(response.json()["access_token"]) if response.status_code == 200 else None

        token = poll(granted, MARGIN)
        assert jwt_part(token, 1)["aud"] == list(both)
        assert get(fleet.inventory, "/inventory/items", token).status_code == 200
        assert get(fleet.auth, "/api/items", token).status_code == 200
    finally:
        flask_cli(fleet.env, "m2m", "set-audiences", client_id, "--audience", both[0])


def test_pyjwt_validates_the_inventory_token(fleet: Fleet) -> None:
    """Interop: PyJWT, given only the issuer's published JWK set, verifies the token for the
    inventory's audience and refuses it for the authorization server's."""
    token = fleet.token(fleet.inventory.url)
    jwks = requests.get(fleet.auth.url + "/m2m/jwks.json", timeout=10).json()
    kid = jwt_part(token, 0)["kid"]
    key = pyjwt.PyJWK.from_dict(next(k for k in jwks["keys"] if k["kid"] == kid))
    claims = pyjwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=fleet.inventory.url,
        issuer=fleet.auth.url,
        options={"require": ["exp", "iat", "aud", "iss", "sub"]},
    )
    assert claims["client_id"] == fleet.client["client_id"]
    assert pyjwt.get_unverified_header(token)["typ"] == "at+jwt"
    with pytest.raises(pyjwt.InvalidAudienceError):
        pyjwt.decode(token, key.key, algorithms=["RS256"], audience=fleet.auth.url)


def test_key_rotation_reaches_the_inventory_without_restart(fleet: Fleet) -> None:
    """``flask m2m rotate-keys`` at the authorization server: its tokens signed with the new
    key are accepted by the running inventory (an unknown ``kid`` makes it fetch the JWK set
    again, and every authorization-server worker publishes the new key before any signs with
    it); tokens signed before keep working."""
    old_token = fleet.token(fleet.inventory.url)
    assert get(fleet.inventory, "/inventory/items", old_token).status_code == 200
    out = flask_cli(fleet.env, "m2m", "rotate-keys")
    new_kid = out.split("New signing key ", 1)[1].split(";", 1)[0]
    assert new_kid != jwt_part(old_token, 0)["kid"]

    def new_token() -> str | None:
        token = fleet.token(fleet.inventory.url)
        return token if jwt_part(token, 0)["kid"] == new_kid else None

    # both workers' tokens, once M2M_KEY_PUBLICATION_SECONDS have passed
    tokens = [poll(new_token, 2 * KEY_REFRESH + 1 + MARGIN) for _ in range(4)]
    for token in tokens:
        for _ in range(4):  # both inventory workers
            response = get(fleet.inventory, "/inventory/items", token)
            assert response.status_code == 200, response.text
    assert get(fleet.inventory, "/inventory/items", old_token).status_code == 200


def test_inventory_keeps_verifying_while_the_server_is_down(fleet: Fleet) -> None:
    """Offline verification: with the authorization server stopped, the inventory keeps
    accepting valid JWTs from its cached keys (and still refuses foreign audiences)."""
    token = fleet.token(fleet.inventory.url)
    other = fleet.token()
    for _ in range(4):  # each inventory worker has the keys cached
        assert get(fleet.inventory, "/inventory/items", token).status_code == 200
    fleet.auth.stop()
    try:
        for _ in range(6):
            response = get(fleet.inventory, "/inventory/items", token)
            assert response.status_code == 200, response.text
            assert get(fleet.inventory, "/inventory/items", other).status_code == 401
    finally:
        fleet.auth.start()
    assert get(fleet.auth, "/api/items", other).status_code == 200


def test_worker_reads_the_inventory_with_a_token_for_it(fleet: Fleet) -> None:
    """``python -m example.worker --resource URI``: the README walkthrough's last step."""
    env = {
        **fleet.env,
        "M2M_ISSUER": fleet.auth.url,
        "M2M_CLIENT_ID": fleet.client["client_id"],
        "M2M_CLIENT_SECRET": fleet.client["client_secret"],
    }
    done = subprocess.run(
        [sys.executable, "-m", "example.worker", "--resource", fleet.inventory.url,
         "--count", "2", "--interval", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"with aud {fleet.inventory.url}" in done.stdout
    assert "2 items in the inventory" in done.stdout
    assert "1 token request(s)" in done.stdout


def test_demo_client_may_ask_for_the_inventory(fleet: Fleet) -> None:
    """``flask --app example demo`` gives the demo client the inventory's audience and scope
    (run twice: the second run keeps them)."""
    for _ in range(2):
        out = flask_cli(fleet.env, "demo")
        assert "--resource http://127.0.0.1:5001" in out
    listed = json.loads(flask_cli(fleet.env, "m2m", "list-clients", "--json"))["clients"]
    demo = [c for c in listed if c["name"] == "demo"]
    assert len(demo) == 1
    assert demo[0]["audiences"] == ["http://127.0.0.1:5001"]
    assert {"read", "write", "inventory:read"} <= set(demo[0]["scopes"])
