"""The transport of protocol requests: ``M2M_REQUIRE_HTTPS`` (RFC 6749 §1.6, §3.2: the token
endpoint MUST require TLS), refused as RFC 6749 §5.2 errors, never a 5xx."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
from authlib.oauth2.rfc6749 import InsecureTransportError
from flask import Flask
from helpers.apps import SECRET_KEY, fetch_token, register
from helpers.http import basic_auth
from helpers.servers import create_client_cli, example_env, gunicorn_servers

from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state

GRANT = {"grant_type": "client_credentials"}
ENDPOINTS = ["token", "revoke", "introspect"]
PUBLIC = "http://api.example.com"
#: Hosts that count as loopback: plain HTTP to them is accepted even when HTTPS is required.
LOOPBACK = ["http://localhost", "http://127.0.0.1", "http://127.8.9.10:8080", "http://[::1]:5000"]


def form_for(endpoint: str) -> dict[str, str]:
    return GRANT if endpoint == "token" else {"token": "not-a-token"}


def assert_https_required(response: Any) -> None:
    """RFC 6749 §5.2: 400 ``invalid_request`` as JSON, not cached, saying HTTPS is needed."""
    assert response.status_code == 400, response.data
    body = response.get_json()
    assert body["error"] == "invalid_request"
    assert "HTTPS" in body["error_description"]
    assert response.headers["Cache-Control"] == "no-store"
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_plain_http_to_a_public_host_is_a_400(
    app_factory: Callable[..., Flask], endpoint: str
) -> None:
    """RFC 6749 §3.2 (TLS required) and §5.2: plain HTTP to a non-loopback host, with or
    without credentials, is 400 ``invalid_request`` (it used to be a 500 with a traceback)."""
    app = app_factory(M2M_REQUIRE_HTTPS=True)
    creds = register(app)
    client = app.test_client()
    url = f"/m2m/{endpoint}"
    assert_https_required(client.post(url, data=form_for(endpoint), base_url=PUBLIC))
    headers = basic_auth(creds["client_id"], creds["client_secret"])
    response = client.post(url, data=form_for(endpoint), headers=headers, base_url=PUBLIC)
    assert_https_required(response)
    # Before any other check: a GET or an empty body over plain HTTP gets the same answer.
    assert_https_required(client.get(url, base_url=PUBLIC))
    assert_https_required(client.post(url, base_url=PUBLIC))


def test_https_to_a_public_host_works(app_factory: Callable[..., Flask]) -> None:
    """With HTTPS required, a request the app sees as ``https`` gets its token."""
    app = app_factory(M2M_REQUIRE_HTTPS=True)
    creds = register(app)
    client = app.test_client()
    response = client.post(
        "/m2m/token",
        data=GRANT,
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
        base_url="https://api.example.com",
    )
    assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize("testing", [True, False])
def test_setting_off_allows_plain_http(app_factory: Callable[..., Flask], testing: bool) -> None:
    """``M2M_REQUIRE_HTTPS = False``: all three endpoints work over plain HTTP to any host (a
    trusted plain hop behind a proxy), in testing mode or not."""
    app = app_factory(M2M_REQUIRE_HTTPS=False, TESTING=testing)
    creds = register(app)
    client = app.test_client()
    headers = basic_auth(creds["client_id"], creds["client_secret"])
    response = client.post("/m2m/token", data=GRANT, headers=headers, base_url=PUBLIC)
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    response = client.post(
        "/m2m/introspect", data={"token": token}, headers=headers, base_url=PUBLIC
    )
    assert response.status_code == 200 and response.get_json()["active"] is True
    response = client.post("/m2m/revoke", data={"token": token}, headers=headers, base_url=PUBLIC)
    assert response.status_code == 200


@pytest.mark.parametrize("base_url", LOOPBACK)
def test_loopback_allowed_when_https_required(
    app_factory: Callable[..., Flask], base_url: str
) -> None:
    """Plain HTTP to localhost, 127.0.0.0/8 or ::1 stays allowed with HTTPS required."""
    app = app_factory(M2M_REQUIRE_HTTPS=True)
    creds = register(app)
    client = app.test_client()
    headers = basic_auth(creds["client_id"], creds["client_secret"])
    response = client.post("/m2m/token", data=GRANT, headers=headers, base_url=base_url)
    assert response.status_code == 200, response.get_json()
    token = response.get_json()["access_token"]
    for endpoint in ("introspect", "revoke"):
        response = client.post(
            f"/m2m/{endpoint}", data={"token": token}, headers=headers, base_url=base_url
        )
        assert response.status_code == 200, response.get_json()


@pytest.mark.parametrize(
    ("testing", "debug", "required"),
    [(False, False, True), (True, False, False), (False, True, False), (True, True, False)],
)
def test_default_follows_debug_and_testing(
    app_factory: Callable[..., Flask], testing: bool, debug: bool, required: bool
) -> None:
    """Unset (None), HTTPS is required unless the app is in debug or testing mode."""
    app = app_factory(TESTING=testing, DEBUG=debug)
    assert get_state(app).settings.require_https is None
    response = app.test_client().post("/m2m/token", data=GRANT, base_url=PUBLIC)
    if required:
        assert_https_required(response)
    else:
        assert response.status_code == 401  # past the transport check: no credentials


def test_default_reads_debug_per_request(app_factory: Callable[..., Flask]) -> None:
    """Debug mode turned on after ``init_app`` (as ``app.run(debug=True)`` does) counts."""
    app = app_factory(TESTING=False)
    client = app.test_client()
    assert_https_required(client.post("/m2m/token", data=GRANT, base_url=PUBLIC))
    app.debug = True
    assert client.post("/m2m/token", data=GRANT, base_url=PUBLIC).status_code == 401


def test_hint_logged_once_per_app(
    app_factory: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """The first refusal logs one warning naming ProxyFix, M2M_ISSUER and M2M_REQUIRE_HTTPS;
    later refusals do not log it again, and accepted requests never do. Another app logs its
    own."""
    app = app_factory(M2M_REQUIRE_HTTPS=True)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, logger=app.logger.name):
        for _ in range(2):
            assert_https_required(client.post("/m2m/token", data=GRANT, base_url=PUBLIC))
        client.post("/m2m/token", data=GRANT)  # loopback
    hints = [r for r in caplog.records if "M2M_REQUIRE_HTTPS" in r.getMessage()]
    assert len(hints) == 1
    message = hints[0].getMessage()
    assert hints[0].levelno == logging.WARNING
    assert "ProxyFix" in message and "x_proto=1" in message and "M2M_ISSUER" in message
    assert "api.example.com" in message

    other = app_factory(M2M_REQUIRE_HTTPS=True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=other.logger.name):
        other.test_client().post("/m2m/revoke", data={"token": "x"}, base_url=PUBLIC)
    assert len([r for r in caplog.records if "M2M_REQUIRE_HTTPS" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (None, None), ("true", True), ("0", False), ("Off", False)],
)
def test_setting_values(app_factory: Callable[..., Flask], value: Any, expected: Any) -> None:
    """``M2M_REQUIRE_HTTPS`` takes a bool, None, or a boolean word (as from the environment)."""
    assert get_state(app_factory(M2M_REQUIRE_HTTPS=value)).settings.require_https is expected


@pytest.mark.parametrize("value", ["maybe", 2, "", []])
def test_setting_refuses_other_values(app_factory: Callable[..., Flask], value: Any) -> None:
    """Anything else fails fast, naming the key."""
    with pytest.raises(ConfigurationError, match="M2M_REQUIRE_HTTPS"):
        app_factory(M2M_REQUIRE_HTTPS=value)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_any_oauth_error_is_a_json_error(
    app_factory: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    """RFC 6749 §5.2: an ``OAuth2Error`` that Authlib raises outside its own handlers (while
    it builds its request, as ``InsecureTransportError`` did) is rendered, never a 500.

    Authlib can no longer be made to raise one there for real, so the server's request
    builder is replaced, on this one app, by one that raises the error that used to escape.
    """
    app = app_factory()
    creds = register(app)
    server = get_state(app).server

    def refuse(request: Any) -> Any:
        raise InsecureTransportError()

    monkeypatch.setattr(server, "create_oauth2_request", refuse)
    response = app.test_client().post(
        f"/m2m/{endpoint}",
        data=form_for(endpoint),
        headers=basic_auth(creds["client_id"], creds["client_secret"]),
    )
    assert response.status_code == 400
    assert response.get_json()["error"] == "insecure_transport"
    assert response.headers["Cache-Control"] == "no-store"


def test_fetch_token_still_works_on_the_default_test_host(
    app_factory: Callable[..., Flask],
) -> None:
    """The test client's default host, ``localhost``, is loopback: nothing changes for it."""
    app = app_factory(M2M_REQUIRE_HTTPS=True)
    assert fetch_token(app.test_client(), register(app))


