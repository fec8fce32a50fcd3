"""Secret rotation (grace periods, limits, maximum age), outdated-secret reporting,
``last_used_at`` throttling, concurrent rotation, and the audit trail with its signals,
through the management API, the token endpoint and the CLI."""

from __future__ import annotations

import getpass
import json
import re
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import DATABASE_URL, fetch_token, register
from helpers.http import basic_auth, bearer
from sqlalchemy import event, select

from flask_m2m import signals
from flask_m2m.errors import SecretConflict
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import rotate_secret
from flask_m2m.pagination import encode_cursor

SECRET_FIELDS = {"id", "label", "created_at", "expires_at", "last_used_at"}
NEW_SECRET_FIELDS = {"client_id", "client_secret", "secret_id", "secret_expires_at"}
SIGNAL_NAMES = (
    "client_created", "client_updated", "secret_rotated", "client_deleted", "token_issued",
    "token_revoked", "authentication_failed", "outdated_secret_used", "keys_rotated",
)
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


class Clock:
    """Real UTC time plus an adjustable offset (so successive calls still advance)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """The clock that client authentication and the secret service read."""
    c = Clock()
    monkeypatch.setattr("flask_m2m.authentication.utcnow", c)
    monkeypatch.setattr("flask_m2m.lifecycle.utcnow", c)
    monkeypatch.setattr("flask_m2m.client_fields.utcnow", c)
    return c


def make_admin(app: Flask) -> tuple[str, dict[str, str]]:
    """An ``m2m:admin`` client of ``app``: its id and Bearer headers."""
    admin = register(app, "m2m:admin")
    return admin["client_id"], bearer(fetch_token(app.test_client(), admin))


@pytest.fixture
def admin(app: Flask) -> tuple[str, dict[str, str]]:
    return make_admin(app)


@pytest.fixture
def fired(app: Flask, admin: tuple[str, dict[str, str]]) -> Iterator[list[tuple[str, dict]]]:
    """Every flask-m2m signal sent by ``app`` after the admin got its token: (name, kwargs)."""
    seen: list[tuple[str, dict[str, Any]]] = []
    with ExitStack() as stack:
        for name in SIGNAL_NAMES:

            def receiver(sender: Any, _name: str = name, **kwargs: Any) -> None:
                seen.append((_name, kwargs))

            stack.enter_context(getattr(signals, name).connected_to(receiver, sender=app))
        yield seen


def works(http: FlaskClient, client_id: str, secret: str) -> bool:
    """Whether the secret gets a token (client_secret_basic); a refusal must be 401
    invalid_client."""
    form = {"grant_type": "client_credentials"}
    response = http.post("/m2m/token", data=form, headers=basic_auth(client_id, secret))
    if response.status_code == 200:
        return True
    assert response.status_code == 401
    assert response.get_json()["error"] == "invalid_client"
    return False


def rotate(http: FlaskClient, headers: dict[str, str], client_id: str, **body: Any) -> Any:
    return http.post(f"/m2m/clients/{client_id}/secret", json=body, headers=headers)


def secrets(http: FlaskClient, headers: dict[str, str], client_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/m2m/clients/{client_id}/secrets", headers=headers)
    assert response.status_code == 200
    listed: list[dict[str, Any]] = response.get_json()["secrets"]
    return listed


def events(
    http: FlaskClient, headers: dict[str, str], path: str = "/m2m/events", **args: Any
) -> Any:
    response = http.get(path, query_string={"limit": 200, **args}, headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()["events"]


def is_problem(response: Any, status: int) -> bool:
    """Whether ``response`` is an RFC 9457 problem with this status."""
    body = response.get_json()
    ok = response.mimetype == "application/problem+json" and body["status"] == status
    return response.status_code == status and ok


def drop(http: FlaskClient, headers: dict[str, str], client_id: str, secret_id: str) -> Any:
    return http.delete(f"/m2m/clients/{client_id}/secrets/{secret_id}", headers=headers)


def near(value: str, expected: datetime, seconds: float = 60) -> bool:
    return abs((datetime.fromisoformat(value) - expected).total_seconds()) < seconds


def stored(app: Flask, column: str, client_id: str | None = None) -> set[Any]:
    """Values of one column of the stored secret rows (of one client, if given)."""
    with app.app_context():
        model = get_state(app).models.client_secret
        query = select(getattr(model, column))
        if client_id is not None:
            query = query.where(model.client_id == client_id)
        return set(get_state(app).db.session.execute(query).scalars())


def cli_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


# -- rotation ----------------------------------------------------------------------------------
def test_rotation_without_grace(app: Flask, client: FlaskClient, admin: Any) -> None:
    """Grace 0: the new secret works at once, the old one fails at once; only the rotation
    response carries the secret, and the secret list shows metadata only."""
    _, headers = admin
    target = register(app)
    cid, old = target["client_id"], target["client_secret"]
    response = rotate(client, headers, cid, grace_period_seconds=0, label="ci")
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == NEW_SECRET_FIELDS
    assert body["client_id"] == cid and body["client_secret"] != old
    assert works(client, cid, body["client_secret"])
    assert not works(client, cid, old)
    listed = secrets(client, headers, cid)
    assert [set(s) for s in listed] == [SECRET_FIELDS]
    assert listed[0]["id"] == body["secret_id"] and listed[0]["label"] == "ci"
    assert listed[0]["last_used_at"] is not None
    texts = [
        client.get(path, headers=headers).get_data(as_text=True)
        for path in (f"/m2m/clients/{cid}/secrets", f"/m2m/clients/{cid}", "/m2m/events")
    ]
    for text in texts:
        for hidden in [old, body["client_secret"], *stored(app, "secret_hash")]:
            assert hidden not in text
    # An empty body (sent as JSON: the API takes no other type) means grace 0 as well.
    again = client.post(f"/m2m/clients/{cid}/secret", headers=headers,
                        content_type="application/json")
    assert again.status_code == 200
    assert not works(client, cid, body["client_secret"])


def test_rotation_with_grace(
    app: Flask, client: FlaskClient, admin: Any, fired: list, clock: Clock
) -> None:
    """Grace 3600: the old secret works until the grace period ends, then fails (401). Each
    use in the grace period is reported (signal with reason grace_period, audit row
    secret_used_in_grace_period) at most once per M2M_LAST_USED_INTERVAL_SECONDS."""
    _, headers = admin
    target = register(app)
    cid, old = target["client_id"], target["client_secret"]
    (old_row,) = secrets(client, headers, cid)
    response = rotate(client, headers, cid, grace_period_seconds=3600)
    assert response.status_code == 200
    new, new_id = response.get_json()["client_secret"], response.get_json()["secret_id"]
    listed = {s["id"]: s for s in secrets(client, headers, cid)}
    assert set(listed) == {old_row["id"], new_id}
    assert near(listed[old_row["id"]]["expires_at"], clock() + timedelta(seconds=3600))

    def reports() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        sent = [kw for name, kw in fired if name == "outdated_secret_used"]
        return sent, events(client, headers, event="secret_used_in_grace_period")

    assert works(client, cid, new)
    assert reports() == ([], [])
    assert works(client, cid, old)
    sent, rows = reports()
    assert sent == [{"client_id": cid, "secret_id": old_row["id"], "reason": "grace_period"}]
    assert [(r["client_id"], r["actor"]) for r in rows] == [(cid, f"client:{cid}")]
    assert rows[0]["changes"]["secret_id"] == old_row["id"]
    assert works(client, cid, old)
    assert tuple(map(len, reports())) == (1, 1)
    clock.advance(seconds=61)
    assert works(client, cid, old)
    assert tuple(map(len, reports())) == (2, 2)
    clock.advance(seconds=3540)
    assert not works(client, cid, old)
    assert works(client, cid, new)
    assert [s["id"] for s in secrets(client, headers, cid)] == [new_id]


@pytest.mark.parametrize("grace", [604801, -1, 1.5, "abc", True, None])
def test_rotation_bad_grace(app: Flask, client: FlaskClient, admin: Any, grace: Any) -> None:
    """A grace period above M2M_MAX_GRACE_PERIOD_SECONDS, negative or not a whole number is
    a 422 problem naming the field, and nothing changes."""
    _, headers = admin
    target = register(app)
    before = secrets(client, headers, target["client_id"])
    response = rotate(client, headers, target["client_id"], grace_period_seconds=grace)
    assert is_problem(response, 422)
    assert "grace_period_seconds" in response.get_json()["errors"]
    assert secrets(client, headers, target["client_id"]) == before
    assert works(client, target["client_id"], target["client_secret"])


def test_max_secrets_and_delete(app: Flask, client: FlaskClient, admin: Any) -> None:
    """Rotating past M2M_MAX_SECRETS_PER_CLIENT is a 409 that changes nothing; DELETE retires
    one secret (204), refuses the last one (409) and answers 404 for an unknown id."""
    _, headers = admin
    target, other = register(app), register(app)
    cid = target["client_id"]
    plain = [target["client_secret"]]
    for _ in range(2):
        response = rotate(client, headers, cid, grace_period_seconds=3600)
        assert response.status_code == 200
        plain.append(response.get_json()["client_secret"])
    before = secrets(client, headers, cid)
    assert len(before) == 3
    refused = rotate(client, headers, cid, grace_period_seconds=3600)
    assert is_problem(refused, 409)
    assert secrets(client, headers, cid) == before
    assert all(works(client, cid, secret) for secret in plain)

    assert drop(client, headers, cid, before[1]["id"]).status_code == 204
    assert not works(client, cid, plain[1])
    assert [s["id"] for s in secrets(client, headers, cid)] == [before[0]["id"], before[2]["id"]]
    (foreign,) = secrets(client, headers, other["client_id"])
    for unknown in ("nope", before[1]["id"], foreign["id"]):
        assert is_problem(drop(client, headers, cid, unknown), 404)
    assert works(client, other["client_id"], other["client_secret"])
    assert drop(client, headers, cid, before[0]["id"]).status_code == 204
    assert is_problem(drop(client, headers, cid, before[2]["id"]), 409)
    assert works(client, cid, plain[2])


def test_secret_max_age_and_near_expiry(app_factory: Any, clock: Clock) -> None:
    """M2M_SECRET_MAX_AGE_DAYS=30: new secrets expire 30 days out; a use within
    M2M_SECRET_EXPIRY_WARNING_DAYS of expiry is reported (reason near_expiry, audit row
    secret_used_in_near_expiry) at most once per interval; after 31 days the secret fails."""
    app = app_factory(M2M_SECRET_MAX_AGE_DAYS=30)
    http = app.test_client()
    _, headers = make_admin(app)
    cid = register(app)["client_id"]
    response = rotate(http, headers, cid)
    assert response.status_code == 200
    new = response.get_json()
    secret = new["client_secret"]
    assert near(new["secret_expires_at"], clock() + timedelta(days=30))
    (row,) = secrets(http, headers, cid)
    assert (row["id"], row["expires_at"]) == (new["secret_id"], new["secret_expires_at"])
    sent: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        sent.append(kwargs)

    with signals.outdated_secret_used.connected_to(receiver, sender=app):
        assert works(http, cid, secret)  # 30 days left: nothing to report
        assert sent == []
        clock.advance(days=24)
        assert works(http, cid, secret)
        assert sent == [{"client_id": cid, "secret_id": row["id"], "reason": "near_expiry"}]
        assert works(http, cid, secret)
        assert len(sent) == 1
        clock.advance(seconds=61)
        assert works(http, cid, secret)
        assert len(sent) == 2
    rows = events(http, headers, event="secret_used_in_near_expiry", client_id=cid)
    assert [r["changes"]["secret_id"] for r in rows] == [row["id"]] * 2
    clock.advance(days=7)
    assert not works(http, cid, secret)
    assert secrets(http, headers, cid) == []


# -- last_used_at -------------------------------------------------------------------------------
def test_last_used_written_once_per_interval(
    app: Flask, client: FlaskClient, admin: Any, clock: Clock
) -> None:
    """last_used_at of the client and the secret is written on the first token request and
    not again within M2M_LAST_USED_INTERVAL_SECONDS (one UPDATE batch for 20 requests)."""
    _, headers = admin
    target = register(app)
    cid, secret = target["client_id"], target["client_secret"]
    assert client.get(f"/m2m/clients/{cid}", headers=headers).get_json()["last_used_at"] is None
    with app.app_context():
        engine = get_state(app).db.engine
    updates: list[tuple[int, str]] = []
    current = [0]

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            updates.append((current[0], statement.split()[1].strip('"')))

    def stamps() -> tuple[str, str]:
        (row,) = secrets(client, headers, cid)
        found = client.get(f"/m2m/clients/{cid}", headers=headers).get_json()
        return found["last_used_at"], row["last_used_at"]

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        for i in range(20):
            current[0] = i
            assert works(client, cid, secret)
            if i == 0:
                first = stamps()
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert sorted(updates) == [(0, "m2m_client_secrets"), (0, "m2m_clients")]
    assert all(near(stamp, clock()) for stamp in first)
    assert stamps() == first
    clock.advance(seconds=61)
    assert works(client, cid, secret)
    later = stamps()
    for a, b in zip(first, later, strict=True):
        assert datetime.fromisoformat(b) > datetime.fromisoformat(a)


# -- concurrent rotation ------------------------------------------------------------------------
def run_rotations(app: Flask, client_id: str, grace: int, n: int = 8) -> list[Any]:
    """``n`` threads rotate at once through the service; each result is an IssuedSecret or
    the exception raised."""
    barrier = threading.Barrier(n)
    results: list[Any] = []

    def work() -> None:
        with app.app_context():
            session = get_state(app).db.session
            barrier.wait()
            try:
                issued = rotate_secret(get_state(app), client_id, actor="test",
                                       grace_period_seconds=grace)[1]
                session.commit()  # the caller commits, ending the rotation's row lock
                results.append(issued)
            except Exception as exc:  # noqa: BLE001 - recorded and asserted on
                session.rollback()
                results.append(exc)

    threads = [threading.Thread(target=work) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == n
    return results


@pytest.mark.slow
def test_concurrent_rotation_without_grace(app: Flask, client: FlaskClient) -> None:
    """8 simultaneous grace-0 rotations: one secret row remains, the last committed one's,
    and it works."""
    if DATABASE_URL.startswith("sqlite"):
        pytest.skip("real concurrent rotation needs PostgreSQL")
    target = register(app)
    results = run_rotations(app, target["client_id"], 0)
    assert not [r for r in results if isinstance(r, Exception)]
    with app.app_context():
        model = get_state(app).models.audit_event
        query = select(model).where(model.event == "secret_rotated").order_by(model.id.desc())
        last = get_state(app).db.session.execute(query).scalars().first().changes["secret_id"]
    assert stored(app, "id", target["client_id"]) == {last}
    (winner,) = [r for r in results if r.secret_id == last]
    assert works(client, target["client_id"], winner.plaintext)
    assert not works(client, target["client_id"], target["client_secret"])


@pytest.mark.slow
def test_concurrent_rotation_with_grace(app_factory: Any) -> None:
    """8 simultaneous grace-3600 rotations with at most 3 secrets: the secrets left are ones
    a caller was shown, each works, and every other caller got SecretConflict."""
    if DATABASE_URL.startswith("sqlite"):
        pytest.skip("real concurrent rotation needs PostgreSQL")
    app = app_factory(M2M_MAX_SECRETS_PER_CLIENT=3)
    http = app.test_client()
    target = register(app)
    (original,) = stored(app, "id", target["client_id"])
    results = run_rotations(app, target["client_id"], 3600)
    shown = {r.secret_id: r.plaintext for r in results if not isinstance(r, Exception)}
    failed = [r for r in results if isinstance(r, Exception)]
    assert len(shown) == 2
    assert all(isinstance(r, SecretConflict) for r in failed) and len(failed) == 6
    shown[original] = target["client_secret"]
    assert stored(app, "id", target["client_id"]) == set(shown)
    assert all(works(http, target["client_id"], secret) for secret in shown.values())


# -- audit trail and signals --------------------------------------------------------------------
def test_audit_trail_and_signals(
    app: Flask, client: FlaskClient, admin: Any, fired: list[tuple[str, dict]]
) -> None:
    """Every change writes one audit row (actor, request id, time) and sends its signal once;
    the rows outlive the client; no signal carries a secret."""
    admin_id, admin_headers = admin

    def call(method: str, path: str, rid: str, **kwargs: Any) -> Any:
        headers = {**admin_headers, "X-Request-ID": rid}
        return client.open(f"/m2m{path}", method=method, headers=headers, **kwargs)

    created = call("POST", "/clients", "r-create", json={"name": "svc", "scopes": ["read"]})
    assert created.status_code == 201
    cid, secret = created.get_json()["client_id"], created.get_json()["client_secret"]
    assert call("PATCH", f"/clients/{cid}", "r-update",
                json={"name": "svc2", "rate_limit": "10/minute"}).status_code == 200
    assert call("PATCH", f"/clients/{cid}", "r-off", json={"disabled": True}).status_code == 200
    assert call("PATCH", f"/clients/{cid}", "r-on", json={"disabled": False}).status_code == 200
    token = fetch_token(client, {"client_id": cid, "client_secret": secret})
    assert not works(client, cid, secret + "x")
    revoked = client.post("/m2m/revoke", data={"token": token}, headers=basic_auth(cid, secret))
    assert revoked.status_code == 200
    rotated = call("POST", f"/clients/{cid}/secret", "r-rotate",
                   json={"grace_period_seconds": 60})
    assert rotated.status_code == 200
    new_id, new_secret = rotated.get_json()["secret_id"], rotated.get_json()["client_secret"]
    assert call("DELETE", f"/clients/{cid}/secrets/{new_id}", "r-retire").status_code == 204
    assert call("DELETE", f"/clients/{cid}", "r-delete").status_code == 204
    assert client.get(f"/m2m/clients/{cid}", headers=admin_headers).status_code == 404

    rows = events(client, admin_headers, f"/m2m/clients/{cid}/events")[::-1]
    assert [(r["event"], r["request_id"]) for r in rows] == [
        ("client_created", "r-create"), ("client_updated", "r-update"),
        ("client_disabled", "r-off"), ("client_enabled", "r-on"),
        ("secret_rotated", "r-rotate"), ("secret_deleted", "r-retire"),
        ("client_deleted", "r-delete"),
    ]
    for row in rows:
        assert row["actor"] == f"client:{admin_id}" and row["client_id"] == cid
        assert near(row["created_at"], datetime.now(UTC))
    assert rows[1]["changes"] == {
        "name": {"from": "svc", "to": "svc2"}, "rate_limit": {"from": None, "to": "10/minute"},
    }
    assert rows[2]["changes"] == {"disabled": {"from": False, "to": True}}
    assert rows[3]["changes"] == {"disabled": {"from": True, "to": False}}
    assert rows[4]["changes"] == {"secret_id": new_id, "grace_period_seconds": 60}
    assert rows[5]["changes"] == {"secret_id": new_id}
    assert rows[6]["changes"]["name"] == "svc2"

    names = [name for name, kw in fired if kw.get("client_id") == cid]
    assert sorted(names) == sorted(["client_created", "token_issued", "authentication_failed",
                                    "token_revoked", "secret_rotated", "client_deleted"]
                                   + ["client_updated"] * 4)
    assert all(kw["client_id"] == cid for _, kw in fired)
    updated = [kw["changes"] for name, kw in fired if name == "client_updated"]
    assert updated == [["name", "rate_limit"], ["disabled"], ["disabled"], ["secrets"]]
    failure = next(kw for name, kw in fired if name == "authentication_failed")
    assert failure["reason"] == "invalid_secret"
    dumped = json.dumps([kw for _, kw in fired], default=str)
    assert secret not in dumped and new_secret not in dumped and "m2ms_" not in dumped


@pytest.mark.parametrize(
    ("sent", "kept"),
    [("abc-123.x:y_Z", True), ("x y", False), ("a" * 200, False), ("é", False), (None, False)],
)
def test_request_id(app: Flask, client: FlaskClient, admin: Any, sent: Any, kept: bool) -> None:
    """A well-formed X-Request-ID is recorded as is; a bad or missing one is replaced by a
    generated id, the same for every row of the request."""
    _, headers = admin
    cid = register(app)["client_id"]
    extra = {} if sent is None else {"X-Request-ID": sent}
    response = client.patch(f"/m2m/clients/{cid}", json={"name": "n2", "disabled": True},
                            headers={**headers, **extra})
    assert response.status_code == 200
    rows = events(client, headers, f"/m2m/clients/{cid}/events")[:2]
    assert {r["event"] for r in rows} == {"client_updated", "client_disabled"}
    assert rows[0]["request_id"] == rows[1]["request_id"]
    if kept:
        assert rows[0]["request_id"] == sent
    else:
        assert GENERATED_ID.fullmatch(rows[0]["request_id"])


# -- events endpoints -----------------------------------------------------------------------------
def test_events_pagination_and_filters(app: Flask, client: FlaskClient, admin: Any) -> None:
    """limit=2 walks every event once, newest first; event=, actor= and client_id= filter."""
    admin_id, headers = admin
    one, two = register(app)["client_id"], register(app)["client_id"]
    for cid in (one, two, one):
        assert rotate(client, headers, cid).status_code == 200
    patched = client.patch(f"/m2m/clients/{two}", json={"name": "x"}, headers=headers)
    assert patched.status_code == 200
    everything = events(client, headers)
    ids = [e["id"] for e in everything]
    assert ids == sorted(ids, reverse=True) and len(ids) == 7
    walked, cursor, pages = [], None, 0
    while True:
        args = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/m2m/events", query_string=args, headers=headers).get_json()
        assert len(page["events"]) <= 2
        walked += page["events"]
        pages += 1
        if not (cursor := page["next_cursor"]):
            break
    assert walked == everything and pages == 4
    assert [e["client_id"] for e in events(client, headers, event="secret_rotated")] == [
        one, two, one,
    ]
    api = events(client, headers, actor=f"client:{admin_id}")
    assert [e["event"] for e in api] == ["client_updated"] + ["secret_rotated"] * 3
    assert [e["actor"] for e in events(client, headers, actor="system")] == ["system"] * 3
    assert [e["event"] for e in events(client, headers, client_id=two)] == [
        "client_updated", "secret_rotated", "client_created",
    ]
    filtered = events(client, headers, f"/m2m/clients/{two}/events", event="secret_rotated")
    assert [e["client_id"] for e in filtered] == [two]
    for bad in ("not a cursor", "!!!", encode_cursor([1, 2]), encode_cursor([True])):
        response = client.get("/m2m/events", query_string={"cursor": bad}, headers=headers)
        assert is_problem(response, 422) and "cursor" in response.get_json()["errors"]


@pytest.mark.parametrize("values", [["abc"], [10**30]])
def test_events_forged_cursor(client: FlaskClient, admin: Any, values: list[Any]) -> None:
    """A cursor of the right shape but a value that is no event id is a 422, not a 500."""
    _, headers = admin
    response = client.get("/m2m/events?cursor=" + encode_cursor(values), headers=headers)
    assert is_problem(response, 422)


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_writes_same_audit_events(
    app: Flask, client: FlaskClient, admin: Any, fired: list[tuple[str, dict]]
) -> None:
    """create-client / rotate-secret / disable-client / enable-client / delete-client via the
    CLI write the API's audit events with actor cli:<user>; rotate-keys writes keys_rotated."""
    admin_id, headers = admin
    runner = app.test_cli_runner()

    def cli(*args: str) -> Any:
        result = runner.invoke(args=["m2m", *args])
        assert result.exit_code == 0, result.output
        return result

    created = cli("create-client", "--name", "c", "--scope", "read", "--json")
    cid = json.loads(created.stdout)["client_id"]
    cli("rotate-secret", cid, "--grace-period", "10", "--json")
    cli("disable-client", cid)
    cli("enable-client", cid)
    cli("delete-client", cid, "--yes")
    api_id = client.post("/m2m/clients", json={"name": "a", "scopes": ["read"]},
                         headers=headers).get_json()["client_id"]
    rotate(client, headers, api_id, grace_period_seconds=10)
    for disabled in (True, False):
        client.patch(f"/m2m/clients/{api_id}", json={"disabled": disabled}, headers=headers)
    assert client.delete(f"/m2m/clients/{api_id}", headers=headers).status_code == 204

    by_cli = events(client, headers, f"/m2m/clients/{cid}/events")[::-1]
    by_api = events(client, headers, f"/m2m/clients/{api_id}/events")[::-1]
    expected = ["client_created", "secret_rotated", "client_disabled", "client_enabled",
                "client_deleted"]
    assert [e["event"] for e in by_cli] == [e["event"] for e in by_api] == expected
    assert {e["actor"] for e in by_cli} == {f"cli:{cli_user()}"}
    assert {e["actor"] for e in by_api} == {f"client:{admin_id}"}
    assert by_cli[1]["changes"]["grace_period_seconds"] == 10
    assert [e["changes"] for e in by_cli[2:4]] == [e["changes"] for e in by_api[2:4]]
    cli_signals = [name for name, kw in fired if kw.get("client_id") == cid]
    assert cli_signals == ["client_created", "secret_rotated", "client_updated",
                           "client_updated", "client_deleted"]

    cli("rotate-keys")
    (row,) = events(client, headers, event="keys_rotated")
    assert row["actor"] == f"cli:{cli_user()}" and row["client_id"] is None
    assert [kw for name, kw in fired if name == "keys_rotated"] == [{"kid": row["changes"]["kid"]}]
    kids = [k["kid"] for k in client.get("/m2m/jwks.json").get_json()["keys"]]
    assert row["changes"]["kid"] in kids
