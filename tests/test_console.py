"""The example's admin console through Flask's test client: login, CSRF, forms, no secret
after creation, errors on the form, and the audit trail."""

from __future__ import annotations

import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import RATELIMIT_STORAGE_URI, fetch_token, register
from helpers.console import (
    ADMIN,
    PASSWORD,
    PASSWORD_HASH,
    SECRET_PATTERN,
    console_app,
    count_hash_checks,
    csrf_token,
    login,
    post_form,
)
from helpers.http import LiveServer, basic_auth, bearer
from werkzeug.security import generate_password_hash

from example.console import LOGIN_FAILURES_ALLOWED, new_admin_password
from flask_m2m import ConfigurationError, audit
from flask_m2m import lifecycle as clients
from flask_m2m.extension import get_state


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    with console_app(tmp_path) as app:
        yield app


@pytest.fixture
def admin(app: Flask) -> FlaskClient:
    """A test client logged in to the console."""
    client = app.test_client()
    assert login(client).status_code == 302
    return client


def create(admin: FlaskClient, **fields: str) -> tuple[str, str]:
    """Create a client through the console; returns its id and the secret shown once."""
    data = {"name": "billing", "scopes": "read write", **fields}
    response = post_form(admin, "/console/clients/new", data)
    assert response.status_code == 200, response.text
    assert "will not be shown again" in response.text
    secret = SECRET_PATTERN.search(response.text)
    client_id = re.search(r'id="client-id">(m2m_[A-Za-z0-9]+)<', response.text)
    assert secret and client_id
    return client_id.group(1), secret.group(0)


def test_login_required(app: Flask) -> None:
    """Every console page sends a stranger to the login page, remembering where they went."""
    client = app.test_client()
    for path in ("/console/", "/console/clients/new", "/console/clients/m2m_x/events"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.location.startswith("/console/login?next=")
    assert client.get("/console/login").status_code == 200


def test_login_wrong_then_right(app: Flask) -> None:
    client = app.test_client()
    wrong = login(client, "not the password")
    assert wrong.status_code == 401
    assert "Wrong username or password" in wrong.text
    assert client.get("/console/").status_code == 302
    right = login(client)
    assert right.status_code == 302 and right.location == "/console/"
    assert client.get("/console/").status_code == 200


def test_login_cookie_flags_and_logout(app: Flask) -> None:
    client = app.test_client()
    cookie = login(client).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/console/")
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    response = client.post("/console/logout", data={"csrf_token": csrf_token(page.text)})
    assert response.status_code == 302
    assert client.get("/console/").status_code == 302


def session_cookie(client: FlaskClient) -> str:
    """The value of the client's session cookie."""
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def replay(app: Flask, cookie: str) -> FlaskClient:
    """A fresh client, from another address, presenting a saved session cookie."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "203.0.113.9"
    client.set_cookie("session", cookie)
    return client


def logged_in(client: FlaskClient) -> bool:
    """Whether the client's session opens the console (else it is sent to the login page)."""
    response = client.get("/console/")
    assert response.status_code in (200, 302)
    assert response.status_code == 200 or response.location.startswith("/console/login")
    return response.status_code == 200


def test_logout_ends_saved_sessions(app: Flask) -> None:
    """A session cookie saved before a logout is refused after it, from any client and
    address, and so is every other session of the admin; a new login works."""
    client, other = app.test_client(), app.test_client()
    assert login(client).status_code == 302
    assert login(other).status_code == 302
    saved = session_cookie(client)
    assert logged_in(replay(app, saved))  # a copy works, until the logout
    assert post_form(client, "/console/logout").status_code == 302
    assert not logged_in(replay(app, saved))
    assert not logged_in(other)
    assert login(client).status_code == 302
    assert logged_in(client)


def test_logout_on_one_instance_ends_the_session_on_another(tmp_path: Path) -> None:
    """Two instances (two app objects on one database and secret key): a logout on one ends
    the admin's sessions on both, as the session version is kept in the database."""
    with console_app(tmp_path) as one, console_app(tmp_path) as two:
        first = one.test_client()
        assert login(first).status_code == 302
        saved = session_cookie(first)
        on_two = replay(two, saved)
        assert logged_in(on_two)
        assert post_form(on_two, "/console/logout").status_code == 302
        assert not logged_in(replay(one, saved))
        assert not logged_in(first)


def test_password_change_ends_sessions(app: Flask) -> None:
    """A new ``EXAMPLE_ADMIN_PASSWORD_HASH`` ends the sessions made with the old password."""
    client = app.test_client()
    assert login(client).status_code == 302
    saved = session_cookie(client)
    new_hash = generate_password_hash("new password", method="pbkdf2:sha256:1000")
    app.config["EXAMPLE_ADMIN_PASSWORD_HASH"] = new_hash
    assert not logged_in(client)
    assert not logged_in(replay(app, saved))
    assert login(client, "new password").status_code == 302
    assert logged_in(client)


def test_new_generated_password_ends_sessions(tmp_path: Path) -> None:
    """A new password written to the instance folder (as ``demo`` does) ends the sessions."""
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=None) as app:
        client = app.test_client()
        assert login(client, new_admin_password(app)).status_code == 302
        assert logged_in(client)
        new_admin_password(app)
        assert not logged_in(client)


