"""Client authentication (RFC 6749 §2.3.1): ``client_secret_basic`` and ``client_secret_post``
(``private_key_jwt`` is :mod:`flask_m2m.assertions`').

Ours rather than Authlib's default so that a malformed ``Authorization`` header is a 401 rather
than a crash, disabled and expired clients are refused, ids are checked before any query, and
secrets are compared as keyed hashes.

A client's row and its secret hashes are read in one query and kept in memory for
``M2M_STATE_CACHE_SECONDS`` (:class:`CredentialsCache`): a change this process writes through
the ORM (disable, delete, rotation, secret removal) takes effect at once
(:mod:`flask_m2m.invalidation`), one made elsewhere within that bound.
"""

from __future__ import annotations

import base64
import binascii
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749 import InvalidClientError, InvalidRequestError
from flask import current_app
from flask import request as flask_request
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from . import audit, signals, writes
from .autocommit import Autocommit
from .models import utcnow
from .policy import CLIENT_ID_PATTERN, SECRET_METHODS

if TYPE_CHECKING:
    from .state import M2MState

#: Most clients whose credentials one process keeps in memory.
MAX_CACHED_CLIENTS = 10000


@dataclass(slots=True)
class _Credentials:
    """A client and its stored secrets, detached from any session, as read at ``loaded_at``."""

    client: Any
    secrets: list[Any]
    loaded_at: float


class CredentialsCache:
    """The clients (and their secret hashes) this process has read, each kept for
    ``M2M_STATE_CACHE_SECONDS``; misses too, so an unknown id costs what a known one does."""

    def __init__(self, state: M2MState):
        self._state = state
        self._entries: dict[str, _Credentials] = {}
        #: Bumped by every :meth:`forget_client`, so a read that raced a change is not kept.
        self._generation = 0
        #: The read is one query: no transaction around it (one round trip).
        self._autocommit = Autocommit(state.db)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, client_id: str) -> _Credentials | None:
        """The client named ``client_id`` with its secrets (None if there is none), from
        memory while younger than ``M2M_STATE_CACHE_SECONDS``, else in one query.

        The objects are detached copies: never add them to a session.
        """
        if not CLIENT_ID_PATTERN.fullmatch(client_id):
            return None
        now = time.monotonic()
        ttl = self._state.settings.state_cache_seconds
        cached = self._entries.get(client_id)
        if cached is not None and now - cached.loaded_at < ttl:
            return cached if cached.client is not None else None
        generation = self._generation
        models = self._state.models
        query = (
            select(models.client, models.client_secret)
            .outerjoin(models.client_secret, models.client_secret.client_id == client_id)
            .where(models.client.client_id == client_id)
        )
        # A session of its own: the copies outlive it and never join the request's session.
        with Session(self._autocommit(), expire_on_commit=False) as session:
            rows = session.execute(query).all()
        found = _Credentials(
            rows[0][0] if rows else None, [row[1] for row in rows if row[1] is not None], now
        )
        # Cached only if no change was seen meanwhile (the rows may predate it). An unknown
        # id is cached too, so that it costs what a known one does.
        if ttl > 0 and generation == self._generation:
            if len(self._entries) >= MAX_CACHED_CLIENTS:
                self._entries.clear()
            self._entries[client_id] = found
        return found if found.client is not None else None

    def forget_client(self, client_id: str) -> None:
        """Drop this process's cached credentials of ``client_id``."""
        self._generation += 1
        self._entries.pop(client_id, None)


class ClientAuthenticationFailed(InvalidClientError):  # type: ignore[misc]
    """RFC 6749 §5.2 ``invalid_client`` (401); the Basic challenge only when Basic was used."""

    def __init__(self, basic: bool):
        super().__init__(description="Client authentication failed.", status_code=401)
        self.basic = basic

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        return headers if self.basic else [h for h in headers if h[0] != "WWW-Authenticate"]


def fail(client_id: str | None, reason: str, basic: bool) -> ClientAuthenticationFailed:
    """Signal a failed client authentication and build the error to raise."""
    signals.authentication_failed.send(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        client_id=client_id,
        reason=reason,
    )
    return ClientAuthenticationFailed(basic)


