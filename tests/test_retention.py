"""Retention (``flask_m2m.retention.prune`` and ``flask m2m prune``): exactly the rows no one
can need any more are deleted, valid tokens and secrets keep working, and several runs at once
(threads, or CLI processes of the example app) give the same result as one."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from helpers.apps import bare_app, close_app, fetch_token, make_app, register
from helpers.http import basic_auth, bearer
from helpers.servers import example_env, flask_cli
from sqlalchemy import select

import flask_m2m.tokens
from flask_m2m import M2M
from flask_m2m.errors import ConfigurationError
from flask_m2m.extension import get_state
from flask_m2m.lifecycle import rotate_secret
from flask_m2m.models import utcnow
from flask_m2m.retention import PruneResult, prune

KINDS = ("opaque_tokens", "revoked_tokens", "client_secrets", "audit_events")
RETENTION_DAYS = 30
#: Rows whose fate does not depend on a second or two: for runs that use the real clock.
CLEAR_CUT = ("never", "valid", "long")
Rows = dict[str, set[Any]]


def plan(leeway: int, retention_days: int | None) -> dict[str, dict[str, tuple[Any, bool]]]:
    """For each kind: label -> (its expiry, or creation time for audit events, relative to
    now; whether prune keeps it). Tokens are refused as expired everywhere once past ``exp``
    by more than twice the leeway; secrets once past ``expires_at`` by more than the leeway."""
    s = timedelta(seconds=1)
    retention = timedelta(days=retention_days or 0)
    keep_old = retention_days is None
    tokens = {
        "valid": (600, True),  # not expired
        "leeway": (-(leeway // 2), True),  # expired, still accepted within the leeway
        "edge": (-2 * leeway, True),  # at the margin: kept
        "just": (-2 * leeway - 1, False),  # one second past the margin
        "long": (-30 * 86400, False),
    }
    return {
        "opaque_tokens": tokens,
        "revoked_tokens": tokens,
        "client_secrets": {
            "never": (None, True),  # never expires
            "valid": (timedelta(hours=1), True),
            "leeway": (-leeway * s / 2, True),  # expired, but maybe not on every clock yet
            "edge": (-leeway * s, True),
            "just": (-leeway * s - s, False),
            "long": (timedelta(days=-90), False),
        },
        "audit_events": {
            "valid": (timedelta(0), True),
            "edge": (-retention, True),
            "just": (-retention - s, keep_old),
            "long": (timedelta(days=-400) - retention, keep_old),
        },
    }


def seed(
    app: Flask, now: datetime, *, copies: int = 1, only: tuple[str, ...] | None = None
) -> tuple[Rows, Rows]:
    """Insert rows of every kind around each boundary; their primary keys, (kept, deleted)."""
    kept: Rows = {kind: set() for kind in KINDS}
    deleted: Rows = {kind: set() for kind in KINDS}
    with app.app_context():
        state = get_state(app)
        models, session = state.models, state.db.session
        now_ts = int(now.timestamp())
        audit_rows = []
        settings = state.settings
        for kind, labels in plan(settings.leeway, settings.audit_retention_days).items():
            for label, (offset, keep) in labels.items():
                if only is not None and label not in only:
                    continue
                for i in range(copies):
                    key = f"{kind[:6]}-{label}-{i}"
                    if kind == "opaque_tokens":
                        session.add(
                            models.opaque_token(
                                token_hash=key, jti=key, client_id="m2m_seed", scope="read",
                                audience="https://issuer.test", issuer="https://issuer.test",
                                issued_at=now_ts - 40 * 86400, expires_at=now_ts + offset,
                            )
                        )  # fmt: skip
                    elif kind == "revoked_tokens":
                        session.add(
                            models.revoked_token(
                                jti=key, client_id="m2m_seed", expires_at=now_ts + offset
                            )
                        )
                    elif kind == "client_secrets":
                        session.add(
                            models.client_secret(
                                id=key, client_id="m2m_seed", secret_hash="x",
                                created_at=now - timedelta(days=100),
                                expires_at=None if offset is None else now + offset,
                            )
                        )  # fmt: skip
                    else:
                        row = models.audit_event(
                            event="seeded", actor="test", created_at=now + offset
                        )
                        session.add(row)
                        audit_rows.append((row, keep))
                        continue
                    (kept if keep else deleted)[kind].add(key)
        session.commit()
        for row, keep in audit_rows:
            (kept if keep else deleted)["audit_events"].add(row.id)
    return kept, deleted


def remaining(app: Flask) -> Rows:
    """The primary keys left of every kind (audit: without the ``pruned`` events)."""
    with app.app_context():
        state = get_state(app)
        m, session = state.models, state.db.session
        rows = {
            "opaque_tokens": session.scalars(select(m.opaque_token.token_hash)),
            "revoked_tokens": session.scalars(select(m.revoked_token.jti)),
            "client_secrets": session.scalars(
                select(m.client_secret.id).where(m.client_secret.client_id == "m2m_seed")
            ),
            "audit_events": session.scalars(
                select(m.audit_event.id).where(m.audit_event.event == "seeded")
            ),
        }
        found = {kind: set(result) for kind, result in rows.items()}
        session.remove()
        return found


def pruned_events(app: Flask) -> list[tuple[str, dict[str, int]]]:
    """The ``pruned`` audit events: (actor, counts), oldest first."""
    with app.app_context():
        state = get_state(app)
        model = state.models.audit_event
        rows = state.db.session.scalars(
            select(model).where(model.event == "pruned").order_by(model.id)
        )
        found = [(row.actor, row.changes) for row in rows]
        state.db.session.remove()
        return found


def counts(deleted: Rows) -> dict[str, int]:
    return {kind: len(keys) for kind, keys in deleted.items()}


def run_prune(app: Flask, **kwargs: Any) -> PruneResult:
    with app.app_context():
        return prune(get_state(app), **kwargs)


def cli(app: Flask, *args: str) -> Any:
    """``flask m2m prune ARGS`` on ``app``; the click result."""
    return app.test_cli_runner().invoke(args=["m2m", "prune", *args])


@pytest.fixture
def now() -> datetime:
    return utcnow().replace(microsecond=0)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The token service's clock, stopped mid-second; ``clock[0] += n`` moves it (no sleeping)."""
    stopped = [float(int(time.time())) + 0.25]
    monkeypatch.setattr(flask_m2m.tokens.time, "time", lambda: stopped[0])
    return stopped


