"""Session ownership: flask-m2m never commits, rolls back nor discards work of the app's
``db.session`` that it did not create.

A host row is left pending in ``db.session`` (added, not committed) around every lifecycle call
and every request flask-m2m serves; it must come out still there, neither committed nor rolled
back, and the host then commits it. On a SQLite file and on PostgreSQL
(``M2M_TEST_DATABASE_URL``): ``sqlite://`` in memory shares one connection between all
sessions, so it has no separate transactions to keep apart.
"""

from __future__ import annotations

from collections.abc import Callable
from inspect import Parameter, signature
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, g
from flask.testing import FlaskClient
from helpers.apps import DATABASE_URL, fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import String, func, inspect, select
from sqlalchemy.orm import Mapped, mapped_column

from flask_m2m import AppHoldsWriteLock, lifecycle, signals
from flask_m2m.errors import InvalidClientData, SecretConflict
from flask_m2m.extension import get_state

GRANT = {"grant_type": "client_credentials"}
SERVER = pytest.mark.skipif(
    DATABASE_URL.startswith("sqlite"), reason="needs M2M_TEST_DATABASE_URL (PostgreSQL)"
)
HELD = "held by the host"


@pytest.fixture(params=["sqlite-file", pytest.param("server", marks=SERVER)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database whose sessions are separate transactions: a SQLite file, or the server."""
    return f"sqlite:///{tmp_path / 'own.db'}" if request.param == "sqlite-file" else DATABASE_URL


class Host:
    """An app with a model of its own (``host_notes``) beside flask-m2m's."""

    def __init__(self, app: Flask):
        self.app = app
        self.db = db = get_state(app).db

        class Note(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = "host_notes"
            id: Mapped[int] = mapped_column(primary_key=True)
            text: Mapped[str] = mapped_column(String(100))

        self.Note = Note
        with app.app_context():
            db.create_all()

    def note(self) -> Any:
        """A new note, added to the app's session and left there uncommitted."""
        note = self.Note(text=HELD)
        self.db.session.add(note)
        return note

    def committed_notes(self) -> int:
        """How many notes are committed, read over a connection of the test's own."""
        with self.app.app_context(), self.db.engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(self.Note)) or 0)

    def audit_rows(self) -> list[tuple[str, str | None, str]]:
        """(event, client_id, actor) of the committed audit rows, oldest first."""
        model = get_state(self.app).models.audit_event
        query = select(model.event, model.client_id, model.actor).order_by(model.id)
        with self.app.app_context(), self.db.engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]


@pytest.fixture
def host_factory(app_factory: Callable[..., Flask], database_url: str) -> Callable[..., Host]:
    def make(**config: Any) -> Host:
        return Host(app_factory(database_url, **config))

    return make


def still_held(host: Host, note: Any, committed: int = 0) -> bool:
    """The note is in the app's session (a rollback would have expunged it) and uncommitted:
    the notes committed are still the ``committed`` of before."""
    in_session = note in host.db.session and not inspect(note).detached
    return in_session and host.committed_notes() == committed


# -- lifecycle calls from host code ------------------------------------------------------------
def test_lifecycle_calls_leave_the_commit_to_the_caller(host_factory: Callable[..., Host]) -> None:
    """Every service function adds and flushes, and never commits nor rolls back: the host's
    pending row stays in the session through each (also through a no-op update and two
    refused changes), nothing is committed before the host commits, and the audit rows then
    name the actor given."""
    host = host_factory(M2M_MAX_SECRETS_PER_CLIENT=2)
    alice = "user:alice"
    with host.app.app_context():
        state = get_state(host.app)
        note = host.note()
        client, first = lifecycle.create_client(state, actor=alice, name="svc", scopes="read")
        cid = client.client_id
        assert still_held(host, note)
        calls: list[Callable[[], Any]] = [
            lambda: lifecycle.update_client(state, cid, {"name": "svc2"}, actor=alice),
            lambda: lifecycle.update_client(state, cid, {"name": "svc2"}, actor=alice),  # no-op
            lambda: lifecycle.set_disabled(state, cid, True, actor=alice),
            lambda: lifecycle.set_disabled(state, cid, False, actor=alice),
            lambda: lifecycle.rotate_secret(state, cid, actor=alice, grace_period_seconds=600),
            lambda: lifecycle.delete_secret(state, cid, first.secret_id, actor=alice),
            lambda: lifecycle.rotate_secret(state, cid, actor=alice, grace_period_seconds=600),
        ]
        for call in calls:
            call()
            assert still_held(host, note)
        with pytest.raises(InvalidClientData):
            lifecycle.update_client(state, cid, {"name": 5}, actor=alice)
        with pytest.raises(SecretConflict):  # a third secret is one too many: nothing changes
            lifecycle.rotate_secret(state, cid, actor=alice, grace_period_seconds=600)
        assert still_held(host, note)
        assert host.audit_rows() == []
        host.db.session.commit()
    assert host.committed_notes() == 1
    assert host.audit_rows() == [
        ("client_created", cid, alice),
        ("client_updated", cid, alice),
        ("client_disabled", cid, alice),
        ("client_enabled", cid, alice),
        ("secret_rotated", cid, alice),
        ("secret_deleted", cid, alice),
        ("secret_rotated", cid, alice),
    ]
    with host.app.app_context():
        state = get_state(host.app)
        lifecycle.delete_client(state, cid, actor="user:bob")
        host.db.session.rollback()  # the caller changes its mind: nothing happened
        assert lifecycle.get_client(state, cid).name == "svc2"
        lifecycle.delete_client(state, cid, actor="user:bob")
        host.db.session.commit()
    assert host.audit_rows()[-1] == ("client_deleted", cid, "user:bob")


