"""Configuration keys, their defaults, and the checks run once in ``init_app``."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Flask

from .errors import ConfigurationError

PREFIX = "M2M_"

#: Default value of every ``M2M_*`` key (the README's configuration table mirrors this).
DEFAULTS: dict[str, Any] = {
    #: Issuer URL (``iss`` and metadata); ``None`` derives it from the request's host URL.
    "M2M_ISSUER": None,
    #: Access-token lifetime in seconds.
    "M2M_ACCESS_TOKEN_EXPIRES_IN": 3600,
    #: ``"jwt"`` (RFC 9068) or ``"opaque"`` (random string stored hashed).
    "M2M_TOKEN_FORMAT": "jwt",
    #: JWS algorithm of signed access tokens: ``RS256``, ``ES256`` or ``EdDSA``.
    "M2M_SIGNING_ALG": "RS256",
    #: Default ``aud`` of issued tokens and the audience ``require_scope`` accepts (None: issuer).
    "M2M_AUDIENCE": None,
    #: URL prefix of the protocol routes.
    "M2M_URL_PREFIX": "/m2m",
    #: Length of the random part of generated client secrets (at least 32).
    "M2M_CLIENT_SECRET_LENGTH": 64,
    #: Secret from which the key-encryption and secret-hashing keys are derived (None: SECRET_KEY).
    "M2M_KEY_ENCRYPTION_SECRET": None,
    #: Older master secrets, still tried while a rotation of the master secret is under way
    #: (None: ``SECRET_KEY_FALLBACKS`` when the master secret is ``SECRET_KEY``, else none).
    "M2M_KEY_ENCRYPTION_SECRET_FALLBACKS": None,
    #: Signing keys supplied as a private JWK set (dict or JSON); None: keys live in the database.
    "M2M_SIGNING_KEYS": None,
    #: Seconds of clock skew tolerated when checking ``exp`` / ``iat``.
    "M2M_LEEWAY": 30,
    #: Seconds a verified token, a revocation or a client's state may be served from memory.
    "M2M_STATE_CACHE_SECONDS": 5,
    #: Seconds between two reads of the signing-key table by one process.
    "M2M_KEY_REFRESH_SECONDS": 60,
    #: Most verified tokens kept in each process's cache.
    "M2M_TOKEN_CACHE_SIZE": 10000,
    #: Largest accepted body of a protocol request, in bytes.
    "M2M_MAX_REQUEST_BYTES": 16384,
    #: Refuse protocol requests over plain HTTP, except to a loopback host (400
    #: ``invalid_request``); None: on unless the app is in debug or testing mode.
    "M2M_REQUIRE_HTTPS": None,
    #: Largest unread body read and thrown away after an early refusal, so that the
    #: keep-alive connection stays usable; a larger body is left to the server (which closes
    #: the connection). 0: never read.
    "M2M_MAX_DISCARD_BYTES": 1048576,
    #: Register the ``flask m2m`` CLI group.
    "M2M_ENABLE_CLI": True,
    #: Default per-client limit on the token endpoint (a client's ``rate_limit`` overrides it).
    "M2M_TOKEN_RATE_LIMIT": "1000/day",
    #: ``"enforce"`` or ``"log-only"``: what a client's token-endpoint limit does by default
    #: (a client's ``rate_limit_mode`` overrides it); log-only counts, signals and audits.
    "M2M_TOKEN_RATE_LIMIT_MODE": "enforce",
    #: Per remote address, counting only failed client authentications (all protocol routes).
    "M2M_FAILED_AUTH_RATE_LIMIT": "60/minute",
    #: Per caller (Bearer token, else address) on the management API.
    "M2M_MANAGEMENT_RATE_LIMIT": "300/minute",
    #: When the rate-limit storage (e.g. Redis) fails: True counts in memory meanwhile (fail
    #: open), False answers 503 (fail closed).
    "M2M_RATE_LIMIT_FAIL_OPEN": True,
    #: Serve Prometheus metrics (needs ``prometheus_client``) at ``M2M_METRICS_PATH``.
    "M2M_METRICS_ENABLED": False,
    #: Path of the metrics route when metrics are enabled.
    "M2M_METRICS_PATH": "/metrics",
    #: Hand a client asking again for the same scopes and audience its last token, while that
    #: token has most of its lifetime left, rather than a new one.
    "M2M_REUSE_TOKENS": False,
    #: Register the management API (``/clients``, ``/events``, ``/openapi.json``).
    "M2M_MANAGEMENT_ENABLED": True,
    #: Policy: a client must have a non-empty name.
    "M2M_REQUIRE_CLIENT_NAME": True,
    #: Policy: clients may carry a ``metadata`` object.
    "M2M_ALLOW_CLIENT_METADATA": True,
    #: Policy: largest ``metadata`` object, in bytes of JSON.
    "M2M_MAX_METADATA_BYTES": 4096,
    #: Policy: client lifetime (days) when none is given; None: clients never expire.
    "M2M_CLIENT_LIFETIME_DAYS_DEFAULT": None,
    #: Policy: shortest client lifetime (days) one may ask for; None: no minimum.
    "M2M_CLIENT_LIFETIME_DAYS_MIN": None,
    #: Policy: longest client lifetime (days); None: clients may never expire.
    "M2M_CLIENT_LIFETIME_DAYS_MAX": None,
    #: Policy: the only scopes clients may be given (list or space-separated); None: any.
    "M2M_ALLOWED_SCOPES": None,
    #: Policy: shortest per-client access-token lifetime override, in seconds.
    "M2M_ACCESS_TOKEN_EXPIRES_IN_MIN": 60,
    #: Policy: longest per-client access-token lifetime override, in seconds.
    "M2M_ACCESS_TOKEN_EXPIRES_IN_MAX": 86400,
    #: Most secrets (current ones plus those in a grace period) a client may hold.
    "M2M_MAX_SECRETS_PER_CLIENT": 3,
    #: Longest grace period a secret rotation may give the older secrets, in seconds.
    "M2M_MAX_GRACE_PERIOD_SECONDS": 604800,
    #: Lifetime of new secrets in days; None: secrets do not expire by age.
    "M2M_SECRET_MAX_AGE_DAYS": None,
    #: A secret used this many days or fewer before it expires is reported (signal, audit).
    "M2M_SECRET_EXPIRY_WARNING_DAYS": 7,
    #: Seconds between two writes of a client's or secret's ``last_used_at``.
    "M2M_LAST_USED_INTERVAL_SECONDS": 60,
    #: Days audit events are kept before ``flask m2m prune`` deletes them; None: kept forever.
    "M2M_AUDIT_RETENTION_DAYS": None,
}

TOKEN_FORMATS = ("jwt", "opaque")
RATE_LIMIT_MODES = ("enforce", "log-only")
SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
MIN_SECRET_LENGTH = 32
#: Shortest master secret accepted, in bytes, and the estimated strength it must have.
MIN_MASTER_SECRET_BYTES = 16
MIN_MASTER_SECRET_BITS = 64
#: Master secrets shorter than this are accepted with a warning.
GOOD_MASTER_SECRET_BYTES = 32
#: How a boolean key may be spelled in a string (an environment variable, for instance).
BOOL_WORDS = {
    **dict.fromkeys(("1", "true", "yes", "on"), True),
    **dict.fromkeys(("0", "false", "no", "off"), False),
}


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``M2M_*`` configuration of one app, checked and frozen."""

    issuer: str | None
    access_token_expires_in: int
    token_format: str
    signing_alg: str
    audience: str | None
    url_prefix: str
    client_secret_length: int
    key_encryption_secret: bytes
    key_encryption_secret_fallbacks: tuple[bytes, ...]
    signing_keys: dict[str, Any] | None
    leeway: int
    state_cache_seconds: float
    key_refresh_seconds: float
    token_cache_size: int
    max_request_bytes: int
    require_https: bool | None
    max_discard_bytes: int
    enable_cli: bool
    management_enabled: bool
    token_rate_limit: str
    failed_auth_rate_limit: str
    management_rate_limit: str
    token_rate_limit_mode: str
    rate_limit_fail_open: bool
    metrics_enabled: bool
    metrics_path: str
    reuse_tokens: bool
    require_client_name: bool
    allow_client_metadata: bool
    max_metadata_bytes: int
    client_lifetime_days_default: int | None
    client_lifetime_days_min: int | None
    client_lifetime_days_max: int | None
    allowed_scopes: frozenset[str] | None
    access_token_expires_in_min: int
    access_token_expires_in_max: int
    max_secrets_per_client: int
    max_grace_period_seconds: int
    secret_max_age_days: int | None
    secret_expiry_warning_days: int
    last_used_interval_seconds: int
    audit_retention_days: int | None

    @property
    def master_secrets(self) -> tuple[bytes, ...]:
        """The current master secret, then the older ones still accepted."""
        return (self.key_encryption_secret, *self.key_encryption_secret_fallbacks)

    @property
    def longest_token_lifetime(self) -> int:
        """The longest lifetime any access token can have (default or per-client override)."""
        return max(self.access_token_expires_in, self.access_token_expires_in_max)


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _master_secrets(app: Flask, get: Callable[[str], Any]) -> tuple[bytes, tuple[bytes, ...]]:
    """The master secret and its fallbacks: ``M2M_KEY_ENCRYPTION_SECRET`` and
    ``M2M_KEY_ENCRYPTION_SECRET_FALLBACKS``, else ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS``.

    A master secret shorter than 16 bytes, or with less than about 64 bits by a count of its
    distinct characters (such as 16 identical bytes), is refused; one under 32 bytes is
    logged as a warning.
    """
    own = get("M2M_KEY_ENCRYPTION_SECRET")
    secret = own or app.config.get("SECRET_KEY")
    if not secret:
        raise ConfigurationError(
            "Set M2M_KEY_ENCRYPTION_SECRET (or SECRET_KEY): flask-m2m derives the keys that "
            "encrypt signing keys and hash client secrets from it."
        )
    key = "M2M_KEY_ENCRYPTION_SECRET" if own else "SECRET_KEY"
    current = _as_bytes(secret)
    if len(current) < MIN_MASTER_SECRET_BYTES:
        raise ConfigurationError(f"{key} must be at least {MIN_MASTER_SECRET_BYTES} bytes long.")
    if len(current) * math.log2(max(2, len(set(current)))) < MIN_MASTER_SECRET_BITS:
        raise ConfigurationError(
            f"{key} is too predictable (too few distinct characters). Generate one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if len(current) < GOOD_MASTER_SECRET_BYTES:
        app.logger.warning(
            "flask-m2m: %s is shorter than %d bytes; use a longer random value.",
            key,
            GOOD_MASTER_SECRET_BYTES,
        )
    fallback_key = f"{key}_FALLBACKS"
    older = get(fallback_key) if own else app.config.get(fallback_key)
    if isinstance(older, str | bytes):
        older = [older]
    if older is None:
        older = []
    if not isinstance(older, list | tuple) or not all(
        isinstance(item, str | bytes) and item for item in older
    ):
        raise ConfigurationError(f"{fallback_key} must be a list of secrets.")
    fallbacks = dict.fromkeys(_as_bytes(item) for item in older)
    fallbacks.pop(current, None)
    return current, tuple(fallbacks)


def load_settings(app: Flask, overrides: dict[str, Any]) -> Settings:
    """Read the ``M2M_*`` keys once: constructor options beat ``app.config``, which beats
    :data:`DEFAULTS`. Raise :class:`ConfigurationError` naming the key on a bad value."""
    unknown = set(overrides) - {key[len(PREFIX) :].lower() for key in DEFAULTS}
    if unknown:
        raise ConfigurationError(f"Unknown M2M option(s): {', '.join(sorted(unknown))}.")

    def get(key: str) -> Any:
        option = key[len(PREFIX) :].lower()
        if option in overrides:
            return overrides[option]
        return app.config.get(key, DEFAULTS[key])

    def positive_int(key: str, minimum: int = 1) -> int:
        value = get(key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key} must be an integer, got {value!r}.") from None
        if number < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, got {number}.")
        return number

    token_format = str(get("M2M_TOKEN_FORMAT")).lower()
    if token_format not in TOKEN_FORMATS:
        raise ConfigurationError(f"M2M_TOKEN_FORMAT must be one of {TOKEN_FORMATS}.")
    alg = str(get("M2M_SIGNING_ALG"))
    if alg not in SIGNING_ALGS:
        raise ConfigurationError(f"M2M_SIGNING_ALG must be one of {SIGNING_ALGS}.")

    secret_bytes, fallbacks = _master_secrets(app, get)
    signing_keys = get("M2M_SIGNING_KEYS")
    if isinstance(signing_keys, str):
        try:
            signing_keys = json.loads(signing_keys)
        except ValueError:
            raise ConfigurationError("M2M_SIGNING_KEYS is not valid JSON.") from None
    if signing_keys is not None and not (
        isinstance(signing_keys, dict) and isinstance(signing_keys.get("keys"), list)
    ):
        raise ConfigurationError('M2M_SIGNING_KEYS must be a JWK set: {"keys": [...]}.')

    def optional_int(key: str, minimum: int = 1) -> int | None:
        return None if get(key) is None else positive_int(key, minimum)

    def optional_bool(key: str) -> bool | None:
        value = get(key)
        if value is None or isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word in BOOL_WORDS:
            return BOOL_WORDS[word]
        raise ConfigurationError(f"{key} must be true, false or None, got {value!r}.")

    allowed_scopes = get("M2M_ALLOWED_SCOPES")
    if isinstance(allowed_scopes, str):
        allowed_scopes = allowed_scopes.split()
    lifetime = [
        optional_int(f"M2M_CLIENT_LIFETIME_DAYS_{part}") for part in ("DEFAULT", "MIN", "MAX")
    ]
    low, high = lifetime[1] or 1, lifetime[2]
    if high is not None and low > high:
        raise ConfigurationError(
            "M2M_CLIENT_LIFETIME_DAYS_MIN exceeds M2M_CLIENT_LIFETIME_DAYS_MAX."
        )
    if lifetime[0] is not None and not (low <= lifetime[0] <= (high or lifetime[0])):
        raise ConfigurationError("M2M_CLIENT_LIFETIME_DAYS_DEFAULT is outside MIN..MAX.")
    token_min = positive_int("M2M_ACCESS_TOKEN_EXPIRES_IN_MIN")
    token_max = positive_int("M2M_ACCESS_TOKEN_EXPIRES_IN_MAX")
    if token_min > token_max:
        raise ConfigurationError(
            "M2M_ACCESS_TOKEN_EXPIRES_IN_MIN exceeds M2M_ACCESS_TOKEN_EXPIRES_IN_MAX."
        )

    def limit_string(key: str) -> str:
        from limits import parse_many

        value = get(key)
        try:
            if not isinstance(value, str) or not parse_many(value):
                raise ValueError(value)
        except ValueError:
            message = f"{key} must be a limit string such as '100/minute'."
            raise ConfigurationError(message) from None
        return value

    mode = str(get("M2M_TOKEN_RATE_LIMIT_MODE"))
    if mode not in RATE_LIMIT_MODES:
        raise ConfigurationError(f"M2M_TOKEN_RATE_LIMIT_MODE must be one of {RATE_LIMIT_MODES}.")
    metrics_path = "/" + str(get("M2M_METRICS_PATH") or "").strip("/")
    prefix = "/" + str(get("M2M_URL_PREFIX") or "").strip("/")
    issuer = get("M2M_ISSUER")
    audience = get("M2M_AUDIENCE")
    return Settings(
        issuer=str(issuer).rstrip("/") if issuer else None,
        access_token_expires_in=positive_int("M2M_ACCESS_TOKEN_EXPIRES_IN"),
        token_format=token_format,
        signing_alg=alg,
        audience=str(audience) if audience else None,
        url_prefix="" if prefix == "/" else prefix,
        client_secret_length=positive_int("M2M_CLIENT_SECRET_LENGTH", MIN_SECRET_LENGTH),
        key_encryption_secret=secret_bytes,
        key_encryption_secret_fallbacks=fallbacks,
        signing_keys=signing_keys,
        leeway=positive_int("M2M_LEEWAY", 0),
        state_cache_seconds=float(positive_int("M2M_STATE_CACHE_SECONDS", 0)),
        key_refresh_seconds=float(positive_int("M2M_KEY_REFRESH_SECONDS", 1)),
        token_cache_size=positive_int("M2M_TOKEN_CACHE_SIZE", 0),
        max_request_bytes=positive_int("M2M_MAX_REQUEST_BYTES", 1024),
        require_https=optional_bool("M2M_REQUIRE_HTTPS"),
        max_discard_bytes=positive_int("M2M_MAX_DISCARD_BYTES", 0),
        enable_cli=bool(get("M2M_ENABLE_CLI")),
        management_enabled=bool(get("M2M_MANAGEMENT_ENABLED")),
        token_rate_limit=limit_string("M2M_TOKEN_RATE_LIMIT"),
        failed_auth_rate_limit=limit_string("M2M_FAILED_AUTH_RATE_LIMIT"),
        management_rate_limit=limit_string("M2M_MANAGEMENT_RATE_LIMIT"),
        token_rate_limit_mode=mode,
        rate_limit_fail_open=bool(get("M2M_RATE_LIMIT_FAIL_OPEN")),
        metrics_enabled=bool(get("M2M_METRICS_ENABLED")),
        metrics_path=metrics_path,
        reuse_tokens=bool(get("M2M_REUSE_TOKENS")),
        require_client_name=bool(get("M2M_REQUIRE_CLIENT_NAME")),
        allow_client_metadata=bool(get("M2M_ALLOW_CLIENT_METADATA")),
        max_metadata_bytes=positive_int("M2M_MAX_METADATA_BYTES", 2),
        client_lifetime_days_default=lifetime[0],
        client_lifetime_days_min=lifetime[1],
        client_lifetime_days_max=lifetime[2],
        allowed_scopes=frozenset(allowed_scopes) if allowed_scopes is not None else None,
        access_token_expires_in_min=token_min,
        access_token_expires_in_max=token_max,
        max_secrets_per_client=positive_int("M2M_MAX_SECRETS_PER_CLIENT"),
        max_grace_period_seconds=positive_int("M2M_MAX_GRACE_PERIOD_SECONDS", 0),
        secret_max_age_days=optional_int("M2M_SECRET_MAX_AGE_DAYS"),
        secret_expiry_warning_days=positive_int("M2M_SECRET_EXPIRY_WARNING_DAYS", 0),
        last_used_interval_seconds=positive_int("M2M_LAST_USED_INTERVAL_SECONDS", 0),
        audit_retention_days=_retention_days(optional_int("M2M_AUDIT_RETENTION_DAYS")),
    )


#: Longest ``M2M_AUDIT_RETENTION_DAYS`` (100 years; longer overflows date arithmetic).
MAX_RETENTION_DAYS = 36500


def _retention_days(days: int | None) -> int | None:
    """``M2M_AUDIT_RETENTION_DAYS``, checked against :data:`MAX_RETENTION_DAYS`."""
    if days is not None and days > MAX_RETENTION_DAYS:
        raise ConfigurationError(
            f"M2M_AUDIT_RETENTION_DAYS must be at most {MAX_RETENTION_DAYS}, got {days}."
        )
    return days