# -- what is deleted ---------------------------------------------------------------------------
def test_prune_deletes_exactly_the_rows_past_their_time(
    app_factory: Callable[..., Flask], now: datetime
) -> None:
    """Expired tokens (past the margin), expired secrets and audit events older than the
    retention go; still valid rows, rows inside the leeway and rows at a boundary stay. One
    ``pruned`` audit event holds the counts and the caller's actor."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, now)
    assert all(deleted.values()) and all(kept.values())
    result = run_prune(app, now=now, batch_size=2, actor="test:retention")
    assert result.as_dict() == counts(deleted)
    assert result.total == sum(counts(deleted).values())
    assert remaining(app) == kept
    assert pruned_events(app) == [("test:retention", counts(deleted))]


def test_prune_again_deletes_and_records_nothing(
    app_factory: Callable[..., Flask], now: datetime
) -> None:
    """A second run finds nothing, and writes no second ``pruned`` event."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, now)
    run_prune(app, now=now)
    assert run_prune(app, now=now) == PruneResult()
    assert remaining(app) == kept
    assert len(pruned_events(app)) == 1


def test_audit_events_kept_without_retention(app: Flask, now: datetime) -> None:
    """``M2M_AUDIT_RETENTION_DAYS`` unset (the default): every audit event stays, however old;
    the rest is pruned as usual."""
    kept, deleted = seed(app, now)
    assert not deleted["audit_events"] and len(kept["audit_events"]) == 4
    result = run_prune(app, now=now)
    assert result.audit_events == 0
    assert result.as_dict() == counts(deleted)
    assert remaining(app) == kept


def test_dry_run_counts_and_deletes_nothing(
    app_factory: Callable[..., Flask], now: datetime
) -> None:
    """``dry_run`` reports what would go, deletes nothing and writes no audit event."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, now)
    assert run_prune(app, now=now, dry_run=True).as_dict() == counts(deleted)
    assert remaining(app) == {kind: kept[kind] | deleted[kind] for kind in KINDS}
    assert pruned_events(app) == []


def test_bad_arguments(app: Flask) -> None:
    """A naive ``now`` or a batch size below 1 is refused before anything is deleted."""
    with pytest.raises(ValueError, match="naive"):
        run_prune(app, now=datetime.now())  # naive on purpose
    with pytest.raises(ValueError, match="batch_size"):
        run_prune(app, batch_size=0)


@pytest.mark.parametrize("value", ["x", 0, -1, 36501])
def test_retention_setting_is_checked(value: Any) -> None:
    """A bad ``M2M_AUDIT_RETENTION_DAYS`` fails at start-up, naming the key."""
    app, db = bare_app(M2M_AUDIT_RETENTION_DAYS=value)
    with pytest.raises(ConfigurationError, match="M2M_AUDIT_RETENTION_DAYS"):
        M2M(app, db)


# -- the CLI -----------------------------------------------------------------------------------
def test_cli_prune_json(app_factory: Callable[..., Flask]) -> None:
    """``flask m2m prune --json`` prints exactly one JSON object with the counts; the audit
    event names the CLI user."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, utcnow(), only=CLEAR_CUT)
    result = cli(app, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**counts(deleted), "dry_run": False}
    assert remaining(app) == kept
    ((actor, changes),) = pruned_events(app)
    assert actor.startswith("cli:") and changes == counts(deleted)
    again = cli(app, "--json")
    assert json.loads(again.stdout) == {**dict.fromkeys(KINDS, 0), "dry_run": False}


