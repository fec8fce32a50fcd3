"""SQLAlchemy 2 mixins for the extension's tables, and the default models built on an app's ``db``.

Apps that bring their own tables subclass the mixins on their own ``db.Model`` and pass the
classes to :class:`~flask_m2m.M2M`; everyone else gets :func:`default_models`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import JSON, Boolean, ColumnElement, DateTime, Integer, String, Text, and_
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from .policy import (
    KEY_METHODS,
    MAX_LABEL_LENGTH,
    MAX_NAME_LENGTH,
    MAX_RATE_LIMIT_LENGTH,
    SECRET_METHODS,
)

#: What a client is now: it may authenticate only when ``"active"``.
ClientStatus = Literal["active", "disabled", "expired"]


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every back-end (SQLite drops the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC datetimes")
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class _Row:
    """What every mixin's model class accepts: its columns as keyword arguments."""

    if TYPE_CHECKING:

        def __init__(self, **columns: Any) -> None: ...


class ClientMixin(_Row):
    """A machine client: id, hashed secret, allowed scopes and life-cycle state."""

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), default="", index=True)
    #: Allowed scopes, space-separated (RFC 6749 §3.3).
    scope: Mapped[str] = mapped_column(Text, default="")
    client_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: Flask-Limiter limit string overriding the default token-endpoint limit.
    rate_limit: Mapped[str | None] = mapped_column(String(MAX_RATE_LIMIT_LENGTH), default=None)
    #: ``"enforce"`` or ``"log-only"`` (counted and reported, not enforced); None: the
    #: ``M2M_TOKEN_RATE_LIMIT_MODE`` default.
    rate_limit_mode: Mapped[str | None] = mapped_column(String(16), default=None)
    #: Lifetime of this client's access tokens in seconds (None: ``M2M_ACCESS_TOKEN_EXPIRES_IN``).
    access_token_expires_in: Mapped[int | None] = mapped_column(Integer, default=None)
    #: Last successful authentication (written at most every ``M2M_LAST_USED_INTERVAL_SECONDS``).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    #: Tokens issued before this time (Unix seconds) are no longer valid.
    tokens_valid_after: Mapped[int] = mapped_column(Integer, default=0)
    #: Resource identifiers (RFC 8707) this client may ask tokens for; empty: only the default.
    audiences: Mapped[list[str]] = mapped_column(JSON, default=list)
    #: RFC 7591 ``token_endpoint_auth_method``: ``client_secret_basic`` (a secret client, which
    #: may also use ``client_secret_post``) or ``private_key_jwt`` (RFC 7523, no secret).
    token_endpoint_auth_method: Mapped[str] = mapped_column(
        String(32), default="client_secret_basic"
    )
    #: The client's public keys (an RFC 7517 JWK Set), for ``private_key_jwt``.
    jwks: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    #: Where the client publishes its JWK Set, instead of ``jwks``.
    jwks_uri: Mapped[str | None] = mapped_column(String(2048), default=None)
    #: RFC 9449 §5.2: this client's access tokens must be DPoP-bound.
    dpop_bound_access_tokens: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def scopes(self) -> list[str]:
        """The allowed scopes as a list."""
        return self.scope.split()

    def status(self, now: datetime | None = None) -> ClientStatus:
        """``"disabled"``, else ``"expired"`` once ``expires_at`` has passed, else
        ``"active"``: the one statement of that rule (:meth:`expired_condition` is its SQL)."""
        if self.disabled:
            return "disabled"
        if self.expires_at is not None and self.expires_at <= (now or utcnow()):
            return "expired"
        return "active"

    def is_active(self, now: datetime | None = None) -> bool:
        """Whether the client may authenticate: not disabled and not expired."""
        return self.status(now) == "active"

    @classmethod
    def expired_condition(cls, now: datetime) -> ColumnElement[bool]:
        """A query condition: the client has expired at ``now`` (as :meth:`status` says)."""
        return and_(cls.expires_at.is_not(None), cls.expires_at <= now)

    # Authlib's ClientMixin protocol ---------------------------------------------------------
    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        if not scope:
            return self.scope
        allowed = set(self.scopes)
        return " ".join(s for s in scope.split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        """A key client uses ``private_key_jwt`` only; a secret client either secret method."""
        if self.token_endpoint_auth_method in KEY_METHODS:
            return method in KEY_METHODS
        return method in SECRET_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "client_credentials"


class ClientSecretMixin(_Row):
    """One secret of a client, stored as a keyed hash; a client may hold several."""

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str | None] = mapped_column(String(MAX_LABEL_LENGTH), default=None)
    secret_hash: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: After this time the secret no longer works (grace period or maximum age).
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    def is_valid(self, now: datetime) -> bool:
        """Whether the secret still works at ``now``."""
        return self.expires_at is None or self.expires_at > now


class AuditEventMixin(_Row):
    """One change to a client or to the keys: what, who, when, under which request."""

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event: Mapped[str] = mapped_column(String(64), index=True)
    client_id: Mapped[str | None] = mapped_column(String(64), index=True, default=None)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    changes: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SigningKeyMixin(_Row):
    """A JWS signing key; the private part is stored encrypted (a JWE compact string)."""

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_jwk_encrypted: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: When the key stopped signing; it stays published until its last token expires.
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RevokedTokenMixin(_Row):
    """The ``jti`` of a revoked JWT access token, kept until the token would have expired."""

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class OpaqueTokenMixin(_Row):
    """An opaque access token, stored as a SHA-256 hash."""

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(String(64), index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    audience: Mapped[str] = mapped_column(String(512))
    issuer: Mapped[str] = mapped_column(String(512))
    issued_at: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    #: RFC 9449 §6: the JWK thumbprint (RFC 7638) of the key a DPoP-bound token is bound to.
    jkt: Mapped[str | None] = mapped_column(String(64), default=None)
    #: The claims the app's ``token_claims`` hook added, returned by introspection.
    extra_claims: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)


class UsedJtiMixin(_Row):
    """A ``jti`` seen once (a client assertion or a DPoP proof), kept until it would expire, so
    that every instance refuses it a second time."""

    #: SHA-256 (hex) of the kind, the issuer and the ``jti``: fixed length, nothing replayable.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


@dataclass(frozen=True, slots=True)
class Models:
    """The model classes one app uses."""

    client: type[ClientMixin]
    signing_key: type[SigningKeyMixin]
    revoked_token: type[RevokedTokenMixin]
    opaque_token: type[OpaqueTokenMixin]
    client_secret: type[ClientSecretMixin]
    audit_event: type[AuditEventMixin]
    #: Used ``jti`` values; None: custom models without that table keep them elsewhere.
    used_jti: type[UsedJtiMixin] | None = None


_defaults: weakref.WeakKeyDictionary[Any, Models] = weakref.WeakKeyDictionary()


def default_models(db: Any) -> Models:
    """The default models on ``db`` (tables ``m2m_*``), defined once per ``db`` object."""
    if db not in _defaults:

        class Client(ClientMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_clients"

        class SigningKey(SigningKeyMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_signing_keys"

        class RevokedToken(RevokedTokenMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_revoked_tokens"

        class OpaqueToken(OpaqueTokenMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_opaque_tokens"

        class ClientSecret(ClientSecretMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_client_secrets"

        class AuditEvent(AuditEventMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_audit_events"

        class UsedJti(UsedJtiMixin, db.Model):  # type: ignore[misc]
            __tablename__ = "m2m_used_jtis"

        _defaults[db] = Models(
            Client, SigningKey, RevokedToken, OpaqueToken, ClientSecret, AuditEvent, UsedJti
        )
    return _defaults[db]
