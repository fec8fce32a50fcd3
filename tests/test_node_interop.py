"""OAuth clients and a JOSE library written in JavaScript, against live flask-m2m servers:
``oauth4webapi`` (RFC 8414 discovery, the client credentials grant with ``client_secret_basic``
or ``private_key_jwt``, DPoP with its nonces, ``protectedResourceRequest`` on the authorization
server and on a ``ResourceServer``, introspection and revocation, and its resource-server check
``validateJwtAccessToken``) and ``jose`` (verifying the access tokens of every signing
algorithm against the published JWK set). The scripts are in ``tests/node``.

The npm packages are installed once per run from ``tests/node/package.json`` (pinned versions)
into ``tests/node/node_modules``. Without ``node`` or ``npm``, or when the install fails (no
network), these tests are skipped, unless ``M2M_TEST_NODE=1`` (as in CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from helpers.apps import SECRET_KEY, register
from helpers.http import LiveServer
from helpers.key_clients import new_key, register_key_client
from helpers.resource_servers import INVENTORY, inventory
from helpers.servers import jwt_part
from joserfc.jwk import Key

pytestmark = pytest.mark.slow

NODE_DIR = Path(__file__).resolve().parent / "node"
SECRETLESS_DOC = Path(__file__).resolve().parent.parent / "docs" / "secretless.md"
#: Node 20 is the oldest release line the pinned packages support.
NODE_MAJOR = 20
#: How long ``npm install`` may take (a cold cache downloads two small packages).
INSTALL_TIMEOUT = 180
#: The signing algorithm of a client key of each type (oauth4webapi names Ed25519 so).
ALGS = {"RSA": "RS256", "EC": "ES256", "OKP": "Ed25519"}


def _unavailable(reason: str) -> None:
    if os.environ.get("M2M_TEST_NODE") == "1":
        pytest.fail(f"M2M_TEST_NODE=1 but {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def node() -> str:
    """The ``node`` executable, once ``oauth4webapi`` and ``jose`` are installed next to the
    scripts (``npm install`` once per run; a no-op when they already are)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        _unavailable("node and npm are not installed")
    assert node is not None and npm is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    if major < NODE_MAJOR:
        _unavailable(f"node {version.stdout.strip()} is older than {NODE_MAJOR}")
    command = [
        npm, "install", "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
        "--prefer-offline", "--fetch-retries=1", "--fetch-timeout=30000",
    ]  # fmt: skip
    try:
        done = subprocess.run(
            command, cwd=NODE_DIR, capture_output=True, text=True, timeout=INSTALL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"npm install took more than {INSTALL_TIMEOUT} s")
    if done.returncode != 0:
        _unavailable(f"npm install failed (offline?): {done.stderr.strip()[-2000:]}")
    return node