def test_signals_wait_for_the_callers_commit(host_factory: Callable[..., Host]) -> None:
    """A change's signal is sent once the caller commits it, never for one rolled back."""
    host = host_factory()
    heard: list[str] = []

    def receive(sender: Flask, client_id: str, **kwargs: Any) -> None:
        heard.append(client_id)

    with signals.client_created.connected_to(receive, host.app), host.app.app_context():
        state = get_state(host.app)
        dropped, _ = lifecycle.create_client(state, actor="test", name="dropped")
        assert heard == []
        host.db.session.rollback()
        kept, _ = lifecycle.create_client(state, actor="test", name="kept")
        assert heard == []
        host.db.session.commit()
        assert heard == [kept.client_id]


def test_every_change_names_its_actor() -> None:
    """No ambient actor silently becomes ``system``: ``actor`` is a required keyword."""
    for function in (
        lifecycle.create_client,
        lifecycle.update_client,
        lifecycle.set_disabled,
        lifecycle.delete_client,
        lifecycle.rotate_secret,
        lifecycle.delete_secret,
    ):
        actor = signature(function).parameters["actor"]
        assert actor.kind is Parameter.KEYWORD_ONLY and actor.default is Parameter.empty


# -- requests flask-m2m serves -----------------------------------------------------------------
def hold_a_note(host: Host, flush: bool = False) -> list[dict[str, Any]]:
    """Make every request of ``host`` add a note to ``db.session`` first (and flush it, if
    asked); once flask-m2m has answered, record what became of it, then commit it.

    :returns: what each request's ``after_request`` saw.
    """
    seen: list[dict[str, Any]] = []

    @host.app.before_request
    def add_note() -> None:
        g.committed = host.committed_notes()
        g.note = host.note()
        if flush:
            host.db.session.flush()

    @host.app.after_request
    def check_note(response: Response) -> Response:
        state = inspect(g.note)
        seen.append(
            {
                "held": still_held(host, g.note, g.committed),
                "pending": state.pending,  # not flushed either
                "flushed": state.persistent,
            }
        )
        host.db.session.commit()  # the host's own work, committed by the host
        return response

    return seen


def protocol_requests(host: Host) -> tuple[list[tuple[str, int]], dict[str, str]]:
    """A token, introspection, a protected route, revocation, the management API (create,
    change twice, rotate with a grace period, list, events, delete), a secret used in its grace
    period and a rate-limit breach.

    :returns: (what, status) of each request, and the ids of the admin, user and new client.
    """
    web: FlaskClient = host.app.test_client()
    admin, user = register(host.app, scopes="m2m:admin"), register(host.app, scopes="read")
    admin_headers = bearer(fetch_token(web, admin))
    creds = basic_auth(user["client_id"], user["client_secret"])
    done: list[tuple[str, int]] = []

    def call(what: str, response: Any) -> Any:
        done.append((what, response.status_code))
        return response

    access = call("token", web.post("/m2m/token", data=GRANT, headers=creds)).get_json()
    token = access["access_token"]
    call("introspect", web.post("/m2m/introspect", data={"token": token}, headers=creds))
    call("protected route", web.get("/api/read", headers=bearer(token)))
    call("revoke", web.post("/m2m/revoke", data={"token": token}, headers=creds))
    call("revoked token", web.get("/api/read", headers=bearer(token)))
    body = {"name": "svc", "scopes": ["read"], "rate_limit": "2/minute"}
    created = call("create", web.post("/m2m/clients", json=body, headers=admin_headers))
    cid, old_secret = created.get_json()["client_id"], created.get_json()["client_secret"]
    path = f"/m2m/clients/{cid}"
    call("update", web.patch(path, json={"name": "svc2"}, headers=admin_headers))
    call("no-op update", web.patch(path, json={"name": "svc2"}, headers=admin_headers))
    grace = {"grace_period_seconds": 600}
    call("rotate", web.post(f"{path}/secret", json=grace, headers=admin_headers))
    call("list", web.get("/m2m/clients", headers=admin_headers))
    call("events", web.get(f"{path}/events", headers=admin_headers))
    old = basic_auth(cid, old_secret)
    call("old secret", web.post("/m2m/token", data=GRANT, headers=old))
    call("old secret again", web.post("/m2m/token", data=GRANT, headers=old))
    call("over its limit", web.post("/m2m/token", data=GRANT, headers=old))
    call("delete", web.delete(path, headers=admin_headers))
    ids = {"admin": admin["client_id"], "user": user["client_id"], "new": cid}
    return done, ids


