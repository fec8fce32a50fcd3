"""Parsers of configuration values: each reads one key from a :class:`Source` and returns its
checked value, or raises :class:`ConfigurationError` naming the key. :mod:`flask_m2m.config`
declares which parser reads each key."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from flask import Flask

from .errors import ConfigurationError
from .policy import AUDIENCE_RULE, RATE_LIMIT_RULE, parse_audience, parse_rate_limit

PREFIX = "M2M_"
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


class Source:
    """Where the keys of one app are read: a constructor option (the key without its prefix,
    in lower case), else ``app.config``, else the key's default."""

    def __init__(self, app: Flask, overrides: dict[str, Any], defaults: dict[str, Any]):
        self.app = app
        self.overrides = overrides
        self.defaults = defaults

    def get(self, key: str) -> Any:
        option = key[len(PREFIX) :].lower()
        if option in self.overrides:
            return self.overrides[option]
        return self.app.config.get(key, self.defaults[key])


#: Reads and checks one key: ``parse(source, key)`` returns its value or raises
#: :class:`ConfigurationError` naming the key.
Parser = Callable[[Source, str], Any]


def integer(minimum: int = 1) -> Parser:
    """A whole number of at least ``minimum`` (a numeric string too)."""

    def parse(source: Source, key: str) -> int:
        value = source.get(key)
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key} must be an integer, got {value!r}.") from None
        if number < minimum:
            raise ConfigurationError(f"{key} must be at least {minimum}, got {number}.")
        return number

    return parse


def optional_integer(minimum: int = 1, maximum: int | None = None) -> Parser:
    """None, or a whole number from ``minimum`` to ``maximum``."""
    whole = integer(minimum)

    def parse(source: Source, key: str) -> int | None:
        if source.get(key) is None:
            return None
        number: int = whole(source, key)
        if maximum is not None and number > maximum:
            raise ConfigurationError(f"{key} must be at most {maximum}, got {number}.")
        return number

    return parse


def seconds(minimum: int) -> Parser:
    """Whole seconds of at least ``minimum``, as a float."""
    whole = integer(minimum)
    return lambda source, key: float(whole(source, key))


def flag(source: Source, key: str) -> bool:
    """The value's truth."""
    return bool(source.get(key))


def optional_flag(source: Source, key: str) -> bool | None:
    """None, a bool, or one of :data:`BOOL_WORDS`."""
    value = source.get(key)
    if value is None or isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word in BOOL_WORDS:
        return BOOL_WORDS[word]
    raise ConfigurationError(f"{key} must be true, false or None, got {value!r}.")


def choice(options: Sequence[str], *, lower: bool = False) -> Parser:
    """One of ``options`` (compared in lower case when ``lower``)."""

    def parse(source: Source, key: str) -> str:
        value = str(source.get(key))
        value = value.lower() if lower else value
        if value not in options:
            raise ConfigurationError(f"{key} must be one of {tuple(options)}.")
        return value

    return parse


def optional_choice(options: Sequence[str]) -> Parser:
    """None (or empty), or one of ``options`` (compared in lower case)."""
    one = choice(options, lower=True)
    return lambda source, key: one(source, key) if source.get(key) else None


def choices(options: Sequence[str]) -> Parser:
    """A non-empty list of ``options``, as a sequence or a comma- or space-separated string."""

    def parse(source: Source, key: str) -> tuple[str, ...]:
        value = source.get(key)
        items = value.replace(",", " ").split() if isinstance(value, str) else value
        try:
            picked = tuple(str(item) for item in items)
        except TypeError:
            picked = ()
        if not picked or any(item not in options for item in picked):
            raise ConfigurationError(f"{key} must list some of {tuple(options)}.")
        return tuple(dict.fromkeys(picked))

    return parse


def rate_limit(source: Source, key: str) -> str:
    """A limit string under the rule of :func:`~flask_m2m.policy.parse_rate_limit`."""
    value = source.get(key)
    try:
        parse_rate_limit(value)
    except ValueError:
        raise ConfigurationError(f"{key} must be {RATE_LIMIT_RULE}.") from None
    return str(value)


def text(source: Source, key: str) -> str | None:
    """A string, or None when empty."""
    value = source.get(key)
    return str(value) if value else None


def url(source: Source, key: str) -> str | None:
    """A URL without its trailing slash, or None when empty."""
    value = source.get(key)
    return str(value).rstrip("/") if value else None


def prefix(source: Source, key: str) -> str:
    """A URL prefix: ``/m2m`` (one leading slash, none trailing), or ``""`` for the root."""
    value = "/" + str(source.get(key) or "").strip("/")
    return "" if value == "/" else value


def path(source: Source, key: str) -> str:
    """A route: one leading slash, none trailing (``/`` for the root)."""
    return "/" + str(source.get(key) or "").strip("/")


def scope_list(source: Source, key: str) -> frozenset[str] | None:
    """None, or scopes as a list or a space-separated string."""
    value = source.get(key)
    if isinstance(value, str):
        value = value.split()
    return frozenset(value) if value is not None else None


def _json_or_value(source: Source, key: str) -> Any:
    """The value of ``key``, decoded when it is a string (JSON, as from the environment)."""
    value = source.get(key)
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise ConfigurationError(f"{key} is not valid JSON.") from None


def audience_lifetimes(source: Source, key: str) -> dict[str, int]:
    """Token lifetimes per audience: a mapping (or its JSON) of audience URI -> seconds."""
    value = _json_or_value(source, key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigurationError(f"{key} must map audience URIs to seconds.")
    lifetimes: dict[str, int] = {}
    for audience, seconds in value.items():
        try:
            parse_audience(audience)
        except ValueError:
            raise ConfigurationError(f"{key}: each audience must be {AUDIENCE_RULE}.") from None
        if isinstance(seconds, bool) or not isinstance(seconds, int) or seconds < 1:
            raise ConfigurationError(f"{key}: the lifetime of {audience} must be whole seconds.")
        lifetimes[audience] = seconds
    return lifetimes


def jwk_set(source: Source, key: str) -> dict[str, Any] | None:
    """None, or a JWK set (``{"keys": [...]}``) as a dict or JSON."""
    value = _json_or_value(source, key)
    if value is not None and not (isinstance(value, dict) and isinstance(value.get("keys"), list)):
        raise ConfigurationError(f'{key} must be a JWK set: {{"keys": [...]}}.')
    return value


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _master_secret_key(source: Source) -> str:
    """``M2M_KEY_ENCRYPTION_SECRET`` when it is set, else ``SECRET_KEY``."""
    return "M2M_KEY_ENCRYPTION_SECRET" if source.get("M2M_KEY_ENCRYPTION_SECRET") else "SECRET_KEY"


def master_secret(source: Source, _: str) -> bytes:
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


def master_fallbacks(source: Source, _: str) -> tuple[bytes, ...]:
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
