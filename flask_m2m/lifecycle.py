"""Client life cycle: the one code path the CLI, the management API and host code use to
create, change, rotate, disable, enable and delete clients. Every change is checked against
the configured policy and added with its audit row to one session.

Transaction rule: these functions add and flush their rows on ``session`` (default: the app's
``db.session``) and never commit, roll back nor discard it: **the caller commits** (or rolls
back), together with any work of its own in that session. Their signals are sent once that
commit happens, never for a change rolled back. A function that raises one of its errors
(``InvalidClientData``, ``ClientNotFound``, ``SecretConflict``) has changed nothing in the
session (it may hold a row lock until the caller ends the transaction). Who acts is the
keyword ``actor`` (``cli:<user>``, ``user:<name>``, ``client:<id>``...), written to the audit
rows; there is no default. The management API uses a session of its own and commits it; the
CLI and the example console commit ``db.session``. Reading functions (``get_client``,
``list_clients``, ``list_secrets``) take the same ``session`` keyword.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import Session, scoped_session

from . import audit, signals
from .client_fields import (
    check_expires_at,
    check_imported_secret,
    check_label,
    check_metadata,
    check_name,
    check_token_lifetime,
    expiry_from_days,
    normalize_audiences,
    normalize_scopes,
    parse_rate_limit,
    parse_rate_limit_mode,
)
from .client_jwks import check_client_keys, describe_keys
from .credentials import (
    generate_client_id,
    generate_client_secret,
    generate_secret_id,
)
from .errors import ClientNotFound, InvalidClientData, SecretConflict
from .models import utcnow
from .oncommit import send_on_commit
from .pagination import Page, decode_cursor, fetch_page
from .policy import (
    CLIENT_ID_PATTERN,
    KEY_METHODS,
    PAGE_SIZE,
)

if TYPE_CHECKING:
    from .state import M2MState

#: Fields ``update_client`` may change.
UPDATABLE = (
    "name",
    "scopes",
    "audiences",
    "disabled",
    "metadata",
    "expires_at",
    "rate_limit",
    "rate_limit_mode",
    "access_token_expires_in",
    "dpop_bound_access_tokens",
)


@dataclass(frozen=True, slots=True)
class IssuedSecret:
    """A secret just made: its plaintext exists only in this object and in the response."""

    client_id: str
    secret_id: str
    plaintext: str
    expires_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_secret": self.plaintext,
            "secret_id": self.secret_id,
            "secret_expires_at": self.expires_at,
        }


#: A session the functions below work in: ``db.session`` or one of the caller's own.
AnySession = Session | scoped_session[Session]


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _session(state: M2MState, session: AnySession | None) -> Any:
    return state.db.session if session is None else session


# -- secrets -----------------------------------------------------------------------------------
def _new_secret(
    state: M2MState,
    session: AnySession,
    client_id: str,
    label: str | None,
    plaintext: str | None = None,
) -> IssuedSecret:
    """Add a secret row for ``client_id`` to ``session``."""
    plaintext = plaintext or generate_client_secret(state.settings.client_secret_length)
    max_age = state.settings.secret_max_age_days
    expires_at = utcnow() + timedelta(days=max_age) if max_age else None
    secret_id = generate_secret_id()
    session.add(
        state.models.client_secret(
            id=secret_id,
            client_id=client_id,
            label=label,
            secret_hash=state.secrets.hash(plaintext),
            created_at=utcnow(),
            expires_at=expires_at,
        )
    )
    return IssuedSecret(client_id, secret_id, plaintext, expires_at)


def list_secrets(
    state: M2MState, client_id: str, *, session: AnySession | None = None
) -> list[Any]:
    """The client's secrets that still work, oldest first (metadata only)."""
    session = _session(state, session)
    get_client(state, client_id, session=session)
    model = state.models.client_secret
    rows = session.execute(
        select(model).where(model.client_id == client_id).order_by(model.created_at, model.id)
    ).scalars()
    now = utcnow()
    return [row for row in rows if row.is_valid(now)]


