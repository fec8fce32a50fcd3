"""Configuration keys, their defaults, and the checks run once in ``init_app``.

Each ``M2M_*`` key is declared once, as a field of :class:`Settings`: its type, default,
parser and meaning. :data:`KEYS`, :data:`DEFAULTS` and :func:`load_settings` are derived from
those fields, and a test holds the README's configuration tables to them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from flask import Flask

from .errors import ConfigurationError
from .policy import MAX_DAYS, RATE_LIMIT_MODES, RATE_LIMIT_RULE, parse_rate_limit

PREFIX = "M2M_"
TOKEN_FORMATS = ("jwt", "opaque")
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


class _Source:
    """Where the keys of one app are read: a constructor option (the key without its prefix,
    in lower case), else ``app.config``, else the key's default."""

    def __init__(self, app: Flask, overrides: dict[str, Any]):
        self.app = app
        self.overrides = overrides

    def get(self, key: str) -> Any:
        option = key[len(PREFIX) :].lower()
        if option in self.overrides:
            return self.overrides[option]
        return self.app.config.get(key, DEFAULTS[key])


#: Reads and checks one key: ``parse(source, key)`` returns its value or raises
#: :class:`ConfigurationError` naming the key.
Parser = Callable[[_Source, str], Any]


# -- parsers -----------------------------------------------------------------------------------
def _integer(minimum: int = 1) -> Parser:
    def parse(source: _Source, key: str) -> int:
        value = source.get(key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key} must be an integer, got {value!r}.") from None
        if number < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, got {number}.")
        return number

    return parse


def _optional_integer(minimum: int = 1, maximum: int | None = None) -> Parser:
    whole = _integer(minimum)

    def parse(source: _Source, key: str) -> int | None:
        if source.get(key) is None:
            return None
        number: int = whole(source, key)
        if maximum is not None and number > maximum:
            raise ConfigurationError(f"{key} must be at most {maximum}, got {number}.")
        return number

    return parse


def _seconds(minimum: int) -> Parser:
    whole = _integer(minimum)
    return lambda source, key: float(whole(source, key))


def _flag(source: _Source, key: str) -> bool:
    return bool(source.get(key))


def _optional_flag(source: _Source, key: str) -> bool | None:
    value = source.get(key)
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in BOOL_WORDS:
        return BOOL_WORDS[word]
    raise ConfigurationError(f"{key} must be true, false or None, got {value!r}.")


def _choice(options: Sequence[str], *, lower: bool = False) -> Parser:
    def parse(source: _Source, key: str) -> str:
        value = str(source.get(key))
        value = value.lower() if lower else value
        if value not in options:
            raise ConfigurationError(f"{key} must be one of {tuple(options)}.")
        return value

    return parse


def _limit(source: _Source, key: str) -> str:
    value = source.get(key)
    try:
        parse_rate_limit(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be {RATE_LIMIT_RULE}.") from None
    return str(value)


def _text(source: _Source, key: str) -> str | None:
    value = source.get(key)
    return str(value) if value else None


def _url(source: _Source, key: str) -> str | None:
    value = source.get(key)
    return str(value).rstrip("/") if value else None


def _prefix(source: _Source, key: str) -> str:
    """A URL prefix: ``/m2m`` (one leading slash, none trailing), or ``""`` for the root."""
    prefix = "/" + str(source.get(key) or "").strip("/")
    return "" if prefix == "/" else prefix


def _route(source: _Source, key: str) -> str:
    return "/" + str(source.get(key) or "").strip("/")


def _scopes(source: _Source, key: str) -> frozenset[str] | None:
    value = source.get(key)
    if isinstance(value, str):
        value = value.split()
    return frozenset(value) if value is not None else None


def _signing_keys(source: _Source, key: str) -> dict[str, Any] | None:
    value = source.get(key)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigurationError(f"{key} is not valid JSON.") from None
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("keys"), list)):
        raise ConfigurationError(f'{key} must be a JWK set: {{"keys": [...]}}.')
    return value


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _master_secret_key(source: _Source) -> str:
    """``M2M_KEY_ENCRYPTION_SECRET`` when it is set, else ``SECRET_KEY``."""
    return "M2M_KEY_ENCRYPTION_SECRET" if source.get("M2M_KEY_ENCRYPTION_SECRET") else "SECRET_KEY"


