"""Configuration keys, their defaults, and the checks run once in ``init_app``.

Each ``M2M_*`` key is declared once, as a field of :class:`Settings`: its type, default,
parser and meaning. :data:`KEYS`, :data:`DEFAULTS` and :func:`load_settings` are derived from
those fields, and a test holds the README's configuration tables to them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from flask import Flask

from . import config_parsers as read
from .dpop import PROOF_ALGS
from .errors import ConfigurationError
from .policy import ASSERTION_ALGS, MAX_DAYS, RATE_LIMIT_MODES

PREFIX = read.PREFIX
TOKEN_FORMATS = ("jwt", "opaque")
SIGNING_ALGS = ("RS256", "ES256", "EdDSA")
DPOP_ALGS = PROOF_ALGS
MIN_SECRET_LENGTH = 32
#: Where used ``jti`` values are remembered (:mod:`flask_m2m.replay`).
REPLAY_STORES = ("database", "storage", "memory")


def _key(default: Any, parse: read.Parser, doc: str, *, shown: str | None = None) -> Any:
    """Declare the key of a :class:`Settings` field (named ``M2M_`` + the field's name).

    :param shown: the default as the README shows it, when that is not the value itself.
    """
    return field(metadata={"m2m": (default, parse, doc, shown)})


@dataclass(frozen=True, slots=True)
class Settings:
    """The ``M2M_*`` configuration of one app, checked and frozen."""

    #: Key, default, parser and meaning of each field: ``M2M_`` + the field's name in capitals.
    issuer: str | None = _key(
        None, read.url, "Issuer URL (``iss`` and metadata); None: the request's host URL.",
        shown="request's URL root",
    )
    access_token_expires_in: int = _key(3600, read.integer(), "Access-token lifetime in seconds.")
    token_format: str = _key(
        "jwt", read.choice(TOKEN_FORMATS, lower=True),
        '``"jwt"`` (RFC 9068) or ``"opaque"`` (random string stored hashed).',
    )
    signing_alg: str = _key(
        "RS256", read.choice(SIGNING_ALGS),
        "JWS algorithm of signed access tokens: ``RS256``, ``ES256`` or ``EdDSA``.",
    )
    audience: str | None = _key(
        None, read.text,
        "Default ``aud`` of issued tokens and the audience ``require_scope`` accepts (None: "
        "the issuer).",
        shown="the issuer",
    )
    audience_lifetimes: dict[str, int] = _key(
        None, read.audience_lifetimes,
        "Access-token lifetimes per audience (RFC 8707 resource): a mapping (or its JSON) of "
        "audience URI to seconds; a token gets the shortest of its audiences' and its own.",
        shown="`{}`",
    )
    url_prefix: str = _key("/m2m", read.prefix, "URL prefix of the protocol routes.")
    client_secret_length: int = _key(
        64, read.integer(MIN_SECRET_LENGTH),
        "Length of the random part of generated client secrets (at least 32).",
    )
    key_encryption_secret: bytes = _key(
        None, read.master_secret,
        "Secret from which the key-encryption and secret-hashing keys are derived (None: "
        "``SECRET_KEY``).",
        shown="`SECRET_KEY`",
    )
    key_encryption_secret_fallbacks: tuple[bytes, ...] = _key(
        None, read.master_fallbacks,
        "Older master secrets, still tried while a rotation of the master secret is under way "
        "(None: ``SECRET_KEY_FALLBACKS`` when the master secret is ``SECRET_KEY``, else none).",
    )
    signing_keys: dict[str, Any] | None = _key(
        None, read.jwk_set,
        "Signing keys supplied as a private JWK set (dict or JSON); None: keys live in the "
        "database.",
    )
    leeway: int = _key(30, read.integer(0), "Seconds of clock skew tolerated on ``exp`` / ``iat``.")
    state_cache_seconds: float = _key(
        5, read.seconds(0),
        "Seconds a verified token, a revocation or a client's state may be served from memory.",
    )
    key_refresh_seconds: float = _key(
        60, read.seconds(1), "Seconds between two reads of the signing-key table by one process."
    )
    key_publication_seconds: int | None = _key(
        None, read.optional_integer(0),
        "Seconds a key made by ``rotate-keys`` is published before any instance signs with "
        "it (None: ``M2M_KEY_REFRESH_SECONDS + M2M_LEEWAY``).",
        shown="refresh + leeway",
    )
    token_cache_size: int = _key(
        10000, read.integer(0), "Most verified tokens kept in each process's cache."
    )
    max_request_bytes: int = _key(
        16384, read.integer(1024), "Largest accepted body of a protocol request, in bytes."
    )
    require_https: bool | None = _key(
        None, read.optional_flag,
        "Refuse protocol requests over plain HTTP, except to a loopback host (400 "
        "``invalid_request``); None: on unless the app is in debug or testing mode.",
    )
    max_discard_bytes: int = _key(
        1048576, read.integer(0),
        "Largest unread body read and thrown away after an early refusal, so that the "
        "keep-alive connection stays usable; a larger body is left to the server (which closes "
        "the connection). 0: never read.",
    )
    enable_cli: bool = _key(True, read.flag, "Register the ``flask m2m`` CLI group.")
    management_enabled: bool = _key(
        True, read.flag,
        "Register the management API (``/clients``, ``/events``, ``/openapi.json``).",
    )
    token_rate_limit: str = _key(
        "1000/day", read.rate_limit,
        "Default per-client limit on the token endpoint (a client's ``rate_limit`` overrides "
        "it).",
    )
    failed_auth_rate_limit: str = _key(
        "60/minute", read.rate_limit,
        "Per remote address, counting only failed client authentications (all protocol routes).",
    )
    management_rate_limit: str = _key(
        "300/minute", read.rate_limit,
        "Per caller (Bearer token, else address) on the management API.",
    )
    token_rate_limit_mode: str = _key(
        "enforce", read.choice(RATE_LIMIT_MODES),
        '``"enforce"`` or ``"log-only"``: what a client\'s token-endpoint limit does by default '
        "(a client's ``rate_limit_mode`` overrides it); log-only counts, signals and audits.",
    )
    rate_limit_fail_open: bool = _key(
        True, read.flag,
        "When the rate-limit storage (e.g. Redis) fails: True counts in memory meanwhile (fail "
        "open), False answers 503 (fail closed).",
    )
    metrics_enabled: bool = _key(
        False, read.flag,
        "Serve Prometheus metrics (needs ``prometheus_client``) at ``M2M_METRICS_PATH``.",
    )
    metrics_path: str = _key("/metrics", read.path, "Path of the metrics route, when enabled.")
    reuse_tokens: bool = _key(
        False, read.flag,
        "Hand a client asking again for the same scopes and audience its last token, while "
        "that token has most of its lifetime left, rather than a new one.",
    )
    dpop_signing_algs: tuple[str, ...] = _key(
        ("ES256", "EdDSA", "Ed25519", "RS256"), read.choices(DPOP_ALGS),
        "JWS algorithms accepted in DPoP proofs (RFC 9449; list or space-separated), from "
        "``ES256 ES384 ES512 EdDSA Ed25519 RS256 PS256``.",
        shown="`ES256 EdDSA Ed25519 RS256`",
    )
    dpop_proof_max_age: int = _key(
        300, read.integer(1),
        "Seconds a DPoP proof's ``iat`` may lie in the past (plus ``M2M_LEEWAY``).",
    )
    dpop_require_nonce: bool = _key(
        False, read.flag,
        "Require server-provided nonces in DPoP proofs (RFC 9449 §8-9): a proof without the "
        "current one gets ``use_dpop_nonce`` and a ``DPoP-Nonce`` header.",
    )
    require_client_name: bool = _key(
        True, read.flag, "Policy: a client must have a non-empty name."
    )
    allow_client_metadata: bool = _key(
        True, read.flag, "Policy: clients may carry a ``metadata`` object."
    )
    max_metadata_bytes: int = _key(
        4096, read.integer(2), "Policy: largest ``metadata`` object, in bytes of JSON."
    )
    client_lifetime_days_default: int | None = _key(
        None, read.optional_integer(),
        "Policy: client lifetime (days) when none is given; None: clients never expire.",
    )
    client_lifetime_days_min: int | None = _key(
        None, read.optional_integer(),
        "Policy: shortest client lifetime (days) one may ask for; None: no minimum.",
    )
    client_lifetime_days_max: int | None = _key(
        None, read.optional_integer(),
        "Policy: longest client lifetime (days); None: clients may never expire.",
    )
    allowed_scopes: frozenset[str] | None = _key(
        None, read.scope_list,
        "Policy: the only scopes clients may be given (list or space-separated); None: any.",
    )
    access_token_expires_in_min: int = _key(
        60, read.integer(),
        "Policy: shortest per-client access-token lifetime override, in seconds.",
    )
    access_token_expires_in_max: int = _key(
        86400, read.integer(),
        "Policy: longest per-client access-token lifetime override, in seconds.",
    )
    max_secrets_per_client: int = _key(
        3, read.integer(),
        "Most secrets (current ones plus those in a grace period) a client may hold.",
    )
    max_grace_period_seconds: int = _key(
        604800, read.integer(0),
        "Longest grace period a secret rotation may give the older secrets, in seconds.",
    )
    secret_max_age_days: int | None = _key(
        None, read.optional_integer(),
        "Lifetime of new secrets in days; None: secrets do not expire by age.",
    )
    secret_expiry_warning_days: int = _key(
        7, read.integer(0),
        "A secret used this many days or fewer before it expires is reported (signal, audit).",
    )
    last_used_interval_seconds: int = _key(
        60, read.integer(0),
        "Seconds between two writes of a client's or secret's ``last_used_at``.",
    )
    replay_store: str | None = _key(
        None, read.optional_choice(REPLAY_STORES),
        'Where used assertion and proof ``jti`` values are kept: ``"database"``, ``"storage"`` '
        '(``RATELIMIT_STORAGE_URI``) or ``"memory"``; None: the database if the models have the '
        "table, else the storage if its URI is set, else memory.",
    )
    client_assertion_algs: tuple[str, ...] = _key(
        ("RS256", "ES256", "EdDSA", "Ed25519"), read.choices(ASSERTION_ALGS),
        "JWS algorithms accepted on ``private_key_jwt`` client assertions.",
        shown='`("RS256", "ES256", "EdDSA", "Ed25519")`',
    )
    client_assertion_max_lifetime: int = _key(
        3600, read.integer(1),
        "Longest lifetime (``exp`` minus ``iat``, or minus now) of a client assertion, in "
        "seconds.",
    )
    jwks_uri_allow_insecure: bool | None = _key(
        None, read.optional_flag,
        "Allow ``http`` and private, loopback and link-local addresses in clients' ``jwks_uri`` "
        "(development only); None: only when the app is in debug or testing mode.",
    )
    jwks_uri_timeout: float = _key(
        5, read.seconds(1), "Seconds allowed for fetching a client's ``jwks_uri``."
    )
    jwks_uri_max_bytes: int = _key(
        65536, read.integer(1024), "Largest JWK Set read from a client's ``jwks_uri``, in bytes."
    )
    jwks_uri_cache_seconds: float = _key(
        300, read.seconds(0), "Seconds a client's fetched JWK Set is kept in memory."
    )
    jwks_uri_refetch_seconds: float = _key(
        30, read.seconds(0),
        "Least seconds between two fetches of one ``jwks_uri`` for an unknown ``kid``.",
    )
    audit_retention_days: int | None = _key(
        None, read.optional_integer(maximum=MAX_DAYS),
        "Days audit events are kept before ``flask m2m prune`` deletes them; None: kept forever.",
    )

    @property
    def master_secrets(self) -> tuple[bytes, ...]:
        """The current master secret, then the older ones still accepted."""
        return (self.key_encryption_secret, *self.key_encryption_secret_fallbacks)

    @property
    def key_publication_delay(self) -> float:
        """Seconds between a new signing key's creation and its first use by another process:
        every process has re-read the key table (and so publishes the key) meanwhile, give or
        take the clock skew ``M2M_LEEWAY`` tolerates."""
        if self.key_publication_seconds is not None:
            return float(self.key_publication_seconds)
        return self.key_refresh_seconds + self.leeway

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
    parse: read.Parser
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
    source = read.Source(app, overrides, DEFAULTS)
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
