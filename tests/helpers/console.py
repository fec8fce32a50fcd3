"""The example app with its admin console, for the console tests (test client and browser)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.security import generate_password_hash

from helpers.apps import DATABASE_URL, RATELIMIT_STORAGE_URI, SECRET_KEY, close_app

ADMIN = "admin"
PASSWORD = "correct horse battery staple"
#: Cheap hashing: the tests log in often, and the hash method is not what they test.
PASSWORD_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")
#: A client secret as the server makes them.
SECRET_PATTERN = re.compile(r"m2ms_[A-Za-z0-9]{20,}")


@contextmanager
def console_app(tmp_path: Path, **config: Any) -> Iterator[Flask]:
    """The example app on its own database and instance folder, counting logins in the test
    rate-limit storage under a prefix of its own; its tables go afterwards."""
    from example import create_app, db

    url = DATABASE_URL if DATABASE_URL != "sqlite://" else f"sqlite:///{tmp_path / 'ex.db'}"
    settings = {
        "SQLALCHEMY_DATABASE_URI": url,
        "SECRET_KEY": SECRET_KEY,
        "TESTING": True,
        "EXAMPLE_ADMIN_PASSWORD_HASH": PASSWORD_HASH,
        "RATELIMIT_STORAGE_URI": RATELIMIT_STORAGE_URI,
        "RATELIMIT_KEY_PREFIX": f"m2m-test-{uuid.uuid4().hex}",
        **config,
    }
    instance = tmp_path / "instance"
    app = create_app(settings, instance_path=str(instance))
    try:
        yield app
    finally:
        close_app(app, db, drop_tables=True)


def csrf_token(html: str) -> str:
    """The CSRF token of the first form in a page."""
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def login(client: FlaskClient, password: str = PASSWORD, username: str = ADMIN) -> Any:
    """Log in through the form; returns the response to the POST."""
    token = csrf_token(client.get("/console/login").text)
    return client.post(
        "/console/login",
        data={"username": username, "password": password, "csrf_token": token},
    )


def count_hash_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hashes the console checks passwords against, one per check, from now on: the real
    ``check_password_hash`` wrapped in a spy that counts (it changes no answer)."""
    import example.console as console

    checked: list[str] = []
    real = console.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        checked.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(console, "check_password_hash", spy)
    return checked


def post_form(client: FlaskClient, path: str, data: dict[str, str] | None = None) -> Any:
    """POST a console form with a valid CSRF token taken from the list page."""
    token = csrf_token(client.get("/console/").text)
    return client.post(path, data={**(data or {}), "csrf_token": token})
