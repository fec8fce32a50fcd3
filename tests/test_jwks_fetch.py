"""How a resource server fetches its issuer's metadata and JWK set from a server that
misbehaves (huge, slow, trickling, malformed, redirecting): every fetch is bounded, the
failure is logged once, and the protected route answers 401 or serves cached keys, never a
hang or a 5xx. The server here is a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from helpers.resource_servers import (
    INVENTORY,
    Clock,
    assert_invalid_token,
    inventory,
    protector,
    whoami,
)
from joserfc.jwk import OctKey, RSAKey
from werkzeug.serving import make_server

from flask_m2m.jwks import parse_jwk_set
from flask_m2m.remote import FetchError, Limits, metadata_url, request_json
from flask_m2m.resource_config import RESOURCE_SERVER_DEFAULTS

ISSUER = "https://issuer.test"
TIMEOUT = 0.3
MIN_REFRESH = RESOURCE_SERVER_DEFAULTS["M2M_JWKS_MIN_REFRESH_SECONDS"]
CACHE_SECONDS = RESOURCE_SERVER_DEFAULTS["M2M_JWKS_CACHE_SECONDS"]


class KeyServer:
    """A WSGI server publishing a JWK set the way ``mode`` says."""

    def __init__(self) -> None:
        self.key = RSAKey.generate_key(2048, parameters={"kid": "k1"})
        self.mode = "ok"
        self.metadata: dict[str, Any] = {}
        self.paths: list[str] = []
        self.completed = False  # a streamed answer was sent to its end
        self.release = threading.Event()  # ends the slow and trickling answers
        self.server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def jwks(self) -> bytes:
        return json.dumps({"keys": [self.key.as_dict(private=False)]}).encode()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ["PATH_INFO"]
        self.paths.append(path)
        mode = "ok" if path == "/moved/jwks.json" else self.mode
        if path.startswith("/.well-known/oauth-authorization-server"):
            mode, body = "ok", json.dumps(self.metadata).encode()
        else:
            body = self.jwks()
        json_type = ("Content-Type", "application/json")
        if mode == "ok":
            start_response("200 OK", [json_type, ("Content-Length", str(len(body)))])
            return [body]
        if mode == "huge":  # announced
            start_response("200 OK", [json_type, ("Content-Length", str(10 * 2**20))])
            return self._stream(b"x" * 65536, 160)
        if mode == "huge-unannounced":
            start_response("200 OK", [json_type])
            return self._stream(b" " * 65536, 160)
        if mode == "slow":  # nothing, not even the status line, until the deadline is long past
            self.release.wait(10)
            start_response("200 OK", [json_type])
            return [body]
        if mode == "trickle":  # one byte at a time, each well within the socket timeout
            body = body.ljust(2000)  # a minute of trickling, unless the reader gives up
            start_response("200 OK", [json_type, ("Content-Length", str(len(body)))])
            return self._stream(body, len(body), step=1, pause=TIMEOUT / 10)
        if mode == "redirect-away":
            location = f"http://localhost:{self.server.server_port}/jwks.json"
            start_response("302 Found", [("Location", location), ("Content-Length", "0")])
            return [b""]
        if mode == "redirect-same":
            start_response("302 Found", [("Location", "/moved/jwks.json"), ("Content-Length", "0")])
            return [b""]
        bad = {
            "html": (b"<html>maintenance</html>", "200 OK"),
            "not-a-set": (b'{"keys": "none"}', "200 OK"),
            "array": (b"[]", "200 OK"),
            "deep": (b"[" * 30000 + b"]" * 30000, "200 OK"),
            "error": (b'{"error": "server_error"}', "500 Internal Server Error"),
        }[mode]
        start_response(bad[1], [json_type, ("Content-Length", str(len(bad[0])))])
        return [bad[0]]

    def _stream(self, chunk: bytes, count: int, step: int = 0, pause: float = 0) -> Iterator[bytes]:
        for index in range(count):
            if self.release.is_set():
                return
            yield chunk[index : index + 1] if step else chunk
            if pause:
                time.sleep(pause)
        self.completed = True


@pytest.fixture
def keys() -> Iterator[KeyServer]:
    server = KeyServer()
    yield server
    server.stop()


def token(server: KeyServer, issuer: str = ISSUER) -> str:
    """A valid token for the inventory signed with the server's published key."""
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": INVENTORY,
        "sub": "m2m_client",
        "client_id": "m2m_client",
        "iat": now,
        "exp": now + 300,
        "jti": "j",
        "scope": "inventory:read",
    }
    private = jwt.PyJWK(server.key.as_dict(private=True)).key
    return jwt.encode(claims, private, algorithm="RS256", headers={"typ": "at+jwt", "kid": "k1"})


def service(server: KeyServer, **config: Any) -> tuple[Flask, Clock]:
    app = inventory(
        ISSUER, M2M_JWKS_URI=f"{server.url}/jwks.json", M2M_HTTP_TIMEOUT_SECONDS=TIMEOUT, **config
    )
    return app, Clock(protector(app))


