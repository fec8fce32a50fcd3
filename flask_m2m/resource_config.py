"""Configuration of a :class:`~flask_m2m.ResourceServer`: its keys, defaults and checks.

A resource server reads these keys only (``M2M_ISSUER``, ``M2M_AUDIENCE``, ``M2M_LEEWAY`` and
``M2M_TOKEN_CACHE_SIZE`` have the authorization server's names and meanings, seen from the
other side); the README's "Resource servers" table mirrors :data:`RESOURCE_SERVER_DEFAULTS`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask

from .config import DPOP_ALGS, PREFIX, SIGNING_ALGS
from .config_parsers import BOOL_WORDS
from .errors import ConfigurationError
from .resource_metadata import is_absolute_uri

#: Default value of every key a resource server reads.
RESOURCE_SERVER_DEFAULTS: dict[str, Any] = {
    #: The authorization server trusted: its issuer identifier (RFC 8414 §2). Required.
    "M2M_ISSUER": None,
    #: This service's resource identifier, an absolute URI: the ``aud`` its tokens must
    #: carry (RFC 8707 §2). Required.
    "M2M_AUDIENCE": None,
    #: URL of the issuer's JWK set; None: the ``jwks_uri`` of its RFC 8414 metadata.
    "M2M_JWKS_URI": None,
    #: JWS algorithms accepted (list or space-separated): some of RS256, ES256, EdDSA.
    "M2M_ALLOWED_ALGORITHMS": list(SIGNING_ALGS),
    #: Seconds of clock skew tolerated on ``exp``, ``iat`` and ``nbf``.
    "M2M_LEEWAY": 30,
    #: Seconds a fetched JWK set is used before it is fetched again.
    "M2M_JWKS_CACHE_SECONDS": 300,
    #: Fewest seconds between two fetches of the JWK set by one process (an unknown ``kid``
    #: asks for one; so does a retry after a failure).
    "M2M_JWKS_MIN_REFRESH_SECONDS": 5,
    #: While fetches fail, keys up to this many seconds after their last successful fetch
    #: keep serving (stale-on-error).
    "M2M_JWKS_MAX_STALE_SECONDS": 86400,
    #: Seconds allowed for each request to the authorization server (connect, then reading
    #: the whole response).
    "M2M_HTTP_TIMEOUT_SECONDS": 5,
    #: Largest response read from the authorization server, in bytes.
    "M2M_HTTP_MAX_BYTES": 65536,
    #: Development only: fetch over plain ``http`` from hosts other than loopback ones.
    "M2M_ALLOW_INSECURE_HTTP": False,
    #: ``"opaque"``: JWTs verified offline, other tokens introspected (RFC 7662);
    #: ``"always"``: every token introspected.
    "M2M_INTROSPECTION": "opaque",
    #: URL of the introspection endpoint; None: from the issuer's RFC 8414 metadata.
    "M2M_INTROSPECTION_ENDPOINT": None,
    #: This service's own client id at the authorization server, for introspection (the
    #: client needs the scope ``m2m:introspect``); None: no introspection.
    "M2M_INTROSPECTION_CLIENT_ID": None,
    #: The secret of that client.
    "M2M_INTROSPECTION_CLIENT_SECRET": None,
    #: Longest time in seconds an introspection answer is reused (never past the token's
    #: ``exp``): how late a revocation may be seen.
    "M2M_INTROSPECTION_CACHE_SECONDS": 5,
    #: Most verified tokens (JWTs and introspection answers) kept by each process.
    "M2M_TOKEN_CACHE_SIZE": 10000,
    #: JWS algorithms accepted in DPoP proofs (RFC 9449), list or space-separated.
    "M2M_DPOP_SIGNING_ALGS": ["ES256", "EdDSA", "Ed25519", "RS256"],
    #: Seconds a DPoP proof's ``iat`` may lie in the past (plus ``M2M_LEEWAY``).
    "M2M_DPOP_PROOF_MAX_AGE": 300,
    #: Require this service's nonces in DPoP proofs (RFC 9449 §9).
    "M2M_DPOP_REQUIRE_NONCE": False,
    #: Where the ``jti`` of DPoP proofs are remembered: ``memory://`` (this process) or a
    #: ``redis://`` URL shared by every instance.
    "M2M_DPOP_REPLAY_STORAGE_URI": "memory://",
}

INTROSPECTION_MODES = ("opaque", "always")


@dataclass(frozen=True, slots=True)
class ResourceServerSettings:
    """The configuration of one resource server app, checked and frozen."""

    issuer: str
    audience: str
    jwks_uri: str | None
    allowed_algorithms: frozenset[str]
    leeway: int
    jwks_cache_seconds: float
    jwks_min_refresh_seconds: float
    jwks_max_stale_seconds: float
    http_timeout_seconds: float
    http_max_bytes: int
    allow_insecure_http: bool
    introspection: str
    introspection_endpoint: str | None
    introspection_client_id: str | None
    introspection_client_secret: str | None
    introspection_cache_seconds: float
    token_cache_size: int
    dpop_signing_algs: tuple[str, ...] = ("ES256", "EdDSA", "Ed25519", "RS256")
    dpop_proof_max_age: int = 300
    dpop_require_nonce: bool = False
    dpop_replay_storage_uri: str = "memory://"

    @property
    def can_introspect(self) -> bool:
        """Whether introspection credentials are configured."""
        return self.introspection_client_id is not None


def is_loopback_host(hostname: str) -> bool:
    """Whether ``hostname`` (as :func:`urllib.parse.urlsplit` gives it) is this machine:
    ``localhost``, 127.0.0.0/8 or ``::1``."""
    name = hostname.rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


def url_refusal(url: str, allow_insecure_http: bool) -> str | None:
    """Why the resource server may not fetch ``url``, or None: it must be ``https``, or
    ``http`` to a loopback host (or to any host with ``M2M_ALLOW_INSECURE_HTTP``), without
    credentials or fragment."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "is not an absolute http(s) URL"
    if parts.username is not None or parts.fragment:
        return "must have no user name, password or fragment"
    if parts.scheme == "http" and not (allow_insecure_http or is_loopback_host(parts.hostname)):
        return "must use https (http only to a loopback host, or with M2M_ALLOW_INSECURE_HTTP)"
    return None


