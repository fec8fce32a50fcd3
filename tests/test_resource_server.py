"""``ResourceServer``: the example inventory verifying, offline, the JWTs of an authorization
server served over real HTTP (RFC 9068 §4, RFC 6750 §3, RFC 9728), and its JWKS cache."""

from __future__ import annotations

import json
import logging
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from flask import Flask
from helpers.apps import register
from helpers.http import bearer
from helpers.resource_servers import (
    INVENTORY,
    JWKS_PATH,
    METADATA_PATH,
    AuthServer,
    Clock,
    assert_invalid_token,
    challenge,
    hmac_token,
    inventory,
    protector,
    unsecured_token,
    whoami,
)

from example.inventory import create_app
from flask_m2m import M2M, ConfigurationError, ResourceServer
from flask_m2m.resource_config import RESOURCE_SERVER_DEFAULTS


@pytest.fixture
def auth(app_factory: Callable[..., Flask]) -> Any:
    """The authorization server, minting tokens for the inventory; its issuer is its URL."""
    server = AuthServer(app_factory(M2M_ISSUER=None, M2M_AUDIENCE=INVENTORY))
    yield server
    server.stop()


@pytest.fixture
def creds(auth: AuthServer) -> dict[str, Any]:
    return register(auth.app, "inventory:read inventory:write")


# -- accepted, and the RFC 6750 answers --------------------------------------------------------
def test_valid_token_is_accepted(auth: AuthServer, creds: dict[str, Any]) -> None:
    """RFC 9068 §4: a token the issuer minted for this audience is accepted offline, after
    one metadata read (RFC 8414 §3) and one JWKS fetch; ``current_token`` is the same object
    as on the authorization server."""
    app = inventory(auth)
    token = auth.token(creds, "inventory:read")
    response = whoami(app, token)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {
        "client_id": creds["client_id"],
        "scopes": ["inventory:read"],
        "aud": INVENTORY,
    }
    items = app.test_client().get("/inventory/items", headers=bearer(token))
    assert items.status_code == 200 and items.get_json()["items"]
    assert whoami(app, token).status_code == 200
    assert (auth.hits[METADATA_PATH], auth.hits[JWKS_PATH]) == (1, 1)


def test_missing_token_and_missing_scope(auth: AuthServer, creds: dict[str, Any]) -> None:
    """RFC 6750 §3.1 as on the authorization server: no token -> 401 with a bare challenge,
    a token without the scope -> 403 ``insufficient_scope``; RFC 9728 §5.1: both challenges
    name the resource's metadata."""
    client = inventory(auth).test_client()
    response = client.get("/inventory/items")
    assert response.status_code == 401
    assert "error" not in challenge(response)
    response = client.get("/inventory/items", headers=bearer(auth.token(creds, "inventory:write")))
    assert response.status_code == 403
    params = challenge(response)
    assert (params["error"], params["scope"]) == ("insufficient_scope", "inventory:read")
    assert response.get_json()["error"] == "insufficient_scope"


def test_protected_resource_metadata(auth: AuthServer) -> None:
    """RFC 9728 §3.2: the metadata names the resource, its authorization server, the scopes
    its routes use, the header as the only way to send tokens, and the DPoP proof algorithms
    it accepts (RFC 9728 §2)."""
    response = inventory(auth).test_client().get("/.well-known/oauth-protected-resource")
    assert response.status_code == 200
    assert response.get_json() == {
        "resource": INVENTORY,
        "authorization_servers": [auth.url],
        "scopes_supported": ["inventory:read"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "Ed25519", "RS256"],
    }


def test_metadata_of_an_identifier_with_a_path(auth: AuthServer) -> None:
    """RFC 9728 §3.1: the identifier's path follows the well-known suffix, in the route and in
    the challenges' ``resource_metadata``."""
    app = inventory(auth, M2M_AUDIENCE="https://api.test/inventory")
    client = app.test_client()
    response = client.get("/.well-known/oauth-protected-resource/inventory")
    assert response.get_json()["resource"] == "https://api.test/inventory"
    assert client.get("/.well-known/oauth-protected-resource").status_code == 404
    header = client.get("/inventory/whoami").headers["WWW-Authenticate"]
    url = "https://api.test/.well-known/oauth-protected-resource/inventory"
    assert f'resource_metadata="{url}"' in header