def test_session_lifetime(app: Flask) -> None:
    """Logging in sets one cookie, the session, for ``PERMANENT_SESSION_LIFETIME`` (8 hours),
    no remember-me cookie; the session ends 8 hours after the login however often it was used
    (and its cookie refreshed) meanwhile."""
    client = app.test_client()
    response = login(client)
    assert [c.split("=")[0] for c in response.headers.getlist("Set-Cookie")] == ["session"]
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.expires is not None
    left = cookie.expires - datetime.now(UTC)
    assert timedelta(hours=8) - timedelta(minutes=1) < left <= timedelta(hours=8)

    def logged_in_since(seconds_ago: int) -> bool:
        with client.session_transaction() as session:
            bound = dict(session["example_console"])
            bound["since"] = int(time.time()) - seconds_ago
            session["example_console"] = bound
        return logged_in(client)

    assert logged_in_since(8 * 3600 - 60)
    assert not logged_in_since(8 * 3600 + 1)


def test_session_lifetime_configured(tmp_path: Path) -> None:
    """``EXAMPLE_CONSOLE_SESSION_SECONDS`` and ``PERMANENT_SESSION_LIFETIME`` can be set."""
    config = {
        "EXAMPLE_CONSOLE_SESSION_SECONDS": 60,
        "PERMANENT_SESSION_LIFETIME": timedelta(minutes=2),
    }
    with console_app(tmp_path, **config) as app:
        client = app.test_client()
        assert login(client).status_code == 302
        cookie = client.get_cookie("session")
        assert cookie is not None and cookie.expires is not None
        assert cookie.expires - datetime.now(UTC) <= timedelta(minutes=2)
        with client.session_transaction() as session:
            session["example_console"] = {**session["example_console"], "since": 0}
        assert not logged_in(client)
    with pytest.raises(ConfigurationError, match="EXAMPLE_CONSOLE_SESSION_SECONDS"):
        with console_app(tmp_path, EXAMPLE_CONSOLE_SESSION_SECONDS="8h"):
            pass


def test_unbound_session_refused(app: Flask) -> None:
    """A session holding only Flask-Login's user id (as a cookie made before sessions were
    bound to the server's state would) is refused."""
    client = app.test_client()
    with client.session_transaction() as session:
        session["_user_id"] = ADMIN
        session["_fresh"] = True
    assert not logged_in(client)


def test_login_next_stays_on_console(app: Flask) -> None:
    """``next`` only leads to console pages of this site."""
    client = app.test_client()
    token = csrf_token(client.get("/console/login").text)
    form = {"username": ADMIN, "password": PASSWORD, "csrf_token": token}
    response = client.post("/console/login?next=https://evil.test/console/", data=form)
    assert response.location == "/console/"
    client.post("/console/logout", data={"csrf_token": token})
    response = client.post("/console/login?next=/console/clients/new", data=form)
    assert response.location == "/console/clients/new"


