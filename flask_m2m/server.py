"""The authorization server: Authlib's server and client-credentials grant, with our hooks.

Client authentication (RFC 6749 §2.3.1) is ours rather than Authlib's default so that a
malformed ``Authorization`` header is a 401 rather than a crash, disabled and expired clients
are refused, ids are checked before any query, and secrets are compared as keyed hashes.

A client's row and its secret hashes are read in one query and kept in memory for
``M2M_STATE_CACHE_SECONDS``: a change this process writes through the ORM (disable, delete,
rotation, secret removal) takes effect at once, one made elsewhere within that bound.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskOAuth2Payload, FlaskOAuth2Request
from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Request,
    grants,
)
from flask import Response, current_app, g, has_app_context, json
from flask import request as flask_request
from sqlalchemy import event, select, update
from sqlalchemy.orm import Session

from . import audit, signals
from .credentials import CLIENT_ID_PATTERN
from .models import utcnow

if TYPE_CHECKING:
    from .extension import M2MState

#: RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
#: Most clients whose credentials one process keeps in memory.
_MAX_CACHED_CLIENTS = 10000


@dataclass(slots=True)
class _Credentials:
    """A client and its stored secrets, detached from any session, as read at ``loaded_at``."""

    client: Any
    secrets: list[Any]
    loaded_at: float


class _FormPayload(FlaskOAuth2Payload):  # type: ignore[misc]
    """RFC 6749 §2.3.1 / §3.2: parameters come from the body only, never from the URL."""

    @property
    def data(self) -> Any:
        return self._request.form


class _FormRequest(FlaskOAuth2Request):  # type: ignore[misc]
    """The request as Authlib sees it, built once its transport has been judged.

    Authlib's constructor refuses an ``http://`` URI to a host other than a loopback one by
    raising ``InsecureTransportError``. flask-m2m judges the transport itself, before this is
    built (:mod:`flask_m2m.transport`, ``M2M_REQUIRE_HTTPS``), so the constructor is given a
    placeholder ``https`` URI, which passes its check, and the request's real URL is set
    right after. ``FlaskOAuth2Request.__init__`` is skipped: it would pass the real URL.
    """

    PLACEHOLDER_URI = "https://transport-checked.invalid/"

    def __init__(self, request: Any):
        OAuth2Request.__init__(self, request.method, self.PLACEHOLDER_URI, headers=request.headers)
        self.uri = request.url
        self._request = request
        self.payload = _FormPayload(request)


class ClientAuthenticationFailed(InvalidClientError):  # type: ignore[misc]
    """RFC 6749 §5.2 ``invalid_client`` (401); the Basic challenge only when Basic was used."""

    def __init__(self, basic: bool):
        super().__init__(description="Client authentication failed.", status_code=401)
        self.basic = basic

    def get_headers(self) -> list[tuple[str, str]]:
        headers: list[tuple[str, str]] = super().get_headers()
        return headers if self.basic else [h for h in headers if h[0] != "WWW-Authenticate"]


def _fail(client_id: str | None, reason: str, basic: bool) -> ClientAuthenticationFailed:
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
    credentials = state.server.credentials(client_id)
    now = utcnow()
    valid = [row for row in credentials.secrets if row.is_valid(now)] if credentials else []
    index = state.secrets.match(secret, [row.secret_hash for row in valid])
    if credentials is None:
        raise _fail(client_id, "unknown_client", basic)
    if index is None:
        raise _fail(client_id, "invalid_secret", basic)
    client = credentials.client
    if not client.is_active(now):
        raise _fail(client_id, "disabled" if client.disabled else "expired", basic)
    _note_use(state, client, valid[index], valid, now, secret)
    return client


def _note_use(
    state: M2MState, client: Any, secret: Any, valid: list[Any], now: datetime, plaintext: str
) -> None:
    """Record ``last_used_at`` (at most once per interval), move a secret hashed under an
    older master secret to the current one, and report a secret that should have been
    replaced: one in its grace period, or one close to its expiry."""
    interval = timedelta(seconds=state.settings.last_used_interval_seconds)
    rehash = not state.secrets.is_current(secret.secret_hash)
    if not rehash and secret.last_used_at is not None and now - secret.last_used_at < interval:
        return
    models, session = state.models, state.db.session
    values: dict[str, Any] = {"last_used_at": now}
    if rehash:
        values["secret_hash"] = state.secrets.hash(plaintext)
    session.execute(
        update(models.client_secret).where(models.client_secret.id == secret.id).values(**values)
    )
    for name, value in values.items():  # a detached copy: keeps the cached credentials current
        setattr(secret, name, value)
    if client.last_used_at is None or now - client.last_used_at >= interval:
        session.execute(
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
    if reason:
        audit.set_actor(f"client:{client.client_id}")
        audit.record(
            state,
            f"secret_used_in_{reason}",
            client.client_id,
            {"secret_id": secret.id, "expires_at": secret.expires_at.isoformat()},
        )
    session.commit()
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


def _client_secret_basic(state: M2MState) -> Any:
    credentials = basic_credentials()
    if credentials is None:
        return None
    if "client_secret" in flask_request.form:
        # RFC 6749 §2.3: a client MUST NOT use more than one authentication method.
        raise InvalidRequestError("Use one client authentication method, not two.")
    client_id, secret = credentials
    if not client_id or not secret:
        raise _fail(client_id or None, "malformed_basic_header", basic=True)
    return authenticate_client(state, client_id, secret, basic=True)


def _client_secret_post(state: M2MState) -> Any:
    form = flask_request.form
    client_id, secret = form.get("client_id"), form.get("client_secret")
    if client_id is None and secret is None:
        return None
    if not client_id or not secret:
        raise _fail(client_id, "missing_credentials", basic=False)
    return authenticate_client(state, client_id, secret, basic=False)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
    """RFC 6749 §4.4 with both secret methods and strict scope handling (§3.3)."""

    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """No ``scope``: every allowed scope; a scope not allowed: ``invalid_scope`` (§5.2)."""
        requested = self.request.payload.scope
        allowed = self.request.client.scopes
        if requested is None or not requested.strip():
            self.request.granted_scope = " ".join(allowed)
            return
        tokens = requested.split(" ")
        if not all(SCOPE_TOKEN.fullmatch(t) for t in tokens):
            raise InvalidScopeError("The scope parameter is malformed.")
        refused = [t for t in tokens if t not in allowed]
        if refused:
            raise InvalidScopeError(f"Scope not allowed for this client: {' '.join(refused)}.")
        self.request.granted_scope = " ".join(dict.fromkeys(tokens))

    def generate_token(
        self,
        user: Any = None,
        scope: str | None = None,
        grant_type: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        # §4.4.3: no refresh token; the scope is the one validated above.
        return super().generate_token(  # type: ignore[no-any-return]
            user=None,
            scope=self.request.granted_scope,
            grant_type=grant_type,
            expires_in=expires_in,
            include_refresh_token=False,
        )


class Server(AuthorizationServer):  # type: ignore[misc]
    """Authlib's Flask authorization server bound to one app's :class:`M2MState`."""

    def __init__(self, state: M2MState):
        super().__init__()
        self.state = state
        self.register_grant(ClientCredentialsGrant)
        for method, authenticate in (
            ("client_secret_basic", _client_secret_basic),
            ("client_secret_post", _client_secret_post),
        ):
            self.register_client_auth_method(method, lambda qc, r, f=authenticate: f(state))
        self.register_token_generator("default", self._generate_token)
        self._credentials: dict[str, _Credentials] = {}
        #: Bumped by every :meth:`forget_client`, so a read that raced a change is not kept.
        self._generation = 0

    def query_client(self, client_id: str) -> Any:
        if not isinstance(client_id, str) or not CLIENT_ID_PATTERN.fullmatch(client_id):
            return None
        return self.state.db.session.get(self.state.models.client, client_id)

    def credentials(self, client_id: str) -> _Credentials | None:
        """The client named ``client_id`` with its secrets (None if there is none), from
        memory while younger than ``M2M_STATE_CACHE_SECONDS``, else in one query.

        The objects are detached copies: never add them to a session.
        """
        if not CLIENT_ID_PATTERN.fullmatch(client_id):
            return None
        now = time.monotonic()
        ttl = self.state.settings.state_cache_seconds
        cached = self._credentials.get(client_id)
        if cached is not None and now - cached.loaded_at < ttl:
            return cached if cached.client is not None else None
        generation = self._generation
        models = self.state.models
        query = (
            select(models.client, models.client_secret)
            .outerjoin(models.client_secret, models.client_secret.client_id == client_id)
            .where(models.client.client_id == client_id)
        )
        # A session of its own: the copies outlive it and never join the request's session.
        with Session(self.state.db.engine, expire_on_commit=False) as session:
            rows = session.execute(query).all()
        found = _Credentials(
            rows[0][0] if rows else None, [row[1] for row in rows if row[1] is not None], now
        )
        # Cached only if no change was seen meanwhile (the rows may predate it). An unknown
        # id is cached too, so that it costs what a known one does.
        if ttl > 0 and generation == self._generation:
            if len(self._credentials) >= _MAX_CACHED_CLIENTS:
                self._credentials.clear()
            self._credentials[client_id] = found
        return found if found.client is not None else None

    def forget_client(self, client_id: str) -> None:
        """Drop this process's cached credentials of ``client_id``."""
        self._generation += 1
        self._credentials.pop(client_id, None)

    def _generate_token(self, grant_type: str, client: Any, **kwargs: Any) -> dict[str, Any]:
        # The client's token-endpoint limit, counted once it has authenticated and its scopes
        # are valid (so naming a client cannot spend its quota); its headers go on the response.
        g._m2m_limit_headers = self.state.rate_limits.count_token_request(client)
        return self.state.tokens.issue(
            client, kwargs.get("scope") or "", self.state.issuer(), self.state.audience()
        )

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        if self.state.settings.token_format == "opaque":
            self.state.db.session.commit()
        signals.token_issued.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            client_id=request.client.client_id,
            scope=token.get("scope", ""),
        )

    def create_oauth2_request(self, request: Any) -> _FormRequest:
        return _FormRequest(flask_request)

    def handle_response(self, status_code: int, payload: Any, headers: Any) -> Response:
        body = payload if isinstance(payload, str) else json.dumps(payload)
        return Response(body, status=status_code, headers=headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        if name == "after_revoke_token":
            token = kwargs["token"]
            signals.token_revoked.send(
                current_app._get_current_object(),  # type: ignore[attr-defined]
                client_id=token.client_id,
                jti=token.jti,
            )


def _forget(state: M2MState, client_ids: set[str]) -> None:
    for client_id in client_ids:
        state.server.forget_client(client_id)
        state.tokens.forget_client(client_id)


@event.listens_for(Session, "before_flush")
def _client_changed(session: Session, flush_context: Any, instances: Any) -> None:
    """A client or secret row of the current app is written: drop what this process caches
    about that client (credentials, verified and reusable tokens), now and again once the
    change is committed (a request may read and cache the old row in between)."""
    state = current_app.extensions.get("m2m") if has_app_context() else None
    if state is None:
        return
    kinds = (state.models.client, state.models.client_secret)
    changed = {
        obj.client_id
        for obj in (*session.new, *session.dirty, *session.deleted)
        if isinstance(obj, kinds)
    }
    if changed:
        session.info.setdefault("m2m_changed_clients", set()).update(changed)
        _forget(state, changed)


@event.listens_for(Session, "after_commit")
def _client_committed(session: Session) -> None:
    changed = session.info.pop("m2m_changed_clients", None)
    state = current_app.extensions.get("m2m") if has_app_context() else None
    if changed and state is not None:
        _forget(state, changed)


@event.listens_for(Session, "after_rollback")
def _client_rolled_back(session: Session) -> None:
    session.info.pop("m2m_changed_clients", None)