def _master_secret(source: _Source, _: str) -> bytes:
    """The master secret: ``M2M_KEY_ENCRYPTION_SECRET``, else ``SECRET_KEY``.

    A master secret shorter than 16 bytes, or with less than about 64 bits by a count of its
    distinct characters (such as 16 identical bytes), is refused; one under 32 bytes is
    logged as a warning.
    """
    key = _master_secret_key(source)
    secret = source.get(key) if key.startswith(PREFIX) else source.app.config.get(key)
    if not secret:
        raise ConfigurationError(
            "Set M2M_KEY_ENCRYPTION_SECRET (or SECRET_KEY): flask-m2m derives the keys that "
            "encrypt signing keys and hash client secrets from it."
        )
    current = _as_bytes(secret)
    if len(current) < MIN_MASTER_SECRET_BYTES:
        raise ConfigurationError(f"{key} must be at least {MIN_MASTER_SECRET_BYTES} bytes long.")
    if len(current) * math.log2(max(2, len(set(current)))) < MIN_MASTER_SECRET_BITS:
        raise ConfigurationError(
            f"{key} is too predictable (too few distinct characters). Generate one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
        )
    if len(current) < GOOD_MASTER_SECRET_BYTES:
        source.app.logger.warning(
            "flask-m2m: %s is shorter than %d bytes; use a longer random value.",
            key,
            GOOD_MASTER_SECRET_BYTES,
        )
    return current


def _master_fallbacks(source: _Source, _: str) -> tuple[bytes, ...]:
    """The older master secrets: ``M2M_KEY_ENCRYPTION_SECRET_FALLBACKS`` beside
    ``M2M_KEY_ENCRYPTION_SECRET``, else ``SECRET_KEY_FALLBACKS``; the current one left out."""
    key = _master_secret_key(source)
    own = key.startswith(PREFIX)
    fallback_key = f"{key}_FALLBACKS"
    older = source.get(fallback_key) if own else source.app.config.get(fallback_key)
    if isinstance(older, str | bytes):
        older = [older]
    if older is None:
        older = []
    if not isinstance(older, list | tuple) or not all(
        isinstance(item, str | bytes) and item for item in older
    ):
        raise ConfigurationError(f"{fallback_key} must be a list of secrets.")
    fallbacks = dict.fromkeys(_as_bytes(item) for item in older)
    fallbacks.pop(_as_bytes(source.get(key) if own else source.app.config.get(key)), None)
    return tuple(fallbacks)