def rotate_secret(
    state: M2MState,
    client_id: str,
    *,
    actor: str,
    grace_period_seconds: int = 0,
    label: str | None = None,
    session: AnySession | None = None,
) -> tuple[Any, IssuedSecret]:
    """Add a secret; every older one keeps working ``grace_period_seconds`` more at most.

    Rotations of one client are serialised by a row lock, held until the caller commits, so
    each caller's secret is the newest when it is committed and none is lost to a concurrent
    rotation. The caller commits (see the module's transaction rule).

    :raises SecretConflict: (409) if the client would hold more than the allowed secrets.
    """
    limit = state.settings.max_grace_period_seconds
    if isinstance(grace_period_seconds, bool) or not isinstance(grace_period_seconds, int):
        raise InvalidClientData("Give whole seconds.", field="grace_period_seconds")
    if not 0 <= grace_period_seconds <= limit:
        raise InvalidClientData(
            f"grace_period_seconds must be from 0 to {limit}.", field="grace_period_seconds"
        )
    check_label(label, "label")
    session = _session(state, session)
    client = get_client(state, client_id, for_update=True, session=session)
    if client.token_endpoint_auth_method in KEY_METHODS:
        raise SecretConflict("A private_key_jwt client has no secret; replace its keys instead.")
    model = state.models.client_secret
    now = utcnow()
    cutoff = now + timedelta(seconds=grace_period_seconds)
    rows = list(session.execute(select(model).where(model.client_id == client_id)).scalars())
    retired = [row for row in rows if not row.is_valid(now) or grace_period_seconds == 0]
    kept = [row for row in rows if row not in retired]
    if len(kept) + 1 > state.settings.max_secrets_per_client:  # refused before any change
        raise SecretConflict(
            f"The client already holds {len(kept)} secrets in their grace period; the most "
            f"is {state.settings.max_secrets_per_client}. Retire one, or rotate with no grace."
        )
    for row in retired:
        session.delete(row)
    for row in kept:
        if row.expires_at is None or row.expires_at > cutoff:
            row.expires_at = cutoff
    issued = _new_secret(state, session, client_id, label)
    audit.record(
        state,
        "secret_rotated",
        client_id,
        {"secret_id": issued.secret_id, "grace_period_seconds": grace_period_seconds},
        actor=actor,
        session=session,
    )
    session.flush()
    send_on_commit(
        session,
        signals.secret_rotated,
        _app(),
        client_id=client_id,
        grace_period_seconds=grace_period_seconds,
    )
    return client, issued


def delete_secret(
    state: M2MState,
    client_id: str,
    secret_id: str,
    *,
    actor: str,
    session: AnySession | None = None,
) -> None:
    """Retire one secret at once. The caller commits (see the module's transaction rule).

    :raises SecretConflict: (409) if it is the client's last working secret.
    """
    session = _session(state, session)
    get_client(state, client_id, for_update=True, session=session)
    model = state.models.client_secret
    row = session.get(model, secret_id) if CLIENT_ID_PATTERN.fullmatch(secret_id) else None
    now = utcnow()
    if row is None or row.client_id != client_id or not row.is_valid(now):
        raise ClientNotFound(f"No secret {secret_id!r} for this client.")
    others = [s for s in list_secrets(state, client_id, session=session) if s.id != secret_id]
    if not others:
        raise SecretConflict("This is the client's last secret; rotate it instead.")
    session.delete(row)
    audit.record(
        state, "secret_deleted", client_id, {"secret_id": secret_id}, actor=actor, session=session
    )
    session.flush()
    send_on_commit(
        session, signals.client_updated, _app(), client_id=client_id, changes=["secrets"]
    )