def authenticate_client(state: M2MState, client_id: str, secret: str, basic: bool) -> Any:
    """The active client that ``client_id`` and ``secret`` identify.

    An unknown id costs the same work as a known one: the same cached read (misses are
    cached too) and the same hash computation, against a dummy hash (see
    :meth:`~flask_m2m.credentials.SecretHasher.match`).

    :raises InvalidClientError: (401) for an unknown, disabled or expired client or a wrong secret.
    """
    credentials = state.server.credentials.get(client_id)
    now = utcnow()
    valid = [row for row in credentials.secrets if row.is_valid(now)] if credentials else []
    index = state.secrets.match(secret, [row.secret_hash for row in valid])
    if credentials is None:
        raise fail(client_id, "unknown_client", basic)
    if index is None:
        raise fail(client_id, "invalid_secret", basic)
    client = credentials.client
    status = client.status(now)
    if status != "active":
        raise fail(client_id, status, basic)
    if client.token_endpoint_auth_method not in SECRET_METHODS:
        raise fail(client_id, "auth_method_not_allowed", basic)
    _note_use(state, client, valid[index], valid, now, secret)
    return client


def _note_use(
    state: M2MState, client: Any, secret: Any, valid: list[Any], now: datetime, plaintext: str
) -> None:
    """Record ``last_used_at`` (at most once per interval), move a secret hashed under an
    older master secret to the current one, and report a secret that should have been
    replaced: one in its grace period, or one close to its expiry.

    Bookkeeping written in a transaction of flask-m2m's own (:mod:`flask_m2m.writes`), never
    through the app's session."""
    interval = timedelta(seconds=state.settings.last_used_interval_seconds)
    rehash = not state.secrets.is_current(secret.secret_hash)
    if not rehash and secret.last_used_at is not None and now - secret.last_used_at < interval:
        return
    models = state.models
    values: dict[str, Any] = {"last_used_at": now}
    if rehash:
        values["secret_hash"] = state.secrets.hash(plaintext)
    statements: list[Any] = [
        update(models.client_secret).where(models.client_secret.id == secret.id).values(**values)
    ]
    for name, value in values.items():  # a detached copy: keeps the cached credentials current
        setattr(secret, name, value)
    if client.last_used_at is None or now - client.last_used_at >= interval:
        statements.append(
            update(models.client)
            .where(models.client.client_id == client.client_id)
            .values(last_used_at=now, updated_at=models.client.updated_at)
        )
        client.last_used_at = now
    newest = max(valid, key=lambda row: (row.created_at, row.id))
    warning = timedelta(days=state.settings.secret_expiry_warning_days)
    reason = None
    if secret is not newest:
        reason = "grace_period"
    elif secret.expires_at is not None and secret.expires_at - now <= warning:
        reason = "near_expiry"
    rows = []
    if reason:
        rows.append(
            audit.new_event(
                state,
                f"secret_used_in_{reason}",
                client.client_id,
                {"secret_id": secret.id, "expires_at": secret.expires_at.isoformat()},
                actor=f"client:{client.client_id}",
            )
        )

    def work(session: Session) -> None:
        for statement in statements:
            session.execute(statement)
        session.add_all(rows)

    writes.write(state.db, work, wait_for_app=True)
    if reason:
        signals.outdated_secret_used.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            client_id=client.client_id,
            secret_id=secret.id,
            reason=reason,
        )


def basic_credentials() -> tuple[str, str] | None:
    """The (client_id, secret) of a ``Basic`` header, form-decoded (RFC 6749 §2.3.1)."""
    header = flask_request.headers.get("Authorization")
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise ValueError("no colon")
        return (
            unquote_plus(raw_id, errors="strict"),
            unquote_plus(raw_secret, errors="strict"),
        )
    except (binascii.Error, UnicodeError, ValueError):
        return ("", "")


def client_secret_basic(state: M2MState) -> Any:
    """The client of a ``Basic`` header (RFC 6749 §2.3.1), or None without one."""
    credentials = basic_credentials()
    if credentials is None:
        return None
    form = flask_request.form
    if "client_secret" in form or "client_assertion" in form or "client_assertion_type" in form:
        # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
        raise InvalidRequestError("Use one client authentication method, not two.")
    client_id, secret = credentials
    if not client_id or not secret:
        raise fail(client_id or None, "malformed_basic_header", basic=True)
    return authenticate_client(state, client_id, secret, basic=True)


def client_secret_post(state: M2MState) -> Any:
    """The client of ``client_id``/``client_secret`` body parameters, or None without them."""
    form = flask_request.form
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if secret is None and ("client_assertion" in form or "client_assertion_type" in form):
        return None  # private_key_jwt's, which may name the client_id too (RFC 7521 §4.2)
    if secret is not None and ("client_assertion" in form or "client_assertion_type" in form):
        raise InvalidRequestError("Use one client authentication method, not two.")
    if client_id is None and secret is None:
        return None
    if not client_id or not secret:
        raise fail(client_id, "missing_credentials", basic=False)
    return authenticate_client(state, client_id, secret, basic=False)