def warnings_about(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.WARNING and text in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("huge", "larger than 65536 bytes"),
        ("huge-unannounced", "larger than 65536 bytes"),
        ("slow", f"within {TIMEOUT:g} s"),
        ("trickle", f"within {TIMEOUT:g} s"),
        ("html", "not JSON"),
        ("not-a-set", "malformed"),
        ("array", "malformed"),
        ("deep", "not JSON"),
        ("error", "HTTP 500"),
        ("redirect-away", "redirected elsewhere"),
    ],
)
def test_bad_jwks_is_bounded_logged_and_refused(
    keys: KeyServer, caplog: pytest.LogCaptureFixture, mode: str, reason: str
) -> None:
    """A JWK set that is too large (announced or not), too slow (even a byte at a time within
    the socket timeout), not JSON (or nested too deep to parse), not a set, an error, or a
    redirect to another host: the
    fetch is abandoned, logged once with the reason, and the token refused with 401; once the
    set is good again the next retry picks it up (and says so)."""
    caplog.set_level(logging.WARNING)
    keys.mode = mode
    app, clock = service(keys)
    for _ in range(3):
        assert_invalid_token(whoami(app, token(keys)))
        clock.advance(MIN_REFRESH)
    assert len(warnings_about(caplog, reason)) == 1, caplog.text
    assert not keys.completed  # the reader gave up before the end
    keys.mode = "ok"
    assert whoami(app, token(keys)).status_code == 200
    assert len(warnings_about(caplog, "fetched again")) == 1


def test_redirect_to_the_same_origin_is_followed(keys: KeyServer) -> None:
    """A redirect to another path of the same scheme, host and port is followed."""
    keys.mode = "redirect-same"
    app, _ = service(keys)
    assert whoami(app, token(keys)).status_code == 200
    assert keys.paths == ["/jwks.json", "/moved/jwks.json"]


def test_bad_jwks_later_keeps_the_cached_keys(
    keys: KeyServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Stale-on-error: a good set, then a huge one at its next fetch: the cached keys keep
    serving (logged once), until ``M2M_JWKS_MAX_STALE_SECONDS`` after their fetch."""
    caplog.set_level(logging.WARNING)
    app, clock = service(keys, M2M_JWKS_MAX_STALE_SECONDS=CACHE_SECONDS * 2)
    assert whoami(app, token(keys)).status_code == 200
    keys.mode = "huge"
    clock.advance(CACHE_SECONDS)
    for _ in range(3):
        assert whoami(app, token(keys)).status_code == 200
        clock.advance(MIN_REFRESH)
    assert len(warnings_about(caplog, "keep serving")) == 1
    clock.advance(CACHE_SECONDS)
    assert_invalid_token(whoami(app, token(keys)))


def test_jwks_uri_from_the_issuers_metadata(keys: KeyServer) -> None:
    """RFC 8414 §3.1: without ``M2M_JWKS_URI`` the set is found from the issuer's metadata,
    at the well-known URL with the issuer's path after it."""
    issuer = f"{keys.url}/tenant"
    keys.metadata = {"issuer": issuer, "jwks_uri": f"{keys.url}/jwks.json"}
    app = inventory(issuer)
    assert whoami(app, token(keys, issuer)).status_code == 200
    assert_invalid_token(whoami(app, token(keys)))  # another issuer's token
    assert keys.paths == ["/.well-known/oauth-authorization-server/tenant", "/jwks.json"]


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ({"issuer": "https://evil.test", "jwks_uri": "/jwks.json"}, "another issuer"),
        ({"jwks_uri": "/jwks.json"}, "another issuer"),
        ({"issuer": "{issuer}"}, "no jwks_uri"),
        ({"issuer": "{issuer}", "jwks_uri": "http://example.com/jwks"}, "must use https"),
    ],
    ids=["other-issuer", "no-issuer", "no-jwks-uri", "insecure-jwks-uri"],
)
def test_metadata_must_be_the_issuers_own(
    keys: KeyServer, caplog: pytest.LogCaptureFixture, metadata: dict[str, str], reason: str
) -> None:
    """RFC 8414 §3.3: metadata naming another issuer is not used; a ``jwks_uri`` it names must
    itself be https (or loopback): nothing else is fetched, the token is refused, and the
    reason logged."""
    caplog.set_level(logging.WARNING)
    keys.metadata = {
        name: value.replace("{issuer}", keys.url).replace("/jwks.json", f"{keys.url}/jwks.json")
        if value.startswith(("/", "{"))
        else value
        for name, value in metadata.items()
    }
    app = inventory(keys.url)
    assert_invalid_token(whoami(app, token(keys)))
    assert keys.paths == ["/.well-known/oauth-authorization-server"]
    assert len(warnings_about(caplog, reason)) == 1, caplog.text


def b64_int(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_unusable_keys_are_skipped() -> None:
    """Only public RSA (2048 bits or more), EC and OKP signature keys with a ``kid`` are kept;
    private members are dropped; a symmetric key never counts."""
    good = RSAKey.generate_key(2048, parameters={"kid": "good"})
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key()
    small = {
        "kty": "RSA",
        "kid": "small",
        "n": b64_int(numbers.public_numbers().n),
        "e": b64_int(numbers.public_numbers().e),
    }
    members = [
        good.as_dict(private=True),
        small,
        OctKey.generate_key(256, parameters={"kid": "oct"}).as_dict(private=True),
        {**good.as_dict(private=False), "kid": "enc", "use": "enc"},
        {**good.as_dict(private=False), "kid": None},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        "junk",
    ]
    parsed = parse_jwk_set({"keys": members})
    assert list(parsed) == ["good"]
    assert not parsed["good"].is_private


def test_urls_are_checked_before_any_request() -> None:
    """``https`` only, except to loopback hosts: a plain-http URL elsewhere is refused without
    a connection; RFC 8414 §3.1 metadata URLs."""
    limits = Limits(timeout=TIMEOUT, max_bytes=1024)
    for url in ("http://example.com/jwks", "file:///etc/passwd", "https://user:pw@a.test/"):
        with pytest.raises(FetchError):
            request_json(url, limits)
    assert metadata_url("https://a.test") == "https://a.test/.well-known/oauth-authorization-server"
    assert metadata_url("https://a.test/t1/") == (
        "https://a.test/.well-known/oauth-authorization-server/t1"
    )