# -- clients -----------------------------------------------------------------------------------
def create_client(
    state: M2MState,
    *,
    actor: str,
    name: str = "",
    scopes: str | list[str] | tuple[str, ...] = (),
    audiences: list[str] | tuple[str, ...] = (),
    expires_in_days: int | None = None,
    rate_limit: str | None = None,
    rate_limit_mode: str | None = None,
    metadata: dict[str, Any] | None = None,
    access_token_expires_in: int | None = None,
    dpop_bound_access_tokens: bool = False,
    secret: str | None = None,
    secret_label: str | None = None,
    token_endpoint_auth_method: str = "client_secret_basic",
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    session: AnySession | None = None,
) -> tuple[Any, IssuedSecret | None]:
    """Create a client with its first secret; ``secret`` imports an existing one (hashed).
    A ``private_key_jwt`` client (RFC 7523) has its public keys (``jwks`` or ``jwks_uri``)
    and no secret. The caller commits (see the module's transaction rule).

    :returns: the client and its secret (None for a key client), whose plaintext is never
        stored nor shown again.
    """
    method, jwks, jwks_uri = check_client_keys(
        token_endpoint_auth_method,
        jwks,
        jwks_uri,
        allow_insecure=state.server.published_keys.allow_insecure,
    )
    if method in KEY_METHODS and (secret is not None or secret_label is not None):
        raise InvalidClientData("A private_key_jwt client has no secret.", field="secret")
    plaintext = check_imported_secret(secret) if secret is not None else None
    check_label(secret_label, "secret_label")
    client = state.models.client(
        client_id=generate_client_id(),
        name=check_name(state, name),
        scope=normalize_scopes(state, scopes),
        audiences=normalize_audiences(audiences),
        client_metadata=check_metadata(state, metadata),
        disabled=False,
        expires_at=expiry_from_days(state, expires_in_days),
        rate_limit=parse_rate_limit(rate_limit),
        rate_limit_mode=parse_rate_limit_mode(rate_limit_mode),
        access_token_expires_in=check_token_lifetime(state, access_token_expires_in),
        dpop_bound_access_tokens=bool(dpop_bound_access_tokens),
        tokens_valid_after=0,
        token_endpoint_auth_method=method,
        jwks=jwks,
        jwks_uri=jwks_uri,
        created_at=utcnow(),
    )
    session = _session(state, session)
    session.add(client)
    details: dict[str, Any] = {
        "name": client.name,
        "scopes": client.scopes,
        "audiences": client.audiences,
    }
    issued = None
    if method in KEY_METHODS:
        details.update(token_endpoint_auth_method=method, **describe_keys(jwks, jwks_uri))
    else:
        issued = _new_secret(state, session, client.client_id, secret_label, plaintext)
        details["secret_id"] = issued.secret_id
    audit.record(state, "client_created", client.client_id, details, actor=actor, session=session)
    session.flush()
    send_on_commit(
        session, signals.client_created, _app(), client_id=client.client_id, name=client.name
    )
    return client, issued


def get_client(
    state: M2MState,
    client_id: str,
    *,
    for_update: bool = False,
    session: AnySession | None = None,
) -> Any:
    """The client named ``client_id`` (locked for update, until the caller's transaction
    ends, when asked).

    :raises ClientNotFound: if there is none.
    """
    session = _session(state, session)
    model = state.models.client
    found = isinstance(client_id, str) and CLIENT_ID_PATTERN.fullmatch(client_id)
    client = session.get(model, client_id) if found else None
    if client is None:
        raise ClientNotFound(f"No client {client_id!r}.")
    if for_update:
        _lock_for_write(state, session, client_id)
        try:
            session.refresh(client, with_for_update=True)
        except InvalidRequestError:  # deleted meanwhile by a concurrent request
            session.expunge(client)
            raise ClientNotFound(f"No client {client_id!r}.") from None
    return client


def _lock_for_write(state: M2MState, session: AnySession, client_id: str) -> None:
    """On SQLite, which has no row locks and ignores ``FOR UPDATE``, take the database's
    write lock now with a no-op update of the client's row. It is held until the change
    commits, so changes of other processes wait their turn (up to the driver's busy timeout)
    instead of acting on what they read before this one committed."""
    model = state.models.client
    if session.get_bind(mapper=model).dialect.name != "sqlite":
        return
    session.execute(
        update(model).where(model.client_id == client_id).values(updated_at=model.updated_at)
    )


