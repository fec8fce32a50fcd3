"""Shared by the resource-server tests: the authorization server on a live HTTP server (with
request counters), the example inventory as the resource server, hand-signed tokens, and a
stopped clock for the resource server's caches."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import Counter
from typing import Any

import jwt
from flask import Flask, request
from joserfc.jwk import Key
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.test import TestResponse

from example.inventory import create_app
from flask_m2m.extension import get_state
from flask_m2m.resource_server import RemoteProtector, ResourceServer
from helpers.http import LiveServer, basic_auth, bearer

#: The inventory's resource identifier in these tests (the tokens' ``aud``).
INVENTORY = "https://inventory.test"
#: RFC 9728 §3.1: where the inventory's metadata is, and what its challenges point to.
INVENTORY_METADATA = INVENTORY + "/.well-known/oauth-protected-resource"
JWKS_PATH = "/m2m/jwks.json"
METADATA_PATH = "/.well-known/oauth-authorization-server"
INTROSPECT_PATH = "/m2m/introspect"


class AuthServer:
    """An authorization server app served over HTTP on 127.0.0.1, counting its requests."""

    def __init__(self, app: Flask):
        self.app = app
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        app.before_request(self._count)
        self.live = LiveServer(app)
        self.url = self.live.url

    def _count(self) -> None:
        with self._lock:
            self.hits[request.path] += 1

    def stop(self) -> None:
        """Stop serving and close the socket: connections are refused from now on."""
        self.live.stop()
        self.live.server.server_close()

    def token(self, creds: dict[str, Any], scope: str | None = None) -> str:
        """A token issued by the server for ``creds`` (its ``iss`` is this server's URL)."""
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        response = self.app.test_client().post(
            "/m2m/token",
            data=data,
            headers=basic_auth(creds["client_id"], creds["client_secret"]),
            base_url=self.url,
        )
        assert response.status_code == 200, response.get_json()
        return str(response.get_json()["access_token"])

    def signing_key(self) -> Key:
        """The server's current private signing key."""
        with self.app.app_context():
            return get_state(self.app).keys.signing_key()

    def rotate_keys(self) -> str:
        """Rotate the signing key (``flask m2m rotate-keys``); the new kid."""
        with self.app.app_context():
            return get_state(self.app).keys.rotate()

    def claims(self, creds: dict[str, Any], **changes: Any) -> dict[str, Any]:
        """Valid RFC 9068 §2.2 claims for the inventory, with ``changes`` (None removes one)."""
        now = int(time.time())
        claims = {
            "iss": self.url,
            "exp": now + 300,
            "aud": INVENTORY,
            "sub": creds["client_id"],
            "client_id": creds["client_id"],
            "iat": now,
            "jti": secrets.token_urlsafe(16),
            "scope": "inventory:read",
        }
        claims.update(changes)
        return {name: value for name, value in claims.items() if value is not None}

    def sign(self, claims: dict[str, Any], key: Any = None, **header: Any) -> str:
        """A JWT signed by PyJWT with the server's real key (or ``key``), RS256; a header
        given as None is left out."""
        real = self.signing_key()
        headers = {"typ": "at+jwt", "kid": real.kid, **header}
        headers = {name: value for name, value in headers.items() if value is not None}
        private = key if key is not None else jwt.PyJWK(real.as_dict(private=True)).key
        return jwt.encode(claims, private, algorithm="RS256", headers=headers)


def segment(obj: dict[str, Any]) -> str:
    """A JWS segment: base64url of the compact JSON."""
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unsecured_token(claims: dict[str, Any], kid: str) -> str:
    """RFC 7519 §6: an unsecured JWT (``alg: none``) borrowing a real ``kid``."""
    return f"{segment({'alg': 'none', 'typ': 'at+jwt', 'kid': kid})}.{segment(claims)}."


def hmac_token(claims: dict[str, Any], secret: bytes, kid: str) -> str:
    """An HS256 JWT keyed with ``secret`` (such as a published public key, RFC 8725 §2.1)."""
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid})}.{segment(claims)}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


class Clock:
    """A clock for a resource server's JWKS and introspection caches that the test moves on;
    by itself it moves a microsecond per reading, so that events still happen in order."""

    def __init__(self, protector: RemoteProtector):
        self.now = time.monotonic()
        self._lock = threading.Lock()
        protector.keys.clock = self
        if protector.introspector is not None:
            protector.introspector.clock = self

    def __call__(self) -> float:
        with self._lock:
            self.now += 1e-6
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def inventory(auth: AuthServer | str, **config: Any) -> Flask:
    """The example inventory trusting ``auth``, with the test audience and ``config``."""
    issuer = auth if isinstance(auth, str) else auth.url
    return create_app({"TESTING": True, "M2M_ISSUER": issuer, "M2M_AUDIENCE": INVENTORY, **config})


def protector(app: Flask) -> RemoteProtector:
    return ResourceServer.protector(app)


def whoami(app: Flask, token: str) -> TestResponse:
    return app.test_client().get("/inventory/whoami", headers=bearer(token))


def challenge(response: TestResponse) -> dict[str, str]:
    """The Bearer challenge's parameters; RFC 9728 §5.1: it points to the metadata."""
    parsed = WWWAuthenticate.from_header(response.headers.get("WWW-Authenticate", ""))
    assert parsed is not None and parsed.type == "bearer", response.headers
    assert parsed.parameters["resource_metadata"] == INVENTORY_METADATA
    return {name: str(value) for name, value in parsed.parameters.items()}


def assert_invalid_token(response: TestResponse) -> None:
    """RFC 6750 §3.1: 401, ``invalid_token`` in the challenge and the JSON body."""
    assert response.status_code == 401, response.get_json()
    assert challenge(response)["error"] == "invalid_token"
    assert response.get_json()["error"] == "invalid_token"