def test_cli_prune_dry_run(app_factory: Callable[..., Flask]) -> None:
    """``--dry-run --json`` prints the counts and deletes nothing."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, utcnow(), only=CLEAR_CUT)
    result = cli(app, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {**counts(deleted), "dry_run": True}
    assert remaining(app) == {kind: kept[kind] | deleted[kind] for kind in KINDS}
    assert pruned_events(app) == []


def test_cli_prune_human_output(app: Flask) -> None:
    """Without ``--json`` one line per kind, and a note that audit events are kept."""
    seed(app, utcnow(), only=CLEAR_CUT)
    result = cli(app, "--batch-size", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "Deleted 1 expired opaque tokens.",
        "Deleted 1 revoked-token entries past their expiry.",
        "Deleted 1 expired client secrets.",
        "Audit events are kept for good: M2M_AUDIT_RETENTION_DAYS is not set.",
    ]
    assert cli(app, "--batch-size", "0").exit_code != 0


# -- what keeps working ------------------------------------------------------------------------
@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_valid_tokens_and_secrets_keep_working(
    app_factory: Callable[..., Flask], token_format: str
) -> None:
    """After a prune, a token issued before it is still accepted (RFC 6750 §2.1) and the
    client's secret still gets new tokens (RFC 6749 §4.4), also a secret in its grace period."""
    app = app_factory(M2M_TOKEN_FORMAT=token_format, M2M_AUDIT_RETENTION_DAYS=1)
    c: FlaskClient = app.test_client()
    creds = register(app)
    before = fetch_token(c, creds)
    with app.app_context():
        _, issued = rotate_secret(
            get_state(app), creds["client_id"], actor="test", grace_period_seconds=600
        )
        get_state(app).db.session.commit()
    seed(app, utcnow(), only=CLEAR_CUT)
    result = run_prune(app)
    assert result.total > 0
    assert c.get("/api/whoami", headers=bearer(before)).status_code == 200
    for secret in (creds["client_secret"], issued.plaintext):
        after = fetch_token(c, {**creds, "client_secret": secret})
        assert c.get("/api/whoami", headers=bearer(after)).status_code == 200


def test_pruned_revoked_jwt_is_refused_as_expired(
    app_factory: Callable[..., Flask], clock: list[float]
) -> None:
    """A revoked JWT's entry stays while the token could still pass the expiry check (RFC 9068
    §4 with the leeway), so it is refused as revoked (RFC 7009 §2); once the entry is pruned,
    ``require_scope`` refuses the token as expired (RFC 6750 §3.1 ``invalid_token``)."""
    app = app_factory(M2M_ACCESS_TOKEN_EXPIRES_IN=60)
    c, creds = app.test_client(), register(app)
    leeway = get_state(app).settings.leeway
    token = fetch_token(c, creds)
    response = c.post("/m2m/revoke", data={"token": token}, headers=basic_auth(
        creds["client_id"], creds["client_secret"]
    ))  # fmt: skip
    assert response.status_code == 200

    def refusal() -> str:
        response = c.get("/api/whoami", headers=bearer(token))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
        return str(response.get_json()["error_description"])

    def at(seconds: float) -> datetime:
        return datetime.fromtimestamp(seconds, UTC)

    clock[0] += 60 + leeway - 1  # expired, but inside the leeway
    assert run_prune(app, now=at(clock[0] + leeway)).revoked_tokens == 0  # a clock ahead
    assert refusal() == "The access token has been revoked."
    clock[0] += 2 * leeway
    assert run_prune(app, now=at(clock[0])).revoked_tokens == 1
    assert remaining(app)["revoked_tokens"] == set()
    assert refusal() == "The access token has expired."


