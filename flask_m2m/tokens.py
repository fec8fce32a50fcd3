"""Access tokens: RFC 9068 JWTs (default) or opaque strings; issuing, verifying, revoking.

Verification answers from a per-process cache of already-verified tokens. A cached token's
revocation and its client's state (disabled, expired, deleted, tokens revoked) are read from
the database again once the entry is ``M2M_STATE_CACHE_SECONDS`` old, which bounds how stale
any instance can be.

With ``M2M_REUSE_TOKENS``, a client asking again for the same scopes and audience gets its
last token back (with the ``expires_in`` it has left) while more than half of that token's
lifetime remains and it is neither revoked nor older than its client's ``tokens_valid_after``.
Each process keeps its own such tokens, so under several workers a client holds up to one
token per worker. A DPoP-bound token (RFC 9449) is handed back only for a proof of the same key,
and only with the same claims from the app's ``token_claims`` hook.

Every read and write here goes through a session of flask-m2m's own, never the app's
``db.session`` (:mod:`flask_m2m.writes`): opaque tokens and revocations are committed in short
transactions of their own before the response.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from . import writes
from .autocommit import Autocommit
from .config import Settings
from .credentials import OPAQUE_TOKEN_PREFIX, generate_opaque_token, hash_token
from .keys import KeyStore
from .models import Models
from .retention import token_cutoff
from .verification import (
    MAX_TOKEN_LENGTH,
    AccessToken,
    TokenRejected,
    check_claims,
    decode_jwt,
)

__all__ = ["AccessToken", "TokenRejected", "TokenService"]

@dataclass(slots=True)
class _Entry:
    token: AccessToken
    checked_at: float


@dataclass(slots=True)
class _Issued:
    """A token this process issued, kept for reuse (``M2M_REUSE_TOKENS``)."""

    token_string: str
    token: AccessToken
    checked_at: float


class TokenService:
    """Issues, verifies and revokes the access tokens of one app."""

    def __init__(self, settings: Settings, models: Models, db: Any, keys: KeyStore):
        self.settings = settings
        self.models = models
        self.db = db
        self.keys = keys
        self._cache: dict[str, _Entry] = {}
        #: (client_id, sorted scopes, issuer, audience, jkt, extra claims) -> last token issued
        self._issued: dict[tuple[str, str, str, str, str, str], _Issued] = {}
        #: Where an opaque token's row is inserted: one statement, in autocommit mode.
        self._autocommit = Autocommit(db)

    # -- issuing ---------------------------------------------------------------------------
    def issue(
        self,
        client: Any,
        scope: str,
        issuer: str,
        audience: str | tuple[str, ...],
        *,
        jkt: str | None = None,
        extra_claims: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a token for ``client`` and return the RFC 6749 §5.1 response members.

        :param audience: the token's ``aud``: one audience, or several (RFC 8707 §2), which
            become a JSON array. ``M2M_AUDIENCE_LIFETIMES`` may shorten the lifetime.

        An opaque token is stored (committed in a transaction of its own) before it is
        returned. With ``M2M_REUSE_TOKENS``, the client's last token for the same request may
        be returned.

        :param jkt: bind the token to this DPoP key thumbprint (RFC 9449 §6).
        :param extra_claims: more claims (the app's ``token_claims`` hook): in a JWT, or stored
            with an opaque token for introspection.
        :raises writes.AppHoldsWriteLock: for an opaque token, when the app's session holds
            SQLite's write lock.
        """
        audiences = (audience,) if isinstance(audience, str) else tuple(audience)
        joined = " ".join(audiences)
        reuse = self.settings.reuse_tokens
        if reuse:
            extra = json.dumps(extra_claims or {}, sort_keys=True, default=str)
            reuse_key = (
                client.client_id, " ".join(sorted(scope.split())), issuer, joined, jkt or "", extra
            )
            reused = self._reusable(client, reuse_key)
            if reused is not None:
                return reused
        lifetime = self.lifetime(client, audiences)
        # A token issued in the same second as a client-wide revocation must still count as
        # newer than that revocation (``tokens_valid_after`` is rounded up to whole seconds).
        issued_at = max(int(time.time()), client.tokens_valid_after)
        expires_at = issued_at + lifetime
        jti = secrets.token_urlsafe(16)
        if self.settings.token_format == "opaque":
            access_token = generate_opaque_token()
            values = {
                "token_hash": hash_token(access_token),
                "jti": jti,
                "client_id": client.client_id,
                "scope": scope,
                "audience": joined,
                "issuer": issuer,
                "issued_at": issued_at,
                "expires_at": expires_at,
                "jkt": jkt,
                "extra_claims": extra_claims or None,
            }
            # One INSERT into the table (its column defaults apply), not the ORM's unit of
            # work: there is nothing to track.
            table: Table = self.models.opaque_token.__table__  # type: ignore[attr-defined]
            writes.execute(self.db, table.insert(), values, self._autocommit)
        else:
            claims: dict[str, Any] = {
                **(extra_claims or {}),
                "iss": issuer,
                "exp": expires_at,
                "aud": audiences[0] if len(audiences) == 1 else list(audiences),
                "sub": client.client_id,
                "client_id": client.client_id,
                "iat": issued_at,
                "jti": jti,
                "scope": scope,
            }
            if jkt is not None:
                claims["cnf"] = {"jkt": jkt}
            access_token = self.keys.signer().sign(claims)
        if reuse:
            token = AccessToken(
                client_id=client.client_id,
                scopes=tuple(scope.split()),
                jti=jti,
                issued_at=issued_at,
                expires_at=expires_at,
                issuer=issuer,
                audience=audiences,
                opaque=self.settings.token_format == "opaque",
                jkt=jkt,
            )
            if len(self._issued) >= max(1, self.settings.token_cache_size):
                self._issued.clear()
            self._issued[reuse_key] = _Issued(access_token, token, time.monotonic())
        return _response(access_token, expires_at, scope, jkt)

    def lifetime(self, client: Any, audiences: tuple[str, ...]) -> int:
        """Seconds a new token of ``client`` for ``audiences`` lives: the client's own lifetime
        (or ``M2M_ACCESS_TOKEN_EXPIRES_IN``), shortened to the shortest
        ``M2M_AUDIENCE_LIFETIMES`` entry of its audiences."""
        lifetime: int = client.access_token_expires_in or self.settings.access_token_expires_in
        per_audience = self.settings.audience_lifetimes
        shorter = [per_audience[a] for a in audiences if a in per_audience]
        return min([lifetime, *shorter])

    def _reusable(
        self, client: Any, key: tuple[str, str, str, str, str, str]
    ) -> dict[str, Any] | None:
        """The response handing back the client's last token for ``key``, if it may be."""
        issued = self._issued.get(key)
        if issued is None:
            return None
        token, now = issued.token, int(time.time())
        if (
            2 * (token.expires_at - now) <= token.expires_at - token.issued_at
            or token.issued_at < client.tokens_valid_after
        ):
            self._issued.pop(key, None)
            return None
        checked = time.monotonic()
        if checked - issued.checked_at >= self.settings.state_cache_seconds:
            try:
                self.check_state(token)
            except TokenRejected:
                self._issued.pop(key, None)
                return None
            issued.checked_at = checked
        if token.jkt != (key[4] or None):  # the key says so already; never hand out another's
            return None
        return _response(issued.token_string, token.expires_at, token.scope, token.jkt)

    # -- reading ---------------------------------------------------------------------------
    def decode(self, token_string: str) -> AccessToken:
        """Check the token's form and signature (JWT) or find it (opaque); no state checks.

        :raises TokenRejected: if it is malformed, forged or unknown.
        """
        if not token_string or len(token_string) > MAX_TOKEN_LENGTH:
            raise TokenRejected("The access token is malformed.")
        if token_string.startswith(OPAQUE_TOKEN_PREFIX):
            return self._find_opaque(token_string)
        return decode_jwt(token_string, self.keys.public_key)

    def _session(self) -> Session:
        """A session of flask-m2m's own for reads, so none touches the app's session; in
        autocommit mode, since each read is one statement (no ``BEGIN`` nor ``ROLLBACK``
        around it)."""
        return Session(self._autocommit())

    def _find_opaque(self, token_string: str) -> AccessToken:
        with self._session() as session:
            row = session.get(self.models.opaque_token, hash_token(token_string))
        if row is None:
            raise TokenRejected("The access token is unknown.")
        audiences = tuple(row.audience.split())  # stored space-joined (URIs hold no space)
        return AccessToken(
            client_id=row.client_id,
            scopes=tuple(row.scope.split()),
            jti=row.jti,
            issued_at=row.issued_at,
            expires_at=row.expires_at,
            issuer=row.issuer,
            audience=audiences,
            claims={
                **(row.extra_claims or {}),
                "iss": row.issuer,
                "exp": row.expires_at,
                "aud": audiences[0] if len(audiences) == 1 else list(audiences),
                "sub": row.client_id,
                "client_id": row.client_id,
                "iat": row.issued_at,
                "jti": row.jti,
                "scope": row.scope,
                **({"cnf": {"jkt": row.jkt}} if row.jkt else {}),
            },
            opaque=True,
            jkt=row.jkt,
        )

    def check_claims(self, token: AccessToken, issuer: str, audience: str | None) -> None:
        """RFC 9068 §4 (:func:`~flask_m2m.verification.check_claims`) with ``M2M_LEEWAY``.

        :raises TokenRejected: if any claim does not hold.
        """
        check_claims(token, issuer, audience, self.settings.leeway)

    def check_state(self, token: AccessToken) -> None:
        """Revocation and client state, read from the database.

        :raises TokenRejected: if the token or its client no longer is valid.
        """
        revoked: ColumnElement[Any]
        if token.opaque:
            model = self.models.opaque_token
            revoked = select(model.revoked).where(model.jti == token.jti).scalar_subquery()
        else:
            revoked = select(self.models.revoked_token.jti).where(
                self.models.revoked_token.jti == token.jti
            ).exists()
        clients = self.models.client
        query = select(clients, revoked).where(clients.client_id == token.client_id)
        with self._session() as session:  # one statement: the client and the token's flag
            row = session.execute(query).first()
        if row is None or not row[0].is_active():
            raise TokenRejected("The client of this access token is disabled or gone.")
        client, flag = row
        if token.issued_at < client.tokens_valid_after:
            raise TokenRejected("The access token has been revoked.")
        if flag is None or flag:  # an opaque token's deleted row is as good as revoked
            raise TokenRejected("The access token has been revoked.")

    def authenticate(self, token_string: str, issuer: str, audience: str) -> AccessToken:
        """The verified token for ``token_string``, answered from the cache when it can be.

        :raises TokenRejected: with the reason the token is refused.
        """
        entry = self._cache.get(token_string)
        now = time.monotonic()
        if entry is None:
            token = self.decode(token_string)
            self.check_claims(token, issuer, audience)
            self.check_state(token)
            self._remember(token_string, _Entry(token, now))
            return token
        self.check_claims(entry.token, issuer, audience)
        if now - entry.checked_at >= self.settings.state_cache_seconds:
            try:
                self.check_state(entry.token)
            except TokenRejected:
                self._cache.pop(token_string, None)
                raise
            entry.checked_at = now
        return entry.token

    def _remember(self, token_string: str, entry: _Entry) -> None:
        limit = self.settings.token_cache_size
        if limit == 0 or self.settings.state_cache_seconds == 0:
            return
        if len(self._cache) >= limit:
            self._evict()
        self._cache[token_string] = entry

    def _evict(self) -> None:
        """Drop expired entries, then the older half if the cache is still full."""
        now = time.time()
        for key, entry in list(self._cache.items()):
            if entry.token.expires_at <= now:
                self._cache.pop(key, None)
        if len(self._cache) >= self.settings.token_cache_size:
            for key in list(self._cache)[: len(self._cache) // 2 + 1]:
                self._cache.pop(key, None)

    def forget_client(self, client_id: str) -> None:
        """Drop this process's cached tokens of ``client_id`` (after a disable or delete)."""
        for key, entry in list(self._cache.items()):
            if entry.token.client_id == client_id:
                self._cache.pop(key, None)
        for reuse_key in [k for k in list(self._issued) if k[0] == client_id]:
            self._issued.pop(reuse_key, None)

    # -- revoking --------------------------------------------------------------------------
    def revoke(self, token_string: str, token: AccessToken) -> None:
        """Revoke ``token`` (RFC 7009 §2), committed in a transaction of its own.

        :raises writes.AppHoldsWriteLock: when the app's session holds SQLite's write lock.
        """
        self._cache.pop(token_string, None)
        for key, issued in list(self._issued.items()):
            if issued.token.jti == token.jti:
                self._issued.pop(key, None)

        def work(session: Session) -> None:
            if not token.opaque:
                model = self.models.revoked_token
                expired = token_cutoff(self.settings.leeway, int(time.time()))
                session.execute(delete(model).where(model.expires_at < expired))
                if session.get(model, token.jti) is None:
                    session.add(
                        model(jti=token.jti, client_id=token.client_id, expires_at=token.expires_at)
                    )
            else:
                stored = session.get(self.models.opaque_token, hash_token(token_string))
                if stored is not None:
                    stored.revoked = True

        try:
            writes.write(self.db, work)
        except IntegrityError:  # revoked concurrently by another request: same outcome
            pass


def _response(access_token: str, expires_at: int, scope: str, jkt: str | None) -> dict[str, Any]:
    """The RFC 6749 §5.1 members of a token response (``token_type`` DPoP: RFC 9449 §5)."""
    return {
        "access_token": access_token,
        "token_type": "DPoP" if jkt else "Bearer",
        "expires_in": expires_at - int(time.time()),
        "scope": scope,
    }
