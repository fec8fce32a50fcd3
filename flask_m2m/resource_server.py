"""The :class:`ResourceServer` extension: ``require_scope`` in a service that trusts a
flask-m2m (or any RFC 9068 / RFC 7662) authorization server elsewhere.

No database and no flask-m2m tables: JWT access tokens are verified offline against the
issuer's JWK set (:mod:`flask_m2m.jwks`), other tokens, or all with
``M2M_INTROSPECTION = "always"``, by introspection (:mod:`flask_m2m.introspector`).
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from flask import Flask
from joserfc.jwk import Key

from .binding import ProofPolicy, Replay, nonce_key_from
from .errors import ConfigurationError
from .introspector import Introspector
from .jwks import RemoteKeys
from .protection import PROTECTOR_KEY, get_protector
from .remote import Discovery, Limits
from .replay import ReplayStore
from .resource_config import ResourceServerSettings, load_resource_server_settings
from .resource_metadata import add_metadata_route, metadata_path, metadata_url
from .verification import MAX_TOKEN_LENGTH, AccessToken, TokenRejected, check_claims, decode_jwt

__all__ = ["RESOURCE_SERVER_KEY", "RemoteProtector", "ResourceServer"]

#: The key of a resource server's :class:`RemoteProtector` in ``app.extensions``.
RESOURCE_SERVER_KEY = "m2m.resource_server"


@dataclass(slots=True)
class _Verified:
    """A JWT verified with ``key``; reused while the issuer still publishes that key."""

    token: AccessToken
    kid: str
    key: Key


class RemoteProtector:
    """Verifies the tokens of one resource server app (its
    :class:`~flask_m2m.protection.Protector`)."""

    #: No Prometheus metrics on a resource server.
    observe = None

    def __init__(self, app: Flask, settings: ResourceServerSettings):
        self.settings = settings
        limits = Limits(
            settings.http_timeout_seconds, settings.http_max_bytes, settings.allow_insecure_http
        )
        discovery = Discovery(
            settings.issuer, limits, settings.jwks_uri, settings.introspection_endpoint
        )
        self.keys = RemoteKeys(settings, discovery, app.logger)
        self.introspector = (
            Introspector(settings, discovery, app.logger) if settings.can_introspect else None
        )
        self._metadata_url = metadata_url(settings.audience)
        self._cache: dict[str, _Verified] = {}
        #: How DPoP proofs are judged (RFC 9449); ``htu`` may also name the audience's origin.
        self.dpop: ProofPolicy | None = ProofPolicy(
            algs=settings.dpop_signing_algs,
            max_age=settings.dpop_proof_max_age,
            leeway=settings.leeway,
            nonce_key=nonce_key_from(_nonce_secret(app, settings.dpop_require_nonce)),
            require_nonce=settings.dpop_require_nonce,
            external_base=settings.audience,
        )
        #: Where proofs' ``jti`` are remembered (``M2M_DPOP_REPLAY_STORAGE_URI``).
        self.replay: Replay = _replay_store(settings.dpop_replay_storage_uri)

    def resource_metadata_url(self) -> str:
        return self._metadata_url

    def authenticate(self, token_string: str) -> AccessToken:
        if not token_string or len(token_string) > MAX_TOKEN_LENGTH:
            raise TokenRejected("The access token is malformed.")
        is_jwt = token_string.count(".") == 2
        if self.introspector is not None and (
            not is_jwt or self.settings.introspection == "always"
        ):
            return self.introspector.authenticate(token_string, opaque=not is_jwt)
        if not is_jwt:
            raise TokenRejected("The access token is not a JWT, and this service introspects none.")
        return self._verify_jwt(token_string)

    def _verify_jwt(self, token_string: str) -> AccessToken:
        """RFC 9068 §4 offline: ``typ``, an allowed ``alg``, a signature by the issuer's key
        named ``kid``, then ``iss``, ``aud``, ``exp``, ``iat`` and ``nbf``."""
        settings = self.settings
        entry = self._cache.get(token_string)
        if entry is not None and self.keys.key(entry.kid) is entry.key:
            check_claims(entry.token, settings.issuer, settings.audience, settings.leeway)
            return entry.token
        used: list[tuple[str, Key]] = []

        def lookup(kid: str) -> Key | None:
            key = self.keys.key(kid)
            if key is not None:
                used.append((kid, key))
            return key

        token = decode_jwt(token_string, lookup, settings.allowed_algorithms)
        check_claims(token, settings.issuer, settings.audience, settings.leeway)
        kid, key = used[-1]
        self._remember(token_string, _Verified(token, kid, key))
        return token

    def _remember(self, token_string: str, entry: _Verified) -> None:
        limit = self.settings.token_cache_size
        if limit == 0:
            return
        if len(self._cache) >= limit:
            now = time.time()
            for old in [k for k, e in list(self._cache.items()) if e.token.expires_at <= now]:
                self._cache.pop(old, None)
            if len(self._cache) >= limit:
                for old in list(self._cache)[: len(self._cache) // 2 + 1]:
                    self._cache.pop(old, None)
        self._cache[token_string] = entry


def _nonce_secret(app: Flask, require_nonce: bool) -> bytes:
    """What this service's DPoP nonces are keyed with: ``SECRET_KEY`` (shared by instances),
    else a random key of this process (with a warning when nonces are required: another
    worker or instance refuses this one's nonces)."""
    secret = app.config.get("SECRET_KEY")
    if isinstance(secret, str) and secret:
        return secret.encode()
    if isinstance(secret, bytes) and secret:
        return secret
    if require_nonce:
        app.logger.warning(
            "flask-m2m: M2M_DPOP_REQUIRE_NONCE is on but SECRET_KEY is not set: DPoP nonces "
            "are keyed per process, so other workers and instances refuse them. Set the same "
            "SECRET_KEY on every instance."
        )
    return secrets.token_bytes(32)


class RedisReplayStore:
    """Single use of proof ``jti`` values across every instance, in Redis (``SET NX``)."""

    def __init__(self, uri: str):
        import redis  # an optional dependency: pip install redis

        self._redis = redis.Redis.from_url(uri)

    def first_use(self, kind: str, issuer: str, jti: str, expires_at: int) -> bool:
        name = "m2m:jti:" + hashlib.sha256(f"{kind}\0{issuer}\0{jti}".encode()).hexdigest()
        ttl = max(1, expires_at - int(time.time()))
        return bool(self._redis.set(name, b"1", nx=True, ex=ttl))


def _replay_store(uri: str) -> Replay:
    return ReplayStore() if uri.startswith("memory://") else RedisReplayStore(uri)


class ResourceServer:
    """Flask extension for a service that is not the authorization server: ``require_scope``
    and ``current_token`` then check the tokens its trusted issuer minted for this service.

    ``ResourceServer(app)`` or, with an app factory, ``rs = ResourceServer()`` then
    ``rs.init_app(app)``. Needs ``M2M_ISSUER`` and ``M2M_AUDIENCE``; no database.

    :param app: the Flask app, or None to call :meth:`init_app` later.
    :param options: settings without the ``M2M_`` prefix, in lower case (``issuer=``,
        ``audience=``, ``jwks_uri=`` ...); they take precedence over ``app.config``.

    .. versionadded:: 0.2
    """

    def __init__(self, app: Flask | None = None, **options: Any) -> None:
        self.options = options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read the settings, and serve the RFC 9728 metadata of this resource.

        :raises ConfigurationError: on a second call for the same app, on an app that has
            ``M2M`` already, or on a missing or invalid setting.
        """
        if PROTECTOR_KEY in app.extensions:
            raise ConfigurationError(
                "This app already has flask-m2m (M2M or ResourceServer); initialise one only."
            )
        settings = load_resource_server_settings(app, self.options)
        protector = RemoteProtector(app, settings)
        app.extensions[RESOURCE_SERVER_KEY] = protector
        app.extensions[PROTECTOR_KEY] = protector
        add_metadata_route(
            app,
            metadata_path(settings.audience),
            lambda: (settings.audience, settings.issuer),
            settings.dpop_signing_algs,
        )

    @staticmethod
    def protector(app: Flask | None = None) -> RemoteProtector:
        """The :class:`RemoteProtector` of ``app`` (default: the current app)."""
        protector = get_protector(app)
        if not isinstance(protector, RemoteProtector):
            raise ConfigurationError("This app is no ResourceServer.")
        return protector