# -- refused ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "changes",
    [
        {"aud": "https://billing.test"},
        {"aud": ["https://billing.test", "https://reports.test"]},
        {"iss": "https://evil.test"},
        {"exp": 1_000_000},
        {"nbf": 4_000_000_000},
        {"iat": 4_000_000_000},
        {"sub": "m2m_somebodyelse"},
        {"exp": None},
    ],
    ids=["aud", "aud-list", "iss", "expired", "nbf", "iat", "sub", "no-exp"],
)
def test_claims_are_checked(
    auth: AuthServer, creds: dict[str, Any], changes: dict[str, Any]
) -> None:
    """RFC 9068 §4: issuer, audience (this service's own), lifetime and subject hold, else
    401 ``invalid_token``; the same token with good claims is accepted."""
    app = inventory(auth)
    assert whoami(app, auth.sign(auth.claims(creds))).status_code == 200
    assert_invalid_token(whoami(app, auth.sign(auth.claims(creds, **changes))))


@pytest.mark.parametrize("typ", [None, "JWT", "jwt"])
def test_typ_must_be_at_jwt(auth: AuthServer, creds: dict[str, Any], typ: str | None) -> None:
    """RFC 9068 §4: the ``typ`` header must be ``at+jwt`` (a plain JWT is no access token)."""
    token = auth.sign(auth.claims(creds), typ=typ)
    assert_invalid_token(whoami(inventory(auth), token))


def test_forged_tokens(auth: AuthServer, creds: dict[str, Any]) -> None:
    """RFC 8725 §2.1, §3.1 and RFC 9068 §4: alg ``none``, HS256 keyed with the published
    public key, a foreign key under the real ``kid``, and no ``kid`` are all refused."""
    app = inventory(auth)
    real = auth.signing_key()
    kid = str(real.kid)
    claims = auth.claims(creds)
    assert whoami(app, auth.sign(claims)).status_code == 200
    public = jwt.PyJWK(real.as_dict(private=False)).key
    pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for token in (
        unsecured_token(claims, kid),
        hmac_token(claims, pem, kid),
        hmac_token(claims, json.dumps(real.as_dict(private=False)).encode(), kid),
        auth.sign(claims, key=forger),
        auth.sign(claims, kid=None),
    ):
        assert_invalid_token(whoami(app, token))


def test_only_the_configured_algorithms(auth: AuthServer, creds: dict[str, Any]) -> None:
    """RFC 8725 §3.1: the algorithms come from configuration, not from the token: an RS256
    token, validly signed, is refused by a service that accepts ES256 only."""
    app = inventory(auth, M2M_ALLOWED_ALGORITHMS="ES256")
    assert_invalid_token(whoami(app, auth.token(creds)))
    assert whoami(inventory(auth), auth.token(creds)).status_code == 200


@pytest.mark.parametrize("token", ["m2mat_" + "x" * 43, "opaque", "a.b", "x" * 9000])
def test_not_a_jwt_without_introspection(auth: AuthServer, token: str) -> None:
    """RFC 6750 §3.1: a token that is no JWT, with no introspection configured, is
    ``invalid_token``; nothing is fetched for it."""
    assert_invalid_token(whoami(inventory(auth), token))
    assert auth.hits[JWKS_PATH] == 0