@pytest.mark.parametrize(
    "query",
    [
        "next=/console/%0d%0aSet-Cookie:x=1",  # CR LF: the Location header cannot hold them
        "next=/console/%0aLocation:%20https://evil.test/",
        "next=/console/%0A",
        "next=/console/%09",
        "next=/console/%7F",
        "next=/console/%C3%A9",
        "next=/console/../..//evil.test",
        "next=/console/%252e%252e/%252e%252e//evil.test",  # %2e%2e once decoded: ..
        "next=/console//evil.test",
        "next=/console/%5C..%5C..%5Cevil.test",
        "next=%5Cevil.test",
        "next=%5C%5Cevil.test/console/",
        "next=//evil.test/console/",
        "next=https://evil.test/console/",
        "next=/consoles",
        "next=",
    ],
)
def test_login_next_refused(app: Flask, query: str) -> None:
    """A ``next`` with control characters, backslashes, dot or empty segments or another site
    leads to the client list after the login: a 302 on this site, never a 500."""
    client = app.test_client()
    token = csrf_token(client.get("/console/login").text)
    form = {"username": ADMIN, "password": PASSWORD, "csrf_token": token}
    response = client.post("/console/login", query_string=query, data=form)
    assert response.status_code == 302
    assert response.location == "/console/"


def test_login_throttled_after_failures(app: Flask) -> None:
    client = app.test_client()
    for _ in range(5):
        assert login(client, "wrong").status_code == 401
    response = login(client)  # even the right password, until the window passes
    assert response.status_code == 429
    assert "Too many failed logins" in response.text


def test_login_success_clears_the_count(app: Flask) -> None:
    """A successful login forgets the address's earlier failures; five more are allowed."""
    client = app.test_client()
    for _ in range(4):
        assert login(client, "wrong").status_code == 401
    assert login(client).status_code == 302
    assert post_form(client, "/console/logout").status_code == 302
    assert [login(client, "wrong").status_code for _ in range(6)] == [401] * 5 + [429]


def test_login_throttle_shared_by_threads(tmp_path: Path) -> None:
    """Failed logins from many addresses at once: every thread gets its 401, none an error,
    and each address has exactly its one attempt counted (5,000 others untouched)."""
    cheap = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")  # many logins, quickly
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=cheap) as app:
        throttle = app.extensions["example_console"]
        others = [f"10.0.{i // 256}.{i % 256}" for i in range(5_000)]
        for address in others:
            assert throttle.reserve(address)
        statuses: list[int] = []

        def fail_logins(thread: int) -> None:
            client = app.test_client()
            for attempt in range(100):
                client.environ_base["REMOTE_ADDR"] = f"192.0.{thread}.{attempt}"
                statuses.append(login(client, "wrong").status_code)

        threads = [threading.Thread(target=fail_logins, args=(n,)) for n in range(8)]
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)  # switch threads often, inside the loops too
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            sys.setswitchinterval(interval)
        assert statuses == [401] * 800
        ours = [f"192.0.{thread}.{attempt}" for thread in range(8) for attempt in range(100)]
        left = LOGIN_FAILURES_ALLOWED - 1
        assert {throttle.remaining(address) for address in ours + others} == {left}


