"""The resource-server example of docs/deployment.md runs, exactly as written, against a live
server: it returns a real token's claims and refuses forged or foreign tokens."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from helpers.apps import fetch_token, register
from helpers.http import LiveServer
from joserfc import jwt as jose_jwt

from flask_m2m.extension import get_state
from flask_m2m.verification import JWS_REGISTRY

DOC = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"
JWKS_LINE = re.compile(r'^JWKS_URL = "([^"]+)"', re.MULTILINE)


def doc_example() -> str:
    """The one ```python block of the guide that uses PyJWKClient."""
    blocks = re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), re.DOTALL | re.MULTILINE)
    (block,) = [str(b) for b in blocks if "PyJWKClient" in b]
    return block


def run_example(jwks_url: str | None = None) -> dict[str, Any]:
    """Execute the example (with ``JWKS_URL`` pointed elsewhere when given); its globals."""
    code = doc_example()
    assert len(JWKS_LINE.findall(code)) == 1
    if jwks_url is not None:
        code = JWKS_LINE.sub(f'JWKS_URL = "{jwks_url}"', code)
    namespace: dict[str, Any] = {"__name__": "deployment_example"}
    exec(compile(code, str(DOC), "exec"), namespace)
    return namespace


def sign(app: Flask, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT signed with the server's own current signing key."""
    with app.app_context():
        key = get_state(app).keys.signing_key()
        header = {"alg": "RS256", "kid": key.kid, **header}
        return jose_jwt.encode(header, claims, key, registry=JWS_REGISTRY)


def test_pyjwt_example_from_the_guide(
    app_factory: Callable[..., Flask], live_server_factory: Callable[[Flask], LiveServer]
) -> None:
    settings = run_example()
    issuer, audience = settings["ISSUER"], settings["AUDIENCE"]
    app = app_factory(M2M_ISSUER=issuer)
    server = live_server_factory(app)
    verify = run_example(server.url + "/m2m/jwks.json")["verify"]

    client = register(app, scopes="read write")
    token = fetch_token(app.test_client(), client, "read")
    claims = verify(token)
    assert claims["client_id"] == claims["sub"] == client["client_id"]
    assert claims["scope"] == "read"
    assert claims["iss"] == issuer and claims["aud"] == audience
    assert claims["exp"] > time.time()

    # A changed payload under the original signature.
    head, payload, signature = token.split(".")
    changed = {**claims, "scope": "read write admin"}
    forged = base64.urlsafe_b64encode(json.dumps(changed).encode()).rstrip(b"=").decode()
    with pytest.raises(jwt.InvalidSignatureError):
        verify(f"{head}.{forged}.{signature}")
    # Validly signed by the same key, but not an access token, or not for this audience.
    with pytest.raises(jwt.InvalidTokenError, match="RFC 9068"):
        verify(sign(app, {"typ": "JWT"}, claims))
    with pytest.raises(jwt.InvalidAudienceError):
        verify(sign(app, {"typ": "at+jwt"}, {**claims, "aud": "https://other.test"}))
    # And the same claims signed afresh pass, so the refusals above are for the stated reasons.
    assert verify(sign(app, {"typ": "at+jwt"}, claims)) == claims