def run(node: str, script: str, **arguments: Any) -> dict[str, Any]:
    """Run ``tests/node/<script>`` with ``arguments`` as JSON; its JSON output."""
    done = subprocess.run(
        [node, script, json.dumps(arguments)],
        cwd=NODE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def key_auth(key: Key) -> dict[str, Any]:
    """``private_key_jwt`` with ``key`` (its private JWK, which the script imports with jose)."""
    jwk = key.as_dict(private=True)
    return {"method": "private_key_jwt", "jwk": jwk, "alg": ALGS[key.key_type]}


@pytest.fixture
def serve(app_factory: Callable[..., Flask]) -> Iterator[Callable[[Flask], str]]:
    """``serve(app)``: ``app`` over HTTP on 127.0.0.1 until the test ends (stopped before
    ``app_factory`` tears the apps down); its URL."""
    servers: list[LiveServer] = []

    def start(app: Flask) -> str:
        servers.append(LiveServer(app))
        return servers[-1].url

    yield start
    for server in servers:
        server.stop()
        server.server.server_close()


@pytest.fixture
def auth_app(app_factory: Callable[..., Flask]) -> Flask:
    """An authorization server whose issuer is the URL it is served at."""
    return app_factory(M2M_ISSUER=None)


@pytest.mark.parametrize("kind", ["RSA", "EC", "OKP"])
def test_private_key_jwt(
    node: str, auth_app: Flask, serve: Callable[[Flask], str], kind: str
) -> None:
    """RFC 7523 §2.2: oauth4webapi's ``PrivateKeyJwt`` (its assertion's ``aud`` is the
    issuer) gets a token for a key-only client; ``processClientCredentialsResponse`` accepts
    the answer, and the token opens a ``require_scope`` route."""
    key = new_key(kind, kid=f"node-{kind.lower()}")
    client_id = register_key_client(auth_app, key, new_key(kind, kid="spare"))
    url = serve(auth_app)
    out = run(
        node, "client.mjs", issuer=url, client_id=client_id, auth=key_auth(key), scope="read",
        requests=[{"url": url + "/api/read", "audience": url}, {"url": url + "/api/whoami"}],
        introspect_and_revoke=True,
    )  # fmt: skip
    # RFC 8414 §3.3: the issuer in the metadata is the one discovery started from
    assert out["metadata"]["issuer"] == url
    assert "private_key_jwt" in out["metadata"]["token_endpoint_auth_methods_supported"]
    assert ALGS[kind] in out["metadata"]["token_endpoint_auth_signing_alg_values_supported"]
    token = out["token"]
    assert token["token_type"] == "bearer" and token["scope"] == "read"
    assert token["expires_in"] > 0
    assert jwt_part(token["access_token"], 1)["client_id"] == client_id
    read, whoami = out["requests"]
    assert (read["status"], read["body"]) == (200, {"ok": True})
    # RFC 9068 §4, as oauth4webapi's validateJwtAccessToken checks it
    assert read["validated"] == {"client_id": client_id, "scope": "read"}
    assert whoami["body"] == {"client_id": client_id, "scopes": ["read"]}
    # RFC 7662 §2.2 and RFC 7009 §2, authenticated with private_key_jwt too
    assert out["introspected"]["active"] is True
    assert out["introspected"]["client_id"] == client_id
    assert out["introspected_after_revocation"] == {"active": False}


@pytest.mark.parametrize(
    ("alg", "shape"),
    [("RS256", "jwk"), ("ES256", "jwk"), ("Ed25519", "jwk"), ("Ed25519", "pem")],
)
def test_node_key_registered_with_the_cli(
    node: str, auth_app: Flask, serve: Callable[[Flask], str], tmp_path: Path, alg: str, shape: str
) -> None:
    """A key pair made by WebCrypto in Node: its public key as WebCrypto exports the JWK
    (``key_ops``, ``ext``, and ``alg`` for RSA and Ed25519) or as a PEM is registered with
    ``flask m2m create-client --jwks-file``; oauth4webapi then authenticates with the private
    key (without ``kid`` for the PEM, so the server tries each of the client's keys)."""
    made = run(node, "keygen.mjs", alg=alg, kid="node-worker")
    path = tmp_path / "worker-key"
    path.write_text(made["public_pem"] if shape == "pem" else json.dumps(made["public_jwk"]))
    result = auth_app.test_cli_runner().invoke(
        args=["m2m", "create-client", "--name", "node-worker", "--scope", "read",
              "--auth-method", "private_key_jwt", "--jwks-file", str(path), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    client = json.loads(result.output)
    assert "client_secret" not in client
    private = made["private_jwk"]
    if shape == "pem":
        del private["kid"]
    url = serve(auth_app)
    out = run(
        node, "client.mjs", issuer=url, client_id=client["client_id"],
        auth={"method": "private_key_jwt", "jwk": private, "alg": alg},
        requests=[{"url": url + "/api/read"}],
    )  # fmt: skip
    assert "token_error" not in out, out["token_error"]
    assert out["token"]["token_type"] == "bearer"
    assert out["requests"][0]["status"] == 200


def test_private_key_jwt_with_an_unregistered_key(
    node: str, auth_app: Flask, serve: Callable[[Flask], str]
) -> None:
    """RFC 6749 §5.2: an assertion signed with a key the client does not hold is
    ``invalid_client``, which oauth4webapi reports as the server's error."""
    client_id = register_key_client(auth_app, new_key("EC", kid="registered"))
    other = new_key("EC", kid="registered")  # same kid, other key
    out = run(node, "client.mjs", issuer=serve(auth_app), client_id=client_id, auth=key_auth(other))
    assert "token" not in out
    assert out["token_error"]["status"] == 401
    assert out["token_error"]["error"] == "invalid_client"


def test_client_secret_basic(node: str, auth_app: Flask, serve: Callable[[Flask], str]) -> None:
    """RFC 6749 §2.3.1: oauth4webapi's ``ClientSecretBasic`` (form-encoded id and secret);
    a wrong secret is ``invalid_client``."""
    creds = register(auth_app, "read write")
    url = serve(auth_app)
    secret = {"method": "client_secret_basic", "secret": creds["client_secret"]}
    out = run(
        node, "client.mjs", issuer=url, client_id=creds["client_id"], auth=secret,
        requests=[{"url": url + "/api/whoami"}],
    )  # fmt: skip
    assert out["token"]["token_type"] == "bearer"
    assert set(out["token"]["scope"].split()) == {"read", "write"}
    assert out["requests"][0]["status"] == 200
    assert out["requests"][0]["body"]["client_id"] == creds["client_id"]
    wrong = {"method": "client_secret_basic", "secret": creds["client_secret"] + "x"}
    out = run(node, "client.mjs", issuer=url, client_id=creds["client_id"], auth=wrong)
    assert (out["token_error"]["status"], out["token_error"]["error"]) == (401, "invalid_client")
    assert out["token_error"]["challenges"][0]["scheme"] == "basic"


@pytest.mark.parametrize("nonce", [False, True], ids=["no-nonce", "nonce"])
@pytest.mark.parametrize("dpop_alg", ["ES256", "Ed25519"])
def test_dpop(
    node: str,
    app_factory: Callable[..., Flask],
    serve: Callable[[Flask], str],
    nonce: bool,
    dpop_alg: str,
) -> None:
    """RFC 9449 end to end with oauth4webapi's ``DPoP`` handle: a key-only client gets a
    DPoP-bound token (``token_type`` DPoP, ``cnf.jkt`` the thumbprint of the client's DPoP
    key, §6.1) and calls a ``require_scope`` route of the authorization server and the
    example inventory (a ``ResourceServer``) with it, each proof for that request (§7.1).
    With nonces required, the authorization server answers ``use_dpop_nonce`` once at the
    token endpoint (§8), and its nonce then serves its own routes too (oauth4webapi keeps one
    per origin); the inventory asks for its own (§9); each retry passes. The same token as
    ``Bearer`` is refused with challenges oauth4webapi parses (§7.1-7.2)."""
    auth_app = app_factory(M2M_ISSUER=None, M2M_DPOP_REQUIRE_NONCE=nonce)
    auth_url = serve(auth_app)
    inventory_url = serve(inventory(auth_url, M2M_DPOP_REQUIRE_NONCE=nonce, SECRET_KEY=SECRET_KEY))
    key = new_key("EC", kid="node")
    client_id = register_key_client(
        auth_app, key, scopes="read inventory:read", audiences=[INVENTORY]
    )
    here, there = auth_url + "/api/read", inventory_url + "/inventory/items"

    def flow(**token_request: Any) -> dict[str, Any]:
        return run(
            node, "client.mjs", issuer=auth_url, client_id=client_id, auth=key_auth(key),
            dpop=dpop_alg, **token_request,
        )  # fmt: skip

    out = flow(
        scope="read",
        requests=[
            {"url": here, "audience": auth_url},
            {"url": here, "scheme": "Bearer", "audience": auth_url},
        ],
        introspect_and_revoke=True,
    )
    assert dpop_alg in out["metadata"]["dpop_signing_alg_values_supported"]
    assert out["token"]["token_type"] == "dpop"  # oauth4webapi lowercases it
    claims = jwt_part(out["token"]["access_token"], 1)
    assert claims["cnf"] == {"jkt": out["jkt"]}
    assert out["nonce_retries"]["token"] == int(nonce)
    dpop, bearer = out["requests"]
    assert (dpop["status"], dpop["body"]) == (200, {"ok": True})
    assert dpop["nonce_retries"] == 0  # the token endpoint's nonce: same server, same nonce
    assert dpop["validated"]["cnf"] == {"jkt": out["jkt"]}  # its proof checked by oauth4webapi
    assert_bound_token_refused_as_bearer(bearer, dpop_alg)
    # RFC 9449 §6.2: introspection returns the binding
    assert out["introspected"]["active"] is True
    assert out["introspected"]["cnf"] == {"jkt": out["jkt"]}
    assert out["introspected_after_revocation"] == {"active": False}

    out = flow(
        scope="inventory:read", resources=[INVENTORY],
        requests=[
            {"url": there, "audience": INVENTORY},
            {"url": there, "scheme": "Bearer", "audience": INVENTORY},
        ],
    )  # fmt: skip
    assert out["token"]["token_type"] == "dpop"
    assert jwt_part(out["token"]["access_token"], 1)["aud"] == INVENTORY
    dpop, bearer = out["requests"]
    assert dpop["status"] == 200, dpop
    assert [item["sku"] for item in dpop["body"]["items"]] == ["bolt-m6", "nut-m6"]
    assert dpop["nonce_retries"] == int(nonce)
    assert dpop["validated"]["cnf"] == {"jkt": out["jkt"]}
    assert_bound_token_refused_as_bearer(bearer, dpop_alg)


def test_dpop_opaque_tokens(
    node: str, app_factory: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    """RFC 9449 §6.2 with opaque tokens: the binding lives on the server; the authorization
    server's route and the inventory (which introspects, and finds ``cnf`` there) accept the
    token only with oauth4webapi's proofs."""
    auth_app = app_factory(M2M_ISSUER=None, M2M_TOKEN_FORMAT="opaque")
    auth_url = serve(auth_app)
    own = register(auth_app, "m2m:introspect")
    inventory_url = serve(
        inventory(
            auth_url,
            M2M_INTROSPECTION_CLIENT_ID=own["client_id"],
            M2M_INTROSPECTION_CLIENT_SECRET=own["client_secret"],
        )
    )
    key = new_key("OKP", kid="node")
    client_id = register_key_client(
        auth_app, key, scopes="read inventory:read", audiences=[auth_url, INVENTORY]
    )
    there = inventory_url + "/inventory/items"
    out = run(
        node, "client.mjs", issuer=auth_url, client_id=client_id, auth=key_auth(key),
        dpop="ES256", scope="read inventory:read", resources=[auth_url, INVENTORY],
        requests=[
            {"url": auth_url + "/api/read"}, {"url": there}, {"url": there, "scheme": "Bearer"},
        ],
        introspect_and_revoke=True,
    )  # fmt: skip
    assert "token_error" not in out, out["token_error"]
    assert out["token"]["token_type"] == "dpop"
    assert out["token"]["access_token"].count(".") != 2  # not a JWT
    here, inventory_dpop, bearer = out["requests"]
    assert (here["status"], here["body"]) == (200, {"ok": True})
    assert inventory_dpop["status"] == 200, inventory_dpop
    assert_bound_token_refused_as_bearer(bearer, "ES256", checked_by_oauth4webapi=False)
    assert out["introspected"]["cnf"] == {"jkt": out["jkt"]}
    assert out["introspected_after_revocation"] == {"active": False}


def assert_bound_token_refused_as_bearer(
    result: dict[str, Any], alg: str, checked_by_oauth4webapi: bool = True
) -> None:
    """§7.2: a DPoP-bound token sent as ``Bearer`` is 401 ``invalid_token`` with challenges
    oauth4webapi parsed: Bearer with the error (RFC 6750 §3.1), and DPoP naming the proof
    algorithms accepted (§7.1)."""
    assert result["scheme"] == "Bearer"
    if checked_by_oauth4webapi:  # its resource-server check agrees
        assert "validation_error" in result
    assert result["status"] == 401 and result["body"]["error"] == "invalid_token"
    schemes = {challenge["scheme"]: challenge["parameters"] for challenge in result["challenges"]}
    assert schemes.keys() == {"bearer", "dpop"}, result["challenges"]
    assert schemes["bearer"]["error"] == "invalid_token"
    assert alg in schemes["dpop"]["algs"].split()


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_jose_verifies_access_tokens(
    node: str, app_factory: Callable[..., Flask], serve: Callable[[Flask], str], alg: str
) -> None:
    """RFC 9068: jose's ``jwtVerify`` with ``createRemoteJWKSet`` on the published JWK set
    accepts flask-m2m's access tokens of each signing algorithm (``typ`` at+jwt, ``iss``,
    ``aud``, the required claims), and refuses one for another audience."""
    auth_app = app_factory(M2M_ISSUER=None, M2M_SIGNING_ALG=alg)
    url = serve(auth_app)
    creds = register(auth_app, "read")
    secret = {"method": "client_secret_basic", "secret": creds["client_secret"]}
    out = run(node, "client.mjs", issuer=url, client_id=creds["client_id"], auth=secret)
    token = out["token"]["access_token"]
    jwks_uri = out["metadata"]["jwks_uri"]
    verified = run(
        node, "verify.mjs", jwks_uri=jwks_uri, token=token, issuer=url, audience=url, alg=alg
    )
    assert "error" not in verified, verified["error"]
    assert verified["header"]["alg"] == alg and verified["header"]["typ"] == "at+jwt"
    payload = verified["payload"]
    assert payload["client_id"] == payload["sub"] == creds["client_id"]
    assert payload["scope"] == "read"
    assert payload["iat"] <= time.time() < payload["exp"]
    refused = run(
        node, "verify.mjs", jwks_uri=jwks_uri, token=token, issuer=url, audience=INVENTORY,
        alg=alg,
    )  # fmt: skip
    assert refused["error"]["code"] == "ERR_JWT_CLAIM_VALIDATION_FAILED"


def test_the_example_of_the_docs(
    node: str, app_factory: Callable[..., Flask], serve: Callable[[Flask], str]
) -> None:
    """The oauth4webapi worker of docs/secretless.md runs as written (only the client id
    filled in) against servers configured as behind a TLS proxy: their public URLs are the
    ``https`` ones of the example, which a ``fetch`` stand-in sends to the loopback servers, so
    the DPoP proofs name the public URLs (RFC 9449 §4.3 checks them against the issuer's and
    the audience's origins). With nonces required, the retry in the example is needed."""
    (example,) = re.findall(r"^```javascript\n(.*?)^```$", SECRETLESS_DOC.read_text(), re.S | re.M)
    public_auth, public_inventory = "https://auth.example.com", "https://inventory.example.com"
    auth_app = app_factory(M2M_ISSUER=public_auth, M2M_DPOP_REQUIRE_NONCE=True)
    auth_url = serve(auth_app)
    inventory_url = serve(
        inventory(
            public_auth,
            M2M_AUDIENCE=public_inventory,
            M2M_JWKS_URI=auth_url + "/m2m/jwks.json",  # the internal address
        )
    )
    key = new_key("EC", kid="worker-1")
    client_id = register_key_client(
        auth_app, key, scopes="inventory:read", audiences=[public_inventory]
    )
    assert example.count("'m2m_...'") == 1
    routes = {public_auth: auth_url, public_inventory: inventory_url}
    prelude = f"""
import {{ importJWK }} from 'jose'
const privateKey = await importJWK({json.dumps(key.as_dict(private=True))}, 'ES256')
const routes = {json.dumps(routes)}
const realFetch = globalThis.fetch
globalThis.fetch = (href, init) => {{
  const url = new URL(href)
  return realFetch(routes[url.origin] + url.pathname + url.search, init)
}}
"""
    epilogue = """
process.stdout.write(JSON.stringify({ status: response.status, body: await response.json() }))
"""
    code = prelude + example.replace("'m2m_...'", json.dumps(client_id)) + epilogue
    done = subprocess.run(
        [node, "--input-type=module", "-"],
        input=code, cwd=NODE_DIR, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == 200
    assert [item["sku"] for item in result["body"]["items"]] == ["bolt-m6", "nut-m6"]