def load_resource_server_settings(app: Flask, overrides: dict[str, Any]) -> ResourceServerSettings:
    """Read the keys once: constructor options beat ``app.config``, which beats
    :data:`RESOURCE_SERVER_DEFAULTS`. Raise :class:`ConfigurationError` naming the key on a
    missing or bad value."""
    known = {key[len(PREFIX) :].lower() for key in RESOURCE_SERVER_DEFAULTS}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigurationError(f"Unknown ResourceServer option(s): {', '.join(sorted(unknown))}.")

    def get(key: str) -> Any:
        option = key[len(PREFIX) :].lower()
        if option in overrides:
            return overrides[option]
        return app.config.get(key, RESOURCE_SERVER_DEFAULTS[key])

    def number(key: str, minimum: float, kind: Callable[[Any], Any] = float) -> Any:
        value = get(key)
        try:
            if isinstance(value, bool):
                raise TypeError
            result = kind(value)
        except (TypeError, ValueError):
            raise ConfigurationError(f"{key} must be a number, got {value!r}.") from None
        if not result >= minimum:  # also refuses NaN
            raise ConfigurationError(f"{key} must be at least {minimum}, got {value!r}.")
        return result

    def flag(key: str) -> bool:
        value = get(key)
        if isinstance(value, bool):
            return value
        word = str(value).strip().lower()
        if word not in BOOL_WORDS:
            raise ConfigurationError(f"{key} must be true or false, got {value!r}.")
        return BOOL_WORDS[word]

    insecure = flag("M2M_ALLOW_INSECURE_HTTP")

    def url(key: str, required: bool = False) -> str | None:
        value = get(key)
        if not value:
            if required:
                raise ConfigurationError(f"{key} is required on a resource server.")
            return None
        refusal = url_refusal(str(value), insecure)
        if refusal is not None:
            raise ConfigurationError(f"{key} {refusal}: {value!r}.")
        return str(value)

    issuer = str(url("M2M_ISSUER", required=True)).rstrip("/")
    audience = get("M2M_AUDIENCE")
    if not audience:
        raise ConfigurationError("M2M_AUDIENCE (this service's resource identifier) is required.")
    if not isinstance(audience, str) or not is_absolute_uri(audience):
        raise ConfigurationError(
            "M2M_AUDIENCE must be an absolute http(s) URI without query or fragment, "
            f"got {audience!r}."
        )
    algorithms = get("M2M_ALLOWED_ALGORITHMS")
    if isinstance(algorithms, str):
        algorithms = algorithms.replace(",", " ").split()
    if (
        not isinstance(algorithms, list | tuple | set | frozenset)
        or not algorithms
        or not set(algorithms) <= set(SIGNING_ALGS)
    ):
        raise ConfigurationError(
            f"M2M_ALLOWED_ALGORITHMS must name some of {SIGNING_ALGS}, got {algorithms!r}."
        )
    mode = str(get("M2M_INTROSPECTION")).lower()
    if mode not in INTROSPECTION_MODES:
        raise ConfigurationError(f"M2M_INTROSPECTION must be one of {INTROSPECTION_MODES}.")
    client_id = get("M2M_INTROSPECTION_CLIENT_ID") or None
    client_secret = get("M2M_INTROSPECTION_CLIENT_SECRET") or None
    if (client_id is None) != (client_secret is None):
        raise ConfigurationError(
            "Set both M2M_INTROSPECTION_CLIENT_ID and M2M_INTROSPECTION_CLIENT_SECRET, or neither."
        )
    if mode == "always" and client_id is None:
        raise ConfigurationError(
            'M2M_INTROSPECTION = "always" needs M2M_INTROSPECTION_CLIENT_ID and _SECRET.'
        )
    dpop_algs = get("M2M_DPOP_SIGNING_ALGS")
    if isinstance(dpop_algs, str):
        dpop_algs = dpop_algs.replace(",", " ").split()
    if not isinstance(dpop_algs, list | tuple) or not dpop_algs or not set(dpop_algs) <= set(
        DPOP_ALGS
    ):
        raise ConfigurationError(f"M2M_DPOP_SIGNING_ALGS must name some of {DPOP_ALGS}.")
    replay_uri = str(get("M2M_DPOP_REPLAY_STORAGE_URI"))
    if urlsplit(replay_uri).scheme not in ("memory", "redis", "rediss", "unix"):
        raise ConfigurationError("M2M_DPOP_REPLAY_STORAGE_URI must be memory:// or redis://...")
    cache_seconds = number("M2M_JWKS_CACHE_SECONDS", 1)
    stale = number("M2M_JWKS_MAX_STALE_SECONDS", 0)
    if stale < cache_seconds:
        raise ConfigurationError("M2M_JWKS_MAX_STALE_SECONDS is less than M2M_JWKS_CACHE_SECONDS.")
    return ResourceServerSettings(
        issuer=issuer,
        audience=audience,
        jwks_uri=url("M2M_JWKS_URI"),
        allowed_algorithms=frozenset(algorithms),
        leeway=number("M2M_LEEWAY", 0, int),
        jwks_cache_seconds=cache_seconds,
        jwks_min_refresh_seconds=number("M2M_JWKS_MIN_REFRESH_SECONDS", 0),
        jwks_max_stale_seconds=stale,
        http_timeout_seconds=number("M2M_HTTP_TIMEOUT_SECONDS", 0.01),
        http_max_bytes=number("M2M_HTTP_MAX_BYTES", 1024, int),
        allow_insecure_http=insecure,
        introspection=mode,
        introspection_endpoint=url("M2M_INTROSPECTION_ENDPOINT"),
        introspection_client_id=None if client_id is None else str(client_id),
        introspection_client_secret=None if client_secret is None else str(client_secret),
        introspection_cache_seconds=number("M2M_INTROSPECTION_CACHE_SECONDS", 0),
        token_cache_size=number("M2M_TOKEN_CACHE_SIZE", 0, int),
        dpop_signing_algs=tuple(dict.fromkeys(str(alg) for alg in dpop_algs)),
        dpop_proof_max_age=number("M2M_DPOP_PROOF_MAX_AGE", 1, int),
        dpop_require_nonce=flag("M2M_DPOP_REQUIRE_NONCE"),
        dpop_replay_storage_uri=replay_uri,
    )
