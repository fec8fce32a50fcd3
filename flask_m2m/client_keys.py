"""Registering and replacing the public keys of a ``private_key_jwt`` client (RFC 7523 §2.2):
the one code path of the management API, the CLI and the example console, audited like every
other change of a client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flask import current_app
from sqlalchemy import delete

from . import audit, signals
from .client_jwks import check_client_keys, describe_keys
from .errors import InvalidClientData, SecretConflict
from .lifecycle import AnySession, get_client
from .oncommit import send_on_commit
from .policy import KEY_METHODS

if TYPE_CHECKING:
    from .state import M2MState

#: The client fields :func:`set_client_keys` changes.
KEY_FIELDS = ("token_endpoint_auth_method", "jwks", "jwks_uri")


def set_client_keys(
    state: M2MState,
    client_id: str,
    *,
    actor: str,
    jwks: dict[str, Any] | None = None,
    jwks_uri: str | None = None,
    token_endpoint_auth_method: str | None = None,
    session: AnySession | None = None,
) -> Any:
    """Replace the keys of a ``private_key_jwt`` client with ``jwks`` or ``jwks_uri``; with
    ``token_endpoint_auth_method="private_key_jwt"``, turn a secret client into a key client
    (its secrets are deleted). Audit row ``client_keys_replaced``: the new ``kid`` values and
    thumbprints, or the URI. The caller commits (the transaction rule of
    :mod:`flask_m2m.lifecycle`).

    :raises SecretConflict: (409) to turn a key client back into a secret client.
    :raises InvalidClientData: (422) for keys that are missing, invalid or not allowed.
    """
    session = state.db.session if session is None else session
    client = get_client(state, client_id, for_update=True, session=session)
    current = client.token_endpoint_auth_method
    method = token_endpoint_auth_method or current
    if current in KEY_METHODS and method not in KEY_METHODS:
        raise SecretConflict(
            "A private_key_jwt client cannot become a secret client; create a new client."
        )
    if method not in KEY_METHODS:
        if jwks is None and jwks_uri is None:
            return client  # a secret client stays one: nothing to change
        raise InvalidClientData("Only a private_key_jwt client has keys.", field="jwks")
    method, jwks, jwks_uri = check_client_keys(
        method, jwks, jwks_uri, allow_insecure=state.server.published_keys.allow_insecure
    )
    old_uri = client.jwks_uri
    client.token_endpoint_auth_method = method
    client.jwks = jwks
    client.jwks_uri = jwks_uri
    details: dict[str, Any] = describe_keys(jwks, jwks_uri)
    if current != method:
        secrets = state.models.client_secret
        session.execute(delete(secrets).where(secrets.client_id == client_id))
        details["token_endpoint_auth_method"] = {"from": current, "to": method}
    audit.record(state, "client_keys_replaced", client_id, details, actor=actor, session=session)
    session.flush()
    if old_uri:
        state.server.published_keys.forget(old_uri)
    send_on_commit(
        session,
        signals.client_updated,
        current_app._get_current_object(),  # type: ignore[attr-defined]
        client_id=client_id,
        changes=["keys"],
    )
    return client
