"""The token endpoint, ``POST /m2m/token``: the client credentials grant (RFC 6749 §4.4)."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import event
from werkzeug.test import EnvironBuilder, TestResponse, run_wsgi_app

import flask_m2m.tokens
from flask_m2m import signals
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import (
    create_client,
    delete_client,
    list_clients,
    rotate_secret,
    set_disabled,
)
from flask_m2m.models import utcnow

TOKEN_URL = "/m2m/token"
FORM = "application/x-www-form-urlencoded"
GRANT = {"grant_type": "client_credentials"}
Creds = dict[str, Any]


def b64(raw: bytes | str) -> str:
    return base64.b64encode(raw.encode() if isinstance(raw, str) else raw).decode()


def jwt_claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    padded = payload + "=" * (-len(payload) % 4)
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(padded))
    return claims


def post_creds(creds: Creds) -> dict[str, str]:
    return {"client_id": creds["client_id"], "client_secret": creds["client_secret"]}


def basic(creds: Creds) -> dict[str, str]:
    return basic_auth(creds["client_id"], creds["client_secret"])


def request_token(c: FlaskClient, creds: Creds, auth: str, **form: Any) -> TestResponse:
    """A token request authenticated with ``client_secret_basic`` or ``client_secret_post``."""
    data = {**GRANT, **form}
    if auth == "basic":
        return c.post(TOKEN_URL, data=data, headers=basic(creds))
    return c.post(TOKEN_URL, data={**data, **post_creds(creds)})


def assert_error(response: TestResponse, status: int, *errors: str) -> dict[str, Any]:
    """An RFC 6749 §5.2 error: JSON with an ``error`` member, never cached (§5.1)."""
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.get_json()
    assert body["error"] in errors, body
    assert "access_token" not in body
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    return body


def client_count(app: Flask) -> int:
    with app.app_context():
        return len(list_clients(get_state(app)).items)


def assert_unharmed(app: Flask, c: FlaskClient, creds: Creds, clients: int = 1) -> None:
    """The client still gets tokens and no client appeared."""
    fetch_token(c, creds)
    assert client_count(app) == clients


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> float:
    """Stop ``time.time`` mid-second so that ``expires_in`` cannot straddle a second."""
    now = float(int(time.time())) + 0.25
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: now)
    return now


# -- success (RFC 6749 §4.4.3, §5.1) ------------------------------------------------------------
@pytest.mark.parametrize("auth", ["basic", "post"])
def test_token_success(
    app: Flask, client: FlaskClient, registered_client: Creds, auth: str, frozen_clock: float
) -> None:
    """RFC 6749 §4.4.3/§5.1: access_token, token_type Bearer, integer expires_in, scope, no
    refresh_token, Cache-Control: no-store and Pragma: no-cache (both client auth methods)."""
    response = request_token(client, registered_client, auth)
    assert response.status_code == 200, response.data
    assert response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Pragma"] == "no-cache"
    body = response.get_json()
    assert isinstance(body["access_token"], str) and body["access_token"]
    assert body["token_type"] == "Bearer"
    assert type(body["expires_in"]) is int and body["expires_in"] == 3600
    assert set(body["scope"].split()) == {"read", "write"}
    assert "refresh_token" not in body
    assert "error" not in body
    whoami = client.get("/api/whoami", headers=bearer(body["access_token"]))
    assert whoami.status_code == 200
    assert whoami.get_json()["client_id"] == registered_client["client_id"]


def test_configured_lifetime(app_factory: Callable[..., Flask], frozen_clock: float) -> None:
    """RFC 6749 §5.1: expires_in is the configured M2M_ACCESS_TOKEN_EXPIRES_IN."""
    app = app_factory(M2M_ACCESS_TOKEN_EXPIRES_IN=60)
    creds = register(app)
    body = request_token(app.test_client(), creds, "basic").get_json()
    assert body["expires_in"] == 60
    claims = jwt_claims(body["access_token"])
    assert claims["exp"] - claims["iat"] == 60


# -- scope (RFC 6749 §3.3) -------------------------------------------------------------------
@pytest.mark.parametrize("asked", [None, "read", "write", "read write", "write read"])
def test_granted_scope(client: FlaskClient, registered_client: Creds, asked: str | None) -> None:
    """RFC 6749 §3.3: no scope asked -> the default, all allowed scopes (named in the response);
    a requested subset of the allowed scopes -> exactly that subset."""
    form = {} if asked is None else {"scope": asked}
    body = request_token(client, registered_client, "post", **form).get_json()
    expected = set((asked or "read write").split())
    assert set(body["scope"].split()) == expected
    whoami = client.get("/api/whoami", headers=bearer(body["access_token"])).get_json()
    assert set(whoami["scopes"]) == expected


@pytest.mark.parametrize(
    "asked",
    ["admin", "read admin", "READ", 'read"', "read\\", 'a"b', "réad", "read\twrite", "read\x7f"],
)
def test_bad_scope(app: Flask, client: FlaskClient, registered_client: Creds, asked: str) -> None:
    """RFC 6749 §5.2 invalid_scope: a scope not allowed, or malformed per §3.3 (scope-token =
    1*( %x21 / %x23-5B / %x5D-7E ), so no quote, backslash, non-ASCII or control characters)."""
    response = request_token(client, registered_client, "basic", scope=asked)
    assert_error(response, 400, "invalid_scope")
    assert_unharmed(app, client, registered_client)


# -- grant type and method (RFC 6749 §4.4.2, §5.2) --------------------------------------------
@pytest.mark.parametrize("auth", ["basic", "post"])
@pytest.mark.parametrize("form", [{}, {"scope": "read"}, {"grant_type": ""}])
def test_missing_grant_type(
    client: FlaskClient, registered_client: Creds, auth: str, form: dict[str, str]
) -> None:
    """RFC 6749 §4.4.2/§5.2: grant_type is REQUIRED; without it -> invalid_request."""
    data = {**form, **post_creds(registered_client)} if auth == "post" else form
    headers = basic(registered_client) if auth == "basic" else {}
    assert_error(client.post(TOKEN_URL, data=data, headers=headers), 400, "invalid_request")


@pytest.mark.parametrize(
    "grant_type",
    ["password", "authorization_code", "refresh_token", "implicit",
     "urn:ietf:params:oauth:grant-type:jwt-bearer", 'pass"word', "pässword"],
)
def test_unsupported_grant_type(
    client: FlaskClient, registered_client: Creds, grant_type: str
) -> None:
    """RFC 6749 §5.2: a grant type the server does not support -> unsupported_grant_type."""
    response = request_token(
        client, registered_client, "basic", grant_type=grant_type, username="u", password="p",
        code="c", refresh_token="r",
    )
    assert_error(response, 400, "unsupported_grant_type")


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_wrong_method(client: FlaskClient, registered_client: Creds, method: str) -> None:
    """RFC 6749 §3.2: the client MUST use POST; other methods -> 405 with Allow: POST."""
    headers = basic(registered_client)
    response = client.open(TOKEN_URL, method=method, headers=headers, query_string=GRANT)
    assert_error(response, 405, "invalid_request")
    assert response.headers["Allow"] == "POST"


# -- client authentication (RFC 6749 §2.3, §5.2) ----------------------------------------------
def _break_client(app: Flask, creds: Creds, how: str) -> Creds:
    """Make ``creds`` unusable in the way ``how`` names; return the credentials to send."""
    if how == "unknown_id":
        return {**creds, "client_id": "m2m_" + "Z" * 24}
    if how == "wrong_secret":
        return {**creds, "client_secret": creds["client_secret"][:-1] + "#"}
    if how == "other_clients_secret":
        return {**creds, "client_secret": register(app)["client_secret"]}
    with app.app_context():
        state = get_state(app)
        if how == "disabled":
            set_disabled(state, creds["client_id"], True, actor="test")
            state.db.session.commit()
        elif how == "expired":
            row = state.db.session.get(state.models.client, creds["client_id"])
            row.expires_at = utcnow() - timedelta(seconds=1)
            state.db.session.commit()
        elif how == "deleted":
            delete_client(state, creds["client_id"], actor="test")
            state.db.session.commit()
    return creds


@pytest.mark.parametrize("auth", ["basic", "post"])
@pytest.mark.parametrize(
    "how", ["unknown_id", "wrong_secret", "other_clients_secret", "disabled", "expired", "deleted"]
)
def test_invalid_client(app: Flask, client: FlaskClient, auth: str, how: str) -> None:
    """RFC 6749 §5.2 invalid_client (401): unknown, wrongly authenticated, disabled, expired or
    deleted clients; the Basic challenge only when the Authorization header was used."""
    creds = register(app, expires_in_days=30)
    fetch_token(client, creds)  # the credentials work before they are broken
    sent = _break_client(app, creds, how)
    response = request_token(client, sent, auth)
    assert_error(response, 401, "invalid_client")
    if auth == "basic":
        assert response.headers["WWW-Authenticate"].startswith("Basic")
    else:
        assert "WWW-Authenticate" not in response.headers


def test_no_credentials(app: Flask, client: FlaskClient, registered_client: Creds) -> None:
    """RFC 6749 §3.2.1/§5.2: a confidential client MUST authenticate; none -> invalid_client."""
    assert_error(client.post(TOKEN_URL, data=GRANT), 401, "invalid_client")
    assert_unharmed(app, client, registered_client)


@pytest.mark.parametrize("field", ["client_id", "client_secret"])
def test_post_credentials_incomplete(
    client: FlaskClient, registered_client: Creds, field: str
) -> None:
    """RFC 6749 §2.3.1: client_secret_post needs both client_id and client_secret."""
    data = {**GRANT, field: registered_client[field]}
    assert_error(client.post(TOKEN_URL, data=data), 401, "invalid_client")


@pytest.mark.parametrize("extra", [{"client_secret": "x"}, "both"])
def test_two_auth_methods(client: FlaskClient, registered_client: Creds, extra: Any) -> None:
    """RFC 6749 §2.3: the client MUST NOT use more than one authentication method."""
    body = post_creds(registered_client) if extra == "both" else extra
    response = client.post(TOKEN_URL, data={**GRANT, **body}, headers=basic(registered_client))
    assert_error(response, 400, "invalid_request")


def test_credentials_in_query(app: Flask, client: FlaskClient, registered_client: Creds) -> None:
    """RFC 6749 §2.3.1: client credentials MUST NOT be sent in the request URI."""
    response = client.post(TOKEN_URL, query_string=post_creds(registered_client), data=GRANT)
    assert_error(response, 401, "invalid_client")
    # §3.2: the grant parameters belong in the body as well.
    query = {**GRANT, **post_creds(registered_client)}
    response = client.post(TOKEN_URL, query_string=query, data=b"", content_type=FORM)
    assert_error(response, 400, "invalid_request")
    assert_unharmed(app, client, registered_client)


def test_form_encoded_basic_credentials(app: Flask) -> None:
    """RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic encoding, so a secret
    holding '+', '/', ':' and '%' works when encoded (and a raw '+' would mean a space)."""
    secret = "a+b/c:d%e" + "x" * 40
    with app.app_context():
        model, _ = create_client(
            get_state(app), actor="test", name="encoded", scopes="read", secret=secret
        )
        get_state(app).db.session.commit()
        creds = {"client_id": model.client_id, "client_secret": secret}
    c = app.test_client()
    assert fetch_token(c, creds)
    assert request_token(c, creds, "post").status_code == 200
    raw = {"Authorization": "Basic " + b64(f"{creds['client_id']}:{secret}")}
    assert_error(c.post(TOKEN_URL, data=GRANT, headers=raw), 401, "invalid_client")


# -- hostile or malformed input: a 4xx JSON error, never a 5xx ---------------------------------
Builder = Callable[[Creds], dict[str, Any]]
G = b"grant_type=client_credentials"


def _fill(value: str, creds: Creds) -> str:
    return value.replace("{id}", creds["client_id"]).replace("{secret}", creds["client_secret"])


def _raw(body: bytes | str, content_type: str | None = FORM) -> Builder:
    """This exact body, with valid Basic credentials."""
    extra = {"content_type": content_type} if content_type else {}
    return lambda cr: {"data": _fill(body, cr) if isinstance(body, str) else body,
                       "headers": basic(cr), **extra}


def _basic_header(userpass: str | bytes) -> Builder:
    """A valid body with ``Authorization: Basic base64(userpass)``."""
    return lambda cr: {"data": GRANT, "headers": {"Authorization": "Basic " + b64(
        _fill(userpass, cr) if isinstance(userpass, str) else userpass)}}


def _header(value: str) -> Builder:
    return lambda cr: {"data": GRANT, "headers": {"Authorization": value}}


def _post(**override: str) -> Builder:
    """client_secret_post with some parameters replaced."""
    return lambda cr: {"data": {**GRANT, **post_creds(cr),
                                **{k: _fill(v, cr) for k, v in override.items()}}}


def _basic(**form: Any) -> Builder:
    return lambda cr: {"data": {**GRANT, **form}, "headers": basic(cr)}


INVALID_REQUEST: list[tuple[str, Builder]] = [
    ("json_body", lambda cr: {"json": GRANT, "headers": basic(cr)}),
    ("text_plain", _raw(G, "text/plain")),
    ("no_content_type", _raw(G, None)),
    ("multipart", _basic(dummy=(io.BytesIO(b"x"), "f.txt"))),
    ("nul_client_id", _post(client_id="m2m_\x00abc")),
    ("nul_client_secret", _post(client_secret="{secret}\x00")),
    ("nul_scope", _basic(scope="read\x00")),
    ("nul_grant_type", _basic(grant_type="client_credentials\x00")),
    ("grant_type_twice", _raw(G + b"&" + G)),
    ("scope_twice", _raw(G + b"&scope=read&scope=write")),
    ("client_id_twice", _raw("grant_type=client_credentials&client_id={id}&client_id={id}")),
    ("odd_name_twice", _raw(G + b"&%C3%A9=1&%C3%A9=2")),
    ("quote_name_twice", _raw(G + b"&%22=1&%22=2")),
    ("body_not_utf8", _raw(G + b"&scope=r\xffead")),
]
INVALID_CLIENT: list[tuple[str, Builder]] = [
    ("basic_not_base64", _header("Basic !!!not*base64!!!")),
    ("basic_no_colon", _basic_header("{id}")),
    ("basic_not_utf8", _basic_header(b"\xff\xfe:\xc3\x28")),
    ("basic_nothing", _header("Basic")),
    ("basic_blank", _header("Basic    ")),
    ("basic_pct_zz", _basic_header("%ZZ:%ZZ")),
    ("basic_pct_ff_id", _basic_header("%FF:{secret}")),
    ("basic_pct_ff_secret", _basic_header("{id}:%FF%FE")),
    ("basic_empty_secret", _basic_header("{id}:")),
    ("basic_empty_id", _basic_header(":{secret}")),
    ("basic_nul_id", _basic_header("{id}%00:{secret}")),
    ("other_scheme_only", _header("Digest username=x")),
    ("long_client_id_post", _post(client_id="m2m_" + "a" * 10_000)),
    ("long_client_id_basic", _basic_header("a" * 10_000 + ":{secret}")),
    ("long_secret_post", _post(client_secret="s" * 10_000)),
]
BAD_INPUT = (
    [pytest.param(b, 400, ("invalid_request",), id=i) for i, b in INVALID_REQUEST]
    + [pytest.param(b, 401, ("invalid_client",), id=i) for i, b in INVALID_CLIENT]
    + [
        pytest.param(_raw(G + b"&pad=" + b"x" * 1_000_000), 413, ("invalid_request",), id="1mb"),
        pytest.param(_raw(G + b"&pad=" + b"x" * 20_000), 413, ("invalid_request",), id="20kb"),
        # Not valid percent-encoding: refused as malformed, or read literally and not allowed.
        pytest.param(_raw(G + b"&scope=%ZZ"), 400, ("invalid_request", "invalid_scope"), id="%ZZ"),
        pytest.param(_raw(G + b"&scope=%FF"), 400, ("invalid_request", "invalid_scope"), id="%FF"),
    ]
)


@pytest.mark.parametrize(("build", "status", "errors"), BAD_INPUT)
def test_bad_input(
    app: Flask,
    client: FlaskClient,
    registered_client: Creds,
    build: Callable[[Creds], dict[str, Any]],
    status: int,
    errors: tuple[str, ...],
) -> None:
    """RFC 6749 §5.2 (and §2.3.1, §3.2, §3.3): malformed input gets a 4xx JSON error with an
    "error" member, never a 5xx nor a token; the client keeps working and nothing is created."""
    failed: list[dict[str, Any]] = []
    with signals.token_issued.connected_to(lambda sender, **kw: failed.append(kw), app):
        response = client.post(TOKEN_URL, **build(registered_client))
    assert_error(response, status, *errors)
    assert failed == []
    assert_unharmed(app, client, registered_client)


LIMIT = 1024  # M2M_MAX_REQUEST_BYTES in the tests below


def _sized_body(size: int) -> bytes:
    body = G + b"&pad="
    return body + b"x" * (size - len(body))


def _post_streamed(app: Flask, creds: Creds, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST ``body`` without Content-Length, as a chunked upload through a WSGI server."""
    headers = {**basic(creds), "Content-Type": FORM}
    environ = EnvironBuilder(path=TOKEN_URL, method="POST", headers=headers).get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ.update({"wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
                    "HTTP_TRANSFER_ENCODING": "chunked"})
    chunks, status, _ = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(chunks))