def list_clients(
    state: M2MState,
    *,
    limit: int = PAGE_SIZE,
    cursor: str | None = None,
    name_prefix: str | None = None,
    disabled: bool | None = None,
    expired: bool | None = None,
    session: AnySession | None = None,
) -> Page:
    """Clients, oldest first, filtered, one page at a time (keyset pagination)."""
    model = state.models.client
    query = select(model).order_by(model.created_at, model.client_id)
    if cursor:
        created, client_id = decode_cursor(cursor, 2)
        try:
            after = datetime.fromisoformat(str(created))
            if after.tzinfo is None:
                raise ValueError(created)
            after = after.astimezone(UTC)
        except (ValueError, OverflowError):
            raise InvalidClientData("Not a cursor of this list.", field="cursor") from None
        query = query.where(
            or_(
                model.created_at > after,
                and_(model.created_at == after, model.client_id > str(client_id)),
            )
        )
    if name_prefix:
        query = query.where(model.name.startswith(name_prefix, autoescape=True))
    if disabled is not None:
        query = query.where(model.disabled.is_(disabled))
    if expired is not None:
        is_expired = model.expired_condition(utcnow())
        query = query.where(is_expired if expired else ~is_expired)
    return fetch_page(
        _session(state, session),
        query,
        limit,
        lambda row: [row.created_at.isoformat(), row.client_id],
    )


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def update_client(
    state: M2MState,
    client_id: str,
    changes: dict[str, Any],
    *,
    actor: str,
    session: AnySession | None = None,
) -> Any:
    """Change the given fields (see :data:`UPDATABLE`); disabling revokes every token. The
    caller commits (see the module's transaction rule); with nothing to change, nothing is
    written.

    Audit rows: ``client_disabled`` or ``client_enabled``, and ``client_updated`` with the
    other changed fields (old and new values).
    """
    unknown = set(changes) - set(UPDATABLE)
    if unknown:
        raise InvalidClientData(f"Cannot change {', '.join(sorted(unknown))}.", field="_schema")
    session = _session(state, session)
    client = get_client(state, client_id, for_update=True, session=session)
    checked: dict[str, tuple[str, Any]] = {}  # field -> (attribute, new value)
    for field, value in changes.items():
        if field == "name":
            checked[field] = ("name", check_name(state, value))
        elif field == "scopes":
            checked[field] = ("scope", normalize_scopes(state, value))
        elif field == "audiences":
            checked[field] = ("audiences", normalize_audiences(value))
        elif field == "metadata":
            checked[field] = ("client_metadata", check_metadata(state, value))
        elif field == "expires_at":
            checked[field] = ("expires_at", check_expires_at(state, value))
        elif field == "rate_limit":
            checked[field] = ("rate_limit", parse_rate_limit(value))
        elif field == "rate_limit_mode":
            checked[field] = ("rate_limit_mode", parse_rate_limit_mode(value))
        elif field == "access_token_expires_in":
            checked[field] = ("access_token_expires_in", check_token_lifetime(state, value))
        elif field == "dpop_bound_access_tokens":
            checked[field] = ("dpop_bound_access_tokens", bool(value))
        else:
            checked[field] = ("disabled", bool(value))
    diff: dict[str, Any] = {}
    for field, (attribute, value) in checked.items():
        old = getattr(client, attribute)
        if field == "audiences":
            old = list(old or [])
        if old != value:
            shown = (old.split(), value.split()) if field == "scopes" else (old, value)
            diff[field] = {"from": _jsonable(shown[0]), "to": _jsonable(shown[1])}
            setattr(client, attribute, value)
    if not diff:
        return client
    if "disabled" in diff:
        if client.disabled:
            client.tokens_valid_after = math.ceil(time.time())
        event = "client_disabled" if client.disabled else "client_enabled"
        audit.record(
            state, event, client_id, {"disabled": diff["disabled"]}, actor=actor, session=session
        )
    others = {field: change for field, change in diff.items() if field != "disabled"}
    if others:
        audit.record(state, "client_updated", client_id, others, actor=actor, session=session)
    session.flush()
    send_on_commit(
        session, signals.client_updated, _app(), client_id=client_id, changes=sorted(diff)
    )
    return client


def set_disabled(
    state: M2MState,
    client_id: str,
    disabled: bool,
    *,
    actor: str,
    session: AnySession | None = None,
) -> Any:
    """Disable (and invalidate every outstanding token of) or enable a client. The caller
    commits (see the module's transaction rule)."""
    return update_client(state, client_id, {"disabled": disabled}, actor=actor, session=session)


def delete_client(
    state: M2MState, client_id: str, *, actor: str, session: AnySession | None = None
) -> None:
    """Delete a client with its secrets and stored tokens; its JWTs stop working too. The
    caller commits (see the module's transaction rule).

    The audit trail keeps a ``client_deleted`` row (with the client's name and scopes).
    """
    session = _session(state, session)
    client = get_client(state, client_id, for_update=True, session=session)
    models = state.models
    for model in (models.client_secret, models.opaque_token, models.revoked_token):
        session.execute(delete(model).where(model.client_id == client_id))
    audit.record(
        state,
        "client_deleted",
        client_id,
        {"name": client.name, "scopes": client.scopes},
        actor=actor,
        session=session,
    )
    session.delete(client)
    session.flush()
    send_on_commit(session, signals.client_deleted, _app(), client_id=client_id)