# -- the JWKS cache ------------------------------------------------------------------------
def test_unknown_kid_flood_costs_one_fetch_per_interval(
    auth: AuthServer, creds: dict[str, Any]
) -> None:
    """A flood of made-up ``kid`` values (from many threads at once) causes at most one JWKS
    fetch per ``M2M_JWKS_MIN_REFRESH_SECONDS`` (counted at the authorization server)."""
    app = inventory(auth, M2M_JWKS_MIN_REFRESH_SECONDS=30)
    clock = Clock(protector(app))
    assert whoami(app, auth.token(creds)).status_code == 200
    assert auth.hits[JWKS_PATH] == 1
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def flood(count: int) -> list[int]:
        statuses: list[int] = []

        def one() -> None:
            token = auth.sign(auth.claims(creds), key=forger, kid=secrets.token_hex(8))
            statuses.append(whoami(app, token).status_code)

        threads = [threading.Thread(target=one) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return statuses

    assert flood(40) == [401] * 40
    assert auth.hits[JWKS_PATH] == 1  # the last fetch was less than 30 s ago
    clock.advance(30)
    assert flood(40) == [401] * 40
    assert auth.hits[JWKS_PATH] == 2  # one fetch, shared by the whole flood
    assert auth.hits[METADATA_PATH] == 1


def test_key_rotation_is_picked_up_without_restart(auth: AuthServer, creds: dict[str, Any]) -> None:
    """A key rotation at the authorization server: the first token signed by the new key
    makes the resource server fetch the JWKS again; tokens of the retired key keep working
    while it is published."""
    app = inventory(auth)
    clock = Clock(protector(app))
    old = auth.token(creds)
    assert whoami(app, old).status_code == 200
    auth.rotate_keys()
    new = auth.token(creds)
    clock.advance(RESOURCE_SERVER_DEFAULTS["M2M_JWKS_MIN_REFRESH_SECONDS"])
    assert whoami(app, new).status_code == 200
    assert whoami(app, old).status_code == 200
    assert auth.hits[JWKS_PATH] == 2


def test_lifetime_of_the_cached_jwks(auth: AuthServer, creds: dict[str, Any]) -> None:
    """The JWKS is fetched again once ``M2M_JWKS_CACHE_SECONDS`` old, and not before."""
    app = inventory(auth, M2M_JWKS_CACHE_SECONDS=60)
    clock = Clock(protector(app))
    token = auth.token(creds)
    assert whoami(app, token).status_code == 200
    clock.advance(59)
    assert whoami(app, auth.token(creds)).status_code == 200
    assert auth.hits[JWKS_PATH] == 1
    clock.advance(1)
    assert whoami(app, token).status_code == 200
    assert auth.hits[JWKS_PATH] == 2


def test_authorization_server_down_cached_keys_keep_serving(
    auth: AuthServer, creds: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Stale-on-error: with the authorization server stopped, the keys fetched before keep
    verifying new tokens past their lifetime, up to ``M2M_JWKS_MAX_STALE_SECONDS``; the
    outage is logged once, and nothing answers 5xx."""
    app = inventory(auth, M2M_JWKS_CACHE_SECONDS=60, M2M_JWKS_MAX_STALE_SECONDS=3600)
    clock = Clock(protector(app))
    assert whoami(app, auth.token(creds)).status_code == 200
    later = [auth.token(creds) for _ in range(4)]  # verified only after the outage began
    auth.stop()
    caplog.set_level(logging.WARNING)
    for token in later[:3]:
        clock.advance(60)
        assert whoami(app, token).status_code == 200
    outage = [r for r in caplog.records if "cannot be fetched" in r.getMessage()]
    assert len(outage) == 1
    clock.advance(3600)
    assert_invalid_token(whoami(app, later[3]))


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"M2M_ISSUER": None}, "M2M_ISSUER"),
        ({"M2M_AUDIENCE": None}, "M2M_AUDIENCE"),
        ({"M2M_AUDIENCE": "inventory"}, "M2M_AUDIENCE"),
        ({"M2M_AUDIENCE": "https://inventory.test/#x"}, "M2M_AUDIENCE"),
        ({"M2M_ISSUER": "http://auth.example.com"}, "M2M_ISSUER"),
        ({"M2M_JWKS_URI": "ftp://auth.example.com/jwks"}, "M2M_JWKS_URI"),
        ({"M2M_ALLOWED_ALGORITHMS": "HS256"}, "M2M_ALLOWED_ALGORITHMS"),
        ({"M2M_ALLOWED_ALGORITHMS": []}, "M2M_ALLOWED_ALGORITHMS"),
        ({"M2M_INTROSPECTION": "always"}, "M2M_INTROSPECTION"),
        ({"M2M_INTROSPECTION_CLIENT_ID": "m2m_x"}, "M2M_INTROSPECTION_CLIENT"),
        ({"M2M_HTTP_TIMEOUT_SECONDS": "soon"}, "M2M_HTTP_TIMEOUT_SECONDS"),
        ({"M2M_JWKS_MAX_STALE_SECONDS": 10}, "M2M_JWKS_MAX_STALE_SECONDS"),
    ],
)
def test_bad_configuration_is_refused(config: dict[str, Any], key: str) -> None:
    """Each setting is checked in ``init_app``; the error names the key."""
    with pytest.raises(ConfigurationError, match=key):
        inventory("https://auth.example.com", **config)


def test_configuration_sources() -> None:
    """Keyword options beat ``app.config``; plain http to another host only with the
    explicit development setting; unknown options are refused."""
    app = Flask(__name__)
    app.config.update(M2M_ISSUER="https://wrong.test", M2M_AUDIENCE=INVENTORY)
    ResourceServer(app, issuer="https://auth.example.com/", leeway=5)
    settings = protector(app).settings
    assert (settings.issuer, settings.leeway) == ("https://auth.example.com", 5)
    lax = Flask(__name__)
    ResourceServer(
        lax, issuer="http://auth.internal", audience=INVENTORY, allow_insecure_http="true"
    )
    assert protector(lax).settings.allow_insecure_http is True
    with pytest.raises(ConfigurationError, match="jwks"):
        ResourceServer(Flask(__name__), issuer="https://a.test", audience=INVENTORY, jwks="x")


def test_one_extension_per_app(app_factory: Callable[..., Flask]) -> None:
    """An app is the authorization server (``M2M``) or a resource server, not both, and
    ``init_app`` runs once."""
    app = app_factory()
    with pytest.raises(ConfigurationError):
        ResourceServer(app, issuer="https://issuer.test", audience=INVENTORY)
    rs = inventory("https://auth.example.com")
    with pytest.raises(ConfigurationError):
        ResourceServer(rs, issuer="https://auth.example.com", audience=INVENTORY)
    with pytest.raises(ConfigurationError):
        M2M(rs, object())


def test_example_inventory_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``example.inventory:create_app()`` reads ``FLASK_M2M_ISSUER``; its audience defaults to
    ``http://127.0.0.1:5001``."""
    monkeypatch.setenv("FLASK_M2M_ISSUER", "https://auth.example.com")
    monkeypatch.delenv("FLASK_M2M_AUDIENCE", raising=False)
    settings = protector(create_app()).settings
    assert (settings.issuer, settings.audience) == (
        "https://auth.example.com",
        "http://127.0.0.1:5001",
    )


def test_no_database_stack() -> None:
    """A resource server with ``require_scope`` loads neither SQLAlchemy, Flask-SQLAlchemy,
    Flask-Limiter nor Authlib, nor flask-m2m's server modules."""
    code = """
import sys
from flask import Flask
from flask_m2m import ResourceServer, current_token, require_scope
app = Flask("rs")
ResourceServer(app, issuer="https://auth.example.com", audience="https://rs.example.com")
@app.get("/x")
@require_scope("read")
def x():
    return {"client_id": current_token.client_id}
assert app.test_client().get("/x").status_code == 401
heavy = ("sqlalchemy", "flask_sqlalchemy", "flask_limiter", "authlib", "flask_m2m.extension",
         "flask_m2m.state", "flask_m2m.tokens", "flask_m2m.models")
print(sorted(m for m in heavy if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_lists_every_resource_server_key() -> None:
    """The README's resource-server table names exactly the keys a ``ResourceServer`` reads,
    with their defaults."""
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Resource servers\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `M2M_"):
            rows[cells[0].strip("`")] = cells[2]
    assert set(rows) == set(RESOURCE_SERVER_DEFAULTS)
    for key, default in RESOURCE_SERVER_DEFAULTS.items():
        if key in ("M2M_ISSUER", "M2M_AUDIENCE"):
            shown = "required"
        elif default is None or isinstance(default, bool):
            shown = f"`{default}`"
        else:
            shown = f"`{json.dumps(default)}`"
        assert rows[key] == shown, key