@pytest.mark.parametrize("streamed", [False, True], ids=["content_length", "chunked"])
@pytest.mark.parametrize(("size", "status"), [(LIMIT - 1, 200), (LIMIT, 200), (LIMIT + 1, 413),
                                              (20_000, 413)])
def test_body_size_limit(
    app_factory: Callable[..., Flask], streamed: bool, size: int, status: int
) -> None:
    """RFC 6749 §5.2 / RFC 9110 §15.5.14: M2M_MAX_REQUEST_BYTES is the largest accepted body,
    with or without Content-Length; a larger (e.g. chunked) body is refused with 413, never
    silently truncated and then accepted."""
    app = app_factory(M2M_MAX_REQUEST_BYTES=LIMIT)
    creds = register(app)
    body = _sized_body(size)
    assert len(body) == size
    if streamed:
        got, payload = _post_streamed(app, creds, body)
    else:
        response = app.test_client().post(TOKEN_URL, data=body, content_type=FORM,
                                          headers=basic(creds))
        got, payload = response.status_code, response.get_json()
    assert got == status, payload
    if status == 200:
        assert "access_token" in payload
    else:
        assert payload["error"] == "invalid_request"


# -- signals ---------------------------------------------------------------------------------
def test_signals(app: Flask, client: FlaskClient, registered_client: Creds) -> None:
    """RFC 6749 §4.4.3/§5.2: a token_issued signal for each issued token and an
    authentication_failed signal for each failed client authentication, never the reverse."""
    issued: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    with (
        signals.token_issued.connected_to(lambda sender, **kw: issued.append(kw), app),
        signals.authentication_failed.connected_to(lambda sender, **kw: failures.append(kw), app),
    ):
        request_token(client, registered_client, "post", scope="read")
        assert issued == [{"client_id": registered_client["client_id"], "scope": "read"}]
        assert failures == []
        wrong = {**registered_client, "client_secret": "nope" * 10}
        assert_error(request_token(client, wrong, "basic"), 401, "invalid_client")
        assert_error(request_token(client, wrong, "post"), 401, "invalid_client")
    assert len(issued) == 1
    assert len(failures) == 2
    assert all(f["client_id"] == registered_client["client_id"] for f in failures)
    assert all(isinstance(f["reason"], str) for f in failures)
    assert not any(registered_client["client_secret"] in repr(f) for f in failures + issued)