def test_revoking_keeps_entries_of_tokens_inside_the_leeway(
    app_factory: Callable[..., Flask], clock: list[float]
) -> None:
    """Revoking a token also drops old revocation entries, but never the entry of a revoked
    token that would still pass the expiry check within the leeway (RFC 7009 §2)."""
    app = app_factory(M2M_ACCESS_TOKEN_EXPIRES_IN=60)
    c, creds = app.test_client(), register(app)
    auth = basic_auth(creds["client_id"], creds["client_secret"])
    first = fetch_token(c, creds)
    assert c.post("/m2m/revoke", data={"token": first}, headers=auth).status_code == 200
    clock[0] += 60 + 15  # past exp, inside the 30 s leeway
    second = fetch_token(c, creds)
    assert c.post("/m2m/revoke", data={"token": second}, headers=auth).status_code == 200
    response = c.get("/api/whoami", headers=bearer(first))
    assert response.status_code == 401, response.get_json()
    assert response.get_json()["error_description"] == "The access token has been revoked."


def test_host_session_work_survives(app_factory: Callable[..., Flask], now: datetime) -> None:
    """``prune`` works on connections of its own: an object pending in the app's
    ``db.session`` is neither committed, rolled back nor expunged by it."""
    app = app_factory(M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, now)
    with app.app_context():
        state = get_state(app)
        session = state.db.session
        session.scalar(select(state.models.client.client_id))  # the session holds a connection
        pending = state.models.client(client_id="m2m_pending", name="host's own work")
        session.add(pending)
        assert prune(state, now=now).as_dict() == counts(deleted)
        assert pending in session.new
        session.commit()
    with app.app_context():
        state = get_state(app)
        assert state.db.session.get(state.models.client, "m2m_pending") is not None
    assert remaining(app) == kept


# -- several runs at once ----------------------------------------------------------------------
def test_parallel_prunes_in_threads(
    app_factory: Callable[..., Flask], shared_database_url: str, now: datetime
) -> None:
    """Two prunes at once on one database (a SQLite file, or PostgreSQL), in small batches:
    both succeed, no row is counted twice, and what remains is what one run leaves."""
    app = app_factory(shared_database_url, M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    kept, deleted = seed(app, now, copies=60)
    barrier = threading.Barrier(2)

    def one_run(actor: str) -> PruneResult:
        with app.app_context():
            barrier.wait(timeout=30)
            return prune(get_state(app), now=now, batch_size=7, actor=actor)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one_run, ["run-1", "run-2"]))
    total = {kind: sum(r.as_dict()[kind] for r in results) for kind in KINDS}
    assert total == counts(deleted)
    assert remaining(app) == kept
    events = pruned_events(app)
    assert sorted(actor for actor, _ in events) == [
        f"run-{i}" for i, r in enumerate(results, 1) if r.total
    ]
    assert {kind: sum(changes[kind] for _, changes in events) for kind in KINDS} == total


DATABASE_URL = os.environ.get("M2M_TEST_DATABASE_URL", "")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database the example app's processes share: a SQLite file, or the configured
    PostgreSQL (emptied before and after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retention.db'}"
        return
    if not DATABASE_URL.startswith("postgresql"):
        pytest.skip("set M2M_TEST_DATABASE_URL to a PostgreSQL database to run this on it")
    yield DATABASE_URL


@pytest.mark.slow
def test_parallel_cli_prunes(database: str) -> None:
    """Two ``flask m2m prune --json`` processes of the example app at once, as cron on two
    instances would start them: both succeed, each prints one JSON object, the counts add up
    to what one run deletes, and what remains is what one run leaves."""
    app, db = make_app(database, M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS)
    try:
        kept, deleted = seed(app, utcnow(), copies=100, only=CLEAR_CUT)
        env = example_env(
            SQLALCHEMY_DATABASE_URI=database,
            SECRET_KEY="retention-secret-key-0123456789abcdef",
            M2M_ISSUER="https://issuer.test",
            M2M_AUDIT_RETENTION_DAYS=RETENTION_DAYS,
        )
        with ThreadPoolExecutor(2) as pool:
            runs = [
                pool.submit(flask_cli, env, "m2m", "prune", "--json", "--batch-size", "10")
                for _ in range(2)
            ]
            outputs = [json.loads(run.result()) for run in runs]
        total = {kind: sum(out[kind] for out in outputs) for kind in KINDS}
        assert total == counts(deleted)
        assert remaining(app) == kept
        events = pruned_events(app)
        assert len(events) == sum(1 for out in outputs if any(out[kind] for kind in KINDS))
    finally:
        close_app(app, db, drop_tables=True)
