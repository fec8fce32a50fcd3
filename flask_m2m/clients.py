"""Client life cycle: the one code path the CLI (and the management API) use to create,
rotate, disable, enable and delete clients. Every function commits and sends its signal."""

from __future__ import annotations

import math
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import delete, select

from . import signals
from .credentials import (
    MAX_SECRET_LENGTH,
    MIN_IMPORTED_SECRET_LENGTH,
    generate_client_id,
    generate_client_secret,
    hash_secret,
)
from .errors import ClientNotFound, InvalidClientData
from .grants import SCOPE_TOKEN
from .models import utcnow

if TYPE_CHECKING:
    from .extension import M2MState

MAX_NAME_LENGTH = 200
MAX_LIFETIME_DAYS = 36500


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def normalize_scopes(scopes: str | list[str] | tuple[str, ...]) -> str:
    """Scopes as one space-separated string of valid RFC 6749 §3.3 scope tokens."""
    items = scopes.split() if isinstance(scopes, str) else list(scopes)
    for scope in items:
        if not isinstance(scope, str) or not SCOPE_TOKEN.fullmatch(scope):
            raise InvalidClientData(f"Invalid scope {scope!r} (RFC 6749 §3.3).")
    return " ".join(dict.fromkeys(items))


def _check_name(name: str) -> str:
    if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH or "\x00" in name:
        raise InvalidClientData(f"The name must be text of at most {MAX_NAME_LENGTH} characters.")
    return name.strip()


def _expiry(expires_in_days: int | None) -> datetime | None:
    if expires_in_days is None:
        return None
    if not isinstance(expires_in_days, int) or not 0 < expires_in_days <= MAX_LIFETIME_DAYS:
        raise InvalidClientData(f"expires_in_days must be from 1 to {MAX_LIFETIME_DAYS}.")
    return utcnow() + timedelta(days=expires_in_days)


def _check_secret(secret: str) -> str:
    size_ok = MIN_IMPORTED_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH
    if not size_ok or not secret.isprintable():
        raise InvalidClientData(
            f"An imported secret must be {MIN_IMPORTED_SECRET_LENGTH} to {MAX_SECRET_LENGTH} "
            "printable characters."
        )
    return secret


def create_client(
    state: M2MState,
    *,
    name: str,
    scopes: str | list[str] | tuple[str, ...] = (),
    expires_in_days: int | None = None,
    rate_limit: str | None = None,
    metadata: dict[str, Any] | None = None,
    secret: str | None = None,
) -> tuple[Any, str]:
    """Create a client. ``secret`` imports an existing secret (hashed at once).

    :returns: the client and its plaintext secret, which is never stored nor shown again.
    """
    if rate_limit is not None and (not isinstance(rate_limit, str) or len(rate_limit) > 64):
        raise InvalidClientData("rate_limit must be a limit string such as '100/minute'.")
    plaintext = _check_secret(secret) if secret is not None else generate_client_secret(
        state.settings.client_secret_length
    )
    client = state.models.client(
        client_id=generate_client_id(),
        name=_check_name(name),
        secret_hash=hash_secret(plaintext, state.secret_hash_key),
        scope=normalize_scopes(scopes),
        client_metadata=dict(metadata or {}),
        disabled=False,
        expires_at=_expiry(expires_in_days),
        rate_limit=rate_limit,
        tokens_valid_after=0,
    )
    state.db.session.add(client)
    state.db.session.commit()
    signals.client_created.send(_app(), client_id=client.client_id, name=client.name)
    return client, plaintext


def get_client(state: M2MState, client_id: str, *, for_update: bool = False) -> Any:
    """The client named ``client_id``.

    :raises ClientNotFound: if there is none.
    """
    client = state.server.query_client(client_id)
    if client is not None and for_update:
        state.db.session.refresh(client, with_for_update=True)
    if client is None:
        raise ClientNotFound(f"No client {client_id!r}.")
    return client


def list_clients(state: M2MState) -> list[Any]:
    """Every client, oldest first."""
    model = state.models.client
    query = select(model).order_by(model.created_at, model.client_id)
    return list(state.db.session.execute(query).scalars())


def rotate_secret(
    state: M2MState, client_id: str, *, grace_period_seconds: int = 0
) -> tuple[Any, str]:
    """Give the client a new secret; the old one keeps working ``grace_period_seconds`` longer.

    :returns: the client and its new plaintext secret.
    """
    if not isinstance(grace_period_seconds, int) or grace_period_seconds < 0:
        raise InvalidClientData("grace_period_seconds must be a whole number of seconds >= 0.")
    client = get_client(state, client_id, for_update=True)
    plaintext = generate_client_secret(state.settings.client_secret_length)
    if grace_period_seconds:
        client.previous_secret_hash = client.secret_hash
        client.previous_secret_expires_at = utcnow() + timedelta(seconds=grace_period_seconds)
    else:
        client.previous_secret_hash = None
        client.previous_secret_expires_at = None
    client.secret_hash = hash_secret(plaintext, state.secret_hash_key)
    state.db.session.commit()
    signals.secret_rotated.send(
        _app(), client_id=client_id, grace_period_seconds=grace_period_seconds
    )
    return client, plaintext


def set_disabled(state: M2MState, client_id: str, disabled: bool) -> Any:
    """Disable (and invalidate every outstanding token of) or enable a client."""
    client = get_client(state, client_id, for_update=True)
    client.disabled = disabled
    if disabled:
        client.tokens_valid_after = math.ceil(time.time())
    state.db.session.commit()
    state.tokens.forget_client(client_id)
    signals.client_updated.send(_app(), client_id=client_id, changes=["disabled"])
    return client


def delete_client(state: M2MState, client_id: str) -> None:
    """Delete a client with its stored tokens; its JWTs stop working too."""
    client = get_client(state, client_id)
    models = state.models
    session = state.db.session
    session.execute(delete(models.opaque_token).where(models.opaque_token.client_id == client_id))
    session.execute(delete(models.revoked_token).where(models.revoked_token.client_id == client_id))
    session.delete(client)
    session.commit()
    state.tokens.forget_client(client_id)
    signals.client_deleted.send(_app(), client_id=client_id)