@pytest.mark.parametrize(
    "change",
    [
        lambda state, cid: set_disabled(state, cid, True, actor="test"),
        lambda state, cid: rotate_secret(state, cid, actor="test", grace_period_seconds=0),
        lambda state, cid: delete_client(state, cid, actor="test"),
    ],
    ids=["disable", "rotate", "delete"],
)
def test_change_takes_effect_at_once_in_this_process(
    app_factory: Callable[..., Flask], shared_database_url: str, change: Any
) -> None:
    """A token request that reads a client between the flush and the commit of a change
    (as one in another thread may) must not keep serving the old row from memory."""
    app = app_factory(shared_database_url, M2M_STATE_CACHE_SECONDS=30)
    target = register(app)
    headers = basic_auth(target["client_id"], target["client_secret"])
    web = app.test_client()
    assert web.post("/m2m/token", data=GRANT, headers=headers).status_code == 200
    with app.app_context():
        state = get_state(app)

        def read_meanwhile(session: Any, context: Any) -> None:
            state.server.credentials.get(target["client_id"])

        event.listen(state.db.session, "after_flush", read_meanwhile)
        try:
            change(state, target["client_id"])
            state.db.session.commit()  # the caller commits
        finally:
            event.remove(state.db.session, "after_flush", read_meanwhile)
    assert web.post("/m2m/token", data=GRANT, headers=headers).status_code == 401