@pytest.mark.slow
def test_example_behind_proxy_fix_under_gunicorn(tmp_path: Path) -> None:
    """The example app under gunicorn with ``EXAMPLE_PROXY_FIX=1`` and HTTPS required by
    default (not debug, not testing): a request for a public host that the proxy marks
    ``X-Forwarded-Proto: https`` gets its token; the same request without that header is
    400 ``invalid_request``, and the server logs the hint once, without a traceback."""
    env = example_env(
        SQLALCHEMY_DATABASE_URI=f"sqlite:///{tmp_path / 'proxy.db'}",
        SECRET_KEY=SECRET_KEY,
        RATELIMIT_KEY_PREFIX=f"m2m-test-{uuid.uuid4().hex}",
        EXAMPLE_PROXY_FIX=1,
    )
    creds = create_client_cli(env, "behind-proxy", "read")
    auth = (creds["client_id"], creds["client_secret"])
    public = {"Host": "api.example.com"}
    with gunicorn_servers(tmp_path) as start, requests.Session() as session:
        server = start(env, 1, 1)
        url = server.url + "/m2m/token"
        forwarded = {**public, "X-Forwarded-Proto": "https"}
        response = session.post(url, data=GRANT, auth=auth, headers=forwarded, timeout=30)
        assert response.status_code == 200, response.text
        for _ in range(2):
            response = session.post(url, data=GRANT, auth=auth, headers=public, timeout=30)
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_request"
            assert "HTTPS" in response.json()["error_description"]
        # Straight to the server's loopback address, plain HTTP is still fine.
        assert session.post(url, data=GRANT, auth=auth, timeout=30).status_code == 200
    assert server.output().count("ProxyFix(app.wsgi_app, x_proto=1") == 1


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("LOCALHOST:5000", True),
        ("localhost.", True),
        ("127.0.0.1", True),
        ("127.8.9.10:8080", True),
        ("[::1]", True),
        ("[::1]:5000", True),
        ("[::ffff:127.0.0.1]:80", True),
        ("api.example.com", False),
        ("localhost.example.com", False),
        ("10.0.0.1", False),
        ("[::2]:80", False),
        ("127.0.0.1.nip.io", False),
        ("", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    """What counts as this machine, whatever Authlib's own list (older releases knew fewer)."""
    from flask_m2m.transport import is_loopback

    assert is_loopback(host) is loopback