# -- the keys ----------------------------------------------------------------------------------
def _key(default: Any, parse: Parser, doc: str, *, shown: str | None = None) -> Any:
    """Declare the key of a :class:`Settings` field (named ``M2M_`` + the field's name).

    :param shown: the default as the README shows it, when that is not the value itself.
    """
    return field(metadata={"m2m": (default, parse, doc, shown)})


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``M2M_*`` configuration of one app, checked and frozen."""

    issuer: str | None = _key(
        None, _url, "Issuer URL (``iss`` and metadata); None derives it from the request's host "
        "URL.", shown="request's URL root"
    )
    access_token_expires_in: int = _key(3600, _integer(), "Access-token lifetime in seconds.")
    token_format: str = _key(
        "jwt", _choice(TOKEN_FORMATS, lower=True),
        '``"jwt"`` (RFC 9068) or ``"opaque"`` (random string stored hashed).',
    )
    signing_alg: str = _key(
        "RS256", _choice(SIGNING_ALGS), "JWS algorithm of signed access tokens: "
        "``RS256``, ``ES256`` or ``EdDSA``."
    )
    audience: str | None = _key(
        None, _text, "Default ``aud`` of issued tokens and the audience ``require_scope`` "
        "accepts (None: the issuer).", shown="the issuer"
    )
    url_prefix: str = _key("/m2m", _prefix, "URL prefix of the protocol routes.")
    client_secret_length: int = _key(
        64, _integer(MIN_SECRET_LENGTH),
        "Length of the random part of generated client secrets (at least 32).",
    )
    key_encryption_secret: bytes = _key(
        None, _master_secret, "Secret from which the key-encryption and secret-hashing keys "
        "are derived (None: ``SECRET_KEY``).", shown="`SECRET_KEY`"
    )
    key_encryption_secret_fallbacks: tuple[bytes, ...] = _key(
        None, _master_fallbacks, "Older master secrets, still tried while a rotation of the "
        "master secret is under way (None: ``SECRET_KEY_FALLBACKS`` when the master secret is "
        "``SECRET_KEY``, else none).",
    )
    signing_keys: dict[str, Any] | None = _key(
        None, _signing_keys,
        "Signing keys supplied as a private JWK set (dict or JSON); None: keys live in the "
        "database.",
    )
    leeway: int = _key(30, _integer(0), "Seconds of clock skew tolerated on ``exp`` / ``iat``.")
    state_cache_seconds: float = _key(
        5, _seconds(0),
        "Seconds a verified token, a revocation or a client's state may be served from memory.",
    )
    key_refresh_seconds: float = _key(
        60, _seconds(1), "Seconds between two reads of the signing-key table by one process."
    )
    token_cache_size: int = _key(
        10000, _integer(0), "Most verified tokens kept in each process's cache."
    )
    max_request_bytes: int = _key(
        16384, _integer(1024), "Largest accepted body of a protocol request, in bytes."
    )
    require_https: bool | None = _key(
        None, _optional_flag, "Refuse protocol requests over plain HTTP, except to a loopback "
        "host (400 ``invalid_request``); None: on unless the app is in debug or testing mode.",
    )
    max_discard_bytes: int = _key(
        1048576, _integer(0), "Largest unread body read and thrown away after an early "
        "refusal, so that the keep-alive connection stays usable; a larger body is left to the "
        "server (which closes the connection). 0: never read.",
    )
    enable_cli: bool = _key(True, _flag, "Register the ``flask m2m`` CLI group.")
    management_enabled: bool = _key(
        True, _flag, "Register the management API (``/clients``, ``/events``, "
        "``/openapi.json``)."
    )
    token_rate_limit: str = _key(
        "1000/day", _limit, "Default per-client limit on the token endpoint (a client's "
        "``rate_limit`` overrides it).",
    )
    failed_auth_rate_limit: str = _key(
        "60/minute", _limit, "Per remote address, counting only failed client "
        "authentications (all protocol routes).",
    )
    management_rate_limit: str = _key(
        "300/minute", _limit, "Per caller (Bearer token, else address) on the management API."
    )
    token_rate_limit_mode: str = _key(
        "enforce", _choice(RATE_LIMIT_MODES), '``"enforce"`` or ``"log-only"``: what a '
        "client's token-endpoint limit does by default (a client's ``rate_limit_mode`` "
        "overrides it); log-only counts, signals and audits.",
    )
    rate_limit_fail_open: bool = _key(
        True, _flag, "When the rate-limit storage (e.g. Redis) fails: True counts in memory "
        "meanwhile (fail open), False answers 503 (fail closed).",
    )
    metrics_enabled: bool = _key(
        False, _flag, "Serve Prometheus metrics (needs ``prometheus_client``) at "
        "``M2M_METRICS_PATH``."
    )
    metrics_path: str = _key("/metrics", _route, "Path of the metrics route, when enabled.")
    reuse_tokens: bool = _key(
        False, _flag, "Hand a client asking again for the same scopes and audience its last "
        "token, while that token has most of its lifetime left, rather than a new one.",
    )
    require_client_name: bool = _key(True, _flag, "Policy: a client must have a non-empty name.")
    allow_client_metadata: bool = _key(
        True, _flag, "Policy: clients may carry a ``metadata`` object."
    )
    max_metadata_bytes: int = _key(
        4096, _integer(2), "Policy: largest ``metadata`` object, in bytes of JSON."
    )
    client_lifetime_days_default: int | None = _key(
        None, _optional_integer(), "Policy: client lifetime (days) when none is given; None: "
        "clients never expire.",
    )
    client_lifetime_days_min: int | None = _key(
        None, _optional_integer(),
        "Policy: shortest client lifetime (days) one may ask for; None: no minimum.",
    )
    client_lifetime_days_max: int | None = _key(
        None, _optional_integer(),
        "Policy: longest client lifetime (days); None: clients may never expire.",
    )
    allowed_scopes: frozenset[str] | None = _key(
        None, _scopes,
        "Policy: the only scopes clients may be given (list or space-separated); None: any.",
    )
    access_token_expires_in_min: int = _key(
        60, _integer(), "Policy: shortest per-client access-token lifetime override, in seconds."
    )
    access_token_expires_in_max: int = _key(
        86400, _integer(), "Policy: longest per-client access-token lifetime override, in seconds."
    )
    max_secrets_per_client: int = _key(
        3, _integer(), "Most secrets (current ones plus those in a grace period) a client may "
        "hold."
    )
    max_grace_period_seconds: int = _key(
        604800, _integer(0),
        "Longest grace period a secret rotation may give the older secrets, in seconds.",
    )
    secret_max_age_days: int | None = _key(
        None, _optional_integer(),
        "Lifetime of new secrets in days; None: secrets do not expire by age.",
    )
    secret_expiry_warning_days: int = _key(
        7, _integer(0),
        "A secret used this many days or fewer before it expires is reported (signal, audit).",
    )
    last_used_interval_seconds: int = _key(
        60, _integer(0), "Seconds between two writes of a client's or secret's ``last_used_at``."
    )
    audit_retention_days: int | None = _key(
        None, _optional_integer(maximum=MAX_DAYS), "Days audit events are kept before "
        "``flask m2m prune`` deletes them; None: kept forever.",
    )

    @property
    def master_secrets(self) -> tuple[bytes, ...]:
        """The current master secret, then the older ones still accepted."""
        return (self.key_encryption_secret, *self.key_encryption_secret_fallbacks)

    @property
    def longest_token_lifetime(self) -> int:
        """The longest lifetime any access token can have (default or per-client override)."""
        return max(self.access_token_expires_in, self.access_token_expires_in_max)


@dataclass(frozen=True, slots=True)
class Key:
    """One ``M2M_*`` configuration key, as a :class:`Settings` field declares it."""

    #: The key, e.g. ``M2M_ISSUER``.
    name: str
    #: Its :class:`Settings` attribute, and its constructor option (``issuer``).
    attribute: str
    default: Any
    parse: Parser
    doc: str
    #: The default as the README shows it, when that is not the value itself.
    shown: str | None = None

    @property
    def documented_default(self) -> str:
        """The default as the README's configuration tables show it."""
        if self.shown is not None:
            return self.shown
        if isinstance(self.default, str):
            return f'`"{self.default}"`'
        return f"`{self.default}`"