EXPECTED = [
    ("token", 200),
    ("introspect", 200),
    ("protected route", 200),
    ("revoke", 200),
    ("revoked token", 401),
    ("create", 201),
    ("update", 200),
    ("no-op update", 200),
    ("rotate", 200),
    ("list", 200),
    ("events", 200),
    ("old secret", 200),
    ("old secret again", 200),
    ("over its limit", 429),
    ("delete", 204),
]


def assert_own_rows(host: Host, ids: dict[str, str]) -> None:
    """flask-m2m's own rows were written all the same, each audit row with its actor."""
    admin, new = f"client:{ids['admin']}", ids["new"]
    rows = [row for row in host.audit_rows() if row[1] == new]
    assert rows == [
        ("client_created", new, admin),
        ("client_updated", new, admin),  # once: the no-op update wrote nothing
        ("secret_rotated", new, admin),
        *[("secret_used_in_grace_period", new, f"client:{new}")] * 3,
        ("rate_limit_exceeded", new, f"client:{new}"),
        ("client_deleted", new, admin),
    ]
    with host.app.app_context():
        model = get_state(host.app).models.client
        used = select(model.client_id).where(model.last_used_at.is_not(None))
        assert set(host.db.session.scalars(used)) == {ids["admin"], ids["user"]}


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_requests_leave_the_apps_pending_work_alone(
    host_factory: Callable[..., Host], token_format: str
) -> None:
    """In every request flask-m2m serves, the host's pending row stays pending: flask-m2m
    neither flushes, commits nor rolls it back, and the host commits it afterwards. Its own
    rows (tokens, revocations, last-used times, audit rows) are written all the same."""
    host = host_factory(M2M_TOKEN_FORMAT=token_format, M2M_LAST_USED_INTERVAL_SECONDS=0)
    seen = hold_a_note(host)
    done, ids = protocol_requests(host)
    assert done == EXPECTED
    assert len(seen) == len(EXPECTED) + 1  # and the admin's token request
    assert all(s["held"] and s["pending"] for s in seen), seen
    assert host.committed_notes() == len(seen)
    assert_own_rows(host, ids)


@SERVER
def test_requests_leave_the_apps_flushed_work_alone(app_factory: Callable[..., Flask]) -> None:
    """On a server database, flask-m2m's transactions run beside the host's even when the
    host has already flushed its row: they neither commit nor roll it back."""
    app = app_factory(DATABASE_URL, M2M_TOKEN_FORMAT="opaque", M2M_LAST_USED_INTERVAL_SECONDS=0)
    host = Host(app)
    seen = hold_a_note(host, flush=True)
    done, ids = protocol_requests(host)
    assert done == EXPECTED
    assert all(s["held"] and s["flushed"] for s in seen), seen
    assert host.committed_notes() == len(seen)
    assert_own_rows(host, ids)


@pytest.mark.parametrize("case", ["jwt", "opaque", "first signing key"])
def test_sqlite_write_lock_held_by_the_app(
    app_factory: Callable[..., Flask], tmp_path: Path, case: str
) -> None:
    """On a SQLite file whose write lock the host's session holds (it flushed a row in
    ``before_request``), flask-m2m does not wait for that lock, which is only released after
    the response: the last-used time is written once the host's transaction has ended, and a
    write that cannot wait (an opaque token, the first signing key) is refused at once with a
    clear error."""
    token_format = "opaque" if case == "opaque" else "jwt"
    app = app_factory(f"sqlite:///{tmp_path / 'locked.db'}", M2M_TOKEN_FORMAT=token_format)
    host = Host(app)
    user = register(app, scopes="read")
    if case != "first signing key":
        with app.app_context():
            get_state(app).keys.signing_key()  # made by an earlier request

    @app.before_request
    def hold_the_lock() -> None:
        host.note()
        host.db.session.flush()

    web = app.test_client()
    creds = basic_auth(user["client_id"], user["client_secret"])
    if case == "jwt":
        assert web.post("/m2m/token", data=GRANT, headers=creds).status_code == 200
    else:
        with pytest.raises(AppHoldsWriteLock):
            web.post("/m2m/token", data=GRANT, headers=creds)
    assert host.committed_notes() == 0  # the host never committed: its teardown rolled back
    with app.app_context():  # and then the last-used time was written
        model = get_state(app).models.client
        assert host.db.session.get(model, user["client_id"]).last_used_at is not None