def test_concurrent_wrong_logins_throttled(
    tmp_path: Path,
    live_server_factory: Callable[[Flask], LiveServer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Twenty wrong logins from one address at the same moment, over real HTTP: at most five
    passwords are checked, because each attempt is counted before its check; the others are
    refused with 429."""
    slow = generate_password_hash(PASSWORD, method="pbkdf2:sha256:200000")  # checks overlap
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=slow) as app:
        checked = count_hash_checks(monkeypatch)
        server = live_server_factory(app)
        start = threading.Barrier(20)
        statuses: list[int] = []

        def wrong_login() -> None:
            with requests.Session() as http:
                token = csrf_token(http.get(f"{server.url}/console/login", timeout=30).text)
                form = {"username": ADMIN, "password": "wrong", "csrf_token": token}
                start.wait(timeout=30)
                answer = http.post(f"{server.url}/console/login", data=form, timeout=30)
                statuses.append(answer.status_code)

        threads = [threading.Thread(target=wrong_login) for _ in range(20)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        finally:
            server.stop()
        assert sorted(statuses) == [401] * len(checked) + [429] * (20 - len(checked))
        assert 1 <= len(checked) <= LOGIN_FAILURES_ALLOWED


@pytest.mark.slow
@pytest.mark.skipif(
    RATELIMIT_STORAGE_URI == "memory://",
    reason="needs a shared storage (M2M_TEST_REDIS_URL): memory counts are per app",
)
def test_login_throttle_shared_by_instances(tmp_path: Path) -> None:
    """Two instances on the same rate-limit storage and ``RATELIMIT_KEY_PREFIX`` share the
    count of an address: after three wrong logins on one and two on the other, both refuse;
    an instance with another prefix counts apart."""
    prefix = f"m2m-test-{uuid.uuid4().hex}"
    with (
        console_app(tmp_path, RATELIMIT_KEY_PREFIX=prefix) as one,
        console_app(tmp_path, RATELIMIT_KEY_PREFIX=prefix) as two,
        console_app(tmp_path) as apart,
    ):
        first, second = one.test_client(), two.test_client()
        assert [login(first, "wrong").status_code for _ in range(3)] == [401] * 3
        assert [login(second, "wrong").status_code for _ in range(2)] == [401] * 2
        assert login(first).status_code == 429
        assert login(second).status_code == 429
        assert login(apart.test_client()).status_code == 302


def test_login_unavailable_without_its_storage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the rate-limit storage cannot be reached, a login is refused with 503 (it could
    not be counted) and no password is checked; the login page itself still shows."""
    with console_app(tmp_path, RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0") as app:
        checked = count_hash_checks(monkeypatch)
        client = app.test_client()
        response = login(client)
        assert response.status_code == 503
        assert "try again" in response.text
        assert checked == []


def test_login_same_work_for_any_username(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong username costs one password hash check, like a wrong password: against a dummy
    hash made with the admin hash's method, so the time taken does not tell which was wrong."""
    checked = count_hash_checks(monkeypatch)
    client = app.test_client()
    assert login(client, "wrong", username="nobody").status_code == 401
    assert login(client, PASSWORD, username="nobody").status_code == 401
    assert login(client, "wrong").status_code == 401
    assert len(checked) == 3
    method = PASSWORD_HASH.split("$")[0]
    assert [pwhash.split("$")[0] for pwhash in checked] == [method] * 3
    assert checked[0] == checked[1] != PASSWORD_HASH == checked[2]


def test_login_same_work_without_a_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no admin password set, a login still checks one hash (werkzeug's default method)."""
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=None) as app:
        checked = count_hash_checks(monkeypatch)
        assert login(app.test_client(), "").status_code == 401
        default = generate_password_hash("x").split("$")[0]
        assert [pwhash.split("$")[0] for pwhash in checked] == [default]


def test_no_password_configured(tmp_path: Path) -> None:
    """Without a configured or generated hash nobody can log in, and the page says why."""
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=None) as app:
        client = app.test_client()
        assert "No admin password is set" in client.get("/console/login").text
        assert login(client, "").status_code == 401


def test_demo_command_makes_a_password(tmp_path: Path) -> None:
    """``flask --app example demo`` prints a new admin password and keeps only its hash."""
    with console_app(tmp_path, EXAMPLE_ADMIN_PASSWORD_HASH=None) as app:
        result = app.test_cli_runner().invoke(args=["demo"])
        assert result.exit_code == 0, result.output
        assert "/console/" in result.output
        assert f"username: {ADMIN}" in result.output
        password = re.search(r"password: (\S+)", result.output)
        assert password
        stored = (Path(app.instance_path) / "admin_password_hash").read_text()
        assert password.group(1) not in stored
        client = app.test_client()
        assert login(client, password.group(1)).status_code == 302


def test_post_without_csrf_token_refused(admin: FlaskClient, app: Flask) -> None:
    """A console POST without (or with a wrong) CSRF token is refused with 400; nothing changes."""
    form = {"name": "sneaky", "scopes": "read"}
    assert admin.post("/console/clients/new", data=form).status_code == 400
    refused = admin.post("/console/clients/new", data={**form, "csrf_token": "forged"})
    assert refused.status_code == 400
    assert "CSRF" in refused.text
    with app.app_context():
        assert clients.list_clients(get_state(app)).items == []
    stranger = app.test_client()
    assert stranger.post("/console/login", data={"username": ADMIN}).status_code == 400


def test_csrf_leaves_the_apis_alone(admin: FlaskClient, app: Flask) -> None:
    """The token endpoint, the management API and the example's JSON API take POSTs without
    any CSRF token, even from a client that has a console session."""
    credentials = register(app, "m2m:admin read write")
    token = fetch_token(admin, credentials)
    body = {"name": "api", "scopes": ["read"]}
    created = admin.post("/m2m/clients", json=body, headers=bearer(token))
    assert created.status_code == 201
    assert admin.post("/api/items", json={"name": "x"}, headers=bearer(token)).status_code == 201
    auth = basic_auth(credentials["client_id"], credentials["client_secret"])
    assert admin.post("/m2m/revoke", data={"token": token}, headers=auth).status_code == 200


def test_api_responses_leave_the_session_alone(admin: FlaskClient, app: Flask) -> None:
    """The console's session is the console's: a machine client's API response (no cookie
    sent) neither sets a cookie nor says ``Vary: Cookie`` (RFC 9110 §12.5.5), while the
    console's pages still do."""
    token = fetch_token(app.test_client(), register(app, "read"))
    response = app.test_client().get("/api/items", headers=bearer(token))
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert "cookie" not in response.headers.get("Vary", "").lower()
    page = admin.get("/console/")
    assert page.status_code == 200
    assert "cookie" in page.headers.get("Vary", "").lower()


def test_secret_shown_only_at_creation_and_rotation(admin: FlaskClient, app: Flask) -> None:
    """The secret appears on the page answering the create (and rotate) form, never again."""
    client_id, secret = create(admin)
    assert fetch_token(app.test_client(), {"client_id": client_id, "client_secret": secret})
    pages = [
        "/console/",
        f"/console/clients/{client_id}",
        f"/console/clients/{client_id}/events",
        f"/console/clients/{client_id}/delete",
    ]
    for path in pages:
        html = admin.get(path).text
        assert client_id in html
        assert secret not in html and not SECRET_PATTERN.search(html), path
    rotate = f"/console/clients/{client_id}/rotate"
    rotated = post_form(admin, rotate, {"grace_period_seconds": "0"})
    assert rotated.status_code == 200
    assert rotated.headers["Cache-Control"] == "no-store"
    new_secret = SECRET_PATTERN.search(rotated.text)
    assert new_secret and new_secret.group(0) != secret
    for path in pages:
        assert not SECRET_PATTERN.search(admin.get(path).text), path


def test_unknown_client_404(admin: FlaskClient) -> None:
    paths = ["", "/events", "/delete"]
    for path in [f"/console/clients/m2m_nope{p}" for p in paths] + ["/console/clients/a%20b"]:
        response = admin.get(path)
        assert response.status_code == 404, path
        assert "No such client" in response.text
    for action in ("", "/disable", "/enable", "/rotate", "/delete"):
        assert post_form(admin, f"/console/clients/m2m_nope{action}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"scopes": 'read "quoted"'}, "scopes", "Invalid scope"),
        ({"metadata": "{not json"}, "metadata", "Not valid JSON"),
        ({"metadata": "[1, 2]"}, "metadata", "JSON object"),
        ({"metadata": '{"ratio": NaN}'}, "metadata", "NaN is not a JSON number"),
        ({"metadata": '{"a": [Infinity]}'}, "metadata", "Infinity is not a JSON number"),
        ({"metadata": '{"a": -Infinity}'}, "metadata", "-Infinity is not a JSON number"),
        ({"metadata": '{"a": 1e999}'}, "metadata", "too large"),
        ({"metadata": "[" * 100_000}, "metadata", "nested too deeply"),
        ({"metadata": '{"a": ' * 100_000}, "metadata", "nested too deeply"),
        ({"expires_in_days": "soon"}, "expires_in_days", "whole number"),
        ({"expires_in_days": "\u00b2"}, "expires_in_days", "whole number"),  # superscript two
        ({"expires_in_days": "\u0663"}, "expires_in_days", "whole number"),  # Arabic-Indic 3
        ({"name": "x" * 201}, "name", "at most 200"),
    ],
)
def test_create_validation_errors_on_the_form(
    admin: FlaskClient, app: Flask, fields: dict[str, str], field: str, message: str
) -> None:
    """Bad input re-shows the form (422) with the error next to the field and the input kept."""
    response = post_form(admin, "/console/clients/new", {"name": "n", "scopes": "read", **fields})
    assert response.status_code == 422
    assert f'id="{field}-error"' in response.text
    assert message in response.text
    with app.app_context():
        assert clients.list_clients(get_state(app)).items == []


def test_edit_and_validation_errors(admin: FlaskClient, app: Flask) -> None:
    client_id, _ = create(admin)
    path = f"/console/clients/{client_id}"
    bad = post_form(admin, path, {"name": "billing", "scopes": "read", "metadata": "[]"})
    assert bad.status_code == 422 and 'id="metadata-error"' in bad.text
    bad = post_form(admin, path, {"name": "billing", "scopes": "re\\ad", "metadata": ""})
    assert bad.status_code == 422 and 'id="scopes-error"' in bad.text
    good = post_form(
        admin, path, {"name": "payments", "scopes": "read", "metadata": '{"team": "pay"}'}
    )
    assert good.status_code == 302
    page = admin.get(path).text
    assert "Changes saved." in page and "payments" in page
    with app.app_context():
        client = clients.get_client(get_state(app), client_id)
        assert (client.name, client.scopes) == ("payments", ["read"])
        assert client.client_metadata == {"team": "pay"}


def test_actions_audited_as_the_admin(admin: FlaskClient, app: Flask) -> None:
    """Each console action goes through flask_m2m.lifecycle and is audited with ``user:admin``."""
    client_id, secret = create(admin)
    base = f"/console/clients/{client_id}"
    edit = post_form(admin, base, {"name": "b2", "scopes": "read", "metadata": ""})
    assert edit.status_code == 302
    assert post_form(admin, f"{base}/disable").status_code == 302
    token = app.test_client().post(
        "/m2m/token",
        data={"grant_type": "client_credentials"},
        headers=basic_auth(client_id, secret),
    )
    assert token.status_code == 401
    assert post_form(admin, f"{base}/enable").status_code == 302
    assert post_form(admin, f"{base}/rotate", {"grace_period_seconds": "60"}).status_code == 200
    refused = post_form(admin, f"{base}/rotate", {"grace_period_seconds": "-1"})
    assert refused.status_code == 422 and 'id="grace_period_seconds-error"' in refused.text
    confirm = admin.get(f"{base}/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    assert post_form(admin, f"{base}/delete").status_code == 302
    assert admin.get(base).status_code == 404
    with app.app_context():
        events = audit.list_events(get_state(app), client_id=client_id).items
    names = [e.event for e in reversed(events)]
    assert names == [
        "client_created",
        "client_updated",
        "client_disabled",
        "client_enabled",
        "secret_rotated",
        "client_deleted",
    ]
    assert {e.actor for e in events} == {f"user:{ADMIN}"}
    page = admin.get(f"{base}/events")  # the trail outlives the client
    assert page.status_code == 200 and "client_deleted" in page.text and "(deleted)" in page.text
    assert "user:admin" in page.text and "b2" in page.text