#: Every key, in the order of :class:`Settings`.
KEYS: tuple[Key, ...] = tuple(
    Key(PREFIX + item.name.upper(), item.name, *item.metadata["m2m"]) for item in fields(Settings)
)
#: Default value of every ``M2M_*`` key.
DEFAULTS: dict[str, Any] = {key.name: key.default for key in KEYS}


def load_settings(app: Flask, overrides: dict[str, Any]) -> Settings:
    """Read the ``M2M_*`` keys once: constructor options beat ``app.config``, which beats
    :data:`DEFAULTS`. Raise :class:`ConfigurationError` naming the key on a bad value."""
    unknown = set(overrides) - {key.attribute for key in KEYS}
    if unknown:
        raise ConfigurationError(f"Unknown M2M option(s): {', '.join(sorted(unknown))}.")
    source = _Source(app, overrides)
    values = {key.attribute: key.parse(source, key.name) for key in KEYS}
    _check_ranges(values)
    return Settings(**values)


def _check_ranges(values: dict[str, Any]) -> None:
    """The checks that involve several keys: lifetimes' MIN <= DEFAULT <= MAX."""
    default, low, high = (
        values[f"client_lifetime_days_{part}"] for part in ("default", "min", "max")
    )
    low = low or 1
    if high is not None and low > high:
        raise ConfigurationError(
            "M2M_CLIENT_LIFETIME_DAYS_MIN exceeds M2M_CLIENT_LIFETIME_DAYS_MAX."
        )
    if default is not None and not (low <= default <= (high or default)):
        raise ConfigurationError("M2M_CLIENT_LIFETIME_DAYS_DEFAULT is outside MIN..MAX.")
    if values["access_token_expires_in_min"] > values["access_token_expires_in_max"]:
        raise ConfigurationError(
            "M2M_ACCESS_TOKEN_EXPIRES_IN_MIN exceeds M2M_ACCESS_TOKEN_EXPIRES_IN_MAX."
        )
